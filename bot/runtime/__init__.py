"""What keeps the process running well, whatever the channel: tracked
background tasks, the error log and admin alerts, the status file, CPU
placement, pacing of bulk sends, the event bus, the UTC clock, and sizes
as people read them."""

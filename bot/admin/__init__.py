"""Administration logic (access, limits, statistics, broadcasts, backups).
Channels only render what these modules decide."""

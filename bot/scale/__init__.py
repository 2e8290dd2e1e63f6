"""The scaled mode: webhook gateway -> RabbitMQ -> workers; PostgreSQL for all
state; one scheduler leader. The gateway only receives Telegram's webhooks and
publishes each update; any number of workers, on any machines, consume them
through the same core; exactly one worker at a time (chosen by a PostgreSQL
advisory lock, see ``leader``) runs the scheduled work: reminders, periodic
jobs, broadcasts and admin alerts."""

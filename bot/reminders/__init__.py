"""Reminders and scheduled tasks: parsing, recurrence, storage-backed
scheduling, delivery through a channel's Notifier, and the model's tools."""

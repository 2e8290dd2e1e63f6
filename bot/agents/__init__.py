"""Agents: specialists with their own instructions, tools and model
(profiles.py), a router that picks one per message in multi-agent mode
(router.py), an orchestrator that plans a complex request and delegates its
steps (orchestrator.py), and the desk that holds the mode, the chats' pins
and the per-agent records (desk.py). Single-agent mode, the default, is
today's assistant and goes through none of this."""

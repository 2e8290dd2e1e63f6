"""MCP tool servers named in the TOML file (``[mcp.servers.NAME]``): each
kept connected by a task of its own (bot/tools/mcp/server.py), its tools
attached to the registry while it is up, under ``NAME__tool`` names.

Servers start in the background at boot: the bot answers before they are
ready, and a server that never comes up only means its tools are missing."""

"""The HTTP API channel: an OpenAI-compatible API and Arium's own resources."""

"""The gates every message passes on its way into the core (DESIGN.md
section 2): ban, allow-list, rate limit, daily quota (chain.py runs them;
access.py and limits.py are the checks and the operations that change them)."""

"""Operators' tooling: running the whole system locally, and (later) the ``insights`` CLI."""

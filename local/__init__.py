"""The whole system on one machine: an embedded Redis and the supervisor behind ``scripts/run``."""

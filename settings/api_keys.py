"""API keys as the settings hold them: ``API_KEYS`` is ``sha256:<hex>:scope,scope;...``, each a key's
hash and the scopes it grants (``api.access`` checks a presented key against them)."""

from __future__ import annotations

import re

API_SCOPES = frozenset({"ingest", "read", "admin"})  # admin: webhook subscriptions
_KEY_ENTRY = re.compile(r"^sha256:([0-9a-f]{64}):([a-z,]+)$")


def parse_api_keys(value: str) -> dict[str, frozenset[str]]:
    """``sha256:<hex>:scope,scope;...`` as ``{hex: scopes}``; raise ``ValueError`` naming a bad entry."""
    keys = {}
    for number, entry in enumerate(filter(None, (e.strip() for e in value.split(";"))), start=1):
        match = _KEY_ENTRY.match(entry)
        scopes = frozenset(match.group(2).split(",")) if match else frozenset()
        if not match or not scopes or not scopes <= API_SCOPES:
            raise ValueError(
                f"expected entries like sha256:<64 hex>:ingest,read separated by ';' (entry {number} is not)"
            )
        if match.group(1) in keys:
            raise ValueError(
                f"entry {number} lists a key hash already listed (sha256:{match.group(1)[:8]}...); "
                "give each key one entry with all its scopes"
            )
        keys[match.group(1)] = scopes
    return keys

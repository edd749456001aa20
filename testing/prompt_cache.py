"""xAI's prompt cache as the emulator plays it: prefixes of the messages, remembered per server.

What xAI documents (https://docs.x.ai/developers/advanced-api-usage/prompt-caching and its pages
``how-it-works``, ``maximizing-cache-hits``): caching is automatic and works on the prefix, "the system
checks how many messages at the beginning match a previous request exactly"; "cache entries are stored
per-server", and "the ``x-grok-conv-id`` HTTP header routes requests with the same conversation ID to the
same server"; without it "requests may be routed to different servers"; "cache entries can be evicted at any
time due to server load or restarts" (no lifetime is given). The answer's
``usage.prompt_tokens_details.cached_tokens`` counts the prompt tokens served from the cache.

What the emulator chose, where xAI says nothing:

- ``cache_servers`` servers (default 16). A call with ``x-grok-conv-id`` goes to the server its value hashes
  to (CRC-32, so the same value reaches the same server in every run); one without goes to a server drawn
  at random (seeded with ``seed``, so a run repeats).
- A server remembers every prefix of the messages of the calls it served (per model: the model, then each
  message's role and content), and a call's cached tokens are those of the longest run of its first messages
  that server has seen, counted as the prompt is (characters / 4).
- Eviction stands for the load of xAI's other customers: an entry that no call has used during the last
  ``cache_span`` calls the emulator served (any server; default 8) is gone. So a prefix sent on every call
  through one server always hits, while calls spread over 16 servers find it about 1 - (15/16)^8, 40 % of
  the time at most. ``cache_span`` 0 turns the cache off.
"""

from __future__ import annotations

import random
import zlib
from collections import OrderedDict
from typing import Any

Prefix = int  # a hash of (model, the first messages)


class PrefixCache:
    """The servers' caches; a call at a time (the emulator's event loop), so no lock."""

    def __init__(self, seed: int) -> None:
        self.servers: dict[int, OrderedDict[Prefix, int]] = {}  # server -> prefix -> last call using it, oldest first
        self.calls = 0
        self.random = random.Random(seed + 2)  # draws of its own, so that neither latencies nor faults shift

    def route(self, conv_id: str | None, servers: int) -> int:
        """The server of a call: by the header's hash, or at random without one (one server at least)."""
        servers = max(1, servers)
        if conv_id:
            return zlib.crc32(conv_id.encode("utf-8", "surrogatepass")) % servers
        return self.random.randrange(servers)

    def serve(self, server: int, model: str, messages: list[dict[str, Any]], span: int) -> int:
        """Serve a call on ``server``: its cached tokens (the characters / 4 of its longest run of leading
        messages that server remembers), remembering its prefixes from now on."""
        self.calls += 1
        if span <= 0:
            return 0
        entries = self.servers.setdefault(server, OrderedDict())
        self._evict(span)
        prefix: Prefix = hash(model)
        matched, cached_chars = True, 0
        for message in messages:
            prefix = hash((prefix, message.get("role"), message.get("content")))
            matched = matched and prefix in entries
            if matched:
                cached_chars += len(message.get("content") or "")
            entries[prefix] = self.calls
            entries.move_to_end(prefix)
        return cached_chars // 4

    def _evict(self, span: int) -> None:
        """Forget, on every server, the entries unused during the last ``span`` calls (each server's entries
        are in the order of their last use, so only the oldest are looked at)."""
        for entries in self.servers.values():
            while entries and next(iter(entries.values())) <= self.calls - span - 1:
                entries.popitem(last=False)

    def clear(self) -> None:
        self.servers.clear()
        self.calls = 0

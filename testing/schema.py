"""The answer schemas the xAI emulator receives: kept for tests to read as sent, and held to the keywords
every version of xAI's structured outputs accepts.

xAI's older structured-outputs page (https://docs.x.ai/docs/guides/structured-outputs) said that
``minLength``/``maxLength``, ``minItems``/``maxItems``, ``minContains``/``maxContains`` and ``allOf`` are not
supported; today's (https://docs.x.ai/developers/model-capabilities/text/structured-outputs) accepts the
length and item bounds up to limits and a single-subschema ``allOf``, and refuses ``minContains`` and
``maxContains`` with ``400``. The emulator refuses all seven with ``400`` (its wording is its own), so that
a schema outside the subset both accept fails every test that calls it.
"""

from __future__ import annotations

import json
from typing import Any

UNSUPPORTED = frozenset({"minLength", "maxLength", "minItems", "maxItems", "minContains", "maxContains", "allOf"})
KEPT = 16  # distinct schemas remembered (a deployment sends one or two)
SUBSCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def unsupported(schema: Any, path: str = "$") -> list[str]:
    """Where ``schema`` uses a keyword of :data:`UNSUPPORTED`, as ``keyword at path``, however deep: in
    subschemas of any keyword (``items``, ``anyOf``...), not in property names."""
    if isinstance(schema, list):
        return [found for n, item in enumerate(schema) for found in unsupported(item, f"{path}[{n}]")]
    if not isinstance(schema, dict):
        return []
    found = [f"{keyword} at {path}" for keyword in sorted(UNSUPPORTED & schema.keys())]
    for keyword, value in schema.items():
        if keyword in SUBSCHEMA_MAPS and isinstance(value, dict):
            found += [hit for name, sub in value.items() for hit in unsupported(sub, f"{path}.{keyword}.{name}")]
        elif keyword not in ("enum", "const", "default", "examples"):  # values there are data, not schemas
            found += unsupported(value, f"{path}.{keyword}")
    return found


class SchemaBook:
    """The distinct ``response_format`` objects received, in the order first seen, and what each breaks."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[Any, list[str]]] = {}

    def check(self, response_format: Any) -> list[str]:
        """What ``response_format`` breaks (nothing without a ``json_schema``); remembered for :meth:`received`."""
        key = json.dumps(response_format, sort_keys=True)
        if key in self.seen:
            return self.seen[key][1]
        schema = response_format.get("json_schema", {}).get("schema") if isinstance(response_format, dict) else None
        problems = unsupported(schema)
        if len(self.seen) < KEPT:
            self.seen[key] = (response_format, problems)
        return problems

    def received(self) -> list[Any]:
        return [response_format for response_format, _ in self.seen.values()]

    def clear(self) -> None:
        self.seen.clear()

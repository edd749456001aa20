"""One cluster vocabulary for both analyzers: the ``[taxonomy]`` of config.toml.

Closed (``TAXONOMY_MODE=closed``, the default): Grok picks each conversation's clusters among the
taxonomy's slugs, or says ``other`` and suggests a slug of its own (``suggested_cluster``); the JSON schema
of its answer makes the clusters an ``enum``, and validation holds untrusted rows to it all the same.
Open: Grok invents slugs freely and nothing is suggested. The taxonomy and the mode are part of the prompt
version: changing either marks the insights analyzed since, and ``insights reprocess`` re-labels history.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from settings import Settings
from settings.tables import TaxonomyEntry

OTHER = "other"


@dataclass(frozen=True)
class Taxonomy:
    entries: dict[str, TaxonomyEntry]
    closed: bool

    @classmethod
    def of(cls, settings: Settings) -> Taxonomy:
        return cls(dict(settings.taxonomy), settings.taxonomy_mode == "closed")

    @property
    def vocabulary(self) -> frozenset[str] | None:
        """The slugs a cluster may be (``other`` among them), or ``None`` when open."""
        return frozenset([*self.entries, OTHER]) if self.closed else None

    @property
    def keywords(self) -> dict[str, list[str]]:
        return {slug: entry.keywords for slug, entry in self.entries.items()}

    def version(self) -> str:
        """Eight hex digits that change with the mode and any slug, description or keyword."""
        entries = [(slug, entry.description, entry.keywords) for slug, entry in sorted(self.entries.items())]
        return hashlib.sha256(json.dumps([self.closed, entries]).encode()).hexdigest()[:8]

    def prompt(self) -> str:
        """What the system prompt says of clusters."""
        if not self.closed:
            return '- clusters: up to {max} short topic labels as lower-case slugs (e.g. "billing", "late-delivery").\n'
        lines = "\n".join(f"  - {slug}: {entry.description}" for slug, entry in self.entries.items())
        return (
            "- clusters: up to {max} of these slugs, those that fit:\n" + lines + "\n"
            f'  If none fits, clusters is ["{OTHER}"] and suggested_cluster names the topic as a new short '
            'lower-case slug; otherwise suggested_cluster is "".\n'
        )

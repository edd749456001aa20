"""A batch's insights written in three statements (for ``store.results``): one read of the insights they
replace, one copy of those to ``insight_history``, one upsert of them all, instead of each insight's own.

Written as SQL directly (``store.statements``): peewee building each insight's statements cost some 3 ms
an insight, far more than the database spent running them.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from insights.costs import Tokens
from store import rollups
from store.models import Insight, InsightHistory, database
from store.statements import MAX_PARAMETERS, placeholders

COLUMNS = [field.column_name for field in Insight._meta.sorted_fields]
"""An insight to write: a dict of these columns' values, as the database stores them."""

HISTORY_COLUMNS = [
    field.column_name for field in InsightHistory._meta.sorted_fields if field.name not in ("id", "superseded_at")
]

ROLLED_UP = (
    "occurred_at",
    "sentiment_score",
    "confidence",
    "clusters",
    "lane",
    "prompt_tokens",
    "cached_tokens",
    "completion_tokens",
    "cost_usd",
)
"""The columns that place an insight in the rollups (``_move``)."""

ROWS_PER_STATEMENT = MAX_PARAMETERS // len(COLUMNS)


def _names(columns: list[str] | tuple[str, ...]) -> str:
    return ", ".join(f'"{column}"' for column in columns)


def write(insights: list[dict[str, Any]], now: datetime) -> rollups.RollupChanges:
    """Upsert ``insights`` (of distinct conversations), copying the ones they replace to history first (as
    superseded at ``now``); return how the rollups move: each replaced insight leaves, each new one enters.
    Rows go in conversation order, one lock order for every writer (as in ``store.rollups``)."""
    changes = rollups.RollupChanges()
    ordered = sorted(insights, key=lambda insight: insight["conversation_id"])
    for offset in range(0, len(ordered), ROWS_PER_STATEMENT):
        chunk = ordered[offset : offset + ROWS_PER_STATEMENT]
        ids = [insight["conversation_id"] for insight in chunk]
        replaced = _read_rolled_up(ids)
        if replaced:
            _keep_as_history(sorted(replaced), now)
        _upsert(chunk)
        for previous in replaced.values():
            _move(changes, previous, delta=-1)
        for insight in chunk:
            _move(changes, insight)
    return changes


def _move(changes: rollups.RollupChanges, insight: dict[str, Any], delta: int = 1) -> None:
    """Add an insight (its ``ROLLED_UP`` columns) to ``changes``, or take it away (``delta=-1``)."""
    occurred_at = insight["occurred_at"]
    changes.add(
        occurred_at, insight["sentiment_score"], insight["confidence"], json.loads(insight["clusters"]), delta=delta
    )
    changes.usage.add(occurred_at, insight["lane"], _stored_tokens(insight), insight["cost_usd"], delta=delta)


def _stored_tokens(insight: dict[str, Any]) -> Tokens | None:
    """The tokens an insight records (none before migration 0009)."""
    if insight["prompt_tokens"] is None:
        return None
    return Tokens(insight["prompt_tokens"], insight["cached_tokens"] or 0, insight["completion_tokens"] or 0)


def _read_rolled_up(ids: list[str]) -> dict[str, dict[str, Any]]:
    """The current insights of conversations ``ids`` (those that have one): their ``ROLLED_UP`` columns."""
    cursor = database.obj.execute_sql(
        f'SELECT conversation_id, {_names(ROLLED_UP)} FROM "{Insight._meta.table_name}" '
        f"WHERE conversation_id IN {placeholders(len(ids))}",
        ids,
    )
    as_datetime = Insight.occurred_at.python_value  # SQLite hands back text
    found = {}
    for (
        conversation_id,
        *values,
    ) in cursor.fetchall():  # read to the end: a savepoint rolled back would abort a pending read
        previous = dict(zip(ROLLED_UP, values))
        previous["occurred_at"] = as_datetime(previous["occurred_at"])
        found[conversation_id] = previous
    return found


def _keep_as_history(ids: list[str], now: datetime) -> None:
    """Copy the current insights of conversations ``ids`` to ``insight_history`` before they are replaced."""
    db, columns = database.obj, _names(HISTORY_COLUMNS)
    db.execute_sql(
        f'INSERT INTO "{InsightHistory._meta.table_name}" ({columns}, superseded_at) '
        f'SELECT {columns}, {db.param} FROM "{Insight._meta.table_name}" '
        f"WHERE conversation_id IN {placeholders(len(ids))} ORDER BY conversation_id",
        [now, *ids],
    )


def _upsert(insights: list[dict[str, Any]]) -> None:
    """Insert ``insights``, each replacing its conversation's current one, if any, in every column."""
    db, table = database.obj, Insight._meta.table_name
    row = placeholders(len(COLUMNS))
    updates = ", ".join(f'"{column}" = excluded."{column}"' for column in COLUMNS if column != "conversation_id")
    db.execute_sql(
        f'INSERT INTO "{table}" ({_names(COLUMNS)}) VALUES {", ".join([row] * len(insights))} '
        f"ON CONFLICT (conversation_id) DO UPDATE SET {updates}",
        [insight[column] for insight in insights for column in COLUMNS],
    )

"""Write statements written as SQL directly, for the write path (``store.rollups``, ``store.usage``,
``store.insight_writes``): peewee's query builder, compiling every value of a statement as a node of its
own, cost more than the database there.
"""

from __future__ import annotations

from store.models import database

MAX_PARAMETERS = 30_000  # bound parameters a statement takes, within SQLite's limit


def placeholders(count: int) -> str:
    """``(?, ?, ...)``: ``count`` parameters in the database's style."""
    return "(" + ", ".join([database.obj.param] * count) + ")"


def add_totals(model, keys: list, measures: list, changes: dict[tuple, tuple]) -> None:
    """Upsert ``changes`` (key -> a change of each measure) into ``model``, adding them to the measures of
    a row already there; rows sorted (one lock order for every writer), rows changing nothing left out."""
    rows = [(*key, *deltas) for key, deltas in sorted(changes.items()) if any(deltas)]
    if not rows:
        return
    db, table = database.obj, model._meta.table_name
    columns = [field.column_name for field in (*keys, *measures)]
    statement = (
        f'INSERT INTO "{table}" ({", ".join(columns)}) VALUES {{values}} '
        f"ON CONFLICT ({', '.join(key.column_name for key in keys)}) DO UPDATE SET "
        + ", ".join(f'{m.column_name} = "{table}".{m.column_name} + excluded.{m.column_name}' for m in measures)
    )
    row_placeholders = placeholders(len(columns))
    per_statement = MAX_PARAMETERS // len(columns)
    for offset in range(0, len(rows), per_statement):
        chunk = rows[offset : offset + per_statement]
        db.execute_sql(
            statement.format(values=", ".join([row_placeholders] * len(chunk))),
            [value for row in chunk for value in row],
        )

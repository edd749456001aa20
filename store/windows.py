"""Windows of time as the rollups see them: whole UTC days, and the partial days at their edges."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta


def whole_days(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """``start`` rounded up to midnight and ``end`` rounded down: the whole days of ``[start, end)``
    lie between them (none when the first is not earlier than the second)."""
    first = datetime.combine(start.date(), time())
    if first < start:
        first = first + timedelta(days=1) if start.date() < date.max else datetime.max
    return first, datetime.combine(end.date(), time())

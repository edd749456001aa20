"""Query parameters: time windows, bounded numbers, keyset cursors; each bad one a ``400`` naming it."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

import falcon
from pydantic import TypeAdapter

from api.errors import bad_parameter
from insights.schemas import ConversationId
from store import queries
from store.models import LANES, REALTIME

CURSOR = TypeAdapter(tuple[str, ConversationId])


def parse_time(req: falcon.Request, name: str) -> datetime:
    raw = req.get_param(name)
    if raw is None:
        raise bad_parameter(name, "required (ISO-8601, e.g. 2026-01-31T00:00:00Z)")
    try:
        return queries.parse_db_time(raw)
    except ValueError as error:
        raise bad_parameter(name, str(error)) from None


def parse_number(req: falcon.Request, name: str, kind: type, low: float, high: float, default: Any) -> Any:
    raw = req.get_param(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise bad_parameter(name, f"not a {'whole ' if kind is int else ''}number: {raw!r}") from None
    if not (low <= value <= high):  # also refuses NaN
        raise bad_parameter(name, f"must be between {low} and {high}, got {raw}")
    return value


def check_parameters(req: falcon.Request, allowed: set[str]) -> None:
    """Refuse unknown and repeated parameters, and a NUL in any value: no stored text holds one, and
    PostgreSQL refuses it in a query (every endpoint with parameters comes through here, so none can
    carry one to SQL)."""
    unknown = sorted(set(req.params) - allowed)
    if unknown:
        raise bad_parameter(unknown[0], f"unknown parameter; expected some of {sorted(allowed)}")
    for name, value in req.params.items():
        if isinstance(value, list):
            raise bad_parameter(name, "given more than once")
        if "\x00" in value:
            raise bad_parameter(name, "must not contain a NUL character")


def parse_lane(req: falcon.Request) -> str:
    """The ``lane`` of a POST (``realtime`` unless asked), its only parameter."""
    check_parameters(req, {"lane"})
    lane = req.get_param("lane", default=REALTIME)
    if lane not in LANES:
        raise bad_parameter("lane", f"one of {', '.join(LANES)}, got {lane!r}")
    return lane


def parse_window(req: falcon.Request, allowed: set[str], required: bool = True) -> tuple[datetime, datetime]:
    """Refuse unknown and repeated parameters; return ``[start_time, end_time)`` (when not ``required``,
    a missing end is the end of time, a missing start its beginning; a blank one is a ``400``, as it is
    where they are required)."""
    check_parameters(req, allowed)
    start = parse_time(req, "start_time") if required or req.get_param("start_time") is not None else datetime.min
    end = parse_time(req, "end_time") if required or req.get_param("end_time") is not None else datetime.max
    if end <= start:
        raise bad_parameter("end_time", "must be later than start_time")
    return start, end


def encode_cursor(after: tuple[datetime, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps([after[0].isoformat(), after[1]]).encode()).decode()


def decode_cursor(raw: str) -> tuple[datetime, str]:
    """A cursor that :func:`encode_cursor` made, checked as strictly as any input: a JSON pair of an
    ISO-8601 time and a well-formed conversation id (nothing nested, no NUL reaching the database)."""
    try:
        moment, conversation_id = CURSOR.validate_json(base64.urlsafe_b64decode(raw.encode()))
        return queries.parse_db_time(moment), conversation_id
    except (ValueError, binascii.Error):  # pydantic's ValidationError is a ValueError
        raise bad_parameter("cursor", "not a cursor this API returned") from None

"""``insights import`` (bulk load from JSON lines, a file or standard input) and ``insights reprocess``."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError
from tqdm import tqdm

from actors import collect_many
from actors.broker import STREAMED_LANES, settings
from insights.schemas import request_models
from ops.cli.common import CONFIRM_ABOVE, chunks, confirm
from store import queries

CHUNK = 1000
BOM = b"\xef\xbb\xbf"


def import_source(source: str, lane: str, progress: bool = True) -> Counter:
    """Import ``source`` into ``lane``: a file's path (relative to where the command runs), or ``-`` for
    standard input."""
    if source == "-":
        return import_lines(sys.stdin.buffer, "stdin", None, lane, progress)
    path = Path(source)
    with open(path, "rb") as handle:
        return import_lines(handle, path.name, path.stat().st_size, lane, progress)


def import_lines(handle: BinaryIO, name: str, size: int | None, lane: str, progress: bool) -> Counter:
    """Validate, commit and enqueue every line; report bad lines on stderr by number and go on. Idempotent:
    a line without ``conversation_id`` gets one derived from its content. A UTF-8 BOM opening the input
    (as some editors and exports write it) is not part of the first line."""
    model = request_models(settings)
    tally: Counter = Counter()
    with tqdm(total=size, unit="B", unit_scale=True, disable=not progress, desc=name, file=sys.stderr) as bar:
        for chunk in chunks(enumerate(handle, start=1), CHUNK):
            bar.update(sum(len(line) for _n, line in chunk))
            if chunk[0][0] == 1:
                chunk[0] = (1, chunk[0][1].removeprefix(BOM))
            tally.update(import_chunk(model, chunk, lane))
    return tally


def import_chunk(model, chunk: list[tuple[int, bytes]], lane: str) -> Counter:
    tally: Counter = Counter()
    batch: list[tuple[int, queries.NewConversation]] = []
    now = queries.utcnow()
    for number, line in chunk:
        if not line.strip():
            tally["blank"] += 1
            continue
        try:
            conversation = model.model_validate_json(line)
        except ValidationError as error:
            details = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(line)'}: {e['msg']}" for e in error.errors()[:5])
            print(f"line {number}: {details}", file=sys.stderr)
            tally["invalid"] += 1
            continue
        payload = conversation.canonical_payload()
        conversation_id = conversation.conversation_id or f"imp_{queries.payload_digest(payload)[:32]}"
        batch.append((number, queries.NewConversation.of(conversation_id, payload, now, conversation.occurred(now), lane)))
    if batch:
        outcomes = queries.insert_conversations([new for _number, new in batch])
        created = [new.id for (_n, new), outcome in zip(batch, outcomes) if outcome is queries.InsertOutcome.CREATED]
        if created and lane in STREAMED_LANES:  # else the bulk lane takes them from the database
            collect_many.send(created)
        tally.update(outcome.value for outcome in outcomes)
        for (number, new), outcome in zip(batch, outcomes):
            if outcome is queries.InsertOutcome.CONFLICT:
                print(f"line {number}: conversation {new.id} was already accepted with a different payload, skipped", file=sys.stderr)
    return tally


def reprocess(ids: list[str], lane: str, dry_run: bool, assume_yes: bool) -> None:
    """Send ``ids`` through analysis again in ``lane`` (asking first when there are many)."""
    if not dry_run and len(ids) > CONFIRM_ABOVE:
        confirm(f"Send {len(ids)} conversations through analysis again?", assume_yes)
    verb = "would send" if dry_run else "sent"
    if not dry_run:
        for chunk in chunks(ids, CHUNK):
            queries.reopen(chunk, lane)
            if lane in STREAMED_LANES:
                collect_many.send(chunk)
    print(f"{verb} {len(ids)} conversation(s) through analysis again" + (f", e.g. {', '.join(ids[:3])}" if ids else ""))

"""``insights import`` (bulk load from JSON lines, a file or standard input) and ``insights reprocess``."""

from __future__ import annotations

import hashlib
import sys
from argparse import Namespace
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError
from tqdm import tqdm

from actors.broker import send_for_batching, streamed_lanes
from cli.command import OneOf, Usage, always, argument, command
from cli.common import CONFIRM_ABOVE, chunks, confirm, parse_time
from insights.incoming import request_models
from settings import Settings
from store import queries
from store.models import BULK, LANES

CHUNK = 1000
BOM = b"\xef\xbb\xbf"
DERIVED = "imp_"  # the ids import gives lines without one
LANE = argument("--lane", choices=LANES, default=BULK, help="bulk (default: xAI's Batch API) or realtime")


def file_exists(_settings: Settings, args: Namespace) -> None:
    if args.file != "-" and not Path(args.file).is_file():
        raise Usage(f"no such file: {args.file} (paths are relative to {Path.cwd()})")


@command(
    "import",
    "bulk load conversations from JSON lines, one conversation (a POST body) a line",
    argument("file", help="a JSON-lines file, or - for standard input"),
    argument("--no-progress", action="store_true"),
    LANE,
    check=file_exists,
    writes=always,
)
def import_command(settings: Settings, args: Namespace) -> int:
    tally = import_source(settings, args.file, args.lane, progress=not args.no_progress)
    print(summary(args.file, tally))
    return 1 if tally["invalid"] or tally["conflict"] else 0


def import_source(settings: Settings, source: str, lane: str, progress: bool = True) -> Counter:
    """Import ``source`` into ``lane``: a file's path (relative to where the command runs), or ``-`` for
    standard input."""
    intake = Intake(request_models(settings), lane, streamed=lane in streamed_lanes(settings))
    if source == "-":
        return import_lines(intake, sys.stdin.buffer, "stdin", None, progress)
    path = Path(source)
    with open(path, "rb") as handle:
        return import_lines(intake, handle, path.name, path.stat().st_size, progress)


@dataclass(frozen=True)
class Intake:
    """What every line of one import shares: the model that validates it, its lane, and whether that lane's
    conversations travel through the batching stream (else the bulk lane takes them from the database)."""

    model: type
    lane: str
    streamed: bool


def import_lines(intake: Intake, handle: BinaryIO, name: str, size: int | None, progress: bool) -> Counter:
    """Validate, commit and enqueue every line; report bad lines on stderr by number and go on. Idempotent:
    a line without ``conversation_id`` gets one from its place in the input (:func:`numbered_lines`)."""
    tally: Counter = Counter()
    with tqdm(total=size, unit="B", unit_scale=True, disable=not progress, desc=name, file=sys.stderr) as bar:
        for chunk in chunks(numbered_lines(handle), CHUNK):
            bar.update(sum(len(line) for _n, line, _id in chunk))
            tally.update(import_chunk(intake, chunk))
    return tally


def numbered_lines(handle: BinaryIO) -> Iterator[tuple[int, bytes, str]]:
    """Each line, its number, and the id it gets when it has no ``conversation_id``: ``imp_`` and a hash of
    the line, its number and every line before it. So two customers who wrote the same words stay two
    conversations, while the same file imported again (from standard input too, or grown at its end)
    gives its lines the ids they had. A UTF-8 BOM opening the input (as some editors and exports write
    it) is not part of the first line, nor is a line's ending (LF or CRLF)."""
    place = hashlib.sha256()
    for number, line in enumerate(handle, start=1):
        line = line.removeprefix(BOM) if number == 1 else line
        place.update(b"%d:%s\n" % (number, line.rstrip(b"\r\n")))
        yield number, line, f"{DERIVED}{place.hexdigest()[:32]}"


def import_chunk(intake: Intake, chunk: list[tuple[int, bytes, str]]) -> Counter:
    """Import ``chunk``, numbered lines in one transaction; count each line's outcome (see :func:`summary`)."""
    tally: Counter = Counter()
    batch: list[tuple[int, queries.NewConversation]] = []
    derived: set[int] = set()  # the numbers of the lines without conversation_id
    now = queries.utcnow()
    for number, line, derived_id in chunk:
        if not line.strip():
            tally["blank"] += 1
            continue
        try:
            conversation = intake.model.model_validate_json(line)
        except ValidationError as error:
            details = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(line)'}: {e['msg']}" for e in error.errors()[:5])
            print(f"line {number}: {details}", file=sys.stderr)
            tally["invalid"] += 1
            continue
        conversation_id = conversation.conversation_id or derived_id
        if not conversation.conversation_id:
            derived.add(number)
        batch.append(
            (
                number,
                queries.NewConversation.of(
                    conversation_id, conversation.canonical_payload(), now, conversation.occurred(now), intake.lane
                ),
            )
        )
    return tally + (commit(batch, derived, intake.streamed) if batch else Counter())


def commit(batch: list[tuple[int, queries.NewConversation]], derived: set[int], streamed: bool) -> Counter:
    """Insert ``batch`` (numbered lines) in one transaction and enqueue what is new; count the outcomes,
    ``reimported`` for the duplicates among the ``derived`` lines (those given an id by their place)."""
    outcomes = queries.insert_conversations([new for _number, new in batch])
    created = [new.id for (_n, new), outcome in zip(batch, outcomes) if outcome is queries.InsertOutcome.CREATED]
    if created and streamed:
        send_for_batching(created)
    tally = Counter(outcome.value for outcome in outcomes)
    tally["reimported"] = sum(
        1
        for (number, _new), outcome in zip(batch, outcomes)
        if outcome is queries.InsertOutcome.DUPLICATE and number in derived
    )
    for (number, new), outcome in zip(batch, outcomes):
        if outcome is queries.InsertOutcome.CONFLICT:
            print(
                f"line {number}: conversation {new.id} was already accepted with a different payload, skipped",
                file=sys.stderr,
            )
    return tally


def summary(source: str, tally: Counter) -> str:
    """The import's last line: what it added, and what it merged with conversations already there and why."""
    reasons = [
        f"{tally['reimported']} line(s) imported before (the same text after the same lines)",
        f"{tally['duplicate'] - tally['reimported']} conversation_id(s) accepted before with the same payload",
    ]
    why = ", ".join(reason for reason in reasons if not reason.startswith("0 "))
    return (
        f"{source}: {tally['created']} accepted, {tally['duplicate']} already there"
        + (f" ({why})" if why else "")
        + f", {tally['conflict']} conflicting, {tally['invalid']} invalid, {tally['blank']} blank line(s)"
    )


def later_end_unless_failed(_settings: Settings, args: Namespace) -> None:
    if not args.failed and (args.end is None or args.end <= args.start):
        raise Usage("reprocess --start needs a later --end")


@command(
    "reprocess",
    "send conversations through analysis again",
    OneOf(
        (
            argument("--failed", action="store_true", help="every failed conversation"),
            argument("--start", type=parse_time, help="settled conversations that occurred from this time..."),
        )
    ),
    argument("--end", type=parse_time, help="...to this time"),
    argument("--dry-run", action="store_true"),
    LANE,
    argument("--yes", action="store_true", help=f"do not ask, even for over {CONFIRM_ABOVE} conversations"),
    check=later_end_unless_failed,
    writes=lambda args: not args.dry_run,
)
def reprocess_command(settings: Settings, args: Namespace) -> int:
    ids = queries.reprocess_candidates(args.failed, args.start, args.end)
    reprocess(ids, args.lane, args.lane in streamed_lanes(settings), args.dry_run, args.yes)
    return 0


def reprocess(ids: list[str], lane: str, streamed: bool, dry_run: bool, assume_yes: bool) -> None:
    """Send ``ids`` through analysis again in ``lane``, through the batching stream when it is ``streamed``
    (asking first when there are many)."""
    if not dry_run and len(ids) > CONFIRM_ABOVE:
        confirm(f"Send {len(ids)} conversations through analysis again?", assume_yes)
    verb = "would send" if dry_run else "sent"
    if not dry_run:
        for chunk in chunks(ids, CHUNK):
            queries.reopen(chunk, lane)
            if streamed:
                send_for_batching(chunk)
    print(f"{verb} {len(ids)} conversation(s) through analysis again" + (f", e.g. {', '.join(ids[:3])}" if ids else ""))

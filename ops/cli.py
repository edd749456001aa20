"""``insights``: the operator's command line.

    insights dlq list|show|requeue|purge ...        dead letters (see ``insights dlq --help``)
    insights import FILE.jsonl                      bulk load, one conversation (a POST body) per line
    insights export --start T --end T [--format jsonl|csv] [--output FILE]
    insights reprocess (--failed | --start T --end T) [--dry-run]
    insights stats                                  counts by status, queue depths, dead letters
    insights counts [--rebuild]                     check (or recompute) the daily counts behind total_count
    insights apikey [--scopes ingest,read]          a new API key and its API_KEYS entry

Configured like every other process, by ``config.toml`` and the environment. An output file that cannot
be opened is a one-line error (exit status 2); a reader that stops early (``insights stats | head``)
ends the command quietly (exit status 1, as Python's own recipe for a closed pipe has it).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
from collections import Counter
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import IO, ContextManager, Iterable, Iterator

from pydantic import ValidationError
from tqdm import tqdm

from access import new_key
from actors import collect_many
from actors.broker import settings
from actors.state import read_state
from insights.schemas import request_models
from ops import dlq
from settings import API_SCOPES
from store import counts, queries, reports
from store.db import open_database
from store.documents import insight_document, isoformat
from store.migrations import migrate

CHUNK = 1000
CSV_COLUMNS = ["conversation_id", "occurred_at", "received_at", "analyzed_at", "sentiment_score", "sentiment", "confidence",
               "clusters", "model", "reasoning"]


def parse_time(text: str) -> datetime:
    """ISO-8601, no offset meaning UTC, as stored (naive UTC)."""
    try:
        return queries.parse_db_time(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def import_lines(path: Path, progress: bool = True) -> Counter:
    """Validate, commit and enqueue every line; report bad lines on stderr and go on. Idempotent:
    a line without ``conversation_id`` gets one derived from its content."""
    model = request_models(settings)
    tally: Counter = Counter()
    with open(path, "rb") as handle, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, disable=not progress,
                                          desc=path.name, file=sys.stderr) as bar:
        numbered = enumerate(handle, start=1)
        for chunk in chunks(numbered, CHUNK):
            bar.update(sum(len(line) for _n, line in chunk))
            tally.update(import_chunk(model, chunk))
    return tally


def import_chunk(model, chunk: list[tuple[int, bytes]]) -> Counter:
    tally: Counter = Counter()
    batch: list[queries.NewConversation] = []
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
        batch.append(queries.NewConversation.of(conversation_id, payload, now, conversation.occurred(now)))
    if batch:
        outcomes = queries.insert_conversations(batch)
        created = [new.id for new, outcome in zip(batch, outcomes) if outcome is queries.InsertOutcome.CREATED]
        if created:
            collect_many.send(created)
        tally.update(outcome.value for outcome in outcomes)
        for new, outcome in zip(batch, outcomes):
            if outcome is queries.InsertOutcome.CONFLICT:
                print(f"conversation {new.id}: already accepted with a different payload, skipped", file=sys.stderr)
    return tally


def export(start: datetime, end: datetime, output_format: str, out: IO[str]) -> int:
    """Stream every insight of the window to ``out``; return how many."""
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore") if output_format == "csv" else None
    if writer:
        writer.writeheader()
    count = 0
    for insight in reports.iter_insights(start, end):
        document = insight_document(insight, settings).model_dump(mode="json")
        if writer:
            writer.writerow({**document, "clusters": ";".join(document["clusters"])})
        else:
            out.write(json.dumps(document) + "\n")
        count += 1
    return count


def export_command(args: argparse.Namespace) -> int:
    """``insights export``: to ``--output`` (exit status 2, in one line, when it cannot be opened) or stdout."""
    try:
        out = output_file(args.output)
    except OSError as error:
        print(f"insights export: cannot write {args.output}: {error.strerror}", file=sys.stderr)
        return 2
    with out as stream:
        count = export(args.start, args.end, args.format, stream)
    print(f"exported {count} insight(s)", file=sys.stderr)
    return 0


def output_file(path: Path | None) -> ContextManager[IO[str]]:
    """``path`` opened for writing, or standard output (left open when done)."""
    return open(path, "w", newline="") if path else contextlib.nullcontext(sys.stdout)


def reprocess(ids: list[str], dry_run: bool) -> None:
    verb = "would send" if dry_run else "sent"
    if not dry_run:
        for chunk in chunks(ids, CHUNK):
            queries.reopen(chunk)
            collect_many.send(chunk)
    print(f"{verb} {len(ids)} conversation(s) through analysis again" + (f", e.g. {', '.join(ids[:3])}" if ids else ""))


def print_stats() -> None:
    """What waits where; a source that does not answer is named, and the other still reported."""
    state = read_state()
    for source, error in state.errors.items():
        print(f"{source}: NOT ANSWERING ({error})")
    if state.stats is not None:
        print("conversations:")
        for status, count in state.stats.by_status.items():
            print(f"  {status:<11} {count}")
        if state.stats.oldest_waiting:
            print(f"  oldest waiting: since {isoformat(state.stats.oldest_waiting)} ({state.oldest_waiting_seconds:.0f} s ago)")
    if state.redis is not None:
        print("queues (messages waiting, delayed, dead):")
        for queue in sorted({queue for queue, _kind in state.redis.queues}):
            depths = [state.redis.queues[(queue, kind)] for kind in ("waiting", "delayed", "dead")]
            print(f"  {queue:<11} {' '.join(map(str, depths))}")
        print(f"batching stream: {state.redis.stream} entries, {state.redis.stream_pending} read but not yet dispatched")
        grok = state.redis.grok
        print(f"grok: {grok.state}" + (f" for {grok.seconds_left:.0f} s more: {grok.reason}" if grok.reason else ""))


def check_counts(rebuild: bool) -> int:
    """Compare the daily counts with the insights (exit 1 on a difference), or recompute them."""
    if rebuild:
        print(f"daily counts rebuilt: {counts.rebuild()} row(s)")
        return 0
    drift = counts.drift()
    for key, (stored, counted) in sorted(drift.items(), key=str)[:20]:
        what = f"score band {key[1]}, confidence band {key[2]}" if len(key) == 3 else f"cluster {key[1]!r}"
        print(f"  {key[0]} {what}: stored {stored}, insights {counted}")
    print(f"daily counts: {len(drift)} row(s) differ from the insights" + ("; run 'insights counts --rebuild'" if drift else ""))
    return 1 if drift else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="insights", description="Operate Conversation Insights.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dlq", help="dead letters: list, show, requeue, purge", add_help=False)
    load = commands.add_parser("import", help="bulk load conversations from JSON lines")
    load.add_argument("file", type=Path)
    load.add_argument("--no-progress", action="store_true")
    out = commands.add_parser("export", help="insights of a time window, streamed")
    out.add_argument("--start", type=parse_time, required=True)
    out.add_argument("--end", type=parse_time, required=True)
    out.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    out.add_argument("--output", type=Path, help="file to write (default: standard output)")
    again = commands.add_parser("reprocess", help="send conversations through analysis again")
    which = again.add_mutually_exclusive_group(required=True)
    which.add_argument("--failed", action="store_true", help="every failed conversation")
    which.add_argument("--start", type=parse_time, help="settled conversations that occurred from this time...")
    again.add_argument("--end", type=parse_time, help="...to this time")
    again.add_argument("--dry-run", action="store_true")
    commands.add_parser("stats", help="counts by status, queue depths, dead letters")
    rollup = commands.add_parser("counts", help="check the daily insight counts against the insights")
    rollup.add_argument("--rebuild", action="store_true", help="recompute them from the insights instead")
    key = commands.add_parser("apikey", help="make an API key and print its API_KEYS entry")
    key.add_argument("--scopes", default="ingest,read", help="comma-separated: ingest, read (default both)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The console script: :func:`run`, ending quietly when the reader of standard output has gone."""
    try:
        status = run(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
        return status
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout again at exit
        return 1


def run(argv: list[str]) -> int:
    """Do the command ``argv`` names; its exit status."""
    if argv[:1] == ["dlq"]:
        return dlq.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "apikey":
        scopes = [scope.strip() for scope in args.scopes.split(",") if scope.strip()]
        if not scopes or not set(scopes) <= API_SCOPES:
            parser.error(f"--scopes: choose among {', '.join(sorted(API_SCOPES))}")
        key, entry = new_key(scopes)
        print(f"key (give it to the client; it is not stored anywhere): {key}")
        print(f"entry (add it to API_KEYS, entries separated by ';'): {entry}")
        return 0
    migrate(open_database(settings))
    if args.command == "import":
        if not args.file.is_file():
            parser.error(f"no such file: {args.file}")
        tally = import_lines(args.file, progress=not args.no_progress)
        print(f"{args.file}: {tally['created']} accepted, {tally['duplicate']} already there, "
              f"{tally['conflict']} conflicting, {tally['invalid']} invalid, {tally['blank']} blank line(s)")
        return 1 if tally["invalid"] or tally["conflict"] else 0
    if args.command == "export":
        if args.end <= args.start:
            parser.error("--end must be later than --start")
        return export_command(args)
    if args.command == "reprocess":
        if not args.failed and (args.end is None or args.end <= args.start):
            parser.error("reprocess --start needs a later --end")
        reprocess(queries.reprocess_candidates(args.failed, args.start, args.end), args.dry_run)
        return 0
    if args.command == "counts":
        return check_counts(args.rebuild)
    print_stats()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``insights`` commands: arguments, and which of them may write (see the package's docstring)."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import dramatiq.errors
import peewee
import redis

from api.access import new_key
from actors.broker import settings
from actors.state import first_line
from cli import html_report
from cli import bulk, dlq, load, report
from cli.common import (CONFIRM_ABOVE, OneLineParser, Refused, announce, limit_argument, output_file, require_current_schema,
                            require_database, require_database_to_write)
from settings.secrets import mask_url
from settings import API_SCOPES
from store import queries, reports, trends
from store.db import describe, open_database
from store.migrations import migrate
from store.models import BULK, LANES, STATUSES


def parse_time(text: str) -> datetime:
    """ISO-8601, no offset meaning UTC, as stored (naive UTC)."""
    try:
        return queries.parse_db_time(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def sql_text(text: str) -> str:
    """An argument that goes into SQL as text: bytes that are not UTF-8 reach Python as lone surrogates,
    which neither database driver encodes (a traceback, once), so they are refused here, naming it."""
    try:
        text.encode()
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"not UTF-8 text: {text!r}") from None
    return text


DATABASE_ERRORS = (peewee.OperationalError, peewee.InterfaceError)
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, dramatiq.errors.BrokerConnectionError)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="insights", description="Operate Conversation Insights.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dlq", help="dead letters: list, show, requeue, purge", add_help=False)
    loading = commands.add_parser("import", help="bulk load conversations from JSON lines")
    loading.add_argument("file", help="a JSON-lines file, or - for standard input")
    loading.add_argument("--no-progress", action="store_true")
    loading.add_argument("--lane", choices=LANES, default=BULK, help="bulk (default: xAI's Batch API) or realtime")
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
    again.add_argument("--lane", choices=LANES, default=BULK, help="bulk (default: xAI's Batch API) or realtime")
    again.add_argument("--yes", action="store_true", help=f"do not ask, even for over {CONFIRM_ABOVE} conversations")
    listing = commands.add_parser("conversations", help="the operations view").add_subparsers(dest="action", required=True)
    listed = listing.add_parser("list", help="conversations by status and failure reason, oldest first")
    listed.add_argument("--status", choices=STATUSES)
    listed.add_argument("--reason", type=sql_text, help="a part of the failure reason, any case")
    listed.add_argument("--start", type=parse_time, default=datetime.min, help="occurred at or after")
    listed.add_argument("--end", type=parse_time, default=datetime.max, help="occurred before")
    listed.add_argument("--limit", type=limit_argument, default=100, help="at most this many (default 100)")
    listed.add_argument("--json", action="store_true", help="one JSON document a line")
    bulk_lane = commands.add_parser("bulk", help="the bulk lane's provider batches").add_subparsers(dest="action", required=True)
    listed_batches = bulk_lane.add_parser("list", help="open provider batches: counts, age, cost so far")
    listed_batches.add_argument("--all", action="store_true", help="ended ones too")
    listed_batches.add_argument("--json", action="store_true", help="one JSON document a line")
    bulk_lane.add_parser("show", help="one provider batch").add_argument("batch_id", type=sql_text)
    bulk_lane.add_parser("cancel", help="cancel one at xAI; its unanswered conversations wait for another, no attempt spent").add_argument("batch_id", type=sql_text)
    vocabulary = commands.add_parser("clusters", help="the cluster taxonomy").add_subparsers(dest="action", required=True)
    suggest = vocabulary.add_parser("suggest", help="what a closed taxonomy's 'other' suggested most, with examples")
    suggest.add_argument("--start", type=parse_time, required=True, help="occurred at or after")
    suggest.add_argument("--end", type=parse_time, required=True, help="occurred before")
    suggest.add_argument("--limit", type=limit_argument, default=20, help="at most this many suggestions (default 20)")
    suggest.add_argument("--json", action="store_true", help="one JSON document a line")
    page = commands.add_parser("report", help="one self-contained HTML page about a window: sentiment, clusters, failures, cost")
    page.add_argument("--start", type=parse_time, required=True, help="occurred at or after")
    page.add_argument("--end", type=parse_time, required=True, help="occurred before")
    page.add_argument("--output", type=Path, required=True, help="the HTML file to write")
    page.add_argument("--bucket", choices=["hour", "day"], help="default: hour for windows of two days or less, else day")
    stats = commands.add_parser("stats", help="counts by status, queue depths, dead letters")
    stats.add_argument("--json", action="store_true")
    rollup = commands.add_parser("counts", help="check the daily insight counts against the insights")
    rollup.add_argument("--rebuild", action="store_true", help="recompute them from the insights instead")
    key = commands.add_parser("apikey", help="make an API key and print its API_KEYS entry")
    key.add_argument("--scopes", default="ingest,read", help="comma-separated: ingest, read (default both)")
    for writer in (loading, again, rollup):
        writer.add_argument("--create-database", action="store_true", help="create the SQLite file at DB_PATH if there is none")
    return parser


def writes(args: argparse.Namespace) -> bool:
    """Whether the command may create the database (the others read one that exists)."""
    return args.command == "import" or (args.command == "reprocess" and not args.dry_run) or (args.command == "counts" and args.rebuild)


def run(argv: list[str]) -> int:
    """Do the command ``argv`` names; its exit status."""
    try:
        return dispatch(argv)
    except Refused as refusal:
        print(f"insights: {refusal}", file=sys.stderr)
        return 2
    except DATABASE_ERRORS as error:  # down, refusing us, or no such database
        print(f"insights: the database ({describe(settings())}) failed: {one_line(error)}", file=sys.stderr)
        return 2
    except REDIS_ERRORS as error:
        print(f"insights: Redis ({mask_url(settings().redis_url)}) failed: {one_line(error)}", file=sys.stderr)
        return 2


def one_line(error: Exception) -> str:
    """:func:`first_line` of ``error``, without a password."""
    return mask_url(settings().redact(first_line(error)))


def dispatch(argv: list[str]) -> int:
    if argv[:1] == ["dlq"]:
        announce(settings())
        require_database(settings())
        require_current_schema(settings(), open_database(settings()))
        return dlq.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "apikey":
        return make_key(parser, args.scopes)
    check_arguments(parser, args)
    announce(settings())
    if writes(args):
        require_database_to_write(settings(), args.create_database)
        migrate(open_database(settings()))
    else:
        require_database(settings())
        require_current_schema(settings(), open_database(settings()), tolerate_down=args.command == "stats")
    if args.command == "import":
        return import_command(args)
    if args.command == "export":
        return export_command(args)
    if args.command == "reprocess":
        load.reprocess(queries.reprocess_candidates(args.failed, args.start, args.end), args.lane, args.dry_run, args.yes)
        return 0
    if args.command == "conversations":
        query = reports.ConversationQuery(args.start, args.end, args.limit, args.status, args.reason)
        return report.list_conversations(query, args.json)
    if args.command == "counts":
        return report.check_counts(args.rebuild)
    if args.command == "bulk":
        return bulk_command(args)
    if args.command == "clusters":
        return report.suggested_clusters(args.start, args.end, args.limit, args.json)
    if args.command == "report":
        return report.write_report(args.start, args.end, args.bucket, args.output)
    report.print_stats(args.json)
    return 0


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """What argparse cannot check alone (exit status 2, before touching any data)."""
    if args.command == "import" and args.file != "-" and not Path(args.file).is_file():
        parser.error(f"no such file: {args.file} (paths are relative to {Path.cwd()})")
    if args.command == "export" and args.end <= args.start:
        parser.error("--end must be later than --start")
    if args.command == "reprocess" and not args.failed and (args.end is None or args.end <= args.start):
        parser.error("reprocess --start needs a later --end")
    if args.command == "report":
        if args.output.name in ("", ".", "..") or args.output.is_dir():
            raise Refused(f"report --output {args.output} is a folder; name the HTML file to write")
        if args.end <= args.start:
            parser.error("--end must be later than --start")
        bucket = args.bucket or html_report.default_bucket(args.start, args.end)
        if (spanned := trends.bucket_count(args.start, args.end, bucket)) > settings().trends_max_buckets:
            parser.error(f"the window spans {spanned} buckets of a {bucket}; at most {settings().trends_max_buckets} (TRENDS_MAX_BUCKETS)")
    if args.command in ("clusters", "conversations") and args.end <= args.start:
        parser.error(f"{args.command} {args.action} needs --end later than --start")


def make_key(parser: argparse.ArgumentParser, scopes_text: str) -> int:
    scopes = [scope.strip() for scope in scopes_text.split(",") if scope.strip()]
    if not scopes or not set(scopes) <= API_SCOPES:
        parser.error(f"--scopes: choose among {', '.join(sorted(API_SCOPES))}")
    key, entry = new_key(scopes)
    print(f"key (give it to the client; it is not stored anywhere): {key}")
    print(f"entry (add it to API_KEYS, entries separated by ';'): {entry}")
    return 0


def import_command(args: argparse.Namespace) -> int:
    tally = load.import_source(args.file, args.lane, progress=not args.no_progress)
    print(load.summary(args.file, tally))
    return 1 if tally["invalid"] or tally["conflict"] else 0


def bulk_command(args: argparse.Namespace) -> int:
    if args.action == "list":
        return bulk.list_batches(args.all, args.json)
    return bulk.show(args.batch_id) if args.action == "show" else bulk.cancel(args.batch_id)


def export_command(args: argparse.Namespace) -> int:
    """``insights export``: to ``--output`` (exit status 2, in one line, when it cannot be opened) or stdout."""
    try:
        out = output_file(args.output)
    except OSError as error:
        print(f"insights export: cannot write {args.output}: {error.strerror}", file=sys.stderr)
        return 2
    with out as stream:
        count = report.export(args.start, args.end, args.format, stream)
    print(f"exported {count} insight(s)", file=sys.stderr)
    return 0

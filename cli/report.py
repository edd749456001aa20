"""The reading commands: ``insights export``, ``stats``, ``counts``, ``conversations list``, ``clusters
suggest`` and ``report`` (the HTML page, drawn by ``cli.html_report``)."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from argparse import Namespace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from actors.state import PipelineState, read_state
from api.documents import insight_document, isoformat, listed_document, usage_document
from cli import html_report
from cli.command import Usage, argument, command
from cli.common import (
    END,
    JSON,
    START,
    Refused,
    later_end,
    limit_argument,
    output_file,
    parse_time,
    print_documents,
    sql_text,
    table_row,
)
from settings import Settings
from store import reports, rollup_check, trends, usage
from store.db import write_transaction
from store.models import STATUSES, database

CSV_COLUMNS = [
    "conversation_id",
    "occurred_at",
    "received_at",
    "analyzed_at",
    "sentiment_score",
    "sentiment",
    "confidence",
    "clusters",
    "model",
    "reasoning",
]
KINDS = ("waiting", "delayed", "dead")


@command(
    "export",
    "insights of a time window, streamed",
    START,
    END,
    argument("--format", choices=["jsonl", "csv"], default="jsonl"),
    argument("--output", type=Path, help="file to write (default: standard output)"),
    check=later_end,
)
def export_command(settings: Settings, args: Namespace) -> int:
    """To ``--output`` (exit status 2, in one line, when it cannot be opened) or standard output."""
    try:
        out = output_file(args.output)
    except OSError as error:
        print(f"insights export: cannot write {args.output}: {error.strerror}", file=sys.stderr)
        return 2
    with out as stream:
        count = export(settings, args.start, args.end, args.format, stream)
    print(f"exported {count} insight(s)", file=sys.stderr)
    return 0


def export(settings: Settings, start: datetime, end: datetime, output_format: str, out: IO[str]) -> int:
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


def stats_document(state: PipelineState) -> dict[str, Any]:
    """``insights stats --json``: what waits where, for scripts."""
    document: dict[str, Any] = {"errors": state.errors}
    if state.stats is not None:
        document["conversations"] = state.stats.by_status
        document["oldest_waiting_seconds"] = round(state.oldest_waiting_seconds, 3)
        document["bulk"] = {"conversations": state.stats.bulk, "provider_batches": state.stats.provider_batches}
        document["usage"] = {lane: usage_document(used).model_dump() for lane, used in state.stats.usage.items()}
        document["webhook_deliveries"] = state.stats.webhook_deliveries
    if state.redis is not None:
        queues = sorted({queue for queue, _kind in state.redis.queues})
        document["queues"] = {queue: {kind: state.redis.queues[(queue, kind)] for kind in KINDS} for queue in queues}
        document["stream"] = {"entries": state.redis.stream, "pending": state.redis.stream_pending}
        document["grok"] = dataclasses.asdict(state.redis.grok)
        document["grok"]["answered_by_another_model"] = [
            {"asked": asked, "answered": answered, "answers": count}
            for (asked, answered), count in state.redis.answered_by.items()
        ]
        document["masked"] = state.redis.masked
    return document


@command("stats", "counts by status, queue depths, dead letters", JSON, reports_down=True)
def stats(_settings: Settings, args: Namespace) -> int:
    """What waits where; a source that does not answer is named, and the other still reported."""
    state = read_state()
    if args.json:
        print(json.dumps(stats_document(state), indent=2))
    else:
        print_stats(state)
    return 0


def print_stats(state: PipelineState) -> None:
    for source, error in state.errors.items():
        print(f"{source}: NOT ANSWERING ({error})")
    if state.stats is not None:
        print("conversations:")
        for status, count in state.stats.by_status.items():
            print(f"  {status:<11} {count}")
        if state.stats.oldest_waiting:
            print(
                f"  oldest waiting: since {isoformat(state.stats.oldest_waiting)} "
                f"({state.oldest_waiting_seconds:.0f} s ago)"
            )
        bulk, batches = state.stats.bulk, state.stats.provider_batches
        print(
            f"bulk lane: {bulk['queued']} waiting for a provider batch, {bulk['processing']} in one; provider batches: "
            + ", ".join(f"{count} {name}" for name, count in batches.items())
        )
        print("tokens and cost, all insights:")
        for lane, used in state.stats.usage.items():
            d = usage_document(used)
            print(
                f"  {lane:<9} {d.insights} insight(s), {d.prompt_tokens:.0f} prompt ({d.cached_tokens:.0f} cached, "
                f"{html_report.percent(d.cached_share)}) + "
                f"{d.completion_tokens:.0f} completion tokens, ${d.cost_usd:.4f}"
                + (f" ({d.insights_without_cost} without a price)" if d.insights_without_cost else "")
            )
        hooks = state.stats.webhook_deliveries
        print("webhook deliveries: " + ", ".join(f"{n} {status}" for status, n in hooks.items()))
    if state.redis is not None:
        print("queues:")
        print(f"  {'queue':<11} waiting delayed dead")
        for queue in sorted({queue for queue, _kind in state.redis.queues}):
            print(f"  {queue:<11} " + " ".join(str(state.redis.queues[(queue, kind)]) for kind in KINDS))
        print(
            f"batching stream: {state.redis.stream} entries, {state.redis.stream_pending} read but not yet dispatched"
        )
        grok = state.redis.grok
        print(f"grok: {grok.state}" + (f" for {grok.seconds_left:.0f} s more: {grok.reason}" if grok.reason else ""))
        for (asked, answered), count in state.redis.answered_by.items():
            print(f"  answered by {answered}, not GROK_MODEL={asked}: {count} answer(s), priced as {answered}")
        masked = state.redis.masked
        print("personal data masked: " + (", ".join(f"{n} {kind}" for kind, n in masked.items()) or "none"))


@command(
    "clusters suggest",
    "what a closed taxonomy's 'other' suggested most, with examples",
    START,
    END,
    argument("--limit", type=limit_argument, default=20, help="at most this many suggestions (default 20)"),
    JSON,
    check=later_end,
)
def suggested_clusters(_settings: Settings, args: Namespace) -> int:
    """The topics the taxonomy may be missing, most frequent first."""
    print_documents(
        [dataclasses.asdict(s) for s in reports.suggested_clusters(args.start, args.end, args.limit)],
        args.json,
        "suggested_cluster\tconversations\texamples",
        lambda d: table_row(d["cluster"], d["count"], " ".join(d["examples"])),
    )
    return 0


def report_arguments(settings: Settings, args: Namespace) -> None:
    """A file to write, a window, and not more buckets than a page may draw."""
    if args.output.name in ("", ".", "..") or args.output.is_dir():
        raise Refused(f"report --output {args.output} is a folder; name the HTML file to write")
    later_end(settings, args)
    bucket = args.bucket or html_report.default_bucket(args.start, args.end)
    if (spanned := trends.bucket_count(args.start, args.end, bucket)) > settings.trends_max_buckets:
        raise Usage(
            f"the window spans {spanned} buckets of a {bucket}; at most {settings.trends_max_buckets} "
            "(TRENDS_MAX_BUCKETS)"
        )


@command(
    "report",
    "one self-contained HTML page about a window: sentiment, clusters, failures, cost",
    START,
    END,
    argument("--output", type=Path, required=True, help="the HTML file to write"),
    argument("--bucket", choices=["hour", "day"], help="default: hour for windows of two days or less, else day"),
    check=report_arguments,
)
def write_report(settings: Settings, args: Namespace) -> int:
    """The HTML page, written whole or not at all (exit status 2 when it cannot be)."""
    thresholds = (settings.negative_threshold, settings.positive_threshold)
    page = html_report.render(html_report.gather(args.start, args.end, thresholds, args.bucket))
    output = args.output
    partial = output.with_name(f".{output.name}.partial")
    try:
        partial.write_text(page, encoding="utf-8")
        partial.replace(output)
    except OSError as error:
        print(f"insights report: cannot write {output}: {error.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {output} ({len(page.encode()):,} bytes)", file=sys.stderr)
    return 0


@command(
    "counts",
    "check the daily insight counts against the insights (or recompute them)",
    argument("--rebuild", action="store_true", help="recompute them from the insights instead"),
    writes=lambda args: args.rebuild,
)
def check_counts(_settings: Settings, args: Namespace) -> int:
    """Compare the daily counts with the insights (exit 1 on a difference), or recompute them."""
    if args.rebuild:
        print(f"daily counts rebuilt: {rollup_check.rebuild()} row(s)")
        with write_transaction(database.obj):
            usage.rebuild()
        print("daily tokens and cost rebuilt")
        return 0
    drift = rollup_check.drift()
    for key, (stored, counted) in sorted(drift.items(), key=str)[:20]:
        what = f"score band {key[1]}, confidence band {key[2]}" if len(key) == 3 else f"cluster {key[1]!r}"
        print(f"  {key[0]} {what}: stored {stored}, insights {counted}")
    print(
        f"daily counts: {len(drift)} row(s) differ from the insights"
        + ("; run 'insights counts --rebuild'" if drift else "")
    )
    return 1 if drift else 0


@command(
    "conversations list",
    "conversations by status and failure reason, oldest first",
    argument("--status", choices=STATUSES),
    argument("--reason", type=sql_text, help="a part of the failure reason, any case"),
    argument("--start", type=parse_time, default=datetime.min, help="occurred at or after"),
    argument("--end", type=parse_time, default=datetime.max, help="occurred before"),
    argument("--limit", type=limit_argument, default=100, help="at most this many (default 100)"),
    JSON,
    check=later_end,
)
def list_conversations(_settings: Settings, args: Namespace) -> int:
    """The operations view, every page of it (up to ``--limit`` conversations in all)."""
    query = reports.ConversationQuery(args.start, args.end, args.limit, args.status, args.reason)
    shown, left = [], query.limit
    while left > 0:
        page, next_after = reports.list_conversations(dataclasses.replace(query, limit=min(left, 1000)))
        shown += page
        left -= len(page)
        if next_after is None:
            break
        query = dataclasses.replace(query, after=next_after)
    print_documents(
        [listed_document(c).model_dump(mode="json") for c in shown],
        args.json,
        "conversation_id\tstatus\tattempts\toccurred_at\tlast_error",
        lambda d: table_row(d["conversation_id"], d["status"], d["attempts"], d["occurred_at"], d["last_error"]),
    )
    return 0

"""The reading commands: ``insights export``, ``stats``, ``counts`` and ``conversations list``."""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from actors.broker import settings
from actors.state import PipelineState, read_state
from cli import html_report
from cli.common import print_documents, table_row
from store import reports, rollup_check, usage
from store.db import write_transaction
from store.models import database
from api.documents import insight_document, isoformat, listed_document, usage_document

CSV_COLUMNS = ["conversation_id", "occurred_at", "received_at", "analyzed_at", "sentiment_score", "sentiment", "confidence",
               "clusters", "model", "reasoning"]
KINDS = ("waiting", "delayed", "dead")


def export(start: datetime, end: datetime, output_format: str, out: IO[str]) -> int:
    """Stream every insight of the window to ``out``; return how many."""
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore") if output_format == "csv" else None
    if writer:
        writer.writeheader()
    count = 0
    for insight in reports.iter_insights(start, end):
        document = insight_document(insight, settings()).model_dump(mode="json")
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
    if state.redis is not None:
        queues = sorted({queue for queue, _kind in state.redis.queues})
        document["queues"] = {queue: {kind: state.redis.queues[(queue, kind)] for kind in KINDS} for queue in queues}
        document["stream"] = {"entries": state.redis.stream, "pending": state.redis.stream_pending}
        document["grok"] = dataclasses.asdict(state.redis.grok)
        document["grok"]["answered_by_another_model"] = [
            {"asked": asked, "answered": answered, "answers": count} for (asked, answered), count in state.redis.answered_by.items()]
    return document


def print_stats(as_json: bool) -> None:
    """What waits where; a source that does not answer is named, and the other still reported."""
    state = read_state()
    if as_json:
        print(json.dumps(stats_document(state), indent=2))
        return
    for source, error in state.errors.items():
        print(f"{source}: NOT ANSWERING ({error})")
    if state.stats is not None:
        print("conversations:")
        for status, count in state.stats.by_status.items():
            print(f"  {status:<11} {count}")
        if state.stats.oldest_waiting:
            print(f"  oldest waiting: since {isoformat(state.stats.oldest_waiting)} ({state.oldest_waiting_seconds:.0f} s ago)")
        bulk, batches = state.stats.bulk, state.stats.provider_batches
        print(f"bulk lane: {bulk['queued']} waiting for a provider batch, {bulk['processing']} in one; provider batches: "
              + ", ".join(f"{count} {name}" for name, count in batches.items()))
        print("tokens and cost, all insights:")
        for lane, used in state.stats.usage.items():
            d = usage_document(used)
            print(f"  {lane:<9} {d.insights} insight(s), {d.prompt_tokens:.0f} prompt ({d.cached_tokens:.0f} cached, {html_report.percent(d.cached_share)}) + "
                  f"{d.completion_tokens:.0f} completion tokens, ${d.cost_usd:.4f}"
                  + (f" ({d.insights_without_cost} without a price)" if d.insights_without_cost else ""))
    if state.redis is not None:
        print("queues:")
        print(f"  {'queue':<11} waiting delayed dead")
        for queue in sorted({queue for queue, _kind in state.redis.queues}):
            print(f"  {queue:<11} " + " ".join(str(state.redis.queues[(queue, kind)]) for kind in KINDS))
        print(f"batching stream: {state.redis.stream} entries, {state.redis.stream_pending} read but not yet dispatched")
        grok = state.redis.grok
        print(f"grok: {grok.state}" + (f" for {grok.seconds_left:.0f} s more: {grok.reason}" if grok.reason else ""))
        for (asked, answered), count in state.redis.answered_by.items():
            print(f"  answered by {answered}, not GROK_MODEL={asked}: {count} answer(s), priced as {answered}")


def suggested_clusters(start: datetime, end: datetime, limit: int, as_json: bool) -> int:
    """``insights clusters suggest``: the topics the taxonomy may be missing, most frequent first."""
    print_documents([dataclasses.asdict(s) for s in reports.suggested_clusters(start, end, limit)], as_json,
                    "suggested_cluster\tconversations\texamples", lambda d: table_row(d["cluster"], d["count"], " ".join(d["examples"])))
    return 0


def write_report(start: datetime, end: datetime, bucket: str | None, output: Path) -> int:
    """``insights report``: the HTML page, written whole or not at all (exit status 2 when it cannot be)."""
    page = html_report.render(html_report.gather(start, end, (settings().negative_threshold, settings().positive_threshold), bucket))
    partial = output.with_name(f".{output.name}.partial")
    try:
        partial.write_text(page, encoding="utf-8")
        partial.replace(output)
    except OSError as error:
        print(f"insights report: cannot write {output}: {error.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {output} ({len(page.encode()):,} bytes)", file=sys.stderr)
    return 0


def check_counts(rebuild: bool) -> int:
    """Compare the daily counts with the insights (exit 1 on a difference), or recompute them."""
    if rebuild:
        print(f"daily counts rebuilt: {rollup_check.rebuild()} row(s)")
        with write_transaction(database.obj):
            usage.rebuild()
        print("daily tokens and cost rebuilt")
        return 0
    drift = rollup_check.drift()
    for key, (stored, counted) in sorted(drift.items(), key=str)[:20]:
        what = f"score band {key[1]}, confidence band {key[2]}" if len(key) == 3 else f"cluster {key[1]!r}"
        print(f"  {key[0]} {what}: stored {stored}, insights {counted}")
    print(f"daily counts: {len(drift)} row(s) differ from the insights" + ("; run 'insights counts --rebuild'" if drift else ""))
    return 1 if drift else 0


def list_conversations(query: reports.ConversationQuery, as_json: bool) -> int:
    """``insights conversations list``: the operations view, every page of it (up to ``query.limit``
    conversations in all); one JSON document a line with ``--json``."""
    shown, left = [], query.limit
    while left > 0:
        page, next_after = reports.list_conversations(dataclasses.replace(query, limit=min(left, 1000)))
        shown += page
        left -= len(page)
        if next_after is None:
            break
        query = dataclasses.replace(query, after=next_after)
    print_documents([listed_document(c).model_dump(mode="json") for c in shown], as_json,
                    "conversation_id\tstatus\tattempts\toccurred_at\tlast_error",
                    lambda d: table_row(d["conversation_id"], d["status"], d["attempts"], d["occurred_at"], d["last_error"]))
    return 0

"""``insights bulk list|show|cancel``: the bulk lane's provider batches at xAI's Batch API."""

from __future__ import annotations

import json
from argparse import Namespace
from typing import Any

from api.documents import isoformat
from cli.command import argument, command
from cli.common import JSON, Refused, print_documents, sql_text, table_row
from insights.costs import batch_cost
from settings import Settings
from store import provider_batches
from store.models import ProviderBatch
from store.reports import seconds_since

COUNTERS = ("num_requests", "num_pending", "num_success", "num_error", "num_cancelled")


def batch_document(batch: ProviderBatch) -> dict[str, Any]:
    """A provider batch as the commands show it: state, counts, age, tokens and cost so far."""
    return {
        "id": batch.id,
        "provider_id": batch.provider_id,
        "state": batch.state,
        "conversations": batch.conversations,
        **{name: getattr(batch, name) for name in COUNTERS},
        "age_seconds": round(seconds_since(batch.created_at)),
        "created_at": isoformat(batch.created_at),
        "submitted_at": isoformat(batch.submitted_at),
        "ended_at": isoformat(batch.ended_at),
        "end_reason": batch.end_reason,
        "cancel_requested": batch.cancel_requested,
        "last_error": batch.last_error,
        "prompt_tokens": batch.prompt_tokens,
        "cached_tokens": batch.cached_tokens,
        "completion_tokens": batch.completion_tokens,
        "cost_usd": batch_cost(batch),
        "unpriced_results": batch.unpriced_results,
    }


BATCH_ID = argument("batch_id", type=sql_text)


@command(
    "bulk list",
    "open provider batches: counts, age, cost so far",
    argument("--all", action="store_true", help="ended ones too"),
    JSON,
)
def list_batches(_settings: Settings, args: Namespace) -> int:
    print_documents(
        [batch_document(b) for b in provider_batches.listing(open_only=not args.all)],
        args.json,
        "id\tstate\tconversations\trequests pending/success/error/cancelled\tage_s\tcost_usd",
        batch_row,
    )
    return 0


def batch_row(d: dict[str, Any]) -> str:
    counts = "/".join(str(d[name]) for name in COUNTERS[1:])
    cost = "?" if d["cost_usd"] is None else f"{d['cost_usd']:.4f}"
    return table_row(d["id"], d["state"], d["conversations"], f"{d['num_requests']} {counts}", d["age_seconds"], cost)


@command("bulk show", "one provider batch", BATCH_ID)
def show(_settings: Settings, args: Namespace) -> int:
    batch = provider_batches.find(args.batch_id)
    if batch is None:
        raise Refused(f"no provider batch {args.batch_id} (insights bulk list --all shows them)")
    print(json.dumps(batch_document(batch), indent=2))
    return 0


@command("bulk cancel", "cancel one at xAI; its unanswered conversations wait for another, no attempt spent", BATCH_ID)
def cancel(settings: Settings, args: Namespace) -> int:
    """Ask the worker that next looks at the batch to cancel it at xAI. A cancel by a person is not its
    conversations' doing: what xAI has not answered comes back to wait for another batch, no attempt spent."""
    batch_id = args.batch_id
    unanswered = provider_batches.request_cancel(batch_id)
    if unanswered is None:
        raise Refused(f"no open provider batch {batch_id}")
    print(
        f"provider batch {batch_id}: cancellation requested; a worker cancels it at xAI within BULK_TICK_SECONDS "
        f"({settings.bulk_tick_seconds:g} s). Of its {unanswered} conversation(s) not answered yet, those xAI has not "
        f"answered by then wait for another batch, no attempt spent; what it has answered is stored."
    )
    return 0

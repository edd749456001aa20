"""``insights conversations show``: one conversation as ``GET /api/v1/conversations/{id}`` shows it."""

from __future__ import annotations

import json
from argparse import Namespace

from api.documents import status_document
from cli.command import argument, command
from cli.common import Refused, sql_text
from insights.pii.masker import Masker
from settings import Settings
from store import queries


@command(
    "conversations show",
    "one conversation, its insight, and with --sent the text that goes to xAI",
    argument("conversation_id", type=sql_text),
    argument("--payload", action="store_true", help="its messages and metadata too"),
    argument("--sent", action="store_true", help="its text as it is sent to xAI (masked when PII_MASKING is on)"),
)
def show(settings: Settings, args: Namespace) -> int:
    """The API's document of the conversation, as JSON; ``--sent`` masks it with the workers' own function."""
    found = queries.get_conversation(args.conversation_id)
    if found is None:
        raise Refused(f"no conversation {args.conversation_id} (insights conversations list shows them)")
    masker = Masker.of(settings) if args.sent else None
    document = status_document(*found, settings, with_payload=args.payload, masker=masker)
    print(json.dumps(document.model_dump(mode="json"), indent=2, ensure_ascii=False))
    return 0

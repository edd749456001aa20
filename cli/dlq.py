"""``insights dlq``: the operator's view of Dramatiq's dead letters.

    insights dlq list                      every dead letter: queue, id, actor, when, conversations, reason
    insights dlq show MESSAGE_ID           one dead letter in full: its reason, the message, its traceback
    insights dlq requeue (ID... | --all)   send it through again (see below) and drop the dead letter
    insights dlq purge (ID... | --all)     drop dead letters for good

``requeue`` and ``purge`` take ``--dry-run`` (say what would happen, change nothing). Requeueing an ``analyze_batch``
dead letter puts its conversations that are not completed back to ``queued`` with attempts reset, and
sends them to the batching stream; any other dead letter is enqueued again as it was, retries reset.
Exit status: 0 done, 1 an id was not found, 2 bad usage.

The reason shown is the current one its conversations record in the database (``actors.reasons``), not
the message's traceback, which may tell an older try. Nothing shown carries the Grok key.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone

import dramatiq

from actors import reasons
from actors.broker import COLLECT_QUEUE, get_broker, queue_key, redis_client, send, settings
from store import queries
from cli.common import OneLineParser, confirm, table_row
from store.db import open_database


@dataclass
class DeadLetter:
    queue: str
    id: str  # Dramatiq's Redis id of the message (it changes on every retry), the key of the dead letter
    message: dict
    dead_at: datetime

    @property
    def conversation_ids(self) -> list[str]:
        args = self.message.get("args") or []
        if self.message["actor_name"] == "analyze_batch" and args:
            return list(args[0])
        if self.message["actor_name"] == "collect" and args:
            return [args[0]]
        return []

    @property
    def traceback(self) -> str | None:
        return self.message.get("options", {}).get("traceback")

    @property
    def reason(self) -> str:
        return settings().redact(reasons.current(self.conversation_ids, self.traceback))


def dead_letters() -> list[DeadLetter]:
    client = redis_client()
    letters = []
    for queue in sorted(get_broker().get_declared_queues()):
        key = queue_key(queue, "XQ")
        for message_id, score in client.zrange(key, 0, -1, withscores=True):
            raw = client.hget(f"{key}.msgs", message_id)
            if raw is not None:
                dead_at = datetime.fromtimestamp(score / 1000, timezone.utc)
                letters.append(DeadLetter(queue, message_id.decode(), json.loads(raw), dead_at))
    return letters


def remove(letter: DeadLetter) -> None:
    key = queue_key(letter.queue, "XQ")
    client = redis_client()
    client.zrem(key, letter.id)
    client.hdel(f"{key}.msgs", letter.id)


def requeue(letter: DeadLetter) -> str:
    if letter.message["actor_name"] == "analyze_batch":
        ids = queries.requeue(letter.conversation_ids)
        for conversation_id in ids:
            send("collect", COLLECT_QUEUE, conversation_id)
        remove(letter)
        return f"{len(ids)} conversation(s) back to queued"
    options = {k: v for k, v in letter.message.get("options", {}).items() if k not in ("retries", "redis_message_id")}
    message = dramatiq.Message(**{**letter.message, "options": options})
    get_broker().enqueue(message)
    remove(letter)
    return f"message re-enqueued on {letter.queue}"


def print_letters(letters: list[DeadLetter], as_json: bool) -> None:
    """``dlq list``: a header row and a line per letter, or one JSON document a line."""
    if as_json:
        for letter in letters:
            print(json.dumps({"queue": letter.queue, "id": letter.id, "actor": letter.message["actor_name"],
                              "dead_at": letter.dead_at.isoformat(), "conversation_ids": letter.conversation_ids,
                              "reason": letter.reason}))
        return
    if not letters:
        print("no dead letters")
        return
    print("queue\tid\tactor\tdead_at\tconversations\treason")
    for letter in letters:
        print(table_row(letter.queue, letter.id, letter.message["actor_name"], f"{letter.dead_at:%Y-%m-%dT%H:%M:%SZ}",
                        len(letter.conversation_ids), letter.reason))


def select(letters: list[DeadLetter], ids: list[str], everything: bool) -> tuple[list[DeadLetter], list[str]]:
    if everything:
        return letters, []
    by_id = {letter.id: letter for letter in letters}
    return [by_id[i] for i in ids if i in by_id], [i for i in ids if i not in by_id]


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="insights dlq", description="Dead letters of the analysis pipeline.")
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="every dead letter")
    listing.add_argument("--json", action="store_true", help="one JSON document a line")
    show = commands.add_parser("show", help="one dead letter in full")
    show.add_argument("message_id")
    for name in ("requeue", "purge"):
        command = commands.add_parser(name, help=f"{name} dead letters")
        command.add_argument("message_ids", nargs="*")
        command.add_argument("--all", action="store_true", help="every dead letter")
        command.add_argument("--dry-run", action="store_true", help="say what would happen, change nothing")
        command.add_argument("--yes", action="store_true", help="do not ask before acting on --all")
    args = parser.parse_args(argv)
    open_database(settings())
    letters = dead_letters()

    if args.command == "list":
        print_letters(letters, args.json)
        return 0
    if args.command == "show":
        chosen, missing = select(letters, [args.message_id], False)
        if missing:
            print(f"no dead letter {args.message_id}", file=sys.stderr)
            return 1
        letter = chosen[0]
        shown = {"queue": letter.queue, "dead_at": letter.dead_at.isoformat(), "reason": letter.reason, **letter.message}
        print(settings().redact(json.dumps(shown, indent=2)))
        return 0

    if not args.message_ids and not args.all:
        parser.error(f"{args.command}: give message ids or --all")
    if args.command == "purge" and args.all and not args.dry_run and letters:
        confirm(f"Purge all {len(letters)} dead letters, for good?", args.yes)
    chosen, missing = select(letters, args.message_ids, args.all)
    for message_id in missing:
        print(f"no dead letter {message_id}", file=sys.stderr)
    for letter in chosen:
        if args.dry_run:
            print(f"would {args.command} {letter.id} ({letter.message['actor_name']}, {len(letter.conversation_ids)} conversation(s))")
        elif args.command == "purge":
            remove(letter)
            print(f"purged {letter.id}")
        else:
            print(f"requeued {letter.id}: {requeue(letter)}")
    if not chosen and not missing:
        print("no dead letters")
    return 1 if missing else 0



"""``insights dlq list|show|requeue|purge``: the operator's view of Dramatiq's dead letters.

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
from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import dramatiq

from actors import reasons
from actors.broker import COLLECT_QUEUE, get_broker, queue_key, redis_client, send
from cli.command import Usage, argument, command
from cli.common import JSON, confirm, table_row
from settings import Settings
from store import queries


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

    def reason(self, settings: Settings) -> str:
        return settings.redact(reasons.current(self.conversation_ids, self.traceback))


def dead_letters() -> list[DeadLetter]:
    client = redis_client()
    letters = []
    for queue in sorted(get_broker().get_declared_queues()):
        key = queue_key(queue, "XQ")
        for message_id, score in client.zrange(key, 0, -1, withscores=True):
            raw = client.hget(f"{key}.msgs", message_id)
            if raw is not None:
                dead_at = datetime.fromtimestamp(score / 1000, UTC)
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


@command("dlq list", "every dead letter: queue, id, actor, when, conversations, reason", JSON)
def list_letters(settings: Settings, args: Namespace) -> int:
    """A header row and a line per letter, or one JSON document a line."""
    letters = dead_letters()
    if args.json:
        for letter in letters:
            print(
                json.dumps(
                    {
                        "queue": letter.queue,
                        "id": letter.id,
                        "actor": letter.message["actor_name"],
                        "dead_at": letter.dead_at.isoformat(),
                        "conversation_ids": letter.conversation_ids,
                        "reason": letter.reason(settings),
                    }
                )
            )
        return 0
    if not letters:
        print("no dead letters")
        return 0
    print("queue\tid\tactor\tdead_at\tconversations\treason")
    for letter in letters:
        print(
            table_row(
                letter.queue,
                letter.id,
                letter.message["actor_name"],
                f"{letter.dead_at:%Y-%m-%dT%H:%M:%SZ}",
                len(letter.conversation_ids),
                letter.reason(settings),
            )
        )
    return 0


@command("dlq show", "one dead letter in full: its reason, the message, its traceback", argument("message_id"))
def show(settings: Settings, args: Namespace) -> int:
    chosen, missing = select(dead_letters(), [args.message_id], False)
    if missing:
        print(f"no dead letter {args.message_id}", file=sys.stderr)
        return 1
    letter = chosen[0]
    shown = {
        "queue": letter.queue,
        "dead_at": letter.dead_at.isoformat(),
        "reason": letter.reason(settings),
        **letter.message,
    }
    print(settings.redact(json.dumps(shown, indent=2)))
    return 0


def select(letters: list[DeadLetter], ids: list[str], everything: bool) -> tuple[list[DeadLetter], list[str]]:
    if everything:
        return letters, []
    by_id = {letter.id: letter for letter in letters}
    return [by_id[i] for i in ids if i in by_id], [i for i in ids if i not in by_id]


def ids_or_all(_settings: Settings, args: Namespace) -> None:
    if not args.message_ids and not args.all:
        raise Usage("give message ids or --all")


CHOSEN = (
    argument("message_ids", nargs="*"),
    argument("--all", action="store_true", help="every dead letter"),
    argument("--dry-run", action="store_true", help="say what would happen, change nothing"),
    argument("--yes", action="store_true", help="do not ask before acting on --all"),
)


@command(
    "dlq requeue",
    "send dead letters through again (their conversations back to queued) and drop them",
    *CHOSEN,
    check=ids_or_all,
)
def requeue_letters(_settings: Settings, args: Namespace) -> int:
    return act(dead_letters(), args, "requeue", lambda letter: f"requeued {letter.id}: {requeue(letter)}")


@command("dlq purge", "drop dead letters for good", *CHOSEN, check=ids_or_all)
def purge(_settings: Settings, args: Namespace) -> int:
    letters = dead_letters()
    if args.all and not args.dry_run and letters:
        confirm(f"Purge all {len(letters)} dead letters, for good?", args.yes)
    return act(letters, args, "purge", purged)


def purged(letter: DeadLetter) -> str:
    remove(letter)
    return f"purged {letter.id}"


def act(letters: list[DeadLetter], args: Namespace, verb: str, do: Callable[[DeadLetter], str]) -> int:
    """Do ``do`` to the letters ``args`` choose (or say what it would do); exit status 1 if an id was not found."""
    chosen, missing = select(letters, args.message_ids, args.all)
    for message_id in missing:
        print(f"no dead letter {message_id}", file=sys.stderr)
    for letter in chosen:
        if args.dry_run:
            print(
                f"would {verb} {letter.id} ({letter.message['actor_name']}, {len(letter.conversation_ids)} "
                "conversation(s))"
            )
        else:
            print(do(letter))
    if not chosen and not missing:
        print("no dead letters")
    return 1 if missing else 0

"""``insights``: the operator's command line. Each command is declared once, beside its handler, and listed
in ``cli.commands.COMMANDS``, from which ``insights --help`` is made; ``insights COMMAND --help`` tells
its arguments.

    insights import FILE.jsonl | - [--lane bulk|realtime] [--create-database]   one conversation (a POST body) a line
    insights export --start T --end T [--format jsonl|csv] [--output FILE]
    insights reprocess (--failed | --start T --end T) [--dry-run] [--yes] [--create-database]
    insights conversations list [--status S] [--reason R] [--start T] [--end T] [--limit N] [--json]
    insights conversations show ID [--payload] [--sent]  one conversation; --sent: the text that goes to xAI
    insights stats [--json]                         counts by status, queue depths, dead letters
    insights report --start T --end T --output FILE.html [--bucket hour|day]
    insights counts [--rebuild [--create-database]] check (or recompute) the daily counts behind total_count
    insights clusters suggest --start T --end T     what a closed taxonomy's "other" suggested most
    insights bulk list [--all] [--json]             the bulk lane's provider batches at xAI
    insights bulk show BATCH_ID
    insights bulk cancel BATCH_ID                   its unanswered conversations wait for another, no attempt spent
    insights dlq list [--json]                      dead letters
    insights dlq show MESSAGE_ID
    insights dlq requeue (ID... | --all) [--dry-run]
    insights dlq purge (ID... | --all) [--dry-run] [--yes]
    insights webhooks add URL [--events E,E] [--batch-size N]   register a receiver; prints its secret once
    insights webhooks list [--json]                 the subscriptions
    insights webhooks remove SUBSCRIPTION_ID
    insights webhooks rotate SUBSCRIPTION_ID        a new secret; the old one signs too for the overlap
    insights webhooks enable SUBSCRIPTION_ID        deliver again after a 410 Gone disabled it
    insights webhooks deliveries [--failed] [--status S] [--subscription ID] [--limit N] [--json]
    insights webhooks replay [DELIVERY_ID...] [--subscription ID]   dead letters sent again
    insights apikey [--scopes ingest,read,admin]    a new API key and its API_KEYS entry

Configured like every other process, by ``config.toml`` and the environment; every command but ``apikey``
says on stderr which database and Redis it uses. Reading commands never create a database; writing ones
(``import``, ``reprocess``, ``counts --rebuild``, ``webhooks add``...) only with ``--create-database``.
Paths are relative to where the command runs. Bad usage, a bad configuration, an output file that cannot
be opened, a missing database, one that is down or refuses us, or a change not confirmed (Ctrl-C at the
question included) is a one-line error (exit status 2), never a traceback; a reader that stops early (``insights stats |
head``) ends the command quietly (exit status 1, as Python's own recipe for a closed pipe has it).
"""

from __future__ import annotations

import os
import sys

from settings import settings_or_exit


def main(argv: list[str] | None = None) -> int:
    """The console script: the settings (a bad configuration is one line, exit status 2, like any refusal),
    then :func:`cli.commands.run`, ending quietly when the reader of standard output has gone."""
    try:
        settings = settings_or_exit()
    except SystemExit as stop:
        print(stop.code, file=sys.stderr)
        return 2
    from cli.commands import run  # here: the package imports none of its modules (they import it: no circle)

    try:
        status = run(settings, sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
        return status
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout again at exit
        return 1


__all__ = ["main"]

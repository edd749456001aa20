"""The registry of ``insights`` commands, and the parser and dispatcher built from it (each command is
declared beside its handler: see ``cli.command``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import dramatiq.errors
import peewee
import redis

from actors.state import first_line
from cli import apikey, bulk, conversation, dlq, load, report, webhooks
from cli.command import Command, Usage
from cli.common import (
    OneLineParser,
    Refused,
    announce,
    require_current_schema,
    require_database,
    require_database_to_write,
    usage_line,
)
from settings import Settings
from settings.secrets import mask_url
from store.db import describe, open_database
from store.migrations import migrate

COMMANDS: tuple[Command, ...] = (  # in the order of insights --help
    load.import_command,
    report.export_command,
    load.reprocess_command,
    report.list_conversations,
    conversation.show,
    report.stats,
    report.write_report,
    report.check_counts,
    report.suggested_clusters,
    bulk.list_batches,
    bulk.show,
    bulk.cancel,
    dlq.list_letters,
    dlq.show,
    dlq.requeue_letters,
    dlq.purge,
    webhooks.add,
    webhooks.list_subscriptions,
    webhooks.remove,
    webhooks.rotate,
    webhooks.enable,
    webhooks.list_deliveries,
    webhooks.replay,
    apikey.make_key,
)
GROUPS = {  # the commands whose names are a group and an action: what the group is about
    "conversations": "the operations view",
    "bulk": "the bulk lane's provider batches",
    "clusters": "the cluster taxonomy",
    "dlq": "dead letters of the analysis pipeline",
    "webhooks": "webhook subscriptions and their delivery log",
}
DATABASE_ERRORS = (peewee.OperationalError, peewee.InterfaceError)
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, dramatiq.errors.BrokerConnectionError)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command in :data:`COMMANDS`; a parsed command's ``command`` is its :class:`Command`."""
    parser = listing_parser(None, "insights", "Operate Conversation Insights.", COMMANDS)
    top = parser.add_subparsers(
        metavar="COMMAND", required=True, help="one of those below (insights COMMAND --help: its arguments)"
    )
    groups = {
        group: listing_parser(
            top, group, about, [each for each in COMMANDS if each.name.startswith(f"{group} ")]
        ).add_subparsers(metavar="ACTION", required=True, help="one of those below")
        for group, about in GROUPS.items()
    }
    for command in COMMANDS:
        group, _, action = command.name.partition(" ")
        own = (groups[group] if action else top).add_parser(action or group, description=command.summary)
        command.add_arguments(own)
        own.set_defaults(command=command)
    return parser


def listing_parser(
    parent: argparse._SubParsersAction | None, name: str, description: str, commands: Sequence[Command]
) -> argparse.ArgumentParser:
    """A parser whose help ends with ``commands`` and their summaries, a line each."""
    width = max(len(command.name) for command in commands) + 2
    epilog = "commands:\n" + "\n".join(f"  {command.name:<{width}}{command.summary}" for command in commands)
    options = {"description": description, "epilog": epilog, "formatter_class": argparse.RawDescriptionHelpFormatter}
    return parent.add_parser(name, **options) if parent else OneLineParser(prog=name, **options)


def run(settings: Settings, argv: list[str]) -> int:
    """Do the command ``argv`` names; its exit status."""
    try:
        return dispatch(settings, build_parser().parse_args(argv))
    except Refused as refusal:
        print(f"insights: {refusal}", file=sys.stderr)
        return 2
    except DATABASE_ERRORS as error:  # down, refusing us, or no such database
        print(f"insights: the database ({describe(settings)}) failed: {one_line(settings, error)}", file=sys.stderr)
        return 2
    except REDIS_ERRORS as error:
        print(f"insights: Redis ({mask_url(settings.redis_url)}) failed: {one_line(settings, error)}", file=sys.stderr)
        return 2


def one_line(settings: Settings, error: Exception) -> str:
    """:func:`first_line` of ``error``, without a password."""
    return mask_url(settings.redact(first_line(error)))


def dispatch(settings: Settings, args: argparse.Namespace) -> int:
    """Check the command's arguments, open the data it works on, and run it."""
    command: Command = args.command
    try:
        if command.check:
            command.check(settings, args)
    except Usage as error:
        print(usage_line(f"insights {command.name}", str(error)), end="", file=sys.stderr)
        return 2
    if command.uses_data:
        open_data(settings, command, args)
    return command.handler(settings, args)


def open_data(settings: Settings, command: Command, args: argparse.Namespace) -> None:
    """Say which data the command works on; a writing run may create (when told) and migrate the database,
    any other needs one that exists, with the current schema."""
    announce(settings)
    if command.may_write(args):
        require_database_to_write(settings, args.create_database)
        migrate(open_database(settings))
    else:
        require_database(settings)
        require_current_schema(settings, open_database(settings), tolerate_down=command.reports_down)

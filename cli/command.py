"""What an ``insights`` command is: declared once, above its handler, with everything the generic parser
and dispatcher (``cli.commands``) need to know about it.

    @command("bulk show", "one provider batch", argument("batch_id", type=sql_text))
    def show(settings: Settings, args: Namespace) -> int:
        ...

The decorator turns the handler into a :class:`Command`; ``cli.commands.COMMANDS`` lists them all.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from settings import Settings

Handler = Callable[[Settings, argparse.Namespace], int]
Check = Callable[[Settings, argparse.Namespace], None]
Writes = Callable[[argparse.Namespace], bool]


class Usage(Exception):
    """Bad usage found after parsing (a check of the command's own): said in one line, exit status 2."""


@dataclass(frozen=True)
class Argument:
    """One ``add_argument`` call, kept as data until the parser is built."""

    flags: tuple[str, ...]
    options: dict[str, Any]

    def add_to(self, parser: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup) -> None:
        parser.add_argument(*self.flags, **self.options)


def argument(*flags: str, **options: Any) -> Argument:
    """An argument as ``argparse.ArgumentParser.add_argument`` takes it."""
    return Argument(flags, options)


@dataclass(frozen=True)
class OneOf:
    """Arguments of which exactly one must be given."""

    arguments: tuple[Argument, ...]

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        group = parser.add_mutually_exclusive_group(required=True)
        for each in self.arguments:
            each.add_to(group)


CREATE_DATABASE = argument(
    "--create-database", action="store_true", help="create the SQLite file at DB_PATH if there is none"
)


@dataclass(frozen=True)
class Command:
    """An ``insights`` command.

    ``name`` is one word, or a group and an action (``dlq list``); ``summary`` is its line in ``insights
    --help``. ``check`` refuses what argparse cannot (raising :class:`Usage`), before any data is touched.
    ``writes``, when given, says whether this run may create the database (with ``--create-database``,
    which the command then takes) and migrate it; without it the command reads a database that exists, with
    the current schema. ``uses_data=False``: a command that touches neither the database nor Redis.
    ``reports_down``: a database that does not answer is for the command to report (``stats``), not an error.
    """

    name: str
    summary: str
    handler: Handler
    arguments: tuple[Argument | OneOf, ...] = ()
    check: Check | None = None
    writes: Writes | None = None
    uses_data: bool = True
    reports_down: bool = False

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        for each in self.arguments:
            each.add_to(parser)
        if self.writes is not None:
            CREATE_DATABASE.add_to(parser)

    def may_write(self, args: argparse.Namespace) -> bool:
        return self.writes is not None and self.writes(args)


def command(
    name: str,
    summary: str,
    *arguments: Argument | OneOf,
    check: Check | None = None,
    writes: Writes | None = None,
    uses_data: bool = True,
    reports_down: bool = False,
) -> Callable[[Handler], Command]:
    """Declare the handler below as the command ``name`` (see :class:`Command`)."""

    def declare(handler: Handler) -> Command:
        return Command(name, summary, handler, arguments, check, writes, uses_data, reports_down)

    return declare


def always(_args: argparse.Namespace) -> bool:
    """``writes=always``: every run of the command may write."""
    return True

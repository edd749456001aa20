"""What every ``insights`` command shares: the arguments several take, saying which data it works on,
refusing to invent a database, asking before a large change, and where its output goes."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import IO, NoReturn

from peewee import Database, PeeweeException

from cli.command import Usage, argument
from settings import Settings
from settings.secrets import mask_url
from store.db import describe
from store.migrations import pending
from store.queries import parse_db_time

CONFIRM_ABOVE = 1000  # conversations a command changes without asking


MAX_LIMIT = 1_000_000  # the largest --limit (SQLite refuses an integer past 64 bits, with a traceback)


class Refused(Exception):
    """A command that must not go on: its message is printed in one line, and the exit status is 2."""


def usage_line(prog: str, message: str) -> str:
    """Bad usage of ``prog``, said in one line that points to its help."""
    return f"{prog}: {message} (see {prog} --help)\n"


class OneLineParser(argparse.ArgumentParser):
    """argparse, with bad usage said in one line (exit status 2) rather than the usage and then the error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, usage_line(self.prog, message))


def parse_time(text: str) -> datetime:
    """ISO-8601, no offset meaning UTC, as stored (naive UTC)."""
    try:
        return parse_db_time(text)
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


def limit_argument(text: str) -> int:
    """``--limit``: a whole number from 1 to :data:`MAX_LIMIT`."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_LIMIT:,}, not {text}")
    return value


START = argument("--start", type=parse_time, required=True, help="occurred at or after")
END = argument("--end", type=parse_time, required=True, help="occurred before")
JSON = argument("--json", action="store_true", help="one JSON document a line")


def later_end(_settings: Settings, args: argparse.Namespace) -> None:
    """The check of a command that takes a window: it must not be empty."""
    if args.end <= args.start:
        raise Usage("--end must be later than --start")


def announce(settings: Settings) -> None:
    """Say on stderr which database and which Redis the command works on (never their passwords)."""
    print(f"insights: database {describe(settings)}; Redis {mask_url(settings.redis_url)}", file=sys.stderr)


def database_missing(settings: Settings) -> bool:
    """Whether the configured database is a SQLite file that does not exist (a PostgreSQL database that does
    not exist is refused by the server at the first connection)."""
    return not settings.database_url and not Path(settings.db_path).exists()


def require_database(settings: Settings) -> None:
    """A read-only command never creates a database: a missing SQLite file is an error naming it."""
    if database_missing(settings):
        raise Refused(
            f"no database at {settings.db_path} (DB_PATH); nothing to read. Set DB_PATH or DATABASE_URL, "
            "or import conversations first"
        )


def require_database_to_write(settings: Settings, create: bool) -> None:
    """A writing command creates a database only when told to: a mistyped ``DB_PATH`` would otherwise
    receive an import that no worker can see (they read the real database, and drop ids they do not find)."""
    if database_missing(settings) and not create:
        raise Refused(
            f"no database at {settings.db_path} (DB_PATH); set DB_PATH or DATABASE_URL, "
            "or add --create-database to create it"
        )


def require_current_schema(settings: Settings, db: Database, tolerate_down: bool = False) -> None:
    """A reading command migrates nothing: a database without the current schema (empty, another
    application's, or an older release's) is refused. ``tolerate_down``: a database that does not answer
    is for the command to report (``stats``)."""
    try:
        missing = pending(db)
    except PeeweeException:
        if tolerate_down:
            return
        raise
    if missing:
        what = (
            f"has an older schema (missing {', '.join(missing)})"
            if db.table_exists("conversations")
            else "holds no Conversation Insights tables"
        )
        raise Refused(f"the database ({describe(settings)}) {what}; run 'python -m store.migrations' against it first")


def confirm(question: str, assume_yes: bool) -> None:
    """Ask ``question`` on the terminal; without one, only ``--yes`` lets the command go on."""
    if assume_yes:
        return
    if not sys.stdin.isatty():
        raise Refused(f"{question} Not asking without a terminal: add --yes to go ahead")
    try:
        answer = input(f"{question} [y/N] ").strip().lower()
    except (KeyboardInterrupt, EOFError):  # Ctrl-C or Ctrl-D is a no, without a traceback
        print(file=sys.stderr)
        answer = ""
    if answer not in ("y", "yes"):
        raise Refused("not confirmed; nothing changed")


def output_file(path: Path | None) -> contextlib.AbstractContextManager[IO[str]]:
    """``path`` opened for writing, or standard output (left open when done)."""
    return open(path, "w", newline="") if path else contextlib.nullcontext(sys.stdout)


def print_documents(documents: list[dict], as_json: bool, header: str, row: Callable[[dict], str]) -> None:
    """One JSON document a line for scripts, or a tab-separated header row and a row each for people."""
    if as_json:
        for document in documents:
            print(json.dumps(document))
        return
    print(header)
    for document in documents:
        print(row(document))


_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def table_row(*fields: object) -> str:
    """A row for people: the fields joined by tabs, each with its backslashes, tabs and line breaks
    escaped (``\\t``, ``\\n``), so that a provider's message in ``last_error`` cannot print what looks like
    another row or column. ``None`` is an empty field."""
    return "\t".join("" if field is None else str(field).translate(_ESCAPES) for field in fields)


def chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk

"""The CLI fails in one line, exit status 2, never with a traceback, and creates no database by mistake:
a writing command refuses a SQLite file that does not exist unless told to create it; an output that is a
folder, a limit SQLite cannot hold, a database that is down or does not exist are each one line. Real
commands as subprocesses, on real Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from support import ROOT, free_port
from support.cli import INSIGHTS, announced, line, migrated, run, write_lines

WINDOW = ("--start", "2026-01-01", "--end", "2026-01-02")
READING = [
    ["stats"],
    ["export", *WINDOW],
    ["report", *WINDOW, "--output", "out.html"],
    ["counts"],
    ["conversations", "list"],
    ["clusters", "suggest", *WINDOW],
    ["reprocess", "--failed", "--dry-run"],
    ["dlq", "list"],
    ["bulk", "list"],
]


def test_a_writing_command_creates_no_database_unless_told(make_stack, tmp_path):
    """A mistyped ``DB_PATH`` would receive an import no worker sees; it is refused, naming the path."""
    missing = tmp_path / "typo" / "conversations.db"
    stack = make_stack(DB_PATH=str(missing))
    write_lines(tmp_path / "one.jsonl", [line("hello", conversation_id="one")])
    importing = ["import", str(tmp_path / "one.jsonl"), "--no-progress"]
    for command in (importing, ["reprocess", "--failed", "--yes"], ["counts", "--rebuild"]):
        refused = run(stack, *command)
        assert refused.returncode == 2, command
        assert announced(refused.stderr) == [
            f"insights: no database at {missing} (DB_PATH); set DB_PATH or DATABASE_URL, "
            "or add --create-database to create it"
        ]
        assert not missing.parent.exists(), "not even its folder"
    created = run(stack, *importing, "--create-database")
    assert created.returncode == 0, created.stderr
    assert stack.sql("SELECT id FROM conversations") == [("one",)]
    assert run(stack, *importing).returncode == 0, "once it exists, no flag is needed"


def test_an_output_that_is_a_folder_is_one_line(make_stack, tmp_path):
    stack = migrated(make_stack())
    for folder in (".", "/", str(tmp_path)):
        refused = run(stack, "report", *WINDOW, "--output", folder, cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.splitlines() == [
            f"insights: report --output {folder} is a folder; name the HTML file to write"
        ]


def test_a_limit_sqlite_cannot_hold_is_one_line(make_stack):
    stack = migrated(make_stack())
    for command in (["clusters", "suggest", *WINDOW], ["conversations", "list"]):
        refused = run(stack, *command, "--limit", "99999999999999999999")
        assert refused.returncode == 2
        assert refused.stderr.splitlines() == [
            f"insights {command[0]} {command[1]}: argument --limit: expected 1 to 1,000,000, "
            f"not 99999999999999999999 (see insights {command[0]} {command[1]} --help)"
        ]


def test_a_commands_own_check_is_one_line_before_any_data(make_stack, tmp_path):
    """What argparse cannot check, each command checks (as it declares) before it names or touches any data:
    one line that points to the command's own help."""
    missing = tmp_path / "none.db"
    stack = make_stack(DB_PATH=str(missing))
    for name, args, said in (
        ("dlq requeue", [], "give message ids or --all"),
        ("export", ["--start", "2026-01-02", "--end", "2026-01-01"], "--end must be later than --start"),
        ("import", ["absent.jsonl"], f"no such file: absent.jsonl (paths are relative to {tmp_path})"),
        ("apikey", ["--scopes", "root"], "--scopes: choose among admin, ingest, read"),
    ):
        refused = run(stack, *name.split(), *args, cwd=tmp_path)
        assert refused.returncode == 2, name
        assert refused.stderr.splitlines() == [f"insights {name}: {said} (see insights {name} --help)"]
    assert not missing.exists()


def assert_one_line_each(stack, tmp_path, expected: str) -> None:
    """Every reading command and ``import`` fail in one line containing ``expected`` (``stats`` reports
    the database as not answering, and the rest of what it reads)."""
    write_lines(tmp_path / "one.jsonl", [line("hello")])
    for command in [*READING, ["import", str(tmp_path / "one.jsonl"), "--no-progress"]]:
        failed = run(stack, *command, cwd=tmp_path)
        assert "Traceback" not in failed.stderr, (command, failed.stderr)
        if command == ["stats"]:
            assert failed.returncode == 0 and "database: NOT ANSWERING (OperationalError: " in failed.stdout
            assert "Is the server running" not in failed.stdout, "psycopg2's hint on its own line: not one line"
            continue
        assert failed.returncode == 2, command
        [said] = announced(failed.stderr)
        assert said.startswith("insights: the database (PostgreSQL at ") and expected in said, said


def test_a_database_that_is_down_is_one_line(make_stack, tmp_path):
    stack = make_stack(DATABASE_URL=f"postgres://insights:pw@127.0.0.1:{free_port()}/insights")
    assert_one_line_each(stack, tmp_path, "Connection refused")


def test_a_database_that_does_not_exist_is_one_line(make_stack, tmp_path, postgres_server_url):
    stack = make_stack(DATABASE_URL=postgres_server_url.rsplit("/", 1)[0] + "/no_such_database_here")
    assert_one_line_each(stack, tmp_path, 'database "no_such_database_here" does not exist')


@pytest.mark.parametrize("url", ["postgres://u:p@[::1/x", "postgres://u:p@db:99999/x"])
def test_a_database_url_that_does_not_parse_is_a_configuration_error(make_stack, url):
    refused = run(make_stack(DATABASE_URL=url), "stats")
    assert refused.returncode == 2
    [said] = refused.stderr.splitlines()
    assert said.startswith("configuration error: DATABASE_URL: expected a URL that parses (") and ":p@" not in said


def test_the_clis_docstring_names_exactly_the_registrys_commands():
    """``cli/__init__.py`` is the CLI's page for a newcomer: a usage line for every command the registry
    holds, and for no other."""
    import cli
    from cli.commands import COMMANDS

    names = {command.name for command in COMMANDS}
    usages = [line.split()[1:3] for line in cli.__doc__.splitlines() if line.startswith("    insights ")]
    documented = [" ".join(words) if " ".join(words) in names else words[0] for words in usages]
    assert sorted(documented) == sorted(names)


@pytest.mark.processes
def test_the_help_lists_every_command_with_its_summary():
    """``insights --help`` is made from the registry: each command on a line of its own, with its summary."""
    from cli.commands import COMMANDS

    shown = subprocess.run(
        [str(INSIGHTS), "--help"],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    listed = [
        re.fullmatch(r"  (.+?)  +(.+)", line).groups() for line in shown.stdout.split("\ncommands:\n")[1].splitlines()
    ]
    assert listed == [(command.name, command.summary) for command in COMMANDS]

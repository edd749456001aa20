"""A CLI that cannot point at the wrong data: it says what it works on, never invents a database, takes
paths from where it runs (``scripts/insights`` too), reads standard input, and asks before large changes;
``--json`` for scripts. Real commands as subprocesses, on real Redis and SQLite."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import time

from support import ROOT
from support.cli import INSIGHTS, announced, line, migrated, run, write_lines

BOM = "\ufeff"


def test_reading_commands_never_create_a_database(make_stack, tmp_path):
    stack = make_stack(DB_PATH=str(tmp_path / "nothing-here.db"))
    for command in (
        ["stats"],
        ["export", "--start", "2026-01-01", "--end", "2026-02-01"],
        ["counts"],
        ["conversations", "list"],
        ["reprocess", "--failed", "--dry-run"],
        ["dlq", "list"],
    ):
        refused = run(stack, *command)
        assert refused.returncode == 2, command
        assert announced(refused.stderr) == [
            f"insights: no database at {tmp_path / 'nothing-here.db'} (DB_PATH); nothing to read. "
            "Set DB_PATH or DATABASE_URL, or import conversations first"
        ]
        assert not (tmp_path / "nothing-here.db").exists(), command


def test_reading_commands_migrate_nothing(make_stack, tmp_path, database_env):
    """An existing database without our schema (an empty file, an empty PostgreSQL database, another
    application's) is refused by a reading command, which creates no table in it."""
    on_sqlite = not database_env.get("DATABASE_URL")
    if on_sqlite:
        database_env = {**database_env, "DB_PATH": str(tmp_path / "empty.db")}
        (tmp_path / "empty.db").touch()
    stack = make_stack(**database_env)
    for command in (
        ["stats"],
        ["conversations", "list"],
        ["dlq", "list"],
        ["export", "--start", "2026-01-01", "--end", "2026-02-01"],
    ):
        refused = run(stack, *command)
        assert refused.returncode == 2, (command, refused.stderr)
        assert (
            "holds no Conversation Insights tables; run 'python -m store.migrations' against it first" in refused.stderr
        )
    tables = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if on_sqlite
        else "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    assert stack.sql(tables) == [], "no table created"


def test_paths_are_the_callers_and_every_command_says_what_it_uses(make_stack, tmp_path):
    stack = migrated(make_stack())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_lines(elsewhere / "mine.jsonl", [line("Hello from another folder", conversation_id="from-elsewhere")])
    for script in (False, True):
        done = run(stack, "import", "mine.jsonl", "--no-progress", cwd=elsewhere, script=script)
        assert done.returncode == 0, done.stderr
        first = done.stderr.splitlines()[0]
        assert first == f"insights: database SQLite at {stack.env['DB_PATH']}; Redis {stack.env['REDIS_URL']}"
    assert not (elsewhere / "data").exists(), "nothing created where the command ran"
    missing = run(stack, "import", "absent.jsonl", cwd=elsewhere, script=True)
    assert (
        missing.returncode == 2 and f"no such file: absent.jsonl (paths are relative to {elsewhere})" in missing.stderr
    )


def test_import_reads_standard_input_accepts_a_bom_and_numbers_conflicts(make_stack):
    stack = migrated(make_stack())
    stdin = (
        "\n".join(
            [
                BOM + json.dumps(line("first, after a BOM", conversation_id="bom-1")),
                json.dumps(line("second", conversation_id="bom-2")),
                json.dumps(line("second, changed", conversation_id="bom-2")),
            ]
        )
        + "\n"
    )
    done = run(stack, "import", "-", "--no-progress", stdin=stdin)
    assert done.returncode == 1 and "-: 2 accepted, 0 already there, 1 conflicting, 0 invalid" in done.stdout
    assert announced(done.stderr) == [
        "line 3: conversation bom-2 was already accepted with a different payload, skipped"
    ]


def test_large_changes_ask_first_and_refuse_without_a_terminal(make_stack, tmp_path):
    stack = migrated(make_stack())
    write_lines(tmp_path / "many.jsonl", [line(f"conversation {n}") for n in range(1001)])
    assert run(stack, "import", str(tmp_path / "many.jsonl"), "--no-progress").returncode == 0
    stack.sql("UPDATE conversations SET status = 'failed', last_error = 'injected'")
    refused = run(stack, "reprocess", "--failed")
    assert refused.returncode == 2
    assert announced(refused.stderr) == [
        "insights: Send 1001 conversations through analysis again? Not asking without a terminal: add --yes to go ahead"
    ]
    assert stack.sql("SELECT COUNT(*) FROM conversations WHERE status = 'failed'") == [(1001,)], "nothing changed"
    assert run(stack, "reprocess", "--failed", "--dry-run").returncode == 0, "a dry run needs no answer"
    assert run(stack, "reprocess", "--failed", "--yes").stdout.startswith("sent 1001")
    assert stack.sql("SELECT COUNT(*) FROM conversations WHERE status = 'queued'") == [(1001,)]

    plant_dead_letter(stack)
    purge = run(stack, "dlq", "purge", "--all")
    assert purge.returncode == 2 and "Purge all 1 dead letters, for good? Not asking without a terminal" in purge.stderr
    assert stack.redis.zcard("insights:analyze.XQ") == 1
    assert (
        run(stack, "dlq", "purge", "--all", "--yes").returncode == 0 and stack.redis.zcard("insights:analyze.XQ") == 0
    )


def plant_dead_letter(stack) -> None:
    """A dead analysis message, as Dramatiq leaves one after its last retry."""
    message = {
        "queue_name": "analyze",
        "actor_name": "analyze_batch",
        "args": [["planted"]],
        "kwargs": {},
        "options": {},
        "message_id": "dead-1",
        "message_timestamp": int(time.time() * 1000),
    }
    stack.redis.zadd("insights:analyze.XQ", {"dead-1": time.time() * 1000})
    stack.redis.hset("insights:analyze.XQ.msgs", "dead-1", json.dumps(message))


def test_json_for_scripts_and_a_header_row_for_people(make_stack, tmp_path):
    stack = migrated(make_stack())
    write_lines(tmp_path / "two.jsonl", [line("one", conversation_id="one"), line("two", conversation_id="two")])
    run(stack, "import", str(tmp_path / "two.jsonl"), "--no-progress")
    stack.sql("UPDATE conversations SET status = 'failed', last_error = 'the answer was truncated' WHERE id = 'two'")
    plant_dead_letter(stack)

    stats = json.loads(run(stack, "stats", "--json").stdout)
    assert stats["conversations"] == {"queued": 1, "processing": 0, "completed": 0, "failed": 1}
    assert (
        stats["queues"]["analyze"] == {"waiting": 0, "delayed": 0, "dead": 1} and stats["grok"]["state"] == "available"
    )
    [letter] = [json.loads(text) for text in run(stack, "dlq", "list", "--json").stdout.splitlines()]
    assert (letter["id"], letter["conversation_ids"]) == ("dead-1", ["planted"])
    listed = [
        json.loads(text)
        for text in run(stack, "conversations", "list", "--status", "failed", "--json").stdout.splitlines()
    ]
    assert [(c["conversation_id"], c["last_error"]) for c in listed] == [("two", "the answer was truncated")]
    assert run(stack, "conversations", "list", "--reason", "TRUNC").stdout.splitlines() == [
        "conversation_id\tstatus\tattempts\toccurred_at\tlast_error",
        f"two\tfailed\t0\t{listed[0]['occurred_at']}\tthe answer was truncated",
    ]
    assert run(stack, "dlq", "list").stdout.splitlines()[0] == "queue\tid\tactor\tdead_at\tconversations\treason"
    assert "  queue       waiting delayed dead" in run(stack, "stats").stdout


def test_ctrl_c_at_the_question_is_a_no_without_a_traceback(make_stack):
    """At a terminal the command asks; Ctrl-C (SIGINT) there answers no: one line, exit status 2."""
    stack = make_stack()
    migrated(stack)
    plant_dead_letter(stack)
    primary, secondary = pty.openpty()
    env = {**os.environ, **stack.env}
    process = subprocess.Popen(
        [str(INSIGHTS), "dlq", "purge", "--all"],
        cwd=ROOT,
        env=env,
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=as_at_a_terminal,
    )
    os.close(secondary)
    try:
        prompt = process.stdout.read(len("Purge all 1 dead letters"))
        assert prompt == "Purge all 1 dead letters"
        err = interrupted(process)
    finally:
        os.close(primary)
    assert process.returncode == 2, err
    assert "Traceback" not in err and "not confirmed; nothing changed" in err
    assert stack.redis.zcard("insights:analyze.XQ") == 1


def as_at_a_terminal() -> None:
    """Ctrl-C as a shell at a terminal leaves it to the command: a test run in the background (``pytest &``)
    ignores SIGINT, and a child inherits that, so Python would install no handler for it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupted(process: subprocess.Popen) -> str:
    """Ctrl-C at the question; its stderr once it has ended. A SIGINT that lands between the prompt's flush
    and the read that follows (inside Python's ``input``) is held until the next bytecode, which never comes
    while the read waits: a person's Ctrl-C comes later, as a second one here does if the first was lost."""
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=10)[1]
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        return process.communicate(timeout=30)[1]


def test_a_bad_configuration_is_one_line_and_exit_status_2(make_stack):
    stack = make_stack(MAX_RETRIES="zero")
    refused = run(stack, "stats")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "configuration error: MAX_RETRIES: Input should be a valid integer, "
        "unable to parse string as an integer (got 'zero')"
    ]


def test_a_row_for_people_escapes_tabs_and_line_breaks(make_stack, tmp_path):
    """A provider's message in ``last_error`` cannot print what looks like another row or column."""
    stack = migrated(make_stack())
    write_lines(tmp_path / "one.jsonl", [line("one", conversation_id="one")])
    run(stack, "import", str(tmp_path / "one.jsonl"), "--no-progress")
    stack.sql("UPDATE conversations SET status = 'failed', last_error = ? WHERE id = 'one'", "bad row\n2\tfailed\r\\n")
    [header, row] = run(stack, "conversations", "list").stdout.splitlines()
    assert row.split("\t")[:3] == ["one", "failed", "0"] and row.endswith("\tbad row\\n2\\tfailed\\r\\\\n")
    [listed] = [json.loads(text) for text in run(stack, "conversations", "list", "--json").stdout.splitlines()]
    assert listed["last_error"] == "bad row\n2\tfailed\r\\n", "--json keeps the text as it is"

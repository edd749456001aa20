"""The ``insights`` console script against a real stack: import, stats, export, reprocess, history."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from support import ROOT, wait_until
from support.cli import INSIGHTS, announced, insights, migrated, write_lines


def test_import_export_reprocess_and_stats(make_stack, tmp_path, database_env):
    stack = make_stack(BATCH_SIZE=10, BATCH_FLUSH_SECONDS=0.3, **database_env)
    client = stack.start_web()
    window = (
        (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    )
    source = tmp_path / "conversations.jsonl"
    good = [
        {"messages": [{"role": "customer", "content": f"Order {n} arrived broken, I want a refund."}]}
        for n in range(25)
    ]
    write_lines(
        source, [*good[:10], "{not json", {"messages": []}, "", {"conversation_id": "named", **good[0]}, *good[10:]]
    )

    first = insights(stack, "import", str(source))
    assert first.returncode == 1, "bad lines make the exit status say so"
    assert "line 11:" in first.stderr and "line 12: messages" in first.stderr
    assert "26 accepted, 0 already there, 0 conflicting, 2 invalid, 1 blank" in first.stdout
    again = insights(stack, "import", str(source), "--no-progress")
    assert "0 accepted, 26 already there" in again.stdout, "safe to run twice"

    stats = insights(stack, "stats")
    assert stats.returncode == 0 and "queued      26" in stats.stdout and "oldest waiting" in stats.stdout

    stack.start_worker()
    ids = [row[0] for row in stack.sql("SELECT id FROM conversations")]
    assert {d["status"] for d in stack.settled(client, ids)} == {"completed"}

    exported = insights(stack, "export", "--start", window[0], "--end", window[1])
    rows = [json.loads(line) for line in exported.stdout.splitlines()]
    assert len(rows) == 26 and {r["conversation_id"] for r in rows} == set(ids)
    assert all(r["sentiment"] == "negative" and "billing" in r["clusters"] for r in rows)
    as_csv = list(
        csv.DictReader(
            io.StringIO(insights(stack, "export", "--start", window[0], "--end", window[1], "--format", "csv").stdout)
        )
    )
    assert len(as_csv) == 26 and as_csv[0]["clusters"].split(";")[0]

    dry = insights(stack, "reprocess", "--start", window[0], "--end", window[1], "--dry-run")
    assert "would send 26 conversation(s)" in dry.stdout
    assert stack.sql("SELECT COUNT(*) FROM insight_history")[0][0] == 0
    done = insights(stack, "reprocess", "--start", window[0], "--end", window[1])
    assert "sent 26 conversation(s)" in done.stdout

    def reanalyzed():
        return stack.sql("SELECT COUNT(*) FROM insight_history")[0][0] == 26 and stack.settled(client, ids)

    wait_until(reanalyzed, timeout=60, message="every conversation analyzed a second time")
    assert stack.sql("SELECT COUNT(*) FROM insights")[0][0] == 26, "the API shows the latest, one per conversation"
    assert stack.sql("SELECT COUNT(DISTINCT conversation_id) FROM insight_history")[0][0] == 26

    checked = insights(stack, "counts")
    assert checked.returncode == 0 and "0 row(s) differ" in checked.stdout, "reprocessing moved the daily counts along"
    stack.sql("UPDATE insights SET confidence = 0.0 RETURNING conversation_id")  # behind the store's back
    drifted = insights(stack, "counts")
    assert drifted.returncode == 1 and "insights counts --rebuild" in drifted.stdout
    assert insights(stack, "counts", "--rebuild").returncode == 0
    assert insights(stack, "counts").returncode == 0


def test_reprocess_failed_and_bad_usage(make_stack, tmp_path):
    stack = migrated(make_stack())
    assert insights(stack, "reprocess", "--failed", "--dry-run").stdout.startswith("would send 0")
    assert insights(stack, "reprocess", "--start", "2026-01-02", "--end", "2026-01-01").returncode == 2
    assert insights(stack, "export", "--start", "yesterday", "--end", "2026-01-01").returncode == 2
    beyond = insights(stack, "export", "--start", "0001-01-01T00:00:00+05:00", "--end", "2026-01-01")
    assert beyond.returncode == 2 and "outside years 1 to 9999" in beyond.stderr
    assert insights(stack, "import", str(tmp_path / "missing.jsonl")).returncode == 2
    assert "no dead letters" in insights(stack, "dlq", "list").stdout


def test_an_output_file_that_cannot_be_opened_is_one_line(make_stack, tmp_path):
    stack = migrated(make_stack())
    target = tmp_path / "missing" / "dir" / "x.csv"
    finished = insights(stack, "export", "--start", "2026-01-01", "--end", "2026-01-02", "--output", str(target))
    assert finished.returncode == 2
    assert announced(finished.stderr) == [f"insights export: cannot write {target}: No such file or directory"]


@pytest.mark.parametrize(
    "command",
    [["stats"], ["export", "--start", "2026-01-01", "--end", "2027-01-01", "--format", "csv"], ["dlq", "list"]],
)
def test_a_reader_that_stops_early_ends_the_command_quietly(make_stack, command):
    stack = migrated(make_stack())
    env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [str(INSIGHTS), *command], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    process.stdout.close()  # the reader is gone before the command writes anything (`insights stats | head -c 0`)
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1
    assert announced(stderr) == [], "no traceback, no complaint"


def test_import_keeps_lines_without_an_id_apart_and_adds_nothing_twice(make_stack, tmp_path):
    """Three customers who wrote the same words are three conversations; the same file imported again
    (grown at its end, or from standard input) adds only its new lines, and the summary says why."""
    stack = migrated(make_stack())
    same = {"messages": [{"role": "customer", "content": "Where is my order?"}]}
    source = tmp_path / "a.jsonl"
    write_lines(source, [same, same, {"conversation_id": "named", **same}, same])
    first = insights(stack, "import", "--no-progress", str(source))
    assert first.stdout.splitlines() == [
        f"{source}: 4 accepted, 0 already there, 0 conflicting, 0 invalid, 0 blank line(s)"
    ]
    assert stack.sql("SELECT COUNT(*) FROM conversations") == [(4,)]
    again = insights(stack, "import", "--no-progress", str(source))
    assert again.stdout.splitlines() == [
        f"{source}: 0 accepted, 4 already there (3 line(s) imported before (the same text after "
        "the same lines), 1 conversation_id(s) accepted before with the same payload), "
        "0 conflicting, 0 invalid, 0 blank line(s)"
    ]
    write_lines(source, [same, same, {"conversation_id": "named", **same}, same, same])
    grown = insights(stack, "import", "--no-progress", str(source))
    assert grown.stdout.startswith(f"{source}: 1 accepted, 4 already there")
    env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT)}
    piped = subprocess.run(
        [str(INSIGHTS), "import", "-", "--no-progress"],
        cwd=ROOT,
        env=env,
        input=source.read_text().replace("\n", "\r\n"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert piped.stdout.startswith("-: 0 accepted, 5 already there"), piped.stdout + piped.stderr
    assert stack.sql("SELECT COUNT(*) FROM conversations") == [(5,)]

"""Input that once reached a 5xx or a traceback: each is a 4xx with the usual JSON body (or a reported bad
line), on SQLite and PostgreSQL, against a real web process and the real ``insights`` command."""

from __future__ import annotations

import base64
import json

import pytest
from support.cli import insights, write_lines
from support.traffic import conversation

OVERFLOWING_TIMES = ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+05:00")


def with_timestamp(moment: str) -> dict:
    return {"messages": [{"role": "customer", "content": "hello", "timestamp": moment}]}


def cursor_of(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode() if not isinstance(value, bytes) else value).decode()


@pytest.fixture
def stack(make_stack, database_env):
    stack = make_stack(INBOUND_RPS=10_000, **database_env)
    stack.client = stack.start_web()
    return stack


def error_of(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


def test_a_timestamp_whose_offset_leaves_the_calendar_is_a_field_error(stack):
    for moment in OVERFLOWING_TIMES:
        error = error_of(
            stack.client.post("/api/v1/conversations", json=with_timestamp(moment)), 422, "validation_failed"
        )
        assert (
            error["fields"][0]["path"] == "messages.0.timestamp" and "years 1 to 9999" in error["fields"][0]["message"]
        )
        batch = stack.client.post(
            "/api/v1/conversations/batch", json={"conversations": [with_timestamp(moment), conversation()]}
        )
        assert batch.status_code == 200, batch.text
        assert [r["status"] for r in batch.json()["results"]] == ["invalid", "accepted"]


def test_ids_and_cursors_that_no_answer_contained_are_refused_before_the_database(stack):
    assert error_of(stack.client.get("/api/v1/conversations/abc%00def"), 404, "not_found")
    assert error_of(stack.client.get("/api/v1/conversations/" + "x" * 300), 404, "not_found")
    window = {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T00:00:00Z"}
    nested = b"[" * 5_000 + b"]" * 5_000  # deeper than json.loads can recurse
    for cursor in (
        cursor_of(nested),
        cursor_of(["2026-01-01T00:00:00", "abc\x00def"]),
        cursor_of(["2026-01-01", 7]),
        cursor_of(["0001-01-01T00:00:00+05:00", "abc"]),
        cursor_of({"a": 1}),
        "%%%",
        cursor_of("x\x00"),
    ):
        error = error_of(
            stack.client.get("/api/v1/insights", params={**window, "cursor": cursor}), 400, "invalid_parameter"
        )
        assert error["parameter"] == "cursor"
    good = cursor_of(["2026-01-01T00:00:00", "conv_1"])
    assert stack.client.get("/api/v1/insights", params={**window, "cursor": good}).status_code == 200
    for name in ("start_time", "end_time"):
        error = error_of(
            stack.client.get("/api/v1/insights", params={**window, name: "2026-01-01\x00"}), 400, "invalid_parameter"
        )
        assert error["parameter"] == name


def test_import_reports_an_overflowing_timestamp_and_keeps_the_other_lines(stack, tmp_path):
    source = tmp_path / "lines.jsonl"
    write_lines(source, [conversation("first line"), with_timestamp(OVERFLOWING_TIMES[0]), conversation("third line")])
    result = insights(stack, "import", str(source), "--no-progress")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "line 2: messages.0.timestamp" in result.stderr
    assert "2 accepted" in result.stdout
    assert stack.sql("SELECT COUNT(*) FROM conversations")[0][0] == 2


@pytest.mark.parametrize(
    "number, shown", [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf"), ("1e999", "inf")]
)
def test_numbers_json_cannot_hold_are_refused_not_stored_as_null(stack, number, shown):
    body = '{"messages": [{"role": "customer", "content": "hi"}], "metadata": {"scores": [1, {"x": NUMBER}]}}'
    body = body.replace("NUMBER", number)
    error = error_of(
        stack.client.post("/api/v1/conversations", content=body, headers={"content-type": "application/json"}),
        400,
        "invalid_json",
    )
    assert f"metadata.scores.1.x is {shown}" in error["message"]
    batch = stack.client.post(
        "/api/v1/conversations/batch",
        content='{"conversations": [' + body + "]}",
        headers={"content-type": "application/json"},
    )
    assert batch.json()["results"][0]["status"] == "invalid"
    assert stack.sql("SELECT COUNT(*) FROM conversations")[0][0] == 0


WINDOW = {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-02T00:00:00Z"}


def query_parameters(document: dict) -> list[tuple[str, str, str, list[str]]]:
    """``(method, path, parameter, the operation's other query parameters)`` of every query parameter the
    API documents, each path parameter filled in."""
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            found += [(method, path.replace("{conversation_id}", "some-id"), name, names) for name in names]
    return found


def test_a_nul_in_any_query_parameter_is_a_400_naming_it(stack):
    """psycopg2 refuses a NUL in a string (a 500 on PostgreSQL, once for ``reason``): no parameter may
    carry one to SQL, whichever it is, now or added later."""
    parameters = query_parameters(stack.client.get("/openapi.json").json())
    assert {"reason", "cluster", "cursor", "status", "lane"} <= {name for _m, _p, name, _o in parameters}
    for method, path, name, others in parameters:
        for value in ("\x00", "a\x00b"):
            params = {**{n: WINDOW[n] for n in others if n in WINDOW}, name: value}
            answer = stack.client.request(
                method, path, params=params, json=conversation("nul") if method == "post" else None
            )
            assert error_of(answer, 400, "invalid_parameter")["parameter"] == name, (method, path, value)


def test_a_nul_in_any_text_of_a_body_is_kept_as_sent(stack):
    """The body's texts reach the database only inside its canonical JSON, where a NUL is ``\\u0000``."""
    body = {"messages": [{"role": "cust\x00omer", "content": "NUL \x00 here"}], "metadata": {"k\x00": ["v\x00"]}}
    for conversation_id in ("nul-single", "nul-batched"):
        sent = {**body, "conversation_id": conversation_id}
        answer = (
            stack.client.post("/api/v1/conversations", json=sent)
            if conversation_id == "nul-single"
            else stack.client.post("/api/v1/conversations/batch", json={"conversations": [sent]})
        )
        assert answer.status_code in (200, 202) and "accepted" in answer.text, answer.text
        stored = stack.client.get(f"/api/v1/conversations/{conversation_id}", params={"include": "payload"}).json()
        assert stored["payload"]["messages"] == [{**body["messages"][0], "timestamp": None}]
        assert stored["payload"]["metadata"] == body["metadata"]


def test_cli_text_that_no_database_can_hold_is_refused_in_one_line(stack):
    """Bytes that are not UTF-8 in an argument reach Python as lone surrogates, which neither database
    driver can encode: the command names the argument and stops (exit 2) before any SQL."""
    for args, name in (
        (["conversations", "list", "--reason", "r\udcffsum"], "--reason"),
        (["bulk", "show", "pb_\udcff"], "batch_id"),
        (["bulk", "cancel", "pb_\udcff"], "batch_id"),
    ):
        result = insights(stack, *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"argument {name}: not UTF-8 text" in result.stderr

"""Personal data leaves masked, on real processes against the xAI emulator: what the emulator received in
either lane holds no original value of a generated evaluation sample; a conversation whose masking fails is
failed, never sent, and its neighbours complete; ``include=sent`` and ``insights conversations show --sent``
show the masked text; the prompt version says whether masking was on."""

from __future__ import annotations

import json
import os
import subprocess

from support import ROOT, wait_until
from support.cli import INSIGHTS

from benchmarks.bench_pii import samples
from insights.grok import GrokClient
from settings import config_path, load_settings

FAST = {"BATCH_SIZE": 5, "BATCH_FLUSH_SECONDS": 0.3, "MAX_RETRIES": 2, "BACKOFF_SECONDS": 0.2}
BULK = {"BULK_FLUSH_SECONDS": 0.5, "BULK_TICK_SECONDS": 0.2, "BULK_POLL_SECONDS": 0.3, "BULK_POLL_MAX_SECONDS": 1}
SAMPLES = samples(seed=7, per_locale=1)  # one conversation in each of the thirteen locales


def body(text: str) -> dict:
    return {"messages": [{"role": "customer", "content": text}, {"role": "agent", "content": "Let me check."}]}


def originals() -> set[str]:
    """Every labelled item of the samples, as written in them."""
    return {sample.text[start:end] for sample in SAMPLES for _kind, start, end in sample.items}


def received_text(grok) -> str:
    """Everything the emulator was sent, its JSON strings decoded."""
    bodies = [json.loads(text) for text in grok.control.get("/received").json()]
    assert bodies, "the emulator received nothing"
    return json.dumps(bodies, ensure_ascii=False)


def assert_nothing_leaked(stack, grok) -> None:
    sent = received_text(grok)
    leaked = sorted(value for value in originals() if value in sent)
    assert not leaked, leaked
    assert "[EMAIL_1]" in sent and "[PHONE_1]" in sent
    stored = " ".join(row[0] for row in stack.sql("SELECT raw_response FROM insights"))
    assert not [value for value in originals() if value in stored], "the raw responses hold only masked text"


def insights_cli(stack, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **stack.env, "PYTHONPATH": str(ROOT)}
    command = [str(INSIGHTS), *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_the_real_time_lane_sends_no_original_value_and_operators_see_what_was_masked(make_stack, grok):
    stack = make_stack(**FAST, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    ids = [client.post("/api/v1/conversations", json=body(s.text)).json()["conversation_id"] for s in SAMPLES]
    documents = stack.settled(client, ids)
    assert {d["status"] for d in documents} == {"completed"}, stack.log_text()
    assert_nothing_leaked(stack, grok)
    [(version,)] = stack.sql("SELECT DISTINCT prompt_version FROM insights")
    assert version == GrokClient(load_settings({"GROK_API_KEY": "k"}), None).prompt_version and "-pii" in version

    stats = json.loads(insights_cli(stack, "stats", "--json").stdout)
    labelled = sum(len(s.items) for s in SAMPLES)
    assert {"EMAIL", "PHONE"} <= set(stats["masked"]) and sum(stats["masked"].values()) >= labelled
    metrics = client.get("/metrics").text
    assert f'insights_pii_masked_total{{kind="EMAIL"}} {float(stats["masked"]["EMAIL"])}' in metrics

    shown = client.get(f"/api/v1/conversations/{ids[0]}", params={"include": "sent"}).json()["sent"]
    cli = json.loads(insights_cli(stack, "conversations", "show", ids[0], "--sent").stdout)["sent"]
    assert shown == cli and shown["masking"] is True and shown["failure"] is None
    sent_text = shown["messages"][0]["content"]
    assert "[" in sent_text and sent_text in received_text(grok), "exactly what went to xAI"
    assert not [value for value in originals() if value in sent_text]
    payload = client.get(f"/api/v1/conversations/{ids[0]}", params={"include": "payload"}).json()["payload"]
    assert payload["messages"][0]["content"] == SAMPLES[0].text, "the stored payload stays whole"


def test_the_bulk_lane_sends_no_original_value(make_stack, grok):
    grok.configure(batch_delay=0.2)
    stack = make_stack(**FAST, **BULK, **grok.env)
    client = stack.start_web()
    stack.start_worker()
    answer = client.post(
        "/api/v1/conversations/batch?lane=bulk", json={"conversations": [body(s.text) for s in SAMPLES]}
    )
    ids = [result["conversation_id"] for result in answer.json()["results"]]
    documents = stack.settled(client, ids)
    assert {(d["status"], d["lane"]) for d in documents} == {("completed", "bulk")}, stack.log_text()
    assert not grok.log(), "no real-time call"
    assert_nothing_leaked(stack, grok)


def test_a_conversation_whose_masking_fails_is_not_sent_and_its_neighbours_complete(make_stack, grok, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        config_path({}).read_text().replace("\n[pii_patterns]\n", "\n[pii_patterns]\nbroken = '(?=UNMASKABLE)'\n")
    )
    stack = make_stack(**FAST, **grok.env, CONFIG_FILE=str(config))
    client = stack.start_web()
    stack.start_worker()
    texts = ["Mail me at ann@example.com", "UNMASKABLE: my card is 4111 1111 1111 1111", "Call +44 20 7946 0958"]
    ids = [client.post("/api/v1/conversations", json=body(text)).json()["conversation_id"] for text in texts]
    good, bad, other = stack.settled(client, ids)
    assert (good["status"], bad["status"], other["status"]) == ("completed", "failed", "completed"), stack.log_text()
    assert bad["last_error"].startswith("masking failed: the broken pattern recogniser raised ValueError")
    assert bad["attempts"] == 0, "never sent, no attempt spent"
    sent = received_text(grok)
    assert "UNMASKABLE" not in sent and "4111" not in sent and "[EMAIL_1]" in sent
    shown = client.get(f"/api/v1/conversations/{ids[1]}", params={"include": "sent"}).json()["sent"]
    assert shown["messages"] is None and shown["failure"] == bad["last_error"]


def test_masking_off_sends_the_text_as_it_came_under_another_prompt_version(make_stack):
    on = GrokClient(load_settings({"GROK_API_KEY": "k"}), None)
    off = GrokClient(load_settings({"GROK_API_KEY": "k", "PII_MASKING": "off"}), None)
    assert off.prompt_version != on.prompt_version and on.prompt_version.startswith(off.prompt_version)
    assert off.cache_routing_id != on.cache_routing_id

    stack = make_stack(**FAST, PII_MASKING="off")  # offline: the analyzer masks as Grok's lane would
    client = stack.start_web()
    stack.start_worker()
    [conversation_id] = [
        client.post("/api/v1/conversations", json=body("I am ann@example.com")).json()["conversation_id"]
    ]
    [document] = stack.settled(client, [conversation_id])
    assert document["status"] == "completed", stack.log_text()
    [(version,)] = stack.sql("SELECT DISTINCT prompt_version FROM insights")
    assert "-pii" not in version and version.startswith("offline-1-")
    shown = client.get(f"/api/v1/conversations/{conversation_id}", params={"include": "sent"}).json()["sent"]
    assert shown == {"masking": False, "messages": body("I am ann@example.com")["messages"], "failure": None}


def test_a_bulk_request_whose_every_conversation_fails_masking_is_not_sent(make_stack, grok, tmp_path):
    grok.configure(batch_delay=0.2)
    config = tmp_path / "config.toml"
    config.write_text(
        config_path({}).read_text().replace("\n[pii_patterns]\n", "\n[pii_patterns]\nbroken = '(?=UNMASKABLE)'\n")
    )
    stack = make_stack(**FAST, **BULK, **grok.env, CONFIG_FILE=str(config))
    client = stack.start_web()
    stack.start_worker()
    texts = ["UNMASKABLE: ann@example.com", "UNMASKABLE: +44 20 7946 0958"]
    answer = client.post("/api/v1/conversations/batch?lane=bulk", json={"conversations": [body(t) for t in texts]})
    ids = [result["conversation_id"] for result in answer.json()["results"]]
    documents = stack.settled(client, ids)
    assert {d["status"] for d in documents} == {"failed"}, stack.log_text()
    sent = [json.loads(text) for text in grok.control.get("/received").json()]
    assert "UNMASKABLE" not in json.dumps(sent), "nothing of them went to xAI"
    assert not [r for body in sent for r in body.get("batch_requests", [])], "no request left empty went either"
    wait_until(
        lambda: stack.sql("SELECT state FROM provider_batches") == [("ended",)],
        message=lambda: f"the provider batch to end; {stack.sql('SELECT * FROM provider_batches')}",
    )

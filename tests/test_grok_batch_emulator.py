"""The emulator's Batch API over plain HTTP: create, add, state, paged results and request states, cancel,
expiry, a batch refused by xAI, the answers the chat endpoint would give, without its rate limits; and the
project's client reading it, however its pages end and its errors are written."""

from __future__ import annotations

import httpx
import pytest
from support import wait_until
from support.grok import GROK_KEY, MODEL, request_body

from insights.batch_api import BatchApi, BatchApiError, completion_of, error_of
from settings import load_settings

AUTH = {"Authorization": f"Bearer {GROK_KEY}"}


def api(grok, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{grok.base_url}/batches{path}", headers=AUTH, timeout=30, **kwargs)


def add(grok, batch_id: str, requests: dict[str, dict]) -> httpx.Response:
    items = [
        {"batch_request_id": rid, "batch_request": {"chat_get_completion": body}} for rid, body in requests.items()
    ]
    return api(grok, "POST", f"/{batch_id}/requests", json={"batch_requests": items})


def state(grok, batch_id: str) -> dict:
    return api(grok, "GET", f"/{batch_id}").json()["state"]


def client(grok) -> BatchApi:
    """The project's own Batch API client, pointed at the emulator."""
    return BatchApi(load_settings({"GROK_API_KEY": GROK_KEY, "GROK_BASE_URL": grok.base_url}))


def test_a_batch_answers_its_requests_later_and_pages_the_results(grok):
    grok.configure(batch_delay=0.5, rps=1)  # batch requests do not count towards the rate limit
    batch = api(grok, "POST", "", json={"name": "backfill-1"}).json()
    assert batch["name"] == "backfill-1" and batch["state"]["num_requests"] == 0
    requests = {f"r{n}": request_body(f"Parcel {n} arrived broken, awful.", "Thanks!") for n in range(150)}
    requests["refused"] = request_body("REFUSE this one")
    requests["poisoned"] = request_body("POISON overflows")
    assert add(grok, batch["batch_id"], requests).status_code == 200
    assert state(grok, batch["batch_id"])["num_pending"] == 152

    wait_until(lambda: state(grok, batch["batch_id"])["num_pending"] == 0, timeout=10, message="the batch to finish")
    assert state(grok, batch["batch_id"]) == {
        "num_requests": 152,
        "num_pending": 0,
        "num_success": 151,
        "num_error": 1,
        "num_cancelled": 0,
    }
    results, token = [], None
    while True:
        page = api(
            grok,
            "GET",
            f"/{batch['batch_id']}/results",
            params={"limit": 100, **({"pagination_token": token} if token else {})},
        ).json()
        results += page["results"]
        if not (token := page["pagination_token"]):
            break
    by_id = {r["batch_request_id"]: r for r in results}
    assert len(results) == 152 == len(by_id)
    completion = by_id["r7"]["batch_result"]["response"]["chat_get_completion"]
    assert completion["object"] == "chat.completion" and completion["choices"][0]["finish_reason"] == "stop"
    assert (
        by_id["poisoned"]["batch_result"]["response"]["chat_get_completion"]["choices"][0]["finish_reason"] == "length"
    )
    assert "Content violates usage guidelines" in by_id["refused"]["error_message"]
    assert grok.log() == [], "no chat call was made"

    widest = api(grok, "GET", f"/{batch['batch_id']}/results", params={"limit": 5000}).json()
    assert (len(widest["results"]), widest["pagination_token"]) == (152, None), "a page holds up to 1,000"
    listed = api(grok, "GET", f"/{batch['batch_id']}/requests", params={"limit": 100}).json()
    assert len(listed["batch_request_metadata"]) == 100 and listed["pagination_token"]
    states = {m["batch_request_id"]: m["state"] for m in listed["batch_request_metadata"]}
    assert (states["r0"], listed["batch_request_metadata"][0]["model"]) == ("succeeded", MODEL)


@pytest.mark.parametrize("end", ["null", "empty", "absent", "endless"])
def test_the_client_reads_every_page_however_the_last_one_ends(grok, end):
    """1,500 requests: two pages of results and of request states, the last one ended by a ``null``, an
    empty or an absent token, or followed by empty pages that still carry one (read until a page is empty)."""
    grok.configure(batch_page_end=end)
    batch_api = client(grok)
    batch_id = batch_api.create("pages")
    ids = {f"r{n}": request_body(f"Parcel {n % 3} arrived late") for n in range(1500)}
    batch_api.add(batch_id, ids)

    assert batch_api.held(batch_id) == set(ids)
    read = [entry["batch_request_id"] for entry in batch_api.results(batch_id)]
    assert sorted(read) == sorted(ids), "every result once"


@pytest.mark.parametrize("shape", ["string", "object", "empty"])
def test_a_failed_request_reads_as_an_error_whatever_its_shape(grok, shape):
    grok.configure(batch_error_shape=shape)
    batch_api = client(grok)
    batch_id = batch_api.create("errors")
    batch_api.add(batch_id, {"refused": request_body("REFUSE this one"), "fine": request_body("All good, thanks")})

    by_id = {entry["batch_request_id"]: entry for entry in batch_api.results(batch_id)}
    assert (error_of(by_id["fine"]), completion_of(by_id["fine"])["object"]) == (None, "chat.completion")
    assert completion_of(by_id["refused"]) is None
    expected = "holds no chat completion" if shape == "empty" else "Content violates usage guidelines"
    assert expected in error_of(by_id["refused"])
    assert state(grok, batch_id)["num_error"] == 1


def test_a_batch_refused_by_xai_says_why_counts_nothing_and_takes_nothing_more(grok):
    grok.configure(batch_refusal="Batch refused: the model does not support batch processing")
    batch_api = client(grok)
    batch_id = batch_api.create("refused")
    batch_api.add(batch_id, {"a": request_body("one"), "b": request_body("two")})

    status = batch_api.state(batch_id)
    assert status.refusal == "Batch refused: the model does not support batch processing"
    assert set(status.counters.values()) == {0}
    assert list(batch_api.results(batch_id)) == [] and batch_api.held(batch_id) == set()
    again = add(grok, batch_id, {"c": request_body("three")})
    assert again.status_code == 400 and "cancelled by xAI" in again.json()["error"]


def test_a_repeated_request_id_is_refused_and_cancel_and_expiry_end_pending_requests(grok):
    grok.configure(batch_delay=60)
    batch_id = api(grok, "POST", "", json={"name": "slow"}).json()["batch_id"]
    assert add(grok, batch_id, {"a": request_body("one"), "b": request_body("two")}).status_code == 200
    again = add(grok, batch_id, {"b": request_body("two")})
    assert again.status_code == 400 and "already in the batch" in again.json()["error"]
    assert grok.control.get("/batches").json()["duplicates"] == 1, "tests can see a request sent twice"
    cancelled = api(grok, "POST", f"/{batch_id}:cancel").json()["state"]
    assert (cancelled["num_pending"], cancelled["num_cancelled"]) == (0, 2)

    grok.configure(batch_expiry=0.3)
    expiring = api(grok, "POST", "", json={"name": "expiring"}).json()["batch_id"]
    add(grok, expiring, {"late": request_body("too late")})
    wait_until(lambda: state(grok, expiring)["num_cancelled"] == 1, timeout=5, message="the batch to expire")
    assert api(grok, "GET", f"/{expiring}/results").json() == {"results": [], "pagination_token": None}


def test_an_add_call_over_the_size_limit_is_refused_whole_and_the_client_says_so(grok):
    """xAI takes up to 25 MB a request; the emulator refuses a larger add call (here with a smaller limit)
    with ``413``, nothing of it taken. The client sends UTF-8, so text in other scripts is not counted twice."""
    grok.configure(batch_max_add_bytes=20_000)
    batch_api = client(grok)
    batch_id = batch_api.create("sizes")
    with pytest.raises(BatchApiError) as refused:
        batch_api.add(batch_id, {"big": {"model": MODEL, "messages": [{"role": "user", "content": "x" * 25_000}]}})
    assert refused.value.status == 413 and refused.value.refused_request
    text = "ж" * 8_000  # 16 KB as UTF-8; 48 KB escaped
    batch_api.add(batch_id, {"fits": {"model": MODEL, "messages": [{"role": "user", "content": text}]}})
    assert state(grok, batch_id)["num_requests"] == 1, "the refused call added nothing"


def test_the_batch_api_needs_the_key_and_names_unknown_batches(grok):
    refused = httpx.post(f"{grok.base_url}/batches", json={"name": "x"}, headers={"Authorization": "Bearer wrong"})
    assert refused.status_code == 401
    assert grok.control.get("/batches").json()["unauthorized"] == 1, "tests can count the refused calls"
    assert api(grok, "GET", "/batch_nope").status_code == 404
    assert api(grok, "GET", "/batch_nope/results").status_code == 404

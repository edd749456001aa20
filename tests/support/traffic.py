"""What the tests send a stack and read back: conversations posted one by one or as a bulk batch, the
settings that make retries and flushes quick, the workers' logs, the provider batches stored."""

from __future__ import annotations

from support import wait_until

POST = "/api/v1/conversations"
BATCH_POST = "/api/v1/conversations/batch?lane=bulk"

FAST_RETRIES = {"BACKOFF_SECONDS": 0.1, "BATCH_FLUSH_SECONDS": 0.3, "INBOUND_RPS": 1000}
BULK = {
    "BATCH_SIZE": 5,
    "BULK_FLUSH_SECONDS": 0.5,
    "BULK_TICK_SECONDS": 0.2,
    "BULK_POLL_SECONDS": 0.3,
    "BULK_POLL_MAX_SECONDS": 1,
    "REQUEUE_SECONDS": 5,
    **FAST_RETRIES,
}
IN_FLIGHT = {
    "BATCH_SIZE": 4,
    "LEASE_SECONDS": 4,
    "REQUEUE_SECONDS": 4,
    "RECONCILE_INTERVAL_SECONDS": 0.5,
    **FAST_RETRIES,
}
"""A call must end within the lease (the emulator answers in 2 s), or the reconciler takes it for lost."""


def conversation(text: str = "Hello, I need help with my invoice.", **extra) -> dict:
    """A minimal valid request body."""
    return {"messages": [{"role": "customer", "content": text}], **extra}


def post_all(client, texts: list[str]) -> list[str]:
    return [client.post(POST, json=conversation(text)).json()["conversation_id"] for text in texts]


def post_bulk(client, texts: list[str]) -> list[str]:
    answer = client.post(BATCH_POST, json={"conversations": [conversation(text) for text in texts]})
    assert answer.status_code == 200, answer.text
    return [result["conversation_id"] for result in answer.json()["results"]]


def worker_log(stack) -> str:
    return "".join(path.read_text() for path in sorted(stack.logs.glob("worker-*.log")))


def provider_batches(stack) -> list[tuple]:
    return stack.sql(
        "SELECT state, end_reason, conversations, prompt_tokens, completion_tokens FROM provider_batches "
        "ORDER BY created_at"
    )


def wait_for_a_call_in_flight(stack, grok) -> None:
    """Until the database says ``processing`` for a batch whose call has not been answered."""

    def processing() -> int:
        return stack.sql("SELECT COUNT(*) FROM conversations WHERE status = 'processing'")[0][0]

    wait_until(processing, timeout=30, interval=0.05, message="a batch claimed and its call in flight")
    assert not grok.log(), "no call answered yet: the batch is at risk"

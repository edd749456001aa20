"""Property-based fuzzing of the whole API from its own OpenAPI document (schemathesis).

Whatever the generated request, valid or not: no 5xx, and the answer's status, content type, headers and
body are what the document says. The document is the one the server serves (built from the same
settings); a bounded, derandomized set of examples per operation keeps the suite quick and repeatable
(raise ``max_examples`` to dig deeper). Hypothesis drives
schemathesis's strategies directly, as its pytest plugin does not run under pytest 9 yet.
"""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.openapi import openapi_document
from settings import load_settings

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
DOCUMENT = openapi_document(load_settings({}))
OPERATIONS = [result.ok() for result in schemathesis.openapi.from_dict(DOCUMENT).get_all_operations()]


@pytest.fixture(scope="module")
def web_url(make_module_stack) -> str:
    stack = make_module_stack(INBOUND_RPS=1_000_000)
    url = str(stack.start_web().base_url)
    assert httpx.get(f"{url}/openapi.json").json() == DOCUMENT, "the served document is the one fuzzed"
    return url


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
def test_every_answer_matches_the_document(operation, web_url):
    @given(case=operation.as_strategy())
    @settings(max_examples=100, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    def exchange(case):
        case.call_and_validate(base_url=web_url, checks=CHECKS)

    exchange()

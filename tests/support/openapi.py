"""Checking an answer (or a webhook's body) against a schema of the service's OpenAPI document."""

from __future__ import annotations

from jsonschema import Draft202012Validator


def assert_matches(document: dict, schema_name: str, body: object) -> None:
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    errors = sorted(Draft202012Validator(schema).iter_errors(body), key=str)
    assert not errors, [error.message for error in errors]

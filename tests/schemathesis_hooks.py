"""A schemathesis check of our own (loaded through SCHEMATHESIS_HOOKS by tests/test_api_schema.py):
a JSON answer must be documented by a typed object schema, so that response_schema_conformance
judges something. An answer documented as "any object" ({}, or no properties) fails."""

from __future__ import annotations

from typing import Any

import schemathesis


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = document["components"]["schemas"][name]
    return schema


@schemathesis.check
def typed_json_answer(ctx: Any, response: Any, case: Any) -> bool | None:
    operation = case.operation
    if case.method.lower() != operation.method.lower():
        return None  # a probe with another method (unsupported_method judges it)
    if not response.headers.get("content-type", [""])[0].startswith("application/json"):
        return None
    document = operation.schema.raw_schema
    responses = document["paths"][operation.path][operation.method.lower()]["responses"]
    documented = responses.get(str(response.status_code))
    if documented is None:
        return None  # status_code_conformance reports it
    schema = _resolve(document, documented.get("content", {}).get("application/json", {}).get("schema", {}))
    if schema.get("type") != "object" or not schema.get("properties"):
        raise AssertionError(f"{response.status_code} of {operation.method.upper()} {operation.path} is documented "
                             f"as any JSON ({schema}): no schema check can judge it")
    return True

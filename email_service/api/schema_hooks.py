"""drf-spectacular postprocessing: the error answers every operation can give, declared once.

Found by fuzzing the schema (tests/fuzz): an operation that needs the bearer scheme answers 401
without credentials and 403 with the other audience's credentials, and an operation with a body or a
query answers 400 on a malformed one, whatever its own `extend_schema` lists. Declaring them here keeps
the schema honest for every route, including routes added later.
"""

from __future__ import annotations

from typing import Any

ERROR_COMPONENT = "Error"
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every 4xx (and /api/health's documented 503): a message and a stable machine-readable code.",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "field": {"type": "string"},
    },
    "required": ["detail", "code"],
}
DESCRIPTIONS = {
    "400": "Malformed or invalid input.",
    "401": "No credentials, or credentials that are not valid (unknown, expired or revoked).",
    "403": "Valid credentials of an audience this operation does not serve.",
}


def _error_response(status: str) -> dict[str, Any]:
    return {
        "description": DESCRIPTIONS[status],
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}},
    }


def add_common_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Add 401/403 to operations behind the bearer scheme and 400 to operations taking a body."""
    result.setdefault("components", {}).setdefault("schemas", {}).setdefault(ERROR_COMPONENT, ERROR_SCHEMA)
    for operations in result.get("paths", {}).values():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            security = operation.get("security", [])
            required_auth = bool(security) and {} not in security
            takes_input = "requestBody" in operation or any(
                parameter.get("in") == "query" for parameter in operation.get("parameters", [])
            )
            wanted = (["401", "403"] if required_auth else []) + (["400"] if takes_input else [])
            for status in wanted:
                responses.setdefault(status, _error_response(status))
            del method
    return result

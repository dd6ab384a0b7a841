"""The answers every route documents in the OpenAPI document: its successes, and the error
statuses it may give, each with the one error envelope (:class:`schemas.ErrorResponse`)."""

from __future__ import annotations

from typing import Any

from functions.api import schemas

ERROR_DESCRIPTIONS = {
    400: "Malformed request", 401: "Authentication required or invalid", 403: "The caller's roles do not allow this",
    404: "Not found", 409: "Conflict: the record changed, exists, or is in the wrong state",
    413: "Body too large", 415: "Body is not JSON", 422: "Request failed validation",
    429: "Too many attempts: wait the Retry-After header's seconds",
}  # fmt: skip
SUCCESS = {"GET": [200], "POST": [200, 201, 204], "PUT": [200], "DELETE": [200, 204]}


def documented_responses(method: str, *, public: bool, extra: tuple[int, ...] = ()) -> dict[int, Any]:
    """The ``responses`` of a route: what any route of ``method`` may answer, plus ``extra``."""
    codes = [400, 404, 413, 415, 422, 409] if method != "GET" else [400, 404, 422]
    if not public:
        codes += [401, 403]
    codes = list(dict.fromkeys([*codes, *extra]))
    documented: dict[int, Any] = {c: {"description": "Success"} for c in SUCCESS[method]}
    for c in sorted(codes):
        documented[c] = {
            "description": ERROR_DESCRIPTIONS[c],
            "content": {"application/json": {"model": schemas.ErrorResponse}},
        }
    return documented

"""RFC 9457 problem details for every error under /api/v1, including routing errors."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

API_PREFIX = "/api/v1"
PROBLEM_TYPE_BASE = "https://ventanilla.example/problems/"

DEFAULT_CODES = {
    400: "malformed_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "service_unavailable",
}


def problem(
    status: int,
    code: str | None = None,
    detail: str | None = None,
    *,
    title: str | None = None,
    errors: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    code = code or DEFAULT_CODES.get(status, "error")
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title or code.replace("_", " ").capitalize(),
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    if errors:
        body["errors"] = errors
    body.update(extra)
    response = Response(json.dumps(body), status=status, mimetype="application/problem+json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_problem_handlers(app: Flask) -> None:
    """App-level, because a URL that matches no route never reaches a blueprint's handlers."""

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if not request.path.startswith(API_PREFIX):
            return error
        headers = {}
        retry_after = getattr(error, "retry_after", None)
        if error.code == 429 and retry_after is not None:
            headers["Retry-After"] = str(int(retry_after))
        if error.code == 405 and getattr(error, "valid_methods", None):
            headers["Allow"] = ", ".join(error.valid_methods)
        return problem(error.code or 500, title=error.name, detail=error.description, headers=headers)

"""RFC 9457 problem details for every error under /api/v1, including routing errors."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, json, request
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import HTTPException

from backoffice.extensions import limiter

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


MESSAGES = {
    "validation_error": _l("Some fields are not valid."),
    "malformed_request": _l("The request body is not valid JSON of the expected shape."),
    "unauthorized": _l("Sign in to do this."),
    "forbidden": _l("You are not allowed to do this."),
    "invalid_credentials": _l("The username or the password is not correct."),
    "email_not_verified": _l(
        "Confirm your email address first with the link we sent you. If you cannot find the email, "
        "check your spam folder."
    ),
    "token_invalid": _l("This link is not valid."),
    "token_expired": _l("This link has expired. Please ask for a new one."),
    "token_used": _l("This link has already been used."),
    "not_found": _l("Not found."),
    "method_not_allowed": _l("This method is not allowed here."),
    "conflict": _l("This step cannot be done in the current state."),
    "gone": _l("This is no longer available."),
    "payload_too_large": _l("The request is too large."),
    "unsupported_media_type": _l("Send the request body as application/json."),
    "rate_limited": _l("Too many attempts. Please wait and try again later."),
    "idempotency_key_mismatch": _l("This Idempotency-Key was already used with a different request."),
    "idempotency_in_progress": _l("A request with this Idempotency-Key is still being processed."),
    "internal_error": _l("Something went wrong on our side. Please try again later."),
    "details_mismatch": _l(
        "These details do not match our records. Please call us on %(contact_phone)s or contact your broker."
    ),
    "company_tax_id": _l(
        "This is a company tax ID. Company representatives sign up through the representatives' registration."
    ),
    "already_registered": _l(
        "There is already an account for this tax ID. Sign in, or reset your password if you do not remember it."
    ),
    "registration_expired": _l("This registration has expired. Please start again."),
    "resend_too_soon": _l("Please wait a moment before asking for another code."),
    "resend_limit": _l("Too many codes were requested. Please try again later."),
    "code_invalid": _l("The code is not correct."),
    "code_expired": _l("The code has expired. Ask for a new one."),
    "attempts_exhausted": _l("Too many wrong codes. Please start the registration again."),
    "already_signed": _l("The contract has already been signed."),
    "not_signed": _l("Sign the contract first."),
    "already_active": _l("This registration is already complete. Sign in with your tax ID."),
    "challenge_closed": _l("This code can no longer be used. Please start again."),
    "service_unavailable": _l("The service is temporarily unavailable. Please try again later."),
    "not_confirmed": _l("Confirm your details and accept the signature provider's terms first."),
    "phone_missing": _l("Add a phone to your profile first."),
    "phone_already_verified": _l("This phone is already confirmed."),
    "no_code_sent": _l("Ask for a code for this phone first."),
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
    if title is None:
        title = str(MESSAGES.get(code, code.replace("_", " ").capitalize()))
        if "%(" in title:
            title = title % extra
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
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


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """webargs nests errors by location and by nested schema; the contract has one flat map of
    field names (dotted for nested objects) to lists of codes."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key in ("json", "form", "files", "query", "headers") and not prefix:
                name = ""
            elif key == "_schema":
                name = prefix or "body"
            else:
                name = f"{prefix}.{key}" if prefix else str(key)
            flat.update(_flatten(value, name))
    elif isinstance(messages, list):
        codes = [str(item) for item in messages if not isinstance(item, dict | list)]
        if codes:
            flat.setdefault(prefix or "body", []).extend(codes)
        for item in messages:
            if isinstance(item, dict | list):
                flat.update(_flatten(item, prefix))
    else:
        flat.setdefault(prefix or "body", []).append(str(messages))
    return flat


def validation_problem(messages: Any) -> Response:
    """Wrong JSON types are a malformed request (400); anything else is a validation failure (422)."""
    errors = _flatten(messages)
    if any("type" in codes for codes in errors.values()):
        return problem(400, "malformed_request", errors=errors)
    return problem(422, "validation_error", errors=errors)


def register_problem_handlers(app: Flask) -> None:
    """App-level, because a URL that matches no route never reaches a blueprint's handlers."""

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if not request.path.startswith(API_PREFIX):
            return error
        data = getattr(error, "data", None) or {}
        if error.code == 422 and "messages" in data:
            return validation_problem(data["messages"])
        headers = dict(data.get("headers") or {})
        if error.code == 429:
            headers.setdefault("Retry-After", str(limiter.retry_after()))
        if error.code == 405 and getattr(error, "valid_methods", None):
            headers["Allow"] = ", ".join(error.valid_methods)
        if error.code == 400 and "messages" in data:
            return problem(400, "malformed_request", errors={"body": ["invalid_json"]}, headers=headers)
        return problem(error.code or 500, headers=headers)

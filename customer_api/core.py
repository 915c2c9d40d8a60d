"""What every API endpoint shares: the Api object, bearer authentication, Idempotency-Key
handling, body guards and the translation of service errors into problem details."""

from __future__ import annotations

import http
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, Request, abort, current_app, g, request
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask_smorest import Api, Blueprint
from flask_smorest.utils import prepare_response

from backoffice import idempotency
from backoffice.customers import service as accounts
from backoffice.customers.models import CustomerAccount, CustomerSession
from backoffice.extensions import csrf, db
from customer_api.problems import API_PREFIX, problem
from customer_api.schemas import ProblemSchema

PROBLEM_CONTENT_TYPE = "application/problem+json"
MAX_JSON_BYTES = 64 * 1024
BEARER_SECURITY = [{"bearerAuth": []}]
# API.md: every 429 says when to try again.
RETRY_AFTER = {
    "description": "Seconds to wait before trying again.",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}


class CustomerApi(Api):
    """flask-smorest, with errors documented as problem+json and raised through our handler."""

    ERROR_SCHEMA = ProblemSchema

    def _register_error_handlers(self) -> None:
        """Errors go through customer_api.problems, which also covers routing errors."""

    def _register_responses(self) -> None:
        for status in http.HTTPStatus:
            response: dict[str, Any] = {"description": status.phrase}
            if status >= 400:
                response["schema"] = self.ERROR_SCHEMA
            if status == http.HTTPStatus.TOO_MANY_REQUESTS:
                response["headers"] = {"Retry-After": RETRY_AFTER}
            prepare_response(response, self.spec, PROBLEM_CONTENT_TYPE)
            self.spec.components.response(status.name, response, lazy=True)
        default = {"description": "Default error response", "schema": self.ERROR_SCHEMA}
        prepare_response(default, self.spec, PROBLEM_CONTENT_TYPE)
        self.spec.components.response("DEFAULT_ERROR", default, lazy=True)


JSON_ERRORS = (400, 413, 415)

IDEMPOTENCY_KEY = {
    "in": "header",
    "name": "Idempotency-Key",
    "required": False,
    "description": "Retrying with the same key and body within 24 h returns the first answer and "
    "creates nothing new; the same key with another body is refused (422), and while the first "
    "request is still being processed the retry gets 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"\S"},
}


def documented_errors(blueprint: Blueprint, *statuses: int, json_body: bool = True):
    """Document the problem responses an endpoint can give, so clients (and schemathesis) know."""

    def decorator(view):
        for status in (*(JSON_ERRORS if json_body else ()), *statuses):
            view = blueprint.alt_response(status, response=_status_name(status))(view)
        return view

    return decorator


def _status_name(status: int) -> str:
    return http.HTTPStatus(status).name


def configured_limit(setting: str) -> Callable[[], str]:
    """A Flask-Limiter limit read from the configuration at request time."""
    return lambda: current_app.config[setting]


def client_ip() -> str | None:
    return request.remote_addr


def user_agent() -> str | None:
    return request.user_agent.string or None


def guard_json_body() -> None:
    """Bodies of JSON endpoints: at most 64 KiB, and actually JSON (415 otherwise)."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return None
    has_body = bool(request.content_length) or request.headers.get("Transfer-Encoding") == "chunked"
    if request.content_length and request.content_length > MAX_JSON_BYTES:
        abort(413)
    if has_body and not request.is_json:
        abort(415)
    return None


def current_customer() -> tuple[CustomerAccount, CustomerSession]:
    return g.customer


def bearer_token() -> str | None:
    """The access token of `Authorization: Bearer <access_token>`, if that is what was sent."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def unauthorized() -> Any:
    return problem(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})


def require_customer(view: Callable[..., Any]) -> Callable[..., Any]:
    """`Authorization: Bearer <access_token>`; 401 when missing, unknown, expired or revoked."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        found = accounts.session_account(bearer_token())
        if found is None:
            return unauthorized()
        g.customer = found
        return view(*args, **kwargs)

    return wrapper


def idempotent(view: Callable[..., Any]) -> Callable[..., Any]:
    """`Idempotency-Key`: a retry with the same key and body gets the first answer and creates
    nothing; the key is kept with what the request created, in the same transaction."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return run_idempotently([args, kwargs], lambda: view(*args, **kwargs))

    return wrapper


def keeping_attempts(action: Callable[[], Any]) -> Any:
    """Run a step whose refusals must still be recorded (wrong codes, codes sent): commit those
    changes, then answer."""
    try:
        return action()
    except accounts.AccountError as error:
        if error.keep_changes:
            db.session.commit()
        raise


def run_idempotently(payload: Any, action: Callable[[], Any], *, sealed: bool = False) -> Any:
    """The request's meaning (`payload`: parsed fields and file hashes, never raw bytes) decides
    whether a retry is the same request."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return action()
    if not key.strip() or len(key) > idempotency.MAX_KEY_LENGTH:
        return problem(400, "malformed_request", errors={"Idempotency-Key": ["invalid"]})
    principal = str(g.customer[0].id) if "customer" in g else "anonymous"
    claim = idempotency.claim(key, request.endpoint or request.path, principal, payload)
    if claim.conflict == "idempotency_key_mismatch":
        return problem(422, claim.conflict)
    if claim.conflict:
        return problem(409, claim.conflict)
    if claim.replay is not None:
        status, body = claim.replay
        return (body, status) if status else body
    result = action()
    body, status = result if isinstance(result, tuple) else (result, 0)
    idempotency.remember(claim.record, status, body, sealed=sealed)
    return result


class NoCookieSessionForApi(SecureCookieSessionInterface):
    """The API authenticates by bearer token alone: it neither reads nor writes the back office's
    cookie session, so a staff member's cookie means nothing to it, and its answers do not vary
    by cookie. Opening that session (a signing serializer built per request) cost GET /me about
    0.04 ms of its 0.7 ms in-process."""

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if request.path.startswith(API_PREFIX):
            return self.null_session_class()
        return super().open_session(app, request)


def init_customer_api(app: Flask) -> CustomerApi:
    from customer_api.accounts import blp as accounts_blp
    from customer_api.completions import blp as completions_blp
    from customer_api.docs import docs
    from customer_api.ecustomer import blp as ecustomer_blp
    from customer_api.problems import register_problem_handlers
    from customer_api.representatives import blp as representatives_blp

    app.session_interface = NoCookieSessionForApi()
    app.config.update(
        MAX_CONTENT_LENGTH=35 * 1024 * 1024,
        API_TITLE="Ventanilla customer API",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
    )
    api = CustomerApi(
        app,
        spec_kwargs={
            "info": {
                "description": "Sign-up and account API of the customer portal. Errors are "
                "application/problem+json (RFC 9457) with a stable `code`."
            },
        },
    )
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    for blueprint in (accounts_blp, ecustomer_blp, representatives_blp, completions_blp):
        api.register_blueprint(blueprint)
        csrf.exempt(blueprint)  # bearer tokens, not cookies: cross-site requests carry no credentials
    app.register_blueprint(docs)
    register_problem_handlers(app)

    @app.errorhandler(accounts.AccountError)
    def account_error(error: accounts.AccountError):
        return problem(error.status, error.code, errors=error.errors or None, **error.extra)

    return api

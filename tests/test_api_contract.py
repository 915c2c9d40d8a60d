"""The public API against its own OpenAPI document (every operation of API.md).

Schemathesis generates requests from /api/v1/openapi.json and sends them to a real app on a real
database: every response must be a documented status (explicitly, not through `default`), with a
documented content type, headers and a body that match the document, and never a 5xx.
Authenticated operations run once with a valid bearer token and once without one. Operations on
a record (an e-Customer registration, an application and its access key, a completion link, a
signed contract, an emailed token) get a real one, so the generated data reaches the handlers
instead of stopping at 404.

The document is read at collection time from an app that never touches its database (the spec
is generated from code); each operation's examples then run against a fresh app and database.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, MutableMapping
from functools import cached_property
from html.parser import HTMLParser
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.core.failures import Failure
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    is_unexpected_http_status_case,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from backoffice import create_app
from backoffice.customers import service as accounts
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage
from backoffice.review.models import (
    ApplicationStatus,
    DocumentKind,
    DocumentStatus,
    RepresentativeApplication,
)
from backoffice.review.states import transition
from tests.conftest import base_overrides
from tests.factories import TEST_ACTOR, make_policyholder
from tests.test_api_completions import DETAILS, invite, validated_application
from tests.test_api_representatives import FIELDS, jpeg_bytes, pdf_bytes, png_bytes, submit

SPEC_URL = "/api/v1/openapi.json"
DOCS_URL = "/api/v1/docs"
PROBLEM_JSON = "application/problem+json"

# Bounded, reproducible runs: each operation gets at most this many generated examples (plus
# schemathesis' deterministic coverage cases), the same ones on every run.
MAX_EXAMPLES = 100
CONTRACT_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    # One app and database per operation, shared by its examples; generated bodies may be large.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

# Rate limits would answer 429 to the hundreds of requests below; they have their own tests.
GENEROUS_LIMITS = {
    name: "100000 per minute"
    for name in (
        "CUSTOMER_SIGN_IN_LIMIT_USERNAME",
        "CUSTOMER_SIGN_IN_LIMIT_IP",
        "REGISTRATION_LIMIT_IP",
        "REGISTRATION_LIMIT_EMAIL",
        "PASSWORD_RESET_LIMIT_IP",
        "PASSWORD_RESET_LIMIT_EMAIL",
        "ECUSTOMER_REGISTRATION_LIMIT_IP",
        "ECUSTOMER_REGISTRATION_LIMIT_TAX_ID",
        "REPRESENTATIVE_APPLICATION_LIMIT_IP",
        "COMPLETION_CONFIRM_LIMIT",
    )
}

CUSTOMER_EMAIL = "contract.customer@example.com"
CUSTOMER_PASSWORD = "Contract-Tests-2024!"
PENDING_EMAIL = "contract.pending@example.com"
HOLDER_TAX_ID, HOLDER_EMAIL, HOLDER_PHONE = "12345678Z", "maria.garcia@correo.example", "+34612345612"
ECUSTOMER_PASSWORD = "Firma-Segura-2026"

# API.md, "Individual accounts": method and path, success status, notable error statuses.
ACCOUNT_ENDPOINTS: dict[tuple[str, str], tuple[int, set[int]]] = {
    ("post", "/api/v1/accounts"): (202, {422}),
    ("post", "/api/v1/accounts/verify"): (200, {404, 410}),
    ("post", "/api/v1/sessions"): (200, {401, 403, 429}),
    ("delete", "/api/v1/sessions/current"): (204, {401}),
    ("post", "/api/v1/password-resets"): (202, {429}),
    ("post", "/api/v1/password-resets/confirm"): (204, {404, 410, 422}),
    ("get", "/api/v1/me"): (200, {401}),
    ("patch", "/api/v1/me"): (200, {401, 422}),
    ("get", "/api/v1/me/policies"): (200, {401}),
}
AUTHENTICATED = {
    ("get", "/api/v1/me"),
    ("patch", "/api/v1/me"),
    ("get", "/api/v1/me/policies"),
    ("delete", "/api/v1/sessions/current"),
}
IDEMPOTENT = {("post", "/api/v1/accounts"), ("post", "/api/v1/password-resets")}
# API.md, every table: the operations the generated requests must cover.
CONTRACT_OPERATIONS = {
    *ACCOUNT_ENDPOINTS,
    ("post", "/api/v1/ecustomer/registrations"),
    ("post", "/api/v1/ecustomer/registrations/{registration_id}/code"),
    ("get", "/api/v1/ecustomer/registrations/{registration_id}/contract"),
    ("post", "/api/v1/ecustomer/registrations/{registration_id}/signature"),
    ("post", "/api/v1/ecustomer/registrations/{registration_id}/password"),
    ("post", "/api/v1/representative-applications"),
    ("get", "/api/v1/representative-applications/{application_id}"),
    ("post", "/api/v1/representative-applications/{application_id}/documents"),
    ("get", "/api/v1/representative-completions/{token}"),
    ("post", "/api/v1/representative-completions/{token}/confirm"),
    ("post", "/api/v1/representative-completions/{token}/signature"),
    ("post", "/api/v1/representative-completions/{token}/password"),
    ("get", "/api/v1/me/contracts"),
    ("get", "/api/v1/me/contracts/{contract_id}"),
}


def _load_schema() -> Any:
    """The document of an app built only to serve it: its database is never opened, and every
    test below sends its requests to an app of its own (`app=`)."""
    with TemporaryDirectory() as storage:
        return schemathesis.openapi.from_wsgi(
            SPEC_URL, create_app(base_overrides("sqlite://", Path(storage)))
        )


schema = _load_schema()


def _is_authenticated(ctx: Any) -> bool:
    return bool(ctx.operation.definition.raw.get("security"))


# --- schemathesis ------------------------------------------------------------------------------

EXAMPLES: Counter[str] = Counter()
ANSWERS: Counter[int] = Counter()
BY_OPERATION: dict[str, Counter[int]] = {}


@schemathesis.check
def status_explicitly_documented(ctx: Any, response: Any, case: Any) -> bool | None:
    """`status_code_conformance` accepts anything when `default` is documented (flask-smorest
    documents it on every operation), so also require the status to be listed by number. Like
    the built-in check, it leaves out probes with methods the operation does not have (405)."""
    if is_unexpected_http_status_case(case):
        return None
    documented = [code for code in case.operation.definition.raw["responses"] if code != "default"]
    if str(response.status_code) not in documented:
        raise Failure(
            operation=case.operation.label,
            title="Status not documented explicitly",
            message=f"Received: {response.status_code}\nDocumented: {', '.join(documented)}",
        )
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    status_explicitly_documented,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
    allow_header_conformance,
]


@pytest.fixture(scope="module", autouse=True)
def report_examples(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print how many generated requests ran and what they were answered, past pytest's output
    capture."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and EXAMPLES:
        per_test = ", ".join(f"{name}: {count}" for name, count in sorted(EXAMPLES.items()))
        answers = ", ".join(f"{status}: {count}" for status, count in sorted(ANSWERS.items()))
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\nschemathesis examples run: {sum(EXAMPLES.values())} ({per_test})")
            reporter.write_line(f"answered: {answers}")
            for name, counts in sorted(BY_OPERATION.items()):
                reporter.write_line(f"  {name}: {dict(sorted(counts.items()))}")


@pytest.fixture
def api_app(make_app) -> Flask:
    """A fresh app and database per test; no app context is held, so every request gets its
    own, as under a real server. Codes may be resent at once (the interval has its own tests),
    so resends get past it to the hourly limit."""
    return make_app(**GENEROUS_LIMITS, OTP_RESEND_INTERVAL_SECONDS=0)


def _emailed_token(app: Flask, email: str, template: str) -> str:
    """The token in the link of the latest such email (the outbox row, as the mailer sends it)."""
    with app.app_context():
        message = db.session.execute(
            db.select(OutboxMessage)
            .where(OutboxMessage.recipient == email, OutboxMessage.template == template)
            .order_by(OutboxMessage.id.desc())
            .limit(1)
        ).scalar_one()
        match = re.search(r"token=([\w-]+)", message.body_text)
        assert match, message.body_text
        return match.group(1)


def _texted_code(app: Flask) -> str:
    """The code in the latest SMS (the outbox row, as the gateway sends it)."""
    with app.app_context():
        text = db.session.execute(
            db.select(OutboxMessage.body_text)
            .where(OutboxMessage.channel == "sms")
            .order_by(OutboxMessage.id.desc())
            .limit(1)
        ).scalar_one()
    match = re.search(r"\b(\d{6})\b", text)
    assert match, text
    return match.group(1)


def _registered(app: Flask, email: str) -> None:
    with app.app_context():
        accounts.register(email, CUSTOMER_PASSWORD, True, language="en", ip=None)
        db.session.commit()


def _verified_customer(app: Flask) -> str:
    """Register through the service, follow the emailed link through the API: a bearer token."""
    _registered(app, CUSTOMER_EMAIL)
    token = _emailed_token(app, CUSTOMER_EMAIL, "verify_email")
    response = app.test_client().post("/api/v1/accounts/verify", json={"token": token})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["access_token"]


def _sign_in(app: Flask, email: str = CUSTOMER_EMAIL, password: str = CUSTOMER_PASSWORD) -> str:
    response = app.test_client().post("/api/v1/sessions", json={"username": email, "password": password})
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["access_token"]


def _send_back_for(application: RepresentativeApplication, kind: DocumentKind) -> None:
    """What the legal team's request for a new document leaves behind."""
    transition(application, ApplicationStatus.IN_REVIEW, actor=TEST_ACTOR)
    for document in application.documents:
        if document.kind == kind and document.status != DocumentStatus.SUPERSEDED:
            document.status, document.reason_code = DocumentStatus.REJECTED, "illegible"
    application.requested_documents = [kind.value]
    transition(application, ApplicationStatus.NEEDS_DOCUMENTS, actor=TEST_ACTOR)


class Records:
    """Real records for generated requests to act on, each made on first use the way a client
    gets it (through the API, or the back-office service that hands it out), so an operation's
    test only pays for what it uses."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client = app.test_client()

    def _post(self, url: str, **kwargs: Any) -> dict[str, Any]:
        response = self.client.post(url, **kwargs)
        assert response.status_code < 300, response.get_data(as_text=True)
        return response.get_json()

    @cached_property
    def customer_token(self) -> str:
        return _verified_customer(self.app)

    def fresh_customer_token(self) -> str:
        """A session of its own, for the sign-out to end."""
        assert self.customer_token
        return _sign_in(self.app)

    @cached_property
    def verification_token(self) -> str:
        _registered(self.app, PENDING_EMAIL)
        return _emailed_token(self.app, PENDING_EMAIL, "verify_email")

    @cached_property
    def reset_token(self) -> str:
        assert self.customer_token
        self._post("/api/v1/password-resets", json={"email": CUSTOMER_EMAIL})
        return _emailed_token(self.app, CUSTOMER_EMAIL, "password_reset")

    @cached_property
    def registration_id(self) -> str:
        """An e-Customer registration whose SMS code was just sent."""
        with self.app.app_context():
            make_policyholder(HOLDER_TAX_ID, email=HOLDER_EMAIL)
        details = {"tax_id": HOLDER_TAX_ID, "email": HOLDER_EMAIL, "phone": HOLDER_PHONE}
        return self._post("/api/v1/ecustomer/registrations", json=details)["id"]

    @cached_property
    def signed_registration(self) -> tuple[str, int]:
        """The registration, with its contract signed: its id and the contract's."""
        registration_id = self.registration_id
        body = {"code": _texted_code(self.app), "accept_contract": True}
        signed = self._post(f"/api/v1/ecustomer/registrations/{registration_id}/signature", json=body)
        return registration_id, signed["contract_id"]

    @cached_property
    def ecustomer(self) -> tuple[str, int]:
        """An active e-Customer's bearer token and the id of the contract they signed."""
        registration_id, contract_id = self.signed_registration
        url = f"/api/v1/ecustomer/registrations/{registration_id}/password"
        self._post(url, json={"password": ECUSTOMER_PASSWORD})
        return _sign_in(self.app, HOLDER_TAX_ID, ECUSTOMER_PASSWORD), contract_id

    @cached_property
    def application(self) -> tuple[str, str]:
        """A representative application: its id and access key."""
        created = submit(self.client).get_json()
        return created["id"], created["access_key"]

    def application_awaiting_documents(self) -> tuple[str, str]:
        """The application, sent back for a new public deed unless it already is, so every
        upload reaches the upload rules rather than the 409 of an application that is not
        waiting for documents."""
        application_id, access_key = self.application
        with self.app.app_context():
            application = db.session.get(RepresentativeApplication, application_id)
            if application.status != ApplicationStatus.NEEDS_DOCUMENTS:
                _send_back_for(application, DocumentKind.PUBLIC_DEED)
                db.session.commit()
        return application_id, access_key

    @cached_property
    def completion_token(self) -> str:
        """The emailed link of a representative whose details the call centre validated."""
        with self.app.app_context():
            return invite(validated_application(self.client))

    @cached_property
    def pin_sent_token(self) -> str:
        token = self.completion_token
        body = {**DETAILS, "accept_provider_terms": True}
        self._post(f"/api/v1/representative-completions/{token}/confirm", json=body)
        return token

    @cached_property
    def signed_completion_token(self) -> str:
        token = self.pin_sent_token
        self._post(
            f"/api/v1/representative-completions/{token}/signature", json={"pin": _texted_code(self.app)}
        )
        return token

    def token_for(self, label: str) -> str:
        """The bearer token an authenticated operation is called with."""
        if label == "DELETE /api/v1/sessions/current":
            return self.fresh_customer_token()
        if label.startswith("GET /api/v1/me/contracts"):
            return self.ecustomer[0]
        return self.customer_token

    def values_for(self, label: str) -> dict[ParameterLocation, dict[str, Any]]:
        """The real values an operation's generated requests get, by where they go."""
        path, header, body = ParameterLocation.PATH, ParameterLocation.HEADER, ParameterLocation.BODY
        registrations = "/api/v1/ecustomer/registrations/{registration_id}"
        completions = "/api/v1/representative-completions/{token}"
        match label.split(" ", 1):
            case ["POST", "/api/v1/accounts/verify"]:
                return {body: {"token": self.verification_token}}
            case ["POST", "/api/v1/password-resets/confirm"]:
                return {body: {"token": self.reset_token}}
            case ["POST", operation] if operation == f"{registrations}/password":
                return {path: {"registration_id": self.signed_registration[0]}}
            case [_, operation] if operation.startswith(registrations):
                return {path: {"registration_id": self.registration_id}}
            case ["GET", "/api/v1/me/contracts/{contract_id}"]:
                return {path: {"contract_id": str(self.ecustomer[1])}}
            case ["POST", "/api/v1/representative-applications/{application_id}/documents"]:
                application_id, access_key = self.application_awaiting_documents()
                return {path: {"application_id": application_id}, header: {"X-Access-Key": access_key}}
            case ["GET", "/api/v1/representative-applications/{application_id}"]:
                application_id, access_key = self.application
                return {path: {"application_id": application_id}, header: {"X-Access-Key": access_key}}
            case ["POST", operation] if operation == f"{completions}/signature":
                return {path: {"token": self.pin_sent_token}}
            case ["POST", operation] if operation == f"{completions}/password":
                return {path: {"token": self.signed_completion_token}}
            case [_, operation] if operation.startswith(completions):
                return {path: {"token": self.completion_token}}
        return {}

    def fill_in(self, case: Any) -> None:
        """Put the real values into the parts of the case that were generated valid: the
        deliberately invalid ones are left as generated, to be refused."""
        for location, values in self.values_for(case.operation.label).items():
            if case.meta is not None and case.meta.is_negative_at(location):
                continue
            container = getattr(case, location.container_name)
            if isinstance(container, MutableMapping):
                container.update(values)
            elif container is None and location is ParameterLocation.HEADER:
                case.headers = dict(values)


@pytest.fixture
def records(api_app: Flask) -> Records:
    return Records(api_app)


def _count(kind: str, response: Any, label: str) -> Any:
    EXAMPLES[kind] += 1
    ANSWERS[response.status_code] += 1
    BY_OPERATION.setdefault(f"{kind}: {label}", Counter())[response.status_code] += 1
    return response


@schema.parametrize()
@CONTRACT_SETTINGS
def test_operation_honours_its_contract_signed_in(case, api_app: Flask, records: Records) -> None:
    """Every operation, on real records; the authenticated ones with a valid token (a fresh one
    for each sign-out). `ignored_auth` also replays them without the token and with a wrong one."""
    records.fill_in(case)
    token = records.token_for(case.operation.label) if _is_authenticated(case) else "unused"
    response = case.call_and_validate(
        app=api_app,
        session=api_app.test_client(),
        headers={"Authorization": f"Bearer {token}"},
        checks=[*CHECKS, ignored_auth],
    )
    _count("signed in", response, case.operation.label)
    if _is_authenticated(case) and response.request.headers.get("Authorization") == f"Bearer {token}":
        assert response.status_code != 401, response.text  # unless a coverage case left the token out


@schema.include(_is_authenticated).parametrize()
@CONTRACT_SETTINGS
def test_authenticated_operation_refuses_requests_without_a_valid_token(case, api_app: Flask) -> None:
    """No token, or whatever schemathesis puts in the Authorization header: 401, before the body
    is validated (only request-shape probes, such as a method the operation does not have, get
    another answer: 405, or 415 for a body that is not JSON at all)."""
    response = case.call_and_validate(app=api_app, session=api_app.test_client(), checks=CHECKS)
    _count("no token", response, case.operation.label)
    if not is_unexpected_http_status_case(case):
        assert response.status_code == 401, response.text


# Random data seldom gets past the password rules or finds a live token, so the success answers
# (and the notable errors of API.md) are also checked against the document with real requests.


def _call(
    app: Flask,
    method: str,
    path: str,
    body: Any = NOT_SET,
    token: str | None = None,
    **case: Any,
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    request = schema[path][method].Case(body=body, **case)
    response = request.call_and_validate(app=app, session=app.test_client(), headers=headers, checks=CHECKS)
    return _count("explicit", response, request.operation.label)


def _problem_code(response: Any) -> str:
    assert response.headers["content-type"] == [PROBLEM_JSON]
    return response.json()["code"]


def test_the_answers_along_an_account_life_conform_to_the_document(api_app: Flask) -> None:
    email, password, new_password = "flow.customer@example.com", "Flow-Tests-2024!", "Other-Flow-2025?"
    registration = {"email": email, "password": password, "accept_terms": True}
    for _ in range(2):  # a second registration answers the same
        response = _call(api_app, "POST", "/api/v1/accounts", registration)
        assert (response.status_code, response.json()) == (202, {"status": "verification_pending"})
    weak = _call(
        api_app, "POST", "/api/v1/accounts", {**registration, "password": "short", "accept_terms": False}
    )
    assert weak.status_code == 422
    assert weak.json()["errors"]["accept_terms"] == ["required"] and weak.json()["errors"]["password"]

    _call(api_app, "POST", "/api/v1/accounts", {**registration, "email": "later@example.com"})
    not_verified = _call(
        api_app, "POST", "/api/v1/sessions", {"username": "later@example.com", "password": password}
    )
    assert (not_verified.status_code, _problem_code(not_verified)) == (403, "email_not_verified")

    link = _emailed_token(api_app, email, "verify_email")
    verified = _call(api_app, "POST", "/api/v1/accounts/verify", {"token": link})
    assert verified.status_code == 200
    assert verified.json()["token_type"] == "Bearer" and verified.json()["account"]["email"] == email
    used = _call(api_app, "POST", "/api/v1/accounts/verify", {"token": link})
    assert (used.status_code, _problem_code(used)) == (410, "token_used")
    unknown = _call(api_app, "POST", "/api/v1/accounts/verify", {"token": "not-a-token"})
    assert (unknown.status_code, _problem_code(unknown)) == (404, "token_invalid")

    signed_in = _call(api_app, "POST", "/api/v1/sessions", {"username": email.upper(), "password": password})
    assert signed_in.status_code == 200
    token = signed_in.json()["access_token"]
    wrong = _call(api_app, "POST", "/api/v1/sessions", {"username": email, "password": new_password})
    assert (wrong.status_code, _problem_code(wrong)) == (401, "invalid_credentials")

    assert _call(api_app, "GET", "/api/v1/me", token=token).json()["association"]["status"] in {
        "none",
        "pending",
    }
    address = {"line1": "Calle Mayor 1", "postal_code": "28013", "city": "Madrid", "country": "ES"}
    changed = _call(api_app, "PATCH", "/api/v1/me", {"address": address, "phone": "612 345 678"}, token=token)
    assert changed.status_code == 200
    assert changed.json()["profile"]["phone"] == "+34612345678"
    invalid = _call(api_app, "PATCH", "/api/v1/me", {"address": {"postal_code": "123"}}, token=token)
    assert (invalid.status_code, invalid.json()["errors"]) == (422, {"address.postal_code": ["invalid"]})
    assert _call(api_app, "GET", "/api/v1/me/policies", token=token).json() == {"items": []}

    other = _sign_in(api_app, email, password)
    assert _call(api_app, "DELETE", "/api/v1/sessions/current", token=other).status_code == 204
    assert _call(api_app, "GET", "/api/v1/me", token=other).status_code == 401

    assert _call(api_app, "POST", "/api/v1/password-resets", {"email": email}).status_code == 202
    assert (
        _call(api_app, "POST", "/api/v1/password-resets", {"email": "nobody@example.com"}).status_code == 202
    )
    reset = _emailed_token(api_app, email, "password_reset")
    rejected = _call(
        api_app, "POST", "/api/v1/password-resets/confirm", {"token": reset, "password": "password"}
    )
    assert rejected.status_code == 422 and rejected.json()["errors"]["password"]
    body = {"token": reset, "password": new_password}
    assert _call(api_app, "POST", "/api/v1/password-resets/confirm", body).status_code == 204
    again = _call(api_app, "POST", "/api/v1/password-resets/confirm", body)
    assert (again.status_code, _problem_code(again)) == (410, "token_used")
    assert _call(api_app, "GET", "/api/v1/me", token=token).status_code == 401  # every session ended


def _another(code: str) -> str:
    """A wrong six-digit code."""
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_the_answers_along_an_ecustomer_registration_conform_to_the_document(api_app: Flask) -> None:
    with api_app.app_context():
        make_policyholder(HOLDER_TAX_ID, email=HOLDER_EMAIL)
    start = "/api/v1/ecustomer/registrations"
    details = {"tax_id": HOLDER_TAX_ID, "email": HOLDER_EMAIL, "phone": HOLDER_PHONE}
    mismatch = _call(api_app, "POST", start, {**details, "email": "other@correo.example"})
    assert (mismatch.status_code, _problem_code(mismatch)) == (422, "details_mismatch")
    started = _call(api_app, "POST", start, details)
    assert started.status_code == 201 and started.json()["status"] == "code_sent"
    at = {"path_parameters": {"registration_id": started.json()["id"]}}

    def step(method: str, action: str, body: Any = NOT_SET) -> Any:
        return _call(api_app, method, f"{start}/{{registration_id}}/{action}", body, **at)

    assert step("POST", "code").status_code == 202
    contract = step("GET", "contract")
    assert contract.status_code == 200 and contract.content.startswith(b"%PDF")
    code = _texted_code(api_app)
    wrong = step("POST", "signature", {"code": _another(code), "accept_contract": True})
    assert (wrong.status_code, _problem_code(wrong)) == (422, "code_invalid")
    assert wrong.json()["attempts_left"]
    signed = step("POST", "signature", {"code": code, "accept_contract": True})
    assert signed.status_code == 200 and signed.json()["status"] == "signed"
    weak = step("POST", "password", {"password": "short"})
    assert weak.status_code == 422 and weak.json()["errors"]["password"]
    active = step("POST", "password", {"password": ECUSTOMER_PASSWORD})
    assert (active.status_code, active.json()) == (201, {"status": "active", "username": HOLDER_TAX_ID})
    assert step("POST", "password", {"password": ECUSTOMER_PASSWORD}).status_code == 409

    token = _sign_in(api_app, HOLDER_TAX_ID, ECUSTOMER_PASSWORD)
    contract_id = signed.json()["contract_id"]
    listed = _call(api_app, "GET", "/api/v1/me/contracts", token=token)
    assert [item["id"] for item in listed.json()["items"]] == [contract_id]
    one = "/api/v1/me/contracts/{contract_id}"
    pdf = _call(api_app, "GET", one, token=token, path_parameters={"contract_id": str(contract_id)})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    unknown = _call(api_app, "GET", one, token=token, path_parameters={"contract_id": "999999"})
    assert unknown.status_code == 404


def test_the_answers_along_a_representative_application_conform_to_the_document(api_app: Flask) -> None:
    submission = "/api/v1/representative-applications"
    multipart = {"media_type": "multipart/form-data"}
    files = {"public_deed": pdf_bytes(), "power_of_attorney": jpeg_bytes(), "tax_id_document": png_bytes()}
    invalid = _call(api_app, "POST", submission, {**FIELDS, "tax_id": "1234"}, **multipart)
    assert invalid.status_code == 422
    assert invalid.json()["errors"]["tax_id"] and invalid.json()["errors"]["public_deed"] == ["required"]
    created = _call(api_app, "POST", submission, {**FIELDS, **files}, **multipart)
    assert created.status_code == 201 and created.json()["status"] == "submitted"
    application_id, access_key = created.json()["id"], created.json()["access_key"]

    def read(key: str) -> Any:
        return _call(
            api_app,
            "GET",
            f"{submission}/{{application_id}}",
            path_parameters={"application_id": application_id},
            headers={"X-Access-Key": key},
        )

    def upload(public_deed: bytes) -> Any:
        return _call(
            api_app,
            "POST",
            f"{submission}/{{application_id}}/documents",
            {"public_deed": public_deed},
            path_parameters={"application_id": application_id},
            headers={"X-Access-Key": access_key},
            **multipart,
        )

    assert read(access_key).status_code == 200 and len(read(access_key).json()["documents"]) == 3
    assert read("not-the-key").status_code == 404
    assert upload(pdf_bytes("Nueva")).status_code == 409  # nothing was asked for yet
    with api_app.app_context():
        _send_back_for(db.session.get(RepresentativeApplication, application_id), DocumentKind.PUBLIC_DEED)
        db.session.commit()
    unreadable = upload(b"not a document")
    assert unreadable.status_code == 422 and unreadable.json()["errors"]["public_deed"]
    resubmitted = upload(pdf_bytes("Nueva"))
    assert resubmitted.status_code == 200 and resubmitted.json()["status"] == "submitted"


def test_the_answers_along_a_representative_completion_conform_to_the_document(api_app: Flask) -> None:
    with api_app.app_context():
        link = {"path_parameters": {"token": invite(validated_application(api_app.test_client()))}}
    completion = "/api/v1/representative-completions/{token}"

    def step(action: str, body: Any) -> Any:
        return _call(api_app, "POST", f"{completion}/{action}", body, **link)

    assert _call(api_app, "GET", completion, **link).json()["status"] == "invited"
    unknown = _call(api_app, "GET", completion, path_parameters={"token": "not-a-token"})
    assert unknown.status_code == 404
    early = step("signature", {"pin": "123456"})
    assert (early.status_code, _problem_code(early)) == (409, "not_confirmed")
    mismatch = step("confirm", {**DETAILS, "phone": "+34699999999", "accept_provider_terms": True})
    assert (mismatch.status_code, _problem_code(mismatch)) == (422, "details_mismatch")
    confirmed = step("confirm", {**DETAILS, "accept_provider_terms": True})
    assert confirmed.status_code == 202 and confirmed.json()["status"] == "pin_sent"
    pin = _texted_code(api_app)
    wrong = step("signature", {"pin": _another(pin)})
    assert (wrong.status_code, _problem_code(wrong)) == (422, "code_invalid")
    signed = step("signature", {"pin": pin})
    assert signed.status_code == 200 and signed.json()["status"] == "signed"
    assert step("password", {"password": "short"}).status_code == 422
    active = step("password", {"password": ECUSTOMER_PASSWORD})
    assert (active.status_code, active.json()["status"]) == (201, "active")
    assert _call(api_app, "GET", completion, **link).status_code == 410


def test_repeated_failed_sign_ins_answer_429_with_retry_after(make_app) -> None:
    app = make_app(CUSTOMER_SIGN_IN_LIMIT_USERNAME="2 per minute")
    body = {"username": "someone@example.com", "password": "Wrong-Password-1!"}
    statuses = [_call(app, "POST", "/api/v1/sessions", body).status_code for _ in range(2)]
    limited = _call(app, "POST", "/api/v1/sessions", body)
    assert (statuses, limited.status_code, _problem_code(limited)) == ([401, 401], 429, "rate_limited")
    assert int(limited.headers["retry-after"][0]) > 0


# --- the document ------------------------------------------------------------------------------


@pytest.fixture
def spec(client) -> dict[str, Any]:
    response = client.get(SPEC_URL)
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def _resolve(spec: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in item:
        *_, kind, name = item["$ref"].split("/")
        item = spec["components"][kind][name]
    return item


def test_the_document_is_openapi_3_and_lists_every_account_endpoint(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] and spec["info"]["version"]
    for (method, path), (success, errors) in ACCOUNT_ENDPOINTS.items():
        assert path in spec["paths"], path
        assert method in spec["paths"][path], f"{method.upper()} {path}"
        documented = {int(code) for code in spec["paths"][path][method]["responses"] if code != "default"}
        assert {success, *errors} <= documented, f"{method.upper()} {path}: {documented}"
        headers = {
            p["name"] for p in spec["paths"][path][method].get("parameters", []) if p["in"] == "header"
        }
        assert ("Idempotency-Key" in headers) == ((method, path) in IDEMPOTENT), f"{method.upper()} {path}"


def test_the_document_has_every_operation_of_the_contract(spec: dict[str, Any]) -> None:
    """The generated requests cover the operations of the document, so it must have them all."""
    documented = {(method, path) for path, operations in spec["paths"].items() for method in operations}
    assert documented >= CONTRACT_OPERATIONS, sorted(CONTRACT_OPERATIONS - documented)


def test_error_responses_are_documented_as_problem_json(spec: dict[str, Any]) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "code"}
    assert problem["properties"]["errors"]["additionalProperties"] == {
        "type": "array",
        "items": {"type": "string"},
    }
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in ((m, o) for m, o in operations.items() if m != "parameters"):
            for code, response in operation["responses"].items():
                if code != "default" and int(code) < 400:
                    continue
                content = _resolve(spec, response).get("content")
                assert content is not None and set(content) == {PROBLEM_JSON}, f"{method} {path} {code}"
                assert _resolve(spec, content[PROBLEM_JSON]["schema"]) == problem
                checked += 1
    assert checked >= 3 * len(ACCOUNT_ENDPOINTS)


def test_every_429_is_documented_with_retry_after(spec: dict[str, Any]) -> None:
    """API.md: a 429 says when to try again. Documented, `response_headers_conformance` holds
    every 429 the generated requests get to it."""
    limited = [
        operation["responses"]["429"]
        for operations in spec["paths"].values()
        for method, operation in operations.items()
        if method != "parameters" and "429" in operation["responses"]
    ]
    assert len(limited) >= 8
    for response in limited:
        assert _resolve(spec, response)["headers"]["Retry-After"]["required"] is True


def test_the_bearer_scheme_is_declared_and_required_where_a_customer_is(spec: dict[str, Any]) -> None:
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    assert "security" not in spec  # no global requirement: registration and sign-in are public
    for method, path in ACCOUNT_ENDPOINTS:
        security = spec["paths"][path][method].get("security")
        if (method, path) in AUTHENTICATED:
            assert security == [{"bearerAuth": []}], f"{method.upper()} {path}"
        else:
            assert not security, f"{method.upper()} {path}"


# --- the docs page -----------------------------------------------------------------------------


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.inline_code: list[str] = []
        self.links: list[dict[str, str | None]] = []
        self.handlers: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.handlers += [name for name in attributes if name.startswith("on")]
        if tag == "script":
            self.scripts.append(attributes)
            self._in_script = True
        elif tag == "link":
            self.links.append(attributes)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_code.append(data)


def test_the_docs_page_serves_its_own_assets_and_has_no_inline_script(client) -> None:
    response = client.get(DOCS_URL)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    parser = _PageParser()
    parser.feed(page)

    assert parser.scripts, "Swagger UI is not on the page"
    assert all(script.get("src") for script in parser.scripts)
    assert parser.inline_code == []
    assert parser.handlers == []
    for url in re.findall(r"""(?:https?:)?//[^\s"'<>)]+""", page):
        assert urlsplit(url).hostname in (None, "localhost"), f"third-party URL on the docs page: {url}"

    assets = [script["src"] for script in parser.scripts] + [link["href"] for link in parser.links]
    stylesheets = [link["href"] for link in parser.links if link.get("rel") == "stylesheet"]
    assert stylesheets
    for asset in assets:
        assert asset and not urlsplit(asset).netloc, asset
        with client.get(urljoin(DOCS_URL, asset)) as served:
            assert served.status_code == 200, asset
            assert served.get_data(), asset
            if asset in stylesheets:
                assert served.mimetype == "text/css", asset
            elif any(asset == script["src"] for script in parser.scripts):
                assert "javascript" in served.mimetype, asset


def test_the_docs_page_points_swagger_ui_at_the_document(client) -> None:
    page = client.get(DOCS_URL).get_data(as_text=True)
    match = re.search(r'data-spec-url="([^"]+)"', page)
    assert match and match.group(1) == SPEC_URL
    assert client.get(match.group(1)).get_json()["openapi"].startswith("3.")


@pytest.mark.parametrize("name", ["nope.js", "index.html", "swagger-initializer.js", "..%2Fdocs.py"])
def test_an_unknown_docs_asset_is_404_problem_json(client, name: str) -> None:
    response = client.get(f"{DOCS_URL}/assets/{name}")
    assert response.status_code == 404
    assert response.mimetype == PROBLEM_JSON
    assert response.get_json()["code"] == "not_found"

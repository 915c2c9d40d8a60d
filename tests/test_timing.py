"""Enumeration by timing: a known account must not answer measurably slower (or faster) than an
unknown one. Each test sends 200 requests for a known account and 200 for an unknown one,
interleaved (known, unknown, known, ...) so that machine noise falls on both alike, through the
real app with real argon2 hashing, and compares the medians. This is a difference between two
populations measured side by side, not an absolute time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from backoffice.audit.models import AuditEvent
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage
from backoffice.staff.models import Role
from tests.conftest import csrf_token_from
from tests.factories import make_customer, make_staff

SAMPLES = 200
MAX_MEDIAN_GAP_MS = 20.0
WRONG_PASSWORD = "Not-the-password-42!"
# Raised far above SAMPLES so the limiter still runs (as in production) but never refuses.
UNLIMITED = "100000 per hour"
LIMITS = (
    "STAFF_LOGIN_LIMIT_ACCOUNT",
    "STAFF_LOGIN_LIMIT_IP",
    "CUSTOMER_SIGN_IN_LIMIT_USERNAME",
    "CUSTOMER_SIGN_IN_LIMIT_IP",
    "PASSWORD_RESET_LIMIT_IP",
    "PASSWORD_RESET_LIMIT_EMAIL",
)

Request = Callable[[], TestResponse]


@pytest.fixture
def client(make_app, redis_url: str) -> Iterator[FlaskClient]:
    """Jobs go to rq on Redis, as in production: the inline queue of a bare development set-up
    would deliver each email inside the request that asked for it."""
    app = make_app(REDIS_URL=redis_url, **dict.fromkeys(LIMITS, UNLIMITED))
    with app.app_context():
        yield app.test_client()


def _milliseconds(send: Request, status: int) -> float:
    started = time.perf_counter()
    response = send()
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == status, response.get_data(as_text=True)
    return elapsed


def median_gap_ms(known: Request, unknown: Request, *, status: int) -> tuple[float, float, float]:
    """Median latency of each population, and the gap between them (both in milliseconds)."""
    known_times: list[float] = []
    unknown_times: list[float] = []
    for _ in range(SAMPLES):
        known_times.append(_milliseconds(known, status))
        unknown_times.append(_milliseconds(unknown, status))
    known_median = statistics.median(known_times)
    unknown_median = statistics.median(unknown_times)
    return known_median, unknown_median, abs(known_median - unknown_median)


def test_staff_sign_in_takes_as_long_for_an_unknown_email(client):
    user = make_staff(Role.ADMIN)
    token = csrf_token_from(client, "/login")

    def attempt(email: str) -> Request:
        return lambda: client.post(
            "/login", data={"email": email, "password": WRONG_PASSWORD, "csrf_token": token}
        )

    known, unknown, gap = median_gap_ms(attempt(user.email), attempt("nobody@ventanilla.example"), status=200)

    assert gap < MAX_MEDIAN_GAP_MS, f"known {known:.1f} ms, unknown {unknown:.1f} ms"


def test_customer_sign_in_takes_as_long_for_an_unknown_email(client):
    account = make_customer()

    def attempt(username: str) -> Request:
        return lambda: client.post(
            "/api/v1/sessions", json={"username": username, "password": WRONG_PASSWORD}
        )

    known, unknown, gap = median_gap_ms(attempt(account.email), attempt("nobody@correo.example"), status=401)

    assert gap < MAX_MEDIAN_GAP_MS, f"known {known:.1f} ms, unknown {unknown:.1f} ms"


def test_password_reset_request_takes_as_long_for_an_unknown_email(client):
    account = make_customer()

    def request_reset(email: str) -> Request:
        return lambda: client.post("/api/v1/password-resets", json={"email": email})

    known, unknown, gap = median_gap_ms(
        request_reset(account.email), request_reset("nobody@correo.example"), status=202
    )

    assert gap < MAX_MEDIAN_GAP_MS, f"known {known:.1f} ms, unknown {unknown:.1f} ms"
    assert _reset_emails_to(account.email) == SAMPLES  # the known side did the real work


def _reset_emails_to(recipient: str) -> int:
    return db.session.execute(
        select(func.count())
        .select_from(OutboxMessage)
        .where(OutboxMessage.recipient == recipient, OutboxMessage.template == "password_reset")
    ).scalar_one()


def test_a_reset_request_for_an_unknown_email_is_audited_and_sends_nothing(client):
    response = client.post("/api/v1/password-resets", json={"email": "Nobody@Correo.example"})

    assert response.status_code == 202
    event = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "customer.password_reset_requested")
    ).scalar_one()
    assert (event.actor_label, event.actor_id, event.subject_id) == ("nobody@correo.example", None, None)
    assert _reset_emails_to("nobody@correo.example") == 0

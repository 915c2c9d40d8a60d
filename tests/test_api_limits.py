"""Rate limits and Idempotency-Key on the accounts API."""

import pytest
from sqlalchemy import func, select

from backoffice.customers.models import CustomerAccount
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage
from tests.factories import CUSTOMER_PASSWORD, make_customer

WRONG = "Wrong-Password-123"


def _sign_in(client, username, password=WRONG, ip="198.51.100.7"):
    return client.post(
        "/api/v1/sessions",
        json={"username": username, "password": password},
        environ_base={"REMOTE_ADDR": ip},
    )


def test_repeated_failed_sign_ins_for_a_username_are_limited(make_app):
    app = make_app(CUSTOMER_SIGN_IN_LIMIT_USERNAME="3 per 15 minutes")
    with app.app_context():
        make_customer("ana.lopez@correo.example")
        client = app.test_client()
        statuses = [
            _sign_in(client, "ana.lopez@correo.example", ip=f"198.51.100.{n}").status_code for n in range(4)
        ]
        blocked = _sign_in(client, "ana.lopez@correo.example", CUSTOMER_PASSWORD, ip="198.51.100.99")

    assert statuses == [401, 401, 401, 429]
    assert blocked.status_code == 429
    assert blocked.content_type == "application/problem+json"
    assert blocked.json["code"] == "rate_limited"
    assert int(blocked.headers["Retry-After"]) > 0


def test_unknown_usernames_are_limited_exactly_like_known_ones(make_app):
    app = make_app(CUSTOMER_SIGN_IN_LIMIT_USERNAME="3 per 15 minutes")
    with app.app_context():
        make_customer("known@correo.example")
        client = app.test_client()
        known = [_sign_in(client, "known@correo.example").status_code for _ in range(5)]
        unknown = [_sign_in(client, "unknown@correo.example").status_code for _ in range(5)]

    assert known == unknown == [401, 401, 401, 429, 429]


def test_username_limit_ignores_case_tricks(make_app):
    app = make_app(CUSTOMER_SIGN_IN_LIMIT_USERNAME="2 per 15 minutes")
    with app.app_context():
        client = app.test_client()
        _sign_in(client, "ana@correo.example")
        _sign_in(client, "ANA@correo.example")

        assert _sign_in(client, " Ana@Correo.Example").status_code == 429


def test_sign_ins_from_one_address_are_limited(make_app):
    app = make_app(CUSTOMER_SIGN_IN_LIMIT_IP="3 per 15 minutes")
    with app.app_context():
        client = app.test_client()
        statuses = [_sign_in(client, f"user{n}@correo.example").status_code for n in range(4)]

    assert statuses == [401, 401, 401, 429]


def test_successful_sign_ins_are_not_counted_as_failures(make_app):
    app = make_app(CUSTOMER_SIGN_IN_LIMIT_USERNAME="2 per 15 minutes")
    with app.app_context():
        make_customer("ana.lopez@correo.example")
        client = app.test_client()
        statuses = [
            _sign_in(client, "ana.lopez@correo.example", CUSTOMER_PASSWORD).status_code for _ in range(4)
        ]

    assert statuses == [200, 200, 200, 200]


def _register(client, email, ip="203.0.113.5", **headers):
    return client.post(
        "/api/v1/accounts",
        json={"email": email, "password": CUSTOMER_PASSWORD, "accept_terms": True},
        environ_base={"REMOTE_ADDR": ip},
        headers=headers,
    )


def test_registrations_per_address_are_limited(make_app):
    app = make_app(REGISTRATION_LIMIT_IP="2 per hour")
    with app.app_context():
        client = app.test_client()
        statuses = [_register(client, f"person{n}@correo.example").status_code for n in range(3)]

    assert statuses == [202, 202, 429]


def test_registrations_per_email_are_limited(make_app):
    app = make_app(REGISTRATION_LIMIT_EMAIL="2 per hour")
    with app.app_context():
        client = app.test_client()
        statuses = [
            _register(client, "Same@correo.example", ip=f"203.0.113.{n}").status_code for n in range(3)
        ]

    assert statuses == [202, 202, 429]


def test_password_reset_requests_are_limited_per_email_and_address(make_app):
    app = make_app(PASSWORD_RESET_LIMIT_EMAIL="2 per hour", PASSWORD_RESET_LIMIT_IP="3 per hour")
    with app.app_context():
        client = app.test_client()

        def reset(email, ip):
            return client.post(
                "/api/v1/password-resets", json={"email": email}, environ_base={"REMOTE_ADDR": ip}
            )

        per_email = [reset("ana@correo.example", f"192.0.2.{n}").status_code for n in range(3)]
        per_ip = [reset(f"p{n}@correo.example", "192.0.2.200").status_code for n in range(4)]

    assert per_email == [202, 202, 429]
    assert per_ip == [202, 202, 202, 429]


def test_same_idempotency_key_and_body_replays_and_creates_nothing_new(client):
    first = _register(client, "ana.lopez@correo.example", **{"Idempotency-Key": "k-1"})
    second = _register(client, "ana.lopez@correo.example", **{"Idempotency-Key": "k-1"})

    assert first.status_code == second.status_code == 202
    assert first.json == second.json
    assert db.session.execute(select(func.count(CustomerAccount.id))).scalar() == 1
    assert db.session.execute(select(func.count(OutboxMessage.id))).scalar() == 1


def test_without_idempotency_key_a_retry_is_a_new_request(client):
    _register(client, "ana.lopez@correo.example")
    _register(client, "ana.lopez@correo.example")

    assert db.session.execute(select(func.count(OutboxMessage.id))).scalar() == 2


def test_same_idempotency_key_with_another_body_is_refused(client):
    _register(client, "ana.lopez@correo.example", **{"Idempotency-Key": "k-2"})

    response = _register(client, "someone.else@correo.example", **{"Idempotency-Key": "k-2"})

    assert response.status_code == 422
    assert response.json["code"] == "idempotency_key_mismatch"
    assert db.session.execute(select(func.count(CustomerAccount.id))).scalar() == 1


def test_a_failed_request_does_not_use_up_its_idempotency_key(client):
    bad = client.post(
        "/api/v1/accounts",
        json={"email": "ana.lopez@correo.example", "password": "short", "accept_terms": True},
        headers={"Idempotency-Key": "k-3"},
    )
    fixed = client.post(
        "/api/v1/accounts",
        json={"email": "ana.lopez@correo.example", "password": CUSTOMER_PASSWORD, "accept_terms": True},
        headers={"Idempotency-Key": "k-3"},
    )

    assert (bad.status_code, fixed.status_code) == (422, 202), fixed.json


def test_idempotency_keys_expire_after_24_hours(client):
    from datetime import timedelta

    import time_machine

    from backoffice.db import utcnow

    _register(client, "ana.lopez@correo.example", **{"Idempotency-Key": "k-4"})
    with time_machine.travel(utcnow() + timedelta(hours=24, seconds=1)):
        _register(client, "ana.lopez@correo.example", **{"Idempotency-Key": "k-4"})

    assert db.session.execute(select(func.count(OutboxMessage.id))).scalar() == 2


def test_app_wide_limits_are_refused(make_app):
    """Limits are checked by their views' decorators only; an app-wide one would go unchecked."""
    with pytest.raises(ValueError, match="RATELIMIT_DEFAULT"):
        make_app(RATELIMIT_DEFAULT="100 per hour")


def test_answers_do_not_say_how_many_attempts_are_left(make_app):
    """A guesser would read the count of tries left; a refused request says only when to return."""
    app = make_app(CUSTOMER_SIGN_IN_LIMIT_USERNAME="3 per 15 minutes")
    with app.app_context():
        make_customer("ana.lopez@correo.example")
        client = app.test_client()
        answers = [_sign_in(client, "ana.lopez@correo.example") for _ in range(4)]

    assert [answer.status_code for answer in answers] == [401, 401, 401, 429]
    advertised = [name for answer in answers for name, _ in answer.headers if name.startswith("X-RateLimit")]
    assert advertised == []
    assert 0 < int(answers[-1].headers["Retry-After"]) <= 15 * 60

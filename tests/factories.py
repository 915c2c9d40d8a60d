"""Factory functions: build real records through the services, and commit them."""

from __future__ import annotations

import html
import itertools
import re
from urllib.parse import urlsplit

import pyotp
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from backoffice.audit import Actor
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.staff import mfa as staff_mfa
from backoffice.staff import service as staff_service
from backoffice.staff.models import Role, StaffUser

STAFF_PASSWORD = "Correct-horse-42!"
TEST_ACTOR = Actor.system("tests")
_sequence = itertools.count(1)


def make_staff(
    role: Role = Role.ADMIN,
    *,
    email: str | None = None,
    name: str | None = None,
    password: str = STAFF_PASSWORD,
    active: bool = True,
    language: str = "en",
    mfa: bool = True,
) -> StaffUser:
    """A staff user. The product's default language is Spanish; tests read the back office in
    English unless they ask for `language="es"`. Two-step sign-in is already set up (with a
    random secret) unless `mfa=False`: then they enrol at their first sign-in."""
    number = next(_sequence)
    user = staff_service.create_staff(
        email or f"staff{number}@ventanilla.example",
        name or f"Staff Member {number}",
        role,
        password,
        actor=TEST_ACTOR,
    )
    user.language = language
    if mfa:
        staff_mfa.enrol_with_secret(user, pyotp.random_base32(), actor=TEST_ACTOR)
    if not active:
        staff_service.deactivate(user, actor=TEST_ACTOR)
    db.session.commit()
    return user


def totp_code(email: str) -> str:
    """The code the staff member's authenticator app shows now.

    A code is accepted once, so a person signing in twice within one 30-second step waits for
    the next code; tests do not wait: the last accepted step is moved back one instead."""
    user = db.session.execute(
        select(StaffUser)
        .where(func.lower(StaffUser.email) == email.strip().lower())
        .execution_options(populate_existing=True)
    ).scalar_one()
    totp = pyotp.TOTP(staff_mfa.totp_secret(user))
    step = totp.timecode(utcnow())
    if user.totp_last_step is not None and user.totp_last_step >= step:
        db.session.execute(update(StaffUser).where(StaffUser.id == user.id).values(totp_last_step=step - 1))
        db.session.commit()
    return totp.generate_otp(step)


ENROL_KEY = re.compile(r'data-testid="totp-secret">([^<]+)<')
CODES_SAVED_FORM = re.compile(r'<form method="post" action="([^"]+)" data-testid="codes-saved-form">')


def sign_in(
    client: FlaskClient, email: str, password: str = STAFF_PASSWORD, *, second_step: bool = True, **extra
):
    """Sign in through the real forms (CSRF tokens included): the password, then the second step
    as the person would do it, a code from their authenticator app, or, the first time, the key
    shown beside the QR code, the first code and “I have saved them”. `second_step=False` stops
    after the password. Returns the last response (a redirect into the back office)."""
    from tests.conftest import CSRF_FIELD, csrf_token_from

    token = csrf_token_from(client, "/login")
    response = client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token}, **extra
    )
    if not second_step or response.status_code != 302:
        return response
    location = response.headers["Location"]
    step = urlsplit(location).path
    if step == "/mfa":
        return client.post(
            location, data={"code": totp_code(email), "csrf_token": csrf_token_from(client, location)}
        )
    if step == "/mfa/enrol":
        page = client.get(location).get_data(as_text=True)
        secret = ENROL_KEY.search(page).group(1).replace(" ", "")
        codes = client.post(
            location, data={"code": pyotp.TOTP(secret).now(), "csrf_token": csrf_token_from(client, location)}
        ).get_data(as_text=True)
        saved = html.unescape(CODES_SAVED_FORM.search(codes).group(1))
        return client.post(saved, data={"csrf_token": CSRF_FIELD.search(codes).group(1)})
    return response


def signed_in_client(app, role: Role = Role.ADMIN) -> tuple[FlaskClient, StaffUser]:
    user = make_staff(role)
    client = app.test_client()
    response = sign_in(client, user.email)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client, user


CUSTOMER_PASSWORD = "Portal-Cliente-2026!"


def last_link_token(recipient: str) -> str:
    """The token in the newest emailed link to `recipient`, read from the outbox as a customer would."""
    import re

    from sqlalchemy import select

    from backoffice.notifications.models import OutboxMessage

    body = db.session.execute(
        select(OutboxMessage.body_text)
        .where(OutboxMessage.recipient == recipient)
        .order_by(OutboxMessage.id.desc())
        .limit(1)
    ).scalar_one()
    return re.search(r"token=([\w-]+)", body).group(1)


def make_customer(email: str | None = None, *, password: str = CUSTOMER_PASSWORD, verified: bool = True):
    """A registered (and by default verified) individual account, made through the account service."""
    from backoffice.customers import service as accounts

    email = email or f"customer{next(_sequence)}@correo.example"
    accounts.register(email, password, True, language="es", ip=None)
    db.session.commit()
    if verified:
        accounts.verify_email(last_link_token(email), ip=None, user_agent=None)
        db.session.commit()
    return accounts.find_by_email(email)


def make_policyholder(
    tax_id: str = "12345678Z",
    *,
    email: str | None = "maria.garcia@correo.example",
    name: str = "María García López",
    policies: int = 1,
    kind: str = "person",
):
    from backoffice.customers.models import HolderKind, Policy, Policyholder

    holder = Policyholder(tax_id=tax_id, kind=HolderKind(kind), name=name, email=email, phone="+34612345612")
    holder.policies = [
        Policy(number=f"{tax_id}-{n}", product="auto", status="active", coverage="Todo riesgo")
        for n in range(1, policies + 1)
    ]
    db.session.add(holder)
    db.session.commit()
    return holder


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def sign_in_token(client, email: str) -> str:
    """A customer's access token, signed in through the API with the factories' password."""
    response = client.post("/api/v1/sessions", json={"username": email, "password": CUSTOMER_PASSWORD})
    return response.json["access_token"]


def make_call_task(
    deadline,
    *,
    created_at=None,
    preferred_call_times: list | None = None,
    company_tax_id: str = "B12345674",
    tax_id: str = "12345678Z",
    email: str | None = None,
    language: str = "es",
):
    """An application approved by legal (status `call_scheduled`) and its open call task,
    written directly: the call tests start where the review ends."""
    import secrets
    from datetime import timedelta

    from backoffice.calls.models import CallTask
    from backoffice.review.models import ApplicationStatus, RepresentativeApplication

    number = next(_sequence)
    created_at = created_at or deadline - timedelta(days=2)
    application = RepresentativeApplication(
        id=secrets.token_hex(16),
        access_key_hash="0" * 64,
        company_tax_id=company_tax_id,
        company_name=f"Transportes Ejemplo {number} S.L.",
        first_name="Lucía",
        last_name="Pérez Gil",
        tax_id=tax_id,
        email=email or f"representante{number}@transportes.example",
        phone="+34611222333",
        preferred_call_times=preferred_call_times or [],
        language=language,
        status=ApplicationStatus.CALL_SCHEDULED,
        created_at=created_at,
        submitted_at=created_at,
        call_deadline=deadline,
        requested_documents=[],
    )
    db.session.add(application)
    db.session.flush()
    task = CallTask(application_id=application.id, deadline=deadline, created_at=created_at)
    db.session.add(task)
    db.session.commit()
    return task

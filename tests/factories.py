"""Factory functions: build real records through the services, and commit them."""

from __future__ import annotations

import itertools

from flask.testing import FlaskClient

from backoffice.audit import Actor
from backoffice.extensions import db
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
) -> StaffUser:
    """A staff user. The product's default language is Spanish; tests read the back office in
    English unless they ask for `language="es"`."""
    number = next(_sequence)
    user = staff_service.create_staff(
        email or f"staff{number}@ventanilla.example",
        name or f"Staff Member {number}",
        role,
        password,
        actor=TEST_ACTOR,
    )
    user.language = language
    if not active:
        staff_service.deactivate(user, actor=TEST_ACTOR)
    db.session.commit()
    return user


def sign_in(client: FlaskClient, email: str, password: str = STAFF_PASSWORD, **extra):
    """Sign in through the real login form (CSRF token included)."""
    from tests.conftest import csrf_token_from

    token = csrf_token_from(client, "/login")
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token}, **extra)


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

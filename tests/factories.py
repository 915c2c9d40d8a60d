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
) -> StaffUser:
    number = next(_sequence)
    user = staff_service.create_staff(
        email or f"staff{number}@ventanilla.example",
        name or f"Staff Member {number}",
        role,
        password,
        actor=TEST_ACTOR,
    )
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

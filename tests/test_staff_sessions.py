"""Staff sessions end on the server: after STAFF_IDLE_MINUTES without a request and
STAFF_SESSION_HOURS after signing in, whatever the browser keeps; role changes, deactivation and
MFA resets need the password and a code entered within STAFF_REAUTH_MINUTES."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import select

from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.config import DEFAULTS
from backoffice.extensions import db
from backoffice.staff import service
from backoffice.staff.models import Role, StaffSession, StaffUser
from tests.conftest import csrf_token_from
from tests.factories import STAFF_PASSWORD, make_staff, sign_in, signed_in_client, totp_code

T0 = datetime(2026, 11, 23, 9, 0, 10, tzinfo=UTC)
# Signed out, pages speak the browser's language.
ENGLISH = {"Accept-Language": "en"}


@pytest.fixture
def app(make_app):
    """The limits a real deployment runs with (the rest of the suite relaxes them)."""
    app = make_app(
        STAFF_IDLE_MINUTES=DEFAULTS["STAFF_IDLE_MINUTES"], STAFF_SESSION_HOURS=DEFAULTS["STAFF_SESSION_HOURS"]
    )
    with app.app_context():
        yield app


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def _session_of(user: StaffUser) -> StaffSession:
    db.session.expire_all()
    return db.session.execute(select(StaffSession).where(StaffSession.staff_id == user.id)).scalar_one()


def _expiry_events() -> list[AuditEvent]:
    return list(
        db.session.execute(select(AuditEvent).where(AuditEvent.action == "session.expired")).scalars()
    )


def test_the_defaults_are_thirty_idle_minutes_twelve_hours_and_five_minutes_to_reauthenticate():
    assert (
        DEFAULTS["STAFF_IDLE_MINUTES"],
        DEFAULTS["STAFF_SESSION_HOURS"],
        DEFAULTS["STAFF_REAUTH_MINUTES"],
    ) == (
        30,
        12,
        5,
    )


# Idle and absolute timeouts


def test_a_session_left_idle_too_long_ends_and_says_why(app, clock):
    client, user = signed_in_client(app, Role.SUPERVISOR)
    clock.shift(timedelta(minutes=31))

    response = client.get("/admin/dashboard/", headers=ENGLISH)
    page = client.get(response.headers["Location"], headers=ENGLISH).get_data(as_text=True)

    assert response.headers["Location"] == "/login?next=/admin/dashboard/"
    assert "signed out after 30 minutes without activity" in page
    assert _session_of(user).revoked_at is not None
    (event,) = _expiry_events()
    assert (event.subject_id, event.after["reason"]) == (str(user.id), "idle")


def test_activity_keeps_a_session_alive(app, clock):
    client, _ = signed_in_client(app, Role.SUPERVISOR)

    statuses = []
    for _ in range(3):
        clock.shift(timedelta(minutes=20))
        statuses.append(client.get("/admin/").status_code)

    assert statuses == [200, 200, 200]


def test_a_session_ends_after_twelve_hours_however_active(app, clock):
    client, user = signed_in_client(app, Role.SUPERVISOR)
    for _ in range(35):  # a request every 20 minutes: 11 h 40 min
        clock.shift(timedelta(minutes=20))
        assert client.get("/admin/").status_code == 200
    clock.shift(timedelta(minutes=21))

    response = client.get("/admin/", headers=ENGLISH)
    page = client.get(response.headers["Location"], headers=ENGLISH).get_data(as_text=True)

    assert response.headers["Location"].startswith("/login")
    assert "signed in for 12 hours, the longest a session lasts" in page
    assert _expiry_events()[0].after["reason"] == "absolute"


def test_an_expired_session_stays_ended_when_the_cookie_is_replayed(app, clock):
    client, user = signed_in_client(app, Role.SUPERVISOR)
    with client.session_transaction() as session:
        cookie = dict(session)
    clock.shift(timedelta(minutes=31))
    client.get("/admin/")
    clock.shift(timedelta(minutes=-30))  # even with the clock turned back
    with client.session_transaction() as session:
        session.update(cookie)

    assert client.get("/admin/").headers["Location"].startswith("/login")


def test_a_half_signed_in_session_times_out_too(app, clock):
    user = make_staff(Role.ADMIN)
    client = app.test_client()
    sign_in(client, user.email, second_step=False)
    clock.shift(timedelta(minutes=31))

    response = client.get("/mfa")

    assert response.headers["Location"].startswith("/login")
    assert _session_of(user).revoked_at is not None


def test_the_limits_come_from_the_configuration(make_app, clock):
    app = make_app(STAFF_IDLE_MINUTES=5)
    with app.app_context():
        client, _ = signed_in_client(app, Role.SUPERVISOR)
        clock.shift(timedelta(minutes=6))

        assert client.get("/admin/").headers["Location"].startswith("/login")


def test_the_service_times_out_by_the_moment_it_is_given(app, clock):
    client, user = signed_in_client(app, Role.SUPERVISOR)
    with client.session_transaction() as session:
        token = session["staff_session"]

    alive = service.check_session(token, now=T0 + timedelta(minutes=29))
    expired = service.check_session(token, now=T0 + timedelta(minutes=60))

    assert alive.state is service.SessionState.COMPLETE
    assert (expired.state, expired.expiry) == (service.SessionState.EXPIRED, service.Expiry.IDLE)


# Re-authentication before changing roles


def _edit(client, user: StaffUser, **fields):
    url = f"/admin/staff/edit/?id={user.id}"
    data = {"name": user.name, "role": user.role.value, "language": "en", "active": "y", **fields}
    return client.post(url, data={**data, "csrf_token": csrf_token_from(client, "/admin/")})


def test_a_fresh_sign_in_counts_as_recent_authentication(app, clock):
    agent = make_staff(Role.CALL_AGENT)
    client, _ = signed_in_client(app, Role.ADMIN)
    clock.shift(timedelta(minutes=4))

    _edit(client, agent, role="supervisor")

    db.session.refresh(agent)
    assert agent.role == Role.SUPERVISOR


def test_an_old_sign_in_must_reauthenticate_before_editing_staff(app, clock):
    agent = make_staff(Role.CALL_AGENT)
    client, _ = signed_in_client(app, Role.ADMIN)
    clock.shift(timedelta(minutes=6))

    form = client.get(f"/admin/staff/edit/?id={agent.id}")
    change = _edit(client, agent, role="admin")

    assert form.headers["Location"] == f"/reauthenticate?next=/admin/staff/edit/?id%3D{agent.id}"
    assert change.headers["Location"].startswith("/reauthenticate?next=")
    db.session.refresh(agent)
    assert agent.role == Role.CALL_AGENT


def test_after_reauthenticating_the_role_change_goes_through(app, clock):
    agent = make_staff(Role.CALL_AGENT)
    client, admin = signed_in_client(app, Role.ADMIN)
    clock.shift(timedelta(minutes=6))
    asked = client.get(f"/admin/staff/edit/?id={agent.id}").headers["Location"]

    back = client.post(
        asked,
        data={
            "password": STAFF_PASSWORD,
            "code": totp_code(admin.email),
            "csrf_token": csrf_token_from(client, asked),
        },
    )
    form = client.get(back.headers["Location"])
    _edit(client, agent, role="supervisor")

    assert back.headers["Location"] == f"/admin/staff/edit/?id={agent.id}"
    assert form.status_code == 200
    db.session.refresh(agent)
    assert agent.role == Role.SUPERVISOR
    actions = list(db.session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())
    assert actions.index("staff.reauthenticated") < actions.index("staff.role_changed")


def test_a_wrong_password_or_code_does_not_reauthenticate(app, clock):
    client, admin = signed_in_client(app, Role.ADMIN)
    clock.shift(timedelta(minutes=6))
    token = csrf_token_from(client, "/reauthenticate")

    wrong_password = client.post(
        "/reauthenticate",
        data={"password": "Not-the-password-9!", "code": totp_code(admin.email), "csrf_token": token},
    )
    wrong_code = client.post(
        "/reauthenticate", data={"password": STAFF_PASSWORD, "code": "12345x", "csrf_token": token}
    )

    assert wrong_password.status_code == wrong_code.status_code == 200
    assert "The password or the code is not correct" in wrong_code.get_data(as_text=True)
    assert client.get("/admin/staff/edit/?id=1").headers["Location"].startswith("/reauthenticate")
    failures = db.session.execute(select(AuditEvent).where(AuditEvent.action == "mfa.failed")).scalars().all()
    assert [event.after["purpose"] for event in failures] == ["reauthentication", "reauthentication"]


def test_reauthentication_never_redirects_off_site(app):
    client, admin = signed_in_client(app, Role.ADMIN)
    url = "/reauthenticate?next=https://evil.example/"

    response = client.post(
        url,
        data={
            "password": STAFF_PASSWORD,
            "code": totp_code(admin.email),
            "csrf_token": csrf_token_from(client, url),
        },
    )

    assert response.headers["Location"] == "/admin/"


def test_reauthentication_needs_a_full_sign_in(app):
    user = make_staff(Role.ADMIN)
    client = app.test_client()
    sign_in(client, user.email, second_step=False)

    assert client.get("/reauthenticate").headers["Location"].startswith("/mfa")


@pytest.mark.parametrize(
    "change",
    [
        lambda user, admin, at: service.set_role(
            user, "admin", actor=Actor.staff(admin), reauthenticated_at=at
        ),
        lambda user, admin, at: service.deactivate(user, actor=Actor.staff(admin), reauthenticated_at=at),
    ],
    ids=["set_role", "deactivate"],
)
@pytest.mark.parametrize("minutes_ago", [None, 6])
def test_the_service_refuses_staff_changes_without_a_recent_reauthentication(app, change, minutes_ago):
    agent, admin = make_staff(Role.CALL_AGENT), make_staff(Role.ADMIN)
    at = None if minutes_ago is None else datetime.now(UTC) - timedelta(minutes=minutes_ago)

    with pytest.raises(service.ReauthenticationRequired):
        change(agent, admin, at)

    db.session.rollback()
    db.session.refresh(agent)
    assert (agent.role, agent.active) == (Role.CALL_AGENT, True)


def test_the_service_accepts_a_recent_reauthentication(app):
    agent, admin = make_staff(Role.CALL_AGENT), make_staff(Role.ADMIN)

    service.set_role(
        agent,
        "supervisor",
        actor=Actor.staff(admin),
        reauthenticated_at=datetime.now(UTC) - timedelta(minutes=4),
    )

    assert agent.role == Role.SUPERVISOR


def test_the_command_line_acts_as_the_system_and_needs_no_reauthentication(app):
    agent = make_staff(Role.CALL_AGENT)

    service.set_role(agent, "supervisor", actor=Actor.system("cli"))

    assert agent.role == Role.SUPERVISOR

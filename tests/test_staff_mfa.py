"""Two-step sign-in for staff: enrolment with a QR code, codes (wrong, replayed, recovery),
every role held at the second step, the limits on guessing, and the admin reset."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
import time_machine
from sqlalchemy import select

from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.extensions import db
from backoffice.staff import mfa
from backoffice.staff.models import RecoveryCode, Role, StaffSession, StaffUser
from tests.conftest import csrf_token_from
from tests.factories import STAFF_PASSWORD, TEST_ACTOR, make_staff, sign_in, signed_in_client

T0 = datetime(2026, 11, 23, 9, 0, 10, tzinfo=UTC)  # 10 s into a 30-second step
RECOVERY_CODE = re.compile(r'data-testid="recovery-code">([a-z0-9-]+)<')


def _actions(subject_id) -> list[str]:
    return list(
        db.session.execute(
            select(AuditEvent.action)
            .where(AuditEvent.subject_type == "staff", AuditEvent.subject_id == str(subject_id))
            .order_by(AuditEvent.seq)
        ).scalars()
    )


def _password_only(app, user: StaffUser):
    """A browser that has entered the password and nothing more."""
    client = app.test_client()
    response = sign_in(client, user.email, second_step=False)
    assert response.status_code == 302
    return client, response.headers["Location"]


def _submit(client, url: str, code: str):
    return client.post(url, data={"code": code, "csrf_token": csrf_token_from(client, url)})


def _code(user: StaffUser, at: datetime) -> str:
    return pyotp.TOTP(mfa.totp_secret(user)).at(at)


def _wrong_code(user: StaffUser, at: datetime) -> str:
    right = {_code(user, at + timedelta(seconds=offset)) for offset in (-30, 0, 30)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in right)


def _fresh(user: StaffUser) -> StaffUser:
    db.session.expire_all()
    return db.session.get(StaffUser, user.id)


# Enrolment


def test_a_first_sign_in_goes_to_enrolment_with_a_qr_code_and_the_key(app):
    user = make_staff(Role.CALL_AGENT, mfa=False)
    client, location = _password_only(app, user)

    page = client.get(location).get_data(as_text=True)

    assert location == "/mfa/enrol?next=/admin/"
    qr = re.search(r'<img src="data:image/svg\+xml[^"]+"[^>]*data-testid="totp-qr"', page)
    assert qr, page
    key = re.search(r'data-testid="totp-secret">([^<]+)<', page).group(1).replace(" ", "")
    assert key == mfa.totp_secret(_fresh(user))
    assert "<script" not in page


def test_the_key_is_stored_encrypted_and_shown_only_until_enrolment_is_confirmed(app):
    user = make_staff(Role.CALL_AGENT, mfa=False)
    client, location = _password_only(app, user)
    client.get(location)
    user = _fresh(user)
    secret = mfa.totp_secret(user)

    _submit(client, location, pyotp.TOTP(secret).now())

    assert secret not in user.totp_secret_encrypted
    assert base64.b32decode(secret)
    assert client.get(location).headers["Location"] == "/admin/"


def test_the_first_code_enrols_and_shows_ten_recovery_codes_once(app):
    user = make_staff(Role.CALL_AGENT, mfa=False)
    client, location = _password_only(app, user)
    client.get(location)

    response = _submit(client, location, pyotp.TOTP(mfa.totp_secret(_fresh(user))).now())

    page = response.get_data(as_text=True)
    codes = RECOVERY_CODE.findall(page)
    assert response.status_code == 200
    assert len(set(codes)) == 10
    assert _fresh(user).mfa_enrolled_at is not None
    assert "mfa.enrolled" in _actions(user.id)
    stored = db.session.execute(select(RecoveryCode.code_hash).where(RecoveryCode.staff_id == user.id))
    assert not {code for code in codes} & set(stored.scalars())  # only hashes are kept
    assert client.get("/admin/").status_code == 200


def test_i_have_saved_them_continues_to_the_page_asked_for(app):
    user = make_staff(Role.SUPERVISOR, mfa=False)

    response = sign_in(app.test_client(), user.email, query_string={"next": "/admin/audit/"})

    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/audit/"


def test_a_wrong_code_does_not_enrol(app):
    user = make_staff(Role.CALL_AGENT, mfa=False)
    client, location = _password_only(app, user)
    client.get(location)

    response = _submit(client, location, _wrong_code(_fresh(user), datetime.now(UTC)))

    assert response.status_code == 200
    assert "That code is not valid" in response.get_data(as_text=True)
    assert _fresh(user).mfa_enrolled_at is None
    assert client.get("/admin/").headers["Location"].startswith("/mfa/enrol")


# Verifying codes


def test_the_current_code_completes_the_sign_in(app):
    user = make_staff(Role.LEGAL_REVIEWER)
    client, location = _password_only(app, user)

    response = _submit(client, location, _code(user, datetime.now(UTC)))

    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert _actions(user.id)[-1] == "mfa.verified"


def test_a_wrong_code_is_refused_and_audited(app):
    user = make_staff(Role.LEGAL_REVIEWER)
    client, location = _password_only(app, user)

    response = _submit(client, location, _wrong_code(user, datetime.now(UTC)))

    assert response.status_code == 200
    assert "That code is not valid" in response.get_data(as_text=True)
    assert _actions(user.id)[-1] == "mfa.failed"
    assert client.get("/admin/").headers["Location"].startswith("/mfa?")


def test_a_code_already_used_is_refused(app):
    user = make_staff(Role.LEGAL_REVIEWER)
    with time_machine.travel(T0, tick=False):
        code = _code(user, T0)
        first, location = _password_only(app, user)
        assert _submit(first, location, code).status_code == 302
        second, location = _password_only(app, user)

        replayed = _submit(second, location, code)

    assert replayed.status_code == 200
    assert second.get("/admin/").status_code == 302


def test_a_code_older_than_the_last_one_used_is_refused(app):
    user = make_staff(Role.LEGAL_REVIEWER)
    with time_machine.travel(T0, tick=False):
        first, location = _password_only(app, user)
        assert _submit(first, location, _code(user, T0 + timedelta(seconds=30))).status_code == 302
        second, location = _password_only(app, user)

        older = _submit(second, location, _code(user, T0))

    assert older.status_code == 200


@pytest.mark.parametrize(("offset", "accepted"), [(-30, True), (30, True), (-60, False), (60, False)])
def test_codes_are_accepted_one_step_either_side_and_no_further(app, offset, accepted):
    user = make_staff(Role.LEGAL_REVIEWER)
    with time_machine.travel(T0, tick=False):
        client, location = _password_only(app, user)

        response = _submit(client, location, _code(user, T0 + timedelta(seconds=offset)))

    assert (response.status_code == 302) is accepted


def test_a_recovery_code_signs_in_once(app):
    user = make_staff(Role.ASSOCIATION_CLERK, mfa=False)
    codes = mfa.enrol_with_secret(user, pyotp.random_base32(), actor=TEST_ACTOR)
    db.session.commit()
    client, location = _password_only(app, user)

    used = _submit(client, location, codes[3].upper().replace("-", " "))
    again_client, again_location = _password_only(app, user)
    again = _submit(again_client, again_location, codes[3])

    assert used.status_code == 302
    assert "9 are left" in client.get("/admin/").get_data(as_text=True)
    assert again.status_code == 200
    assert _actions(user.id).count("mfa.recovery_code_used") == 1


# Every role is held at the second step


HELD_PAGES = ["/admin/", "/admin/dashboard/", "/admin/staff/", "/admin/review/", "/admin/audit/", "/files/x"]
HELD_ACTIONS = [
    ("/language", {"language": "es"}),
    ("/admin/calls/next", {}),
    ("/admin/staff/new/", {"email": "x@ventanilla.example", "name": "X", "role": "admin"}),
]


@pytest.mark.parametrize("url", HELD_PAGES)
@pytest.mark.parametrize("role", list(Role), ids=[role.value for role in Role])
def test_no_page_opens_before_the_second_step(app, role, url):
    client, _ = _password_only(app, make_staff(role))

    response = client.get(url)

    assert response.status_code == 302
    assert response.headers["Location"].startswith(f"/mfa?next={url}")


@pytest.mark.parametrize(("url", "form"), HELD_ACTIONS)
@pytest.mark.parametrize("role", list(Role), ids=[role.value for role in Role])
def test_no_action_runs_before_the_second_step(app, role, url, form):
    user = make_staff(role, language="en")
    client, location = _password_only(app, user)

    response = client.post(url, data={**form, "csrf_token": csrf_token_from(client, location)})

    assert response.status_code == 302
    assert response.headers["Location"] == "/mfa"
    assert _fresh(user).language == "en"
    assert mfa.totp_secret(_fresh(user))  # nothing else happened to them
    assert (
        db.session.execute(select(StaffUser).where(StaffUser.email == "x@ventanilla.example")).first() is None
    )


def test_not_enrolled_staff_are_sent_to_enrol_from_any_page(app):
    client, _ = _password_only(app, make_staff(Role.SUPERVISOR, mfa=False))

    assert client.get("/admin/dashboard/").headers["Location"] == "/mfa/enrol?next=/admin/dashboard/"


def test_the_public_api_ignores_a_half_signed_in_browser(app):
    client, _ = _password_only(app, make_staff(Role.ADMIN))

    response = client.post("/api/v1/accounts", json={})

    assert response.status_code == 422


def test_the_sign_in_page_sends_a_half_signed_in_browser_to_its_second_step(app):
    client, location = _password_only(app, make_staff(Role.ADMIN))

    assert client.get("/login").headers["Location"] == location


def test_signing_out_at_the_second_step_ends_the_session_on_the_server(app):
    user = make_staff(Role.ADMIN)
    client, location = _password_only(app, user)

    client.post("/logout", data={"csrf_token": csrf_token_from(client, location)})

    session = db.session.execute(select(StaffSession).where(StaffSession.staff_id == user.id)).scalar_one()
    assert session.revoked_at is not None
    assert client.get("/admin/").headers["Location"].startswith("/login")


# Guessing


def test_five_wrong_codes_end_the_half_session(app):
    user = make_staff(Role.ADMIN)
    client, location = _password_only(app, user)
    wrong = _wrong_code(user, datetime.now(UTC))

    statuses = [_submit(client, location, wrong).status_code for _ in range(5)]

    assert statuses == [200, 200, 200, 200, 302]
    assert client.get(location).headers["Location"] == "/login"
    session = db.session.execute(select(StaffSession).where(StaffSession.staff_id == user.id)).scalar_one()
    assert session.revoked_at is not None


def test_wrong_codes_are_rate_limited_per_staff_member(make_app):
    app = make_app(STAFF_MFA_LIMIT_ACCOUNT="3 per hour", STAFF_MFA_MAX_FAILURES=100)
    with app.app_context():
        user = make_staff(Role.ADMIN)
        wrong = _wrong_code(user, datetime.now(UTC))
        client, location = _password_only(app, user)
        for _ in range(3):
            assert _submit(client, location, wrong).status_code == 200
        elsewhere, other_location = _password_only(app, user)

        blocked = _submit(elsewhere, other_location, _code(user, datetime.now(UTC)))

    assert blocked.status_code == 429
    assert "Retry-After" in blocked.headers
    assert "Too many codes tried" in blocked.get_data(as_text=True)


def test_right_codes_do_not_count_towards_the_limit(make_app):
    app = make_app(STAFF_MFA_LIMIT_ACCOUNT="2 per hour")
    with app.app_context():
        user = make_staff(Role.ADMIN)

        statuses = [sign_in(app.test_client(), user.email).status_code for _ in range(4)]

    assert statuses == [302, 302, 302, 302]


# Admin reset


def _reset(client, user: StaffUser, **extra):
    token = csrf_token_from(client, "/admin/")
    return client.post(
        f"/admin/staff/reset-mfa/?id={user.id}", data={"id": user.id, "csrf_token": token, **extra}
    )


def test_an_admin_resets_someones_two_step_sign_in(app):
    agent = make_staff(Role.CALL_AGENT)
    agent_client = app.test_client()
    sign_in(agent_client, agent.email)
    client, admin = signed_in_client(app, Role.ADMIN)

    response = _reset(client, agent, confirmed="1")

    assert response.status_code == 302
    agent = _fresh(agent)
    assert (agent.mfa_enrolled_at, agent.totp_secret_encrypted) == (None, None)
    assert db.session.execute(select(RecoveryCode).where(RecoveryCode.staff_id == agent.id)).first() is None
    event = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "mfa.reset", AuditEvent.subject_id == str(agent.id))
    ).scalar_one()
    assert event.actor_id == str(admin.id)
    assert agent_client.get("/admin/").headers["Location"].startswith("/login")
    again = sign_in(app.test_client(), agent.email, second_step=False)
    assert again.headers["Location"].startswith("/mfa/enrol")


def test_the_reset_page_names_the_person_and_asks_before_acting(app):
    agent = make_staff(Role.CALL_AGENT, name="Pablo Llamadas")
    client, _ = signed_in_client(app, Role.ADMIN)

    page = client.get(f"/admin/staff/reset-mfa/?id={agent.id}").get_data(as_text=True)
    unconfirmed = _reset(client, agent)

    assert "Pablo Llamadas" in page and 'data-confirm="' in page
    assert unconfirmed.status_code == 200
    assert 'data-testid="confirmation"' in unconfirmed.get_data(as_text=True)
    assert _fresh(agent).mfa_enrolled_at is not None


def test_the_staff_list_links_to_the_reset(app):
    agent = make_staff(Role.CALL_AGENT)
    client, _ = signed_in_client(app, Role.ADMIN)

    page = client.get("/admin/staff/").get_data(as_text=True)

    assert f"/admin/staff/reset-mfa/?id={agent.id}" in page


@pytest.mark.parametrize(
    "role", [role for role in Role if role is not Role.ADMIN], ids=lambda role: role.value
)
def test_only_admins_can_reset(app, role):
    agent = make_staff(Role.CALL_AGENT)
    client, _ = signed_in_client(app, role)

    assert client.get(f"/admin/staff/reset-mfa/?id={agent.id}").status_code == 403
    assert _reset(client, agent, confirmed="1").status_code == 403
    assert _fresh(agent).mfa_enrolled_at is not None


def test_an_admin_cannot_reset_their_own(app):
    client, admin = signed_in_client(app, Role.ADMIN)

    response = _reset(client, admin, confirmed="1")

    assert response.status_code == 302
    assert _fresh(admin).mfa_enrolled_at is not None
    assert "mfa.reset" not in _actions(admin.id)


def test_the_reset_service_needs_a_recent_reauthentication(app):
    agent, admin = make_staff(Role.CALL_AGENT), make_staff(Role.ADMIN)
    stale = datetime.now(UTC) - timedelta(minutes=6)

    from backoffice.staff.service import ReauthenticationRequired

    with pytest.raises(ReauthenticationRequired):
        mfa.reset(agent, actor=Actor.staff(admin), reauthenticated_at=stale)


def test_a_reset_asks_a_stale_admin_to_reauthenticate_first(app):
    agent = make_staff(Role.CALL_AGENT)
    with time_machine.travel(T0, tick=False) as clock:
        client, _ = signed_in_client(app, Role.ADMIN)
        clock.shift(timedelta(minutes=6))

        page = client.get(f"/admin/staff/reset-mfa/?id={agent.id}")
        action = _reset(client, agent, confirmed="1")

    assert page.headers["Location"].startswith("/reauthenticate?next=")
    assert action.headers["Location"].startswith("/reauthenticate?next=")
    assert _fresh(agent).mfa_enrolled_at is not None


def test_the_command_line_resets_when_no_other_admin_can(app):
    admin = make_staff(Role.ADMIN)

    result = app.test_cli_runner().invoke(args=["staff", "reset-mfa", "--email", admin.email])

    assert result.exit_code == 0, result.output
    assert _fresh(admin).mfa_enrolled_at is None
    event = db.session.execute(select(AuditEvent).where(AuditEvent.action == "mfa.reset")).scalar_one()
    assert (event.actor_kind, event.subject_id) == ("system", str(admin.id))


# Own recovery codes


def test_staff_make_new_recovery_codes_after_reauthenticating(app):
    user = make_staff(Role.CALL_AGENT, mfa=False)
    old = mfa.enrol_with_secret(user, pyotp.random_base32(), actor=TEST_ACTOR)
    db.session.commit()
    with time_machine.travel(T0, tick=False) as clock:
        client = app.test_client()
        sign_in(client, user.email)
        clock.shift(timedelta(minutes=6))
        token = csrf_token_from(client, "/mfa/recovery-codes")

        asked = client.post("/mfa/recovery-codes", data={"csrf_token": token})
        clock.shift(timedelta(seconds=30))
        confirmed = client.post(
            asked.headers["Location"],
            data={
                "password": STAFF_PASSWORD,
                "code": _code(user, T0 + timedelta(minutes=6, seconds=30)),
                "csrf_token": token,
            },
        )
        new = client.post("/mfa/recovery-codes", data={"csrf_token": token})

    assert asked.headers["Location"] == "/reauthenticate?next=/mfa/recovery-codes"
    assert confirmed.headers["Location"] == "/mfa/recovery-codes"
    codes = RECOVERY_CODE.findall(new.get_data(as_text=True))
    assert len(codes) == 10 and not set(codes) & set(old)
    assert mfa.remaining_recovery_codes(user) == 10
    again, location = _password_only(app, user)
    assert _submit(again, location, old[0]).status_code == 200  # the old ones stopped working
    assert {"staff.reauthenticated", "mfa.recovery_codes_regenerated"} <= set(_actions(user.id))


def test_the_top_bar_leads_to_ones_own_two_step_sign_in_page(app):
    client, _ = signed_in_client(app, Role.LEGAL_REVIEWER)

    home = client.get("/admin/").get_data(as_text=True)
    page = client.get("/mfa/recovery-codes").get_data(as_text=True)

    assert 'href="/mfa/recovery-codes"' in home
    assert "You have 10 unused recovery codes" in page


# Fast path for tests, and the demo staff


def test_the_factory_signs_the_same_person_in_many_times_in_one_step(app):
    user = make_staff(Role.ADMIN)
    with time_machine.travel(T0, tick=False):
        statuses = [sign_in(app.test_client(), user.email).status_code for _ in range(3)]

    assert statuses == [302, 302, 302]


def test_demo_staff_sign_in_with_the_published_key(make_app):
    from backoffice.demo import DEMO_PASSWORD, DEMO_STAFF, DEMO_TOTP_SECRET

    app = make_app(APP_ENV="development")
    with app.app_context():
        output = app.test_cli_runner().invoke(args=["demo", "load"]).output
        client = app.test_client()
        sign_in(client, DEMO_STAFF[0][0], DEMO_PASSWORD, second_step=False)

        response = _submit(client, "/mfa", pyotp.TOTP(DEMO_TOTP_SECRET).now())

    assert DEMO_TOTP_SECRET in output
    assert response.status_code == 302

"""Staff management: the admin view and the `flask staff` commands, both through the service."""

from sqlalchemy import select

from backoffice.audit.models import AuditEvent
from backoffice.extensions import db
from backoffice.staff import service
from backoffice.staff.models import Role, StaffUser
from tests.conftest import csrf_token_from
from tests.factories import STAFF_PASSWORD, make_staff, sign_in, signed_in_client


def _actions(subject_id) -> list[str]:
    return list(
        db.session.execute(
            select(AuditEvent.action)
            .where(AuditEvent.subject_type == "staff", AuditEvent.subject_id == str(subject_id))
            .order_by(AuditEvent.seq)
        ).scalars()
    )


def test_admin_creates_a_staff_user_through_the_form(app):
    client, admin = signed_in_client(app, Role.ADMIN)
    token = csrf_token_from(client, "/admin/staff/new/")

    response = client.post(
        "/admin/staff/new/",
        data={
            "csrf_token": token,
            "email": "New.Agent@Ventanilla.example",
            "name": "Nuria Nueva",
            "role": "call_agent",
            "password": STAFF_PASSWORD,
        },
    )

    assert response.status_code == 302
    created = service.find_by_email("new.agent@ventanilla.example")
    assert (created.name, created.role) == ("Nuria Nueva", Role.CALL_AGENT)
    event = db.session.execute(
        select(AuditEvent).where(
            AuditEvent.action == "staff.created", AuditEvent.subject_id == str(created.id)
        )
    ).scalar_one()
    assert event.actor_id == str(admin.id)


def test_weak_password_is_refused_with_the_rules_it_breaks(app):
    client, _ = signed_in_client(app, Role.ADMIN)
    token = csrf_token_from(client, "/admin/staff/new/")

    response = client.post(
        "/admin/staff/new/",
        data={
            "csrf_token": token,
            "email": "weak@ventanilla.example",
            "name": "Weak",
            "role": "call_agent",
            "password": "short",
        },
        follow_redirects=True,
    )

    page = response.get_data(as_text=True)
    assert "min_length" in page and "uppercase" in page
    assert service.find_by_email("weak@ventanilla.example") is None


def test_duplicate_email_is_refused(app):
    existing = make_staff(Role.CALL_AGENT)
    client, _ = signed_in_client(app, Role.ADMIN)
    token = csrf_token_from(client, "/admin/staff/new/")

    response = client.post(
        "/admin/staff/new/",
        data={
            "csrf_token": token,
            "email": existing.email.upper(),
            "name": "Twin",
            "role": "call_agent",
            "password": STAFF_PASSWORD,
        },
        follow_redirects=True,
    )

    assert "taken" in response.get_data(as_text=True)
    assert db.session.execute(select(db.func.count(StaffUser.id))).scalar() == 2


def test_admin_changes_a_role_and_it_is_audited(app):
    agent = make_staff(Role.CALL_AGENT)
    client, _ = signed_in_client(app, Role.ADMIN)
    url = f"/admin/staff/edit/?id={agent.id}"

    client.post(
        url,
        data={
            "csrf_token": csrf_token_from(client, url),
            "name": agent.name,
            "role": "supervisor",
            "active": "y",
        },
    )

    db.session.refresh(agent)
    assert agent.role == Role.SUPERVISOR
    assert _actions(agent.id)[-1] == "staff.role_changed"


def test_admin_deactivation_signs_the_user_out(app):
    agent = make_staff(Role.CALL_AGENT)
    agent_client = app.test_client()
    sign_in(agent_client, agent.email)
    client, _ = signed_in_client(app, Role.ADMIN)
    url = f"/admin/staff/edit/?id={agent.id}"

    client.post(
        url, data={"csrf_token": csrf_token_from(client, url), "name": agent.name, "role": "call_agent"}
    )

    db.session.refresh(agent)
    assert agent.active is False
    assert agent_client.get("/admin/").status_code == 302


def test_staff_cannot_be_deleted_from_the_back_office(app):
    agent = make_staff(Role.CALL_AGENT)
    client, _ = signed_in_client(app, Role.ADMIN)

    response = client.post(
        "/admin/staff/delete/", data={"csrf_token": csrf_token_from(client, "/admin/staff/"), "id": agent.id}
    )

    assert response.status_code in (302, 404)
    assert db.session.get(StaffUser, agent.id) is not None


def test_an_admin_cannot_deactivate_or_demote_themselves(app):
    client, admin = signed_in_client(app, Role.ADMIN)
    url = f"/admin/staff/edit/?id={admin.id}"

    response = client.post(
        url,
        data={"csrf_token": csrf_token_from(client, url), "name": admin.name, "role": "call_agent"},
        follow_redirects=True,
    )

    db.session.refresh(admin)
    assert (admin.role, admin.active) == (Role.ADMIN, True)
    assert "yourself" in response.get_data(as_text=True)


def test_cli_creates_staff_with_password_from_stdin(app):
    result = app.test_cli_runner().invoke(
        args=[
            "staff",
            "create",
            "--email",
            "cli@ventanilla.example",
            "--name",
            "Cli User",
            "--role",
            "legal_reviewer",
            "--password-stdin",
        ],
        input=STAFF_PASSWORD + "\n",
    )

    assert result.exit_code == 0, result.output
    user = service.find_by_email("cli@ventanilla.example")
    assert user.role == Role.LEGAL_REVIEWER
    assert sign_in(app.test_client(), "cli@ventanilla.example").status_code == 302


def test_cli_create_prompts_for_the_password_twice(app):
    result = app.test_cli_runner().invoke(
        args=["staff", "create", "--email", "p@ventanilla.example", "--name", "Prompted", "--role", "admin"],
        input=f"{STAFF_PASSWORD}\n{STAFF_PASSWORD}\n",
    )

    assert result.exit_code == 0, result.output
    assert service.find_by_email("p@ventanilla.example") is not None


def test_cli_reports_policy_failures_and_creates_nothing(app):
    result = app.test_cli_runner().invoke(
        args=[
            "staff",
            "create",
            "--email",
            "bad@ventanilla.example",
            "--name",
            "Bad",
            "--role",
            "admin",
            "--password-stdin",
        ],
        input="password\n",
    )

    assert result.exit_code != 0
    assert "min_length" in result.output
    assert service.find_by_email("bad@ventanilla.example") is None


def test_cli_sets_role(app):
    user = make_staff(Role.CALL_AGENT)

    result = app.test_cli_runner().invoke(
        args=["staff", "set-role", "--email", user.email, "--role", "supervisor"]
    )

    assert result.exit_code == 0
    db.session.refresh(user)
    assert user.role == Role.SUPERVISOR
    assert _actions(user.id)[-1] == "staff.role_changed"


def test_cli_deactivate_kills_live_sessions(app):
    user = make_staff(Role.CALL_AGENT)
    browser = app.test_client()
    sign_in(browser, user.email)

    result = app.test_cli_runner().invoke(args=["staff", "deactivate", "--email", user.email])

    assert result.exit_code == 0
    assert browser.get("/admin/").status_code == 302


def test_cli_names_an_unknown_user(app):
    result = app.test_cli_runner().invoke(args=["staff", "deactivate", "--email", "ghost@ventanilla.example"])

    assert result.exit_code != 0
    assert "No staff user with email ghost@ventanilla.example" in result.output

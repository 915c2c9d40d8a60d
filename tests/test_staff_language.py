"""The back office speaks each staff member's chosen language: Spanish unless they choose English."""

from __future__ import annotations

from sqlalchemy import select

from backoffice.audit.models import AuditEvent
from backoffice.extensions import db
from backoffice.staff import service as staff_service
from backoffice.staff.models import Role, StaffUser
from tests.conftest import csrf_token_from
from tests.factories import STAFF_PASSWORD, TEST_ACTOR, make_staff, sign_in


def _signed_in(app, language: str):
    user = make_staff(Role.SUPERVISOR, language=language)
    client = app.test_client()
    assert sign_in(client, user.email).status_code == 302
    return client, user


def test_a_new_staff_member_reads_the_back_office_in_spanish(app):
    user = staff_service.create_staff(
        "nueva@ventanilla.example", "Nueva Persona", Role.SUPERVISOR, STAFF_PASSWORD, actor=TEST_ACTOR
    )
    db.session.commit()
    client = app.test_client()
    sign_in(client, user.email)

    page = client.get("/admin/").get_data(as_text=True)

    assert user.language == "es"
    assert "Cerrar sesión" in page and "Sign out" not in page


def test_english_is_one_click_away_and_stays_chosen(app):
    client, user = _signed_in(app, "es")

    response = client.post(
        "/language",
        data={
            "csrf_token": csrf_token_from(client, "/admin/"),
            "language": "en",
            "next": "/admin/dashboard/",
        },
    )

    assert response.status_code == 302 and response.headers["Location"].endswith("/admin/dashboard/")
    db.session.refresh(user)
    assert user.language == "en"
    assert "Sign out" in client.get("/admin/").get_data(as_text=True)


def test_the_choice_is_audited(app):
    client, user = _signed_in(app, "es")

    client.post("/language", data={"csrf_token": csrf_token_from(client, "/admin/"), "language": "en"})

    event = (
        db.session.execute(
            select(AuditEvent).where(AuditEvent.subject_id == str(user.id)).order_by(AuditEvent.seq.desc())
        )
        .scalars()
        .first()
    )
    assert event.action == "staff.updated"
    assert (event.before["language"], event.after["language"]) == ("es", "en")


def test_an_unknown_language_changes_nothing(app):
    client, user = _signed_in(app, "es")

    client.post("/language", data={"csrf_token": csrf_token_from(client, "/admin/"), "language": "fr"})

    db.session.refresh(user)
    assert user.language == "es"


def test_the_switch_never_redirects_off_site(app):
    client, _ = _signed_in(app, "es")

    response = client.post(
        "/language",
        data={
            "csrf_token": csrf_token_from(client, "/admin/"),
            "language": "en",
            "next": "https://evil.example/",
        },
    )

    assert response.headers["Location"].endswith("/admin/")


def test_signed_out_nobody_can_change_a_language(app):
    response = app.test_client().post("/language", data={"language": "en"})

    assert response.status_code in (302, 400)
    assert db.session.execute(select(StaffUser)).first() is None


def test_the_public_api_follows_accept_language_not_the_staff_choice(app):
    client, _ = _signed_in(app, "en")

    english = client.post("/api/v1/accounts", json={}, headers={"Accept-Language": "en"})
    spanish = client.post("/api/v1/accounts", json={}, headers={"Accept-Language": "es"})

    assert english.status_code == spanish.status_code == 422
    assert english.get_json()["title"] != spanish.get_json()["title"]

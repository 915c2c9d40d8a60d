from flask_babel import force_locale
from sqlalchemy import select

from backoffice.audit.models import AuditEvent
from backoffice.extensions import db
from backoffice.staff import service
from backoffice.staff.models import Role, StaffSession
from tests.factories import TEST_ACTOR, make_staff, sign_in

# Nobody is signed in on the sign-in page, so it speaks the browser's language.
ENGLISH = {"Accept-Language": "en"}


def _actions() -> list[str]:
    return list(db.session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())


def test_login_page_renders_a_form(client):
    response = client.get("/login")

    assert response.status_code == 200
    assert 'name="csrf_token"' in response.get_data(as_text=True)


def test_sign_in_page_follows_the_browsers_language_and_defaults_to_spanish(client):
    english = client.get("/login", headers=ENGLISH).get_data(as_text=True)
    default = client.get("/login").get_data(as_text=True)

    assert '<html lang="en">' in english
    assert '<html lang="es">' in default


def test_valid_credentials_sign_in_and_open_the_back_office(app, client):
    user = make_staff(Role.ADMIN)

    response = sign_in(client, user.email)

    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert "staff.signed_in" in _actions()


def test_email_is_matched_case_insensitively(app, client):
    user = make_staff(Role.ADMIN, email="mixed.case@ventanilla.example")

    response = sign_in(client, "Mixed.Case@VENTANILLA.example")

    assert response.status_code == 302
    db.session.refresh(user)
    assert user.last_sign_in_at is not None


def test_wrong_password_and_unknown_user_get_the_same_generic_message(app, client):
    user = make_staff(Role.ADMIN)

    wrong_password = sign_in(client, user.email, "Not-the-password-1!", headers=ENGLISH)
    unknown_user = sign_in(client, "nobody@ventanilla.example", headers=ENGLISH)

    assert wrong_password.status_code == unknown_user.status_code == 200
    assert service_message() in wrong_password.get_data(as_text=True)
    assert service_message() in unknown_user.get_data(as_text=True)
    assert _actions().count("staff.sign_in_failed") == 2


def service_message() -> str:
    from backoffice.staff.views import BAD_CREDENTIALS

    with force_locale("en"):
        return str(BAD_CREDENTIALS)


def test_deactivated_user_cannot_sign_in(app, client):
    user = make_staff(Role.ADMIN, active=False)

    response = sign_in(client, user.email, headers=ENGLISH)

    assert response.status_code == 200
    assert service_message() in response.get_data(as_text=True)


def test_next_parameter_only_redirects_within_the_site(app, client):
    user = make_staff(Role.ADMIN)

    response = sign_in(client, user.email, query_string={"next": "https://evil.example/admin"})

    assert response.headers["Location"] == "/admin/"


def test_next_parameter_returns_to_the_requested_page(app, client):
    user = make_staff(Role.ADMIN)

    response = sign_in(client, user.email, query_string={"next": "/admin/audit/"})

    assert response.headers["Location"] == "/admin/audit/"


def test_repeated_failures_for_one_account_are_throttled(make_app):
    app = make_app(STAFF_LOGIN_LIMIT_ACCOUNT="3 per 15 minutes")
    with app.app_context():
        user = make_staff(Role.ADMIN)
        client = app.test_client()
        for _ in range(3):
            assert sign_in(client, user.email, "Wrong-password-123!").status_code == 200

        blocked = sign_in(client, user.email, headers=ENGLISH)

    assert blocked.status_code == 429
    assert "Retry-After" in blocked.headers
    assert "Too many sign-in attempts" in blocked.get_data(as_text=True)


def test_throttling_is_per_account(make_app):
    app = make_app(STAFF_LOGIN_LIMIT_ACCOUNT="3 per 15 minutes")
    with app.app_context():
        victim, other = make_staff(Role.ADMIN), make_staff(Role.ADMIN)
        client = app.test_client()
        for _ in range(3):
            sign_in(client, victim.email, "Wrong-password-123!")

        response = sign_in(client, other.email)

    assert response.status_code == 302


def test_repeated_failures_from_one_address_are_throttled(make_app):
    app = make_app(STAFF_LOGIN_LIMIT_IP="4 per 15 minutes")
    with app.app_context():
        client = app.test_client()
        for number in range(4):
            sign_in(client, f"guess{number}@ventanilla.example", "Wrong-password-123!")
        user = make_staff(Role.ADMIN)

        blocked = sign_in(client, user.email)

    assert blocked.status_code == 429


def test_successful_sign_ins_do_not_count_towards_the_limit(make_app):
    app = make_app(STAFF_LOGIN_LIMIT_ACCOUNT="2 per 15 minutes")
    with app.app_context():
        user = make_staff(Role.ADMIN)
        statuses = [sign_in(app.test_client(), user.email).status_code for _ in range(4)]

    assert statuses == [302, 302, 302, 302]


def test_sign_in_starts_a_fresh_session(app, client):
    user = make_staff(Role.ADMIN)
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"

    sign_in(client, user.email)

    with client.session_transaction() as session:
        assert "planted" not in session
        assert session["staff_session"]


def test_sign_out_kills_the_session_on_the_server(app, client):
    user = make_staff(Role.ADMIN)
    sign_in(client, user.email)
    with client.session_transaction() as session:
        stolen_cookie = dict(session)
    token = _csrf(client)

    client.post("/logout", data={"csrf_token": token})
    with client.session_transaction() as session:
        session.update(stolen_cookie)

    assert client.get("/admin/").status_code == 302
    assert "staff.signed_out" in _actions()


def _csrf(client) -> str:
    from tests.conftest import csrf_token_from

    return csrf_token_from(client, "/admin/")


def test_sign_out_requires_a_post(app, client):
    user = make_staff(Role.ADMIN)
    sign_in(client, user.email)

    assert client.get("/logout").status_code == 405
    assert client.get("/admin/").status_code == 200


def test_deactivating_a_user_ends_their_live_session(app, client):
    user = make_staff(Role.ADMIN)
    sign_in(client, user.email)
    assert client.get("/admin/").status_code == 200

    service.deactivate(user, actor=TEST_ACTOR)
    db.session.commit()

    assert client.get("/admin/").status_code == 302
    revoked = db.session.execute(select(StaffSession).where(StaffSession.staff_id == user.id)).scalars()
    assert all(session.revoked_at is not None for session in revoked)


def test_session_cookie_is_http_only_and_same_site_lax(app, client):
    user = make_staff(Role.ADMIN)

    response = sign_in(client, user.email)

    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_production_session_cookie_is_secure(tmp_path):
    from backoffice.config import load_config

    cert = tmp_path / "cert.p12"
    cert.write_bytes(b"x")
    config = load_config(
        {
            "APP_ENV": "production",
            "SECRET_KEY": "k" * 64,
            "DATABASE_URL": "postgresql://db/x",
            "REDIS_URL": "redis://r",
            "STORAGE_URL": "s3://b",
            "SMTP_URL": "smtp://m",
            "SMS_WEBHOOK_URL": "https://s",
            "SIGNING_CERT_PATH": str(cert),
        },
        str(tmp_path),
    )

    assert config["SESSION_COOKIE_SECURE"] is True


def test_passwords_are_stored_as_argon2id(app):
    user = make_staff(Role.ADMIN)

    assert user.password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")

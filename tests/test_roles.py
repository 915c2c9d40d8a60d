"""Every back-office view against every role: the server decides, not the menu."""

import pytest

from backoffice.staff.models import Role
from tests.factories import signed_in_client

ADMIN_ONLY = {Role.ADMIN}
EVERY_ROLE = set(Role)

VIEW_ACCESS = {
    "/admin/": EVERY_ROLE,
    "/admin/dashboard/": {Role.ADMIN, Role.SUPERVISOR},
    "/admin/staff/": ADMIN_ONLY,
    "/admin/staff/new/": ADMIN_ONLY,
    "/admin/audit/": {Role.ADMIN, Role.SUPERVISOR},
    "/admin/ecustomer/": {Role.ADMIN, Role.SUPERVISOR},
    "/admin/review/": {Role.LEGAL_REVIEWER, Role.SUPERVISOR},
    "/admin/calls/": {Role.CALL_AGENT, Role.SUPERVISOR},
    "/admin/call-sla/": {Role.ADMIN, Role.SUPERVISOR},
    "/admin/staffing/": {Role.ADMIN, Role.SUPERVISOR},
    "/admin/outbox/": ADMIN_ONLY,
    "/admin/operations/": ADMIN_ONLY,
    "/admin/dev-mailbox/": EVERY_ROLE,
    "/admin/association/": {Role.ASSOCIATION_CLERK, Role.SUPERVISOR},
    "/admin/linked-accounts/": {Role.ADMIN, Role.SUPERVISOR},
    "/admin/imports/": {Role.ASSOCIATION_CLERK, Role.SUPERVISOR, Role.ADMIN},
}


def test_the_matrix_covers_every_registered_view(app):
    admin = app.extensions["admin"][0]
    registered = {view.url.rstrip("/") + "/" for view in admin._views}

    assert registered == {url for url in VIEW_ACCESS if not url.endswith("/new/")}


@pytest.mark.parametrize("url", sorted(VIEW_ACCESS))
@pytest.mark.parametrize("role", list(Role), ids=[role.value for role in Role])
def test_view_answers_by_role(app, url, role):
    client, _ = signed_in_client(app, role)

    response = client.get(url)

    assert response.status_code == (200 if role in VIEW_ACCESS[url] else 403)


@pytest.mark.parametrize("url", sorted(VIEW_ACCESS))
def test_anonymous_visitors_are_sent_to_sign_in(client, url):
    response = client.get(url)

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


def test_menu_hides_what_a_role_cannot_open(app):
    client, _ = signed_in_client(app, Role.CALL_AGENT)

    page = client.get("/admin/").get_data(as_text=True)

    assert "/admin/staff/" not in page
    assert "/admin/audit/" not in page


def test_dev_mailbox_does_not_exist_in_production(tmp_path):
    from backoffice import create_app

    cert = tmp_path / "signing.p12"
    cert.write_bytes(b"not read at start-up")
    production = create_app(
        {
            "APP_ENV": "production",
            "SECRET_KEY": "k" * 64,
            "DATABASE_URL": "postgresql://127.0.0.1:9/none",
            "REDIS_URL": "redis://127.0.0.1:9/0",
            "STORAGE_URL": "s3://documents",
            "SMTP_URL": "smtp://127.0.0.1:9",
            "SMS_WEBHOOK_URL": "http://127.0.0.1:9/sms",
            "SIGNING_CERT_PATH": str(cert),
        }
    )

    assert "dev_mailbox" not in {view.endpoint for view in production.extensions["admin"][0]._views}
    assert "dev_portal" not in production.blueprints

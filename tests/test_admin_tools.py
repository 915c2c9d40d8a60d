"""Admin tools: the outbox view's retry and the dev mailbox (failed jobs: test_operations_page.py)."""

from sqlalchemy import select

from backoffice.audit.models import AuditEvent
from backoffice.extensions import db
from backoffice.notifications import service as notifications
from backoffice.notifications.models import OutboxMessage, OutboxStatus
from backoffice.staff.models import Role
from tests.conftest import csrf_token_from
from tests.factories import signed_in_client


def test_outbox_view_retries_given_up_messages(make_app):
    app = make_app(REDIS_URL=None, SMTP_URL="smtp://127.0.0.1:9", OUTBOX_MAX_ATTEMPTS=1)
    with app.app_context():
        message = notifications.queue_email("ana@correo.example", "test_message", {})
        db.session.commit()
        db.session.refresh(message)
        assert message.status == OutboxStatus.FAILED
        app.extensions["mailer"] = app.extensions["sms_sender"]
        client, _ = signed_in_client(app, Role.ADMIN)
        token = csrf_token_from(client, "/admin/outbox/")

        client.post(
            "/admin/outbox/action/", data={"csrf_token": token, "action": "retry", "rowid": [message.id]}
        )

        db.session.refresh(message)
        assert message.status == OutboxStatus.SENT
        assert db.session.execute(
            select(AuditEvent).where(AuditEvent.action == "outbox.retried")
        ).scalar_one()


def test_dev_mailbox_shows_messages_with_clickable_links(make_app):
    app = make_app(REDIS_URL=None)
    with app.app_context():
        notifications.queue_email("ana@correo.example", "test_message", {}, language="en")
        notifications.queue_sms("+34612345678", "test_message", {})
        db.session.commit()
        message = db.session.execute(
            select(OutboxMessage).where(OutboxMessage.channel == "email")
        ).scalar_one()
        message_body_with_link = "Open http://localhost:5000/portal/verify-email?token=abc"
        message.body_text = message_body_with_link
        db.session.commit()
        client, _ = signed_in_client(app, Role.CALL_AGENT)

        page = client.get("/admin/dev-mailbox/").get_data(as_text=True)

    assert "ana@correo.example" in page and "+34612345678" in page
    assert '<a href="http://localhost:5000/portal/verify-email?token=abc"' in page

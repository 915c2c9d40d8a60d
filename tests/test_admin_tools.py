"""Admin tools: failed jobs (re-queue, delete), the outbox view's retry, the dev mailbox."""

from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import select

from backoffice.audit.models import AuditEvent
from backoffice.extensions import db
from backoffice.jobs import enqueue_after_commit
from backoffice.notifications import service as notifications
from backoffice.notifications.models import OutboxMessage, OutboxStatus
from backoffice.staff.models import Role
from tests.conftest import csrf_token_from
from tests.factories import signed_in_client
from tests.test_jobs import failing_job


def _failed_job(app, redis_url: str) -> Queue:
    connection = Redis.from_url(redis_url)
    queue = Queue("default", connection=connection)
    enqueue_after_commit(failing_job, "boom", job_id="failing-job")
    db.session.commit()
    SimpleWorker([queue], connection=connection).work(burst=True)
    return queue


def test_failed_jobs_are_listed_for_admins(make_app, redis_url):
    app = make_app(REDIS_URL=redis_url)
    with app.app_context():
        _failed_job(app, redis_url)
        client, _ = signed_in_client(app, Role.ADMIN)

        page = client.get("/admin/failed_jobs/").get_data(as_text=True)

    assert "failing-job" in page
    assert "the job broke" in page


def test_admin_requeues_a_failed_job(make_app, redis_url):
    app = make_app(REDIS_URL=redis_url)
    with app.app_context():
        queue = _failed_job(app, redis_url)
        client, _ = signed_in_client(app, Role.ADMIN)
        token = csrf_token_from(client, "/admin/failed_jobs/")

        response = client.post("/admin/failed_jobs/failing-job/requeue", data={"csrf_token": token})

        assert response.status_code == 302
        assert queue.job_ids == ["failing-job"]
        assert queue.failed_job_registry.count == 0
        assert db.session.execute(select(AuditEvent).where(AuditEvent.action == "job.requeued")).scalar_one()


def test_admin_deletes_a_failed_job(make_app, redis_url):
    app = make_app(REDIS_URL=redis_url)
    with app.app_context():
        queue = _failed_job(app, redis_url)
        client, _ = signed_in_client(app, Role.ADMIN)
        token = csrf_token_from(client, "/admin/failed_jobs/")

        client.post("/admin/failed_jobs/failing-job/delete", data={"csrf_token": token})

        assert queue.failed_job_registry.count == 0
        assert queue.job_ids == []


def test_failed_jobs_page_explains_inline_mode(make_app):
    app = make_app(REDIS_URL=None)
    with app.app_context():
        client, _ = signed_in_client(app, Role.ADMIN)

        page = client.get("/admin/failed_jobs/").get_data(as_text=True)

    assert "Jobs run inline" in page


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

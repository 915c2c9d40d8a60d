"""The admins' operations page: work-queue depths, rq queues and workers, periodic jobs, and failed
jobs re-queued or (after a confirmation) deleted against a real Redis."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from redis import Redis
from rq import Queue, SimpleWorker, Worker
from sqlalchemy import select

from backoffice import operations
from backoffice.audit.models import AuditEvent
from backoffice.calls.models import CallTaskStatus
from backoffice.customers.models import AssociationCase, CaseStatus, CustomerAccount
from backoffice.extensions import db
from backoffice.jobs import enqueue_after_commit
from backoffice.notifications.models import Channel, OutboxMessage, OutboxStatus
from backoffice.review.models import ApplicationStatus, RepresentativeApplication
from backoffice.staff.models import Role
from tests.conftest import csrf_token_from
from tests.factories import make_call_task, signed_in_client
from tests.test_jobs import failing_job, note_job_ran

PAGE = "/admin/operations/"
NOW = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)
ENGLISH = {"Accept-Language": "en"}


def _application(status: ApplicationStatus, submitted_at: datetime) -> RepresentativeApplication:
    application = RepresentativeApplication(
        id=secrets.token_hex(16),
        access_key_hash="0" * 64,
        company_tax_id="B12345674",
        company_name="Transportes Ejemplo S.L.",
        first_name="Lucía",
        last_name="Pérez Gil",
        tax_id="12345678Z",
        email=f"{secrets.token_hex(4)}@transportes.example",
        phone="+34611222333",
        status=status,
        submitted_at=submitted_at,
        call_deadline=submitted_at + timedelta(days=2),
    )
    db.session.add(application)
    db.session.commit()
    return application


def _case(status: CaseStatus, opened_at: datetime) -> AssociationCase:
    account = CustomerAccount(email=f"{secrets.token_hex(4)}@correo.example", password_hash="x")
    db.session.add(account)
    db.session.flush()
    case = AssociationCase(account_id=account.id, reason="no_candidates", status=status, opened_at=opened_at)
    db.session.add(case)
    db.session.commit()
    return case


def _outbox(status: OutboxStatus, created_at: datetime) -> OutboxMessage:
    message = OutboxMessage(
        channel=Channel.EMAIL,
        recipient="ana@correo.example",
        template="test_message",
        language="es",
        body_text="Hola",
        status=status,
        created_at=created_at,
    )
    db.session.add(message)
    db.session.commit()
    return message


def _in_call(since: datetime) -> None:
    task = make_call_task(NOW + timedelta(days=1), created_at=since - timedelta(hours=1))
    task.status, task.in_call_since = CallTaskStatus.IN_CALL, since
    db.session.commit()


def _fill_work_queues() -> None:
    """2 submitted, 1 in review, 3 open calls, 1 in a call, 2 open cases, 1 waiting for the
    customer, 2 pending and 1 failed outbox messages, plus finished items that must not count."""
    _application(ApplicationStatus.SUBMITTED, NOW - timedelta(hours=5))
    _application(ApplicationStatus.SUBMITTED, NOW - timedelta(hours=1))
    _application(ApplicationStatus.IN_REVIEW, NOW - timedelta(days=1, hours=2))
    _application(ApplicationStatus.COMPLETED, NOW - timedelta(days=9))
    for hours in (3, 2, 1):
        make_call_task(NOW + timedelta(days=1), created_at=NOW - timedelta(hours=hours))
    _in_call(NOW - timedelta(minutes=25))
    _case(CaseStatus.OPEN, NOW - timedelta(days=2))
    _case(CaseStatus.OPEN, NOW - timedelta(hours=1))
    _case(CaseStatus.WAITING_CUSTOMER, NOW - timedelta(days=3))
    _case(CaseStatus.LINKED, NOW - timedelta(days=9))
    _outbox(OutboxStatus.PENDING, NOW - timedelta(minutes=10))
    _outbox(OutboxStatus.PENDING, NOW - timedelta(minutes=2))
    _outbox(OutboxStatus.FAILED, NOW - timedelta(hours=6))
    _outbox(OutboxStatus.SENT, NOW - timedelta(days=1))


ROW = re.compile(
    r'<tr data-queue="([^"]+)" data-status="([^"]+)">.*?depth-count">(\d+)</td>.*?<td>[^<]*</td>\s*<td>([^<]*)</td>',
    re.S,
)


def _depths(page: str) -> dict[tuple[str, str], tuple[int, str]]:
    return {(queue, status): (int(count), age) for queue, status, count, age in ROW.findall(page)}


def _failed_job(redis_url: str) -> Queue:
    connection = Redis.from_url(redis_url)
    queue = Queue("default", connection=connection)
    enqueue_after_commit(failing_job, "boom", job_id="failing-job")
    db.session.commit()
    SimpleWorker([queue], connection=connection).work(burst=True)
    return queue


def _actions() -> list[str]:
    return list(db.session.execute(select(AuditEvent.action)).scalars())


def test_admin_sees_work_queue_depths_and_the_age_of_each_oldest_item(make_app):
    app = make_app(REDIS_URL=None)
    with app.app_context(), time_machine.travel(NOW, tick=False):
        _fill_work_queues()
        client, _ = signed_in_client(app, Role.ADMIN)

        page = client.get(PAGE).get_data(as_text=True)

    assert _depths(page) == {
        ("review", "submitted"): (2, "5 h"),
        ("review", "in_review"): (1, "1 d 2 h"),
        ("calls", "open"): (3, "3 h"),
        ("calls", "in_call"): (1, "25 min"),
        ("association", "open"): (2, "2 d"),
        ("association", "waiting_customer"): (1, "3 d"),
        ("outbox", "pending"): (2, "10 min"),
        ("outbox", "failed"): (1, "6 h"),
    }


def test_an_empty_queue_shows_no_oldest_item(make_app):
    app = make_app(REDIS_URL=None)
    with app.app_context():
        depths = operations.queue_depths(now=NOW)

    assert {(depth.count, depth.oldest_at, depth.oldest_age_seconds) for depth in depths} == {(0, None, None)}


@pytest.mark.parametrize("role", [role for role in Role if role != Role.ADMIN], ids=lambda role: role.value)
def test_other_roles_are_refused(make_app, role):
    app = make_app(REDIS_URL=None)
    with app.app_context():
        client, _ = signed_in_client(app, role)
        token = csrf_token_from(client, "/admin/")

        assert client.get(PAGE).status_code == 403
        assert client.get(f"{PAGE}jobs/any-job/delete").status_code == 403
        assert (
            client.post(
                f"{PAGE}jobs/any-job/delete", data={"csrf_token": token, "confirm": "yes"}
            ).status_code
            == 403
        )
        assert client.post(f"{PAGE}jobs/any-job/requeue", data={"csrf_token": token}).status_code == 403


def test_without_redis_the_page_says_jobs_run_inline(make_app):
    app = make_app(REDIS_URL=None)
    with app.app_context():
        client, _ = signed_in_client(app, Role.ADMIN)

        page = client.get(PAGE, headers=ENGLISH).get_data(as_text=True)

    assert "Jobs run inline in this process (no Redis configured)" in page


def test_periodic_jobs_are_listed_with_their_interval(make_app):
    app = make_app(REDIS_URL=None)
    with app.app_context():
        client, _ = signed_in_client(app, Role.ADMIN)

        page = client.get(PAGE).get_data(as_text=True)

    assert re.search(
        r"outbox-sweeper</td><td><code>backoffice.notifications.jobs.sweep_outbox</code></td><td>1 min<", page
    )
    assert re.search(r"association-rematch</td>.*?<td>1 day<", page)


def test_rq_queues_and_workers_are_listed(make_app, redis_url):
    app = make_app(REDIS_URL=redis_url)
    connection = Redis.from_url(redis_url)
    worker = Worker([Queue("default", connection=connection)], connection=connection, name="ops-test-worker")
    with app.app_context():
        _failed_job(redis_url)
        enqueue_after_commit(note_job_ran, "waiting")
        db.session.commit()
        worker.register_birth()
        try:
            client, _ = signed_in_client(app, Role.ADMIN)

            page = client.get(PAGE).get_data(as_text=True)
        finally:
            worker.register_death()

    queued, started, failed, scheduled = re.search(
        r"<code>default</code></td>" + r'<td class="text-right">(\d+)</td>' * 4, page
    ).groups()
    assert (queued, started, failed, scheduled) == ("1", "0", "1", "0")
    assert "ops-test-worker" in page


def test_failed_jobs_are_listed_for_admins(make_app, redis_url):
    app = make_app(REDIS_URL=redis_url)
    with app.app_context():
        _failed_job(redis_url)
        client, _ = signed_in_client(app, Role.ADMIN)

        page = client.get(PAGE).get_data(as_text=True)

    assert "failing-job" in page
    assert "the job broke" in page


def test_admin_requeues_a_failed_job_and_it_is_audited(make_app, redis_url):
    app = make_app(REDIS_URL=redis_url)
    with app.app_context():
        queue = _failed_job(redis_url)
        client, _ = signed_in_client(app, Role.ADMIN)
        token = csrf_token_from(client, PAGE)

        response = client.post(f"{PAGE}jobs/failing-job/requeue", data={"csrf_token": token})

        assert response.status_code == 302
        assert queue.job_ids == ["failing-job"]
        assert queue.failed_job_registry.count == 0
        assert "job.requeued" in _actions()


def test_delete_asks_for_confirmation_first(make_app, redis_url):
    app = make_app(REDIS_URL=redis_url)
    with app.app_context():
        queue = _failed_job(redis_url)
        client, _ = signed_in_client(app, Role.ADMIN)
        token = csrf_token_from(client, PAGE)

        unconfirmed = client.post(f"{PAGE}jobs/failing-job/delete", data={"csrf_token": token})

        assert unconfirmed.status_code == 200
        assert 'name="confirm" value="yes"' in unconfirmed.get_data(as_text=True)
        assert queue.failed_job_registry.get_job_ids() == ["failing-job"]
        assert "job.deleted" not in _actions()


def test_confirmed_delete_removes_the_failed_job_and_is_audited(make_app, redis_url):
    app = make_app(REDIS_URL=redis_url)
    with app.app_context():
        queue = _failed_job(redis_url)
        client, _ = signed_in_client(app, Role.ADMIN)
        token = csrf_token_from(client, f"{PAGE}jobs/failing-job/delete")

        response = client.post(f"{PAGE}jobs/failing-job/delete", data={"csrf_token": token, "confirm": "yes"})

        assert response.status_code == 302
        assert queue.failed_job_registry.count == 0
        assert queue.job_ids == []
        assert "job.deleted" in _actions()


def test_a_job_that_has_not_failed_cannot_be_deleted_or_requeued(make_app, redis_url):
    app = make_app(REDIS_URL=redis_url)
    queue = Queue("default", connection=Redis.from_url(redis_url))
    with app.app_context():
        enqueue_after_commit(note_job_ran, "waiting", job_id="waiting-job")
        db.session.commit()
        client, _ = signed_in_client(app, Role.ADMIN)
        token = csrf_token_from(client, PAGE)

        client.post(f"{PAGE}jobs/waiting-job/delete", data={"csrf_token": token, "confirm": "yes"})
        client.post(f"{PAGE}jobs/waiting-job/requeue", data={"csrf_token": token})

        assert queue.job_ids == ["waiting-job"]
        assert not {"job.deleted", "job.requeued"} & set(_actions())

"""The relay from the outbox to rq, against a real Redis: one job per row, only after commit,
never twice while queued, recovery by the sweeper, and the periodic sweeper's registration."""

from __future__ import annotations

import socket
from datetime import timedelta
from unittest import mock

import pytest
from aiosmtpd.controller import Controller
from redis import Redis
from rq import Queue, SimpleWorker, cron
from rq.job import Job, JobStatus
from sqlalchemy import select

from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.jobs import job_path
from backoffice.notifications import service
from backoffice.notifications.jobs import deliver_message
from backoffice.notifications.models import OutboxMessage, OutboxStatus
from backoffice.periodic import PERIODIC_JOBS, register_with_rq

DELIVER_PATH = "backoffice.notifications.jobs.deliver_message"
SWEEP_PATH = "backoffice.notifications.jobs.sweep_outbox"


class RecordingHandler:
    def __init__(self) -> None:
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 OK"


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp():
    handler = RecordingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=closed_port(), server_hostname="smtp.test")
    controller.start()
    handler.url = f"smtp://127.0.0.1:{controller.port}"
    yield handler
    controller.stop()


@pytest.fixture
def connection(redis_url):
    client = Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def queue(connection) -> Queue:
    return Queue("default", connection=connection)


@pytest.fixture
def make_rq_app(make_app, redis_url):
    """An app that relays to the real Redis; its queue connection is closed afterwards, so no
    socket is left for the garbage collector to complain about."""
    apps = []

    def factory(**overrides):
        app = make_app(REDIS_URL=redis_url, **overrides)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["job_queue"].connection.close()


@pytest.fixture
def rq_app(make_rq_app):
    app = make_rq_app()
    with app.app_context():
        yield app


def run_worker(queue: Queue) -> None:
    """An rq worker in this process, inside the test's app context, until the queue is empty."""
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def the_row() -> OutboxMessage:
    return db.session.execute(select(OutboxMessage)).scalar_one()


def stale_time(app, row: OutboxMessage):
    return row.enqueued_at + timedelta(seconds=app.config["OUTBOX_STALE_SECONDS"] + 1)


# Enqueued after commit, once


def test_commit_enqueues_exactly_one_job_named_after_the_row(rq_app, queue):
    message_id = service.queue_email("ana@example.com", "test_message", {}).id
    db.session.commit()

    assert queue.job_ids == [f"outbox-{message_id}"]


def test_a_new_row_is_queued_without_looking_for_an_earlier_job(rq_app, queue):
    """No job can hold the id of a row made in the committing transaction: the look would be a
    Redis round trip on every registration."""
    with mock.patch.object(Job, "fetch_many", wraps=Job.fetch_many) as look:
        message_id = service.queue_email("ana@example.com", "test_message", {}).id
        db.session.commit()

    assert look.call_count == 0
    assert queue.job_ids == [f"outbox-{message_id}"]


def test_the_job_runs_the_delivery_for_that_row_through_the_job_runner(rq_app, queue):
    message_id = service.queue_email("ana@example.com", "test_message", {}).id
    db.session.commit()

    job = queue.fetch_job(f"outbox-{message_id}")
    assert job.func_name == "backoffice.jobs.run_job"
    assert job.args == (DELIVER_PATH, message_id)
    assert job.timeout == 300


def test_with_rq_the_commit_only_enqueues_and_does_not_deliver(rq_app, queue):
    service.queue_email("ana@example.com", "test_message", {})
    db.session.commit()

    row = the_row()
    assert row.status == OutboxStatus.PENDING
    assert row.attempts == 0
    assert row.enqueued_at is not None


def test_nothing_is_enqueued_before_commit(rq_app, queue):
    service.queue_email("ana@example.com", "test_message", {})
    db.session.flush()

    assert queue.count == 0


def test_nothing_is_enqueued_when_the_transaction_rolls_back(rq_app, queue):
    service.queue_email("ana@example.com", "test_message", {})
    db.session.rollback()
    db.session.commit()

    assert queue.count == 0
    assert db.session.execute(select(OutboxMessage)).first() is None


def test_one_job_per_row_when_a_transaction_queues_several(rq_app, queue):
    first = service.queue_email("ana@example.com", "test_message", {}).id
    second = service.queue_sms("+34612345678", "test_message", {}).id
    db.session.commit()

    assert sorted(queue.job_ids) == sorted([f"outbox-{first}", f"outbox-{second}"])


def test_enqueueing_a_row_that_is_still_queued_keeps_a_single_job(rq_app, queue):
    message_id = service.queue_email("ana@example.com", "test_message", {}).id
    db.session.commit()

    rq_app.extensions["job_queue"].enqueue(
        job_path(deliver_message), message_id, job_id=f"outbox-{message_id}"
    )

    assert queue.job_ids == [f"outbox-{message_id}"]


def test_a_sweep_of_a_stale_row_that_is_still_queued_keeps_a_single_job(rq_app, queue):
    message_id = service.queue_email("ana@example.com", "test_message", {}).id
    db.session.commit()

    assert service.sweep(now=stale_time(rq_app, the_row())) == 1
    db.session.commit()

    assert queue.job_ids == [f"outbox-{message_id}"]


def test_a_sweep_leaves_a_recently_queued_row_alone(rq_app, queue):
    service.queue_email("ana@example.com", "test_message", {})
    db.session.commit()
    queue.empty()

    assert service.sweep(now=the_row().enqueued_at + timedelta(seconds=10)) == 0
    db.session.commit()

    assert queue.count == 0


# A worker delivers


def test_a_worker_delivers_the_queued_message(rq_app, queue):
    message_id = service.queue_email("ana@example.com", "test_message", {}).id
    db.session.commit()

    run_worker(queue)

    row = the_row()
    assert row.status == OutboxStatus.SENT
    assert row.delivered_via == "dev_outbox"
    assert row.attempts == 1
    job = Job.fetch(f"outbox-{message_id}", connection=queue.connection)
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value() == "sent"
    assert queue.count == 0


def test_a_worker_delivers_by_smtp_exactly_once(make_rq_app, queue, smtp):
    with make_rq_app(SMTP_URL=smtp.url).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()
        assert smtp.envelopes == []

        run_worker(queue)

        assert the_row().status == OutboxStatus.SENT
    assert len(smtp.envelopes) == 1


def test_a_job_for_a_row_already_sent_sends_nothing(rq_app, queue):
    message_id = service.queue_email("ana@example.com", "test_message", {}).id
    db.session.commit()
    run_worker(queue)

    rq_app.extensions["job_queue"].enqueue(
        job_path(deliver_message), message_id, job_id=f"outbox-{message_id}"
    )
    assert queue.job_ids == [f"outbox-{message_id}"]  # the finished job gave way to a new one
    run_worker(queue)

    assert Job.fetch(f"outbox-{message_id}", connection=queue.connection).return_value() is None
    assert the_row().attempts == 1


# Recovery by the sweeper


def test_sweep_re_enqueues_a_row_whose_job_was_lost(make_rq_app, queue, smtp):
    app = make_rq_app(SMTP_URL=smtp.url)
    with app.app_context():
        message_id = service.queue_email("ana@example.com", "test_message", {}).id
        db.session.commit()
        Job.fetch(f"outbox-{message_id}", connection=queue.connection).delete()
        assert queue.count == 0

        assert service.sweep(now=stale_time(app, the_row())) == 1
        db.session.commit()
        assert queue.job_ids == [f"outbox-{message_id}"]
        run_worker(queue)

        row = the_row()
        assert row.status == OutboxStatus.SENT
        assert row.attempts == 1
    assert len(smtp.envelopes) == 1


def test_sweep_re_enqueues_a_row_whose_worker_was_killed_mid_delivery(make_rq_app, queue, smtp):
    app = make_rq_app(SMTP_URL=smtp.url)
    with app.app_context():
        message_id = service.queue_email("ana@example.com", "test_message", {}).id
        db.session.commit()
        # What a worker killed after taking the job leaves behind: out of the queue, "started".
        job = Job.fetch(f"outbox-{message_id}", connection=queue.connection)
        queue.remove(job)
        job.set_status(JobStatus.STARTED)

        assert service.sweep(now=stale_time(app, the_row())) == 1
        db.session.commit()
        assert queue.job_ids == [f"outbox-{message_id}"]
        run_worker(queue)

        row = the_row()
        assert row.status == OutboxStatus.SENT
        assert row.attempts == 1
    assert len(smtp.envelopes) == 1


def test_sweep_leaves_a_job_that_a_live_worker_is_still_running(make_rq_app, queue, smtp):
    app = make_rq_app(SMTP_URL=smtp.url)
    with app.app_context():
        message_id = service.queue_email("ana@example.com", "test_message", {}).id
        db.session.commit()
        job = Job.fetch(f"outbox-{message_id}", connection=queue.connection)
        queue.remove(job)
        job.set_status(JobStatus.STARTED)
        job.worker_name = "busy-worker"
        job.save()
        queue.connection.set("rq:worker:busy-worker", "alive", ex=60)

        service.sweep(now=stale_time(app, the_row()))
        db.session.commit()

        assert queue.job_ids == []
        assert (
            Job.fetch(f"outbox-{message_id}", connection=queue.connection).get_status() == JobStatus.STARTED
        )
    assert smtp.envelopes == []


def test_commit_succeeds_and_the_row_is_left_for_the_sweeper_when_redis_is_down(make_app):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    with app.app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()  # must not raise

        row = the_row()
        assert row.status == OutboxStatus.PENDING
        assert row.attempts == 0
        assert row.enqueued_at is None


def test_a_row_not_enqueued_while_redis_was_down_is_swept_and_delivered_later(make_app, make_rq_app, queue):
    down = make_app(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    with down.app_context():
        message_id = service.queue_email("ana@example.com", "test_message", {}).id
        db.session.commit()

    with make_rq_app().app_context():
        assert service.sweep() == 1
        db.session.commit()
        assert queue.job_ids == [f"outbox-{message_id}"]

        run_worker(queue)
        assert the_row().status == OutboxStatus.SENT


def test_sweep_while_redis_is_down_leaves_the_row_for_the_next_sweep(make_app):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    with app.app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()

        assert service.sweep() == 1
        db.session.commit()  # must not raise

        assert the_row().enqueued_at is None


def test_a_big_transaction_commits_cleanly_while_redis_is_down(make_app):
    # Each unreachable-queue fallback writes; those writes must not nest one commit per message.
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0")
    with app.app_context():
        for number in range(300):
            service.queue_email(f"client{number}@example.com", "test_message", {})
        db.session.commit()  # must not raise

        rows = db.session.execute(select(OutboxMessage)).scalars().all()
        assert len(rows) == 300
        assert {row.enqueued_at for row in rows} == {None}


# Periodic jobs with rq cron


@pytest.fixture
def cron_registry():
    """rq's module-level registry of cron definitions, emptied around the test."""
    cron._job_data_registry.clear()
    yield
    cron._job_data_registry.clear()


def cron_jobs_by_name(scheduler: cron.CronScheduler) -> dict[str, cron.CronJob]:
    return {job.name: job for job in scheduler.get_jobs()}


def test_register_with_rq_registers_the_outbox_sweeper(cron_registry, connection):
    register_with_rq()

    job = cron_jobs_by_name(cron.create_cron(connection))["outbox-sweeper"]
    assert job.func_name == "backoffice.jobs.run_job"
    assert job.args == (SWEEP_PATH,)
    assert job.interval == 60
    assert job.queue_name == "default"


def test_register_with_rq_registers_every_periodic_job_once(cron_registry, connection):
    register_with_rq()

    names = [job.name for job in cron.create_cron(connection).get_jobs()]
    assert sorted(names) == sorted(job.name for job in PERIODIC_JOBS)


def test_rq_cron_loads_the_outbox_sweeper_from_the_cron_config_module(cron_registry, connection):
    scheduler = cron.CronScheduler(connection)

    scheduler.load_config_from_file("backoffice.cron_config")  # what `rq cron backoffice.cron_config` does

    assert cron_jobs_by_name(scheduler)["outbox-sweeper"].args == (SWEEP_PATH,)


def test_the_registered_sweeper_run_by_a_worker_delivers_a_stranded_row(
    cron_registry, rq_app, connection, queue
):
    stranded = OutboxMessage(
        channel="email",
        recipient="ana@example.com",
        template="test_message",
        language="es",
        subject="Ventanilla: mensaje de prueba",
        body_text="Hola",
        status=OutboxStatus.PENDING,
        attempts=0,
    )
    db.session.add(stranded)
    db.session.commit()
    register_with_rq()
    sweeper = cron_jobs_by_name(cron.create_cron(connection))["outbox-sweeper"]

    sweeper_job = sweeper.enqueue(connection)
    run_worker(queue)  # runs the sweeper, then the delivery it enqueued

    assert sweeper_job.return_value() == 1
    row = the_row()
    assert row.status == OutboxStatus.SENT
    assert row.attempts == 1
    assert utcnow() - row.sent_at < timedelta(minutes=1)

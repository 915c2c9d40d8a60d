"""The job facade: work runs only after the transaction that asked for it commits."""

from redis import Redis
from rq import Queue, SimpleWorker
from sqlalchemy import select

from backoffice import audit
from backoffice.audit.models import AuditEvent
from backoffice.extensions import db
from backoffice.jobs import InlineJobQueue, RqJobQueue, enqueue_after_commit
from tests.factories import TEST_ACTOR


def note_job_ran(label: str) -> None:
    """A job function as real ones are: takes plain values, writes through a service."""
    audit.record("test.job_ran", actor=TEST_ACTOR, subject_type="test", subject_id=label)


def failing_job(label: str) -> None:
    audit.record("test.job_ran", actor=TEST_ACTOR, subject_type="test", subject_id=label)
    raise RuntimeError("the job broke")


def _job_runs() -> list[str]:
    return list(
        db.session.execute(select(AuditEvent.subject_id).where(AuditEvent.action == "test.job_ran")).scalars()
    )


def test_inline_job_runs_after_commit_and_commits_its_own_work(make_app):
    app = make_app(REDIS_URL=None)
    with app.app_context():
        enqueue_after_commit(note_job_ran, "first")
        assert _job_runs() == []

        db.session.commit()

        assert _job_runs() == ["first"]


def test_job_is_dropped_when_the_transaction_rolls_back(make_app):
    app = make_app(REDIS_URL=None)
    with app.app_context():
        enqueue_after_commit(note_job_ran, "never")
        db.session.rollback()
        db.session.commit()

        assert _job_runs() == []


def test_failing_inline_job_is_rolled_back_and_does_not_break_the_caller(make_app, caplog):
    app = make_app(REDIS_URL=None)
    with app.app_context():
        enqueue_after_commit(failing_job, "broken")
        db.session.commit()

        assert _job_runs() == []
        assert "failing_job" in caplog.text


def test_inline_queue_is_the_default_without_redis(make_app):
    app = make_app(REDIS_URL=None)

    assert isinstance(app.extensions["job_queue"], InlineJobQueue)


def test_rq_job_is_pushed_only_after_commit_and_a_worker_runs_it(make_app, redis_url):
    app = make_app(REDIS_URL=redis_url)
    connection = Redis.from_url(redis_url)
    queue = Queue("default", connection=connection)
    with app.app_context():
        assert isinstance(app.extensions["job_queue"], RqJobQueue)
        enqueue_after_commit(note_job_ran, "queued")
        assert queue.count == 0

        db.session.commit()
        assert queue.count == 1
        SimpleWorker([queue], connection=connection).work(burst=True)

        db.session.expire_all()
        assert _job_runs() == ["queued"]


def test_rq_failed_job_lands_in_the_failed_registry(make_app, redis_url):
    app = make_app(REDIS_URL=redis_url)
    connection = Redis.from_url(redis_url)
    queue = Queue("default", connection=connection)
    with app.app_context():
        enqueue_after_commit(failing_job, "broken", job_id="broken-job")
        db.session.commit()
        SimpleWorker([queue], connection=connection).work(burst=True)

        assert queue.failed_job_registry.get_job_ids() == ["broken-job"]
        db.session.expire_all()
        assert _job_runs() == []


def test_same_job_id_is_not_queued_twice(make_app, redis_url):
    app = make_app(REDIS_URL=redis_url)
    queue = Queue("default", connection=Redis.from_url(redis_url))
    with app.app_context():
        enqueue_after_commit(note_job_ran, "once", job_id="only-once")
        enqueue_after_commit(note_job_ran, "once", job_id="only-once")
        db.session.commit()

    assert queue.job_ids == ["only-once"]

"""What an operator needs to see at a glance: how deep each work queue is and how old its oldest
item, the rq queues and workers, the periodic jobs, and the failed jobs to re-queue or delete."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from rq import Queue, Worker
from rq.job import Job
from sqlalchemy import func, select

from backoffice.audit import Actor, record
from backoffice.calls.models import CallTask, CallTaskStatus
from backoffice.customers.models import AssociationCase, CaseStatus
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.jobs import RqJobQueue
from backoffice.notifications.models import OutboxMessage, OutboxStatus
from backoffice.periodic import PERIODIC_JOBS
from backoffice.review.models import ApplicationStatus, RepresentativeApplication

FAILED_JOBS_SHOWN = 100


@dataclass(frozen=True)
class WorkQueue:
    """One waiting state of one queue. `since` is when an item entered that state, so its age
    is how long it has waited; a call in progress counts from when it started."""

    key: str
    queue_label: Any
    status: Any
    status_label: Any
    since: Any


WORK_QUEUES: tuple[WorkQueue, ...] = (
    WorkQueue(
        "review",
        _l("Legal review"),
        ApplicationStatus.SUBMITTED,
        _l("submitted"),
        RepresentativeApplication.submitted_at,
    ),
    WorkQueue(
        "review",
        _l("Legal review"),
        ApplicationStatus.IN_REVIEW,
        _l("in review"),
        RepresentativeApplication.submitted_at,
    ),
    WorkQueue("calls", _l("Calls"), CallTaskStatus.OPEN, _l("open"), CallTask.created_at),
    WorkQueue("calls", _l("Calls"), CallTaskStatus.IN_CALL, _l("in a call"), CallTask.in_call_since),
    WorkQueue("association", _l("Association"), CaseStatus.OPEN, _l("open"), AssociationCase.opened_at),
    WorkQueue(
        "association",
        _l("Association"),
        CaseStatus.WAITING_CUSTOMER,
        _l("waiting for the customer"),
        AssociationCase.opened_at,
    ),
    WorkQueue("outbox", _l("Outbox"), OutboxStatus.PENDING, _l("pending"), OutboxMessage.created_at),
    WorkQueue("outbox", _l("Outbox"), OutboxStatus.FAILED, _l("failed"), OutboxMessage.created_at),
)


class OperationError(Exception):
    """A failed-job action could not be done; the message says why, for the admin."""


@dataclass(frozen=True)
class QueueDepth:
    queue: WorkQueue
    count: int
    oldest_at: datetime | None
    oldest_age_seconds: float | None


@dataclass(frozen=True)
class RqQueueCounts:
    name: str
    queued: int
    started: int
    failed: int
    scheduled: int


@dataclass(frozen=True)
class RqWorkerState:
    name: str
    queues: list[str]
    state: str
    current_job_id: str | None
    last_heartbeat: datetime | None


@dataclass(frozen=True)
class FailedJob:
    id: str
    function: str
    arguments: tuple[Any, ...]
    ended_at: datetime | None
    error: str
    traceback: str


def queue_depths(*, now: datetime | None = None) -> list[QueueDepth]:
    """One row per queue and waiting state, each an indexed count by status."""
    now = now or utcnow()
    depths = []
    for queue in WORK_QUEUES:
        model = queue.since.class_
        count, oldest = db.session.execute(
            select(func.count(), func.min(queue.since)).where(model.status == queue.status)
        ).one()
        age = (now - oldest).total_seconds() if oldest is not None else None
        depths.append(QueueDepth(queue, count, oldest, age))
    return depths


def rq_queues(jobs: RqJobQueue) -> list[RqQueueCounts]:
    """Every queue rq knows of, and ours even before its first job. Raises RedisError."""
    queues = {queue.name: queue for queue in Queue.all(connection=jobs.connection)}
    queues.setdefault(jobs.queue.name, jobs.queue)
    return [
        RqQueueCounts(
            name=name,
            queued=queue.count,
            started=queue.started_job_registry.count,
            failed=queue.failed_job_registry.count,
            scheduled=queue.scheduled_job_registry.count,
        )
        for name, queue in sorted(queues.items())
    ]


def rq_workers(jobs: RqJobQueue) -> list[RqWorkerState]:
    """Workers whose Redis key is alive (it expires when heartbeats stop). Raises RedisError."""
    workers = Worker.all(connection=jobs.connection)
    return sorted(
        (
            RqWorkerState(
                name=worker.name,
                queues=worker.queue_names(),
                state=worker.get_state(),
                current_job_id=worker.get_current_job_id(),
                last_heartbeat=worker.last_heartbeat,
            )
            for worker in workers
        ),
        key=lambda worker: worker.name,
    )


def _describe(job: Job) -> FailedJob:
    result = job.latest_result()
    traceback = (result.exc_string or "").strip() if result is not None else ""
    return FailedJob(
        id=job.id,
        function=job_function(job),
        arguments=tuple(job.args[1:]),
        ended_at=job.ended_at,
        error=traceback.splitlines()[-1] if traceback else "",
        traceback=traceback,
    )


def failed_jobs(jobs: RqJobQueue, *, limit: int = FAILED_JOBS_SHOWN) -> list[FailedJob]:
    """The newest failures of our queue first. Raises RedisError."""
    ids = jobs.queue.failed_job_registry.get_job_ids(0, limit - 1, desc=True)
    return [_describe(job) for job in Job.fetch_many(ids, connection=jobs.connection) if job]


def failed_job(jobs: RqJobQueue, job_id: str) -> FailedJob:
    """One failed job, for the delete confirmation. Raises OperationError if it is not failed."""
    return _describe(_fetch_failed(jobs, job_id))


def _fetch_failed(jobs: RqJobQueue, job_id: str) -> Job:
    """Only jobs in the failed registry: these actions must never touch a queued or running job."""
    if job_id not in jobs.queue.failed_job_registry:
        raise OperationError(_("Job %(id)s is not in the failed jobs list.", id=job_id))
    job = Job.fetch_many([job_id], connection=jobs.connection)[0]
    if job is None:
        raise OperationError(_("Job %(id)s no longer exists.", id=job_id))
    return job


def requeue_failed_job(jobs: RqJobQueue, job_id: str, *, actor: Actor) -> None:
    """Put a failed job back on its queue, as it was; audited."""
    job = _fetch_failed(jobs, job_id)
    jobs.queue.failed_job_registry.requeue(job)
    record(
        "job.requeued",
        actor=actor,
        subject_type="job",
        subject_id=job_id,
        after={"function": job_function(job)},
    )


def delete_failed_job(jobs: RqJobQueue, job_id: str, *, actor: Actor) -> None:
    """Drop a failed job for good (its work will not be retried); audited."""
    job = _fetch_failed(jobs, job_id)
    function = job_function(job)
    job.delete()
    record("job.deleted", actor=actor, subject_type="job", subject_id=job_id, before={"function": function})


def job_function(job: Job) -> str:
    """Our jobs all run through `run_job(path, ...)`; the path says what the job does."""
    return str(job.args[0]) if job.args else str(job.func_name)


@dataclass(frozen=True)
class PeriodicJobRow:
    name: str
    path: str
    every: str


def periodic_jobs() -> list[PeriodicJobRow]:
    """The one list `rq cron` and `flask jobs run-periodic` both run, with readable intervals."""
    return [PeriodicJobRow(job.name, job.path, _every(job.interval_seconds)) for job in PERIODIC_JOBS]


def _every(seconds: int) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return ngettext("%(num)d day", "%(num)d days", seconds // 86400)
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"

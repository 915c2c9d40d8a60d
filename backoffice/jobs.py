"""The job port: run work after the current transaction commits.

Inline (no `REDIS_URL`): the job runs in this process right after commit. rq: the job is
pushed to Redis after commit and a worker runs it. Job functions take ids, never ORM objects,
and run inside an application context with their own transaction.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from flask import Flask, current_app, has_app_context
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.job import Job, JobStatus

from backoffice.extensions import db
from backoffice.logs import current_request_id

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "default"
DEFAULT_TIMEOUT = 300  # seconds an rq job may run before the worker kills it
WAITING_STATUSES = {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED}


def job_path(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def resolve(path: str) -> Callable[..., Any]:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


class JobQueue(Protocol):
    def enqueue(
        self,
        path: str,
        *args: Any,
        job_id: str | None = None,
        timeout: int = DEFAULT_TIMEOUT,
        fresh: bool = False,
    ) -> None: ...


def run_in_transaction(path: str, *args: Any) -> Any:
    """Run one job function and commit its work, or roll it back and re-raise."""
    try:
        result = resolve(path)(*args)
        db.session.commit()
        return result
    except BaseException:
        db.session.rollback()
        raise


class InlineJobQueue:
    """Development default: the job runs here and now; a failure is logged, not raised,
    because the caller's transaction has already committed.

    A job's own commit runs the after-commit callbacks still waiting, so the jobs enqueued
    then wait in a backlog and run one after another, not nested: otherwise every message of
    a big transaction or sweep would add stack frames until RecursionError."""

    def __init__(self) -> None:
        self._local = threading.local()

    def enqueue(
        self,
        path: str,
        *args: Any,
        job_id: str | None = None,
        timeout: int = DEFAULT_TIMEOUT,
        fresh: bool = False,
    ) -> None:
        backlog = getattr(self._local, "backlog", None)
        if backlog is not None:
            backlog.append((path, args))
            return
        self._local.backlog = backlog = deque([(path, args)])
        try:
            while backlog:
                path, args = backlog.popleft()
                try:
                    run_in_transaction(path, *args)
                except Exception:
                    log.exception("inline job %s%r failed", path, args)
        finally:
            self._local.backlog = None


_worker_app: list[Flask] = []


def run_job(path: str, *args: Any) -> Any:
    """What rq executes. A plain `rq worker` has no app context, so one is built once per process."""
    if has_app_context():
        return run_in_transaction(path, *args)
    if not _worker_app:
        from backoffice import create_app

        _worker_app.append(create_app())
    with _worker_app[0].app_context():
        try:
            return run_in_transaction(path, *args)
        finally:
            db.session.remove()


class RqJobQueue:
    def __init__(self, redis_url: str, queue_name: str = DEFAULT_QUEUE):
        self.connection = Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=2)
        self.queue = Queue(queue_name, connection=self.connection)

    def enqueue(
        self,
        path: str,
        *args: Any,
        job_id: str | None = None,
        timeout: int = DEFAULT_TIMEOUT,
        fresh: bool = False,
    ) -> None:
        """Enqueue, unless a job with this id is already waiting or running on a live worker:
        a row is never queued twice. A job whose worker died (abandoned) is replaced. A `fresh`
        id names a row made in the committing transaction, which no job can hold yet: the look
        for one is a Redis round trip that registration would pay for nothing."""
        if job_id is not None and not fresh:
            existing = Job.fetch_many([job_id], connection=self.connection)[0]
            if existing is not None:
                status = existing.get_status(refresh=False)
                if status in WAITING_STATUSES or (
                    status == JobStatus.STARTED and self._worker_alive(existing)
                ):
                    return
                if status == JobStatus.STARTED:
                    # rq's own handling of abandoned runs (marked failed, out of the started
                    # registry), so no later registry clean-up takes the replacement for the dead run.
                    existing.started_job_registry.cleanup()
                existing.delete()
        # One pipeline: rq would otherwise register the queue and push the job in two round trips.
        with self.connection.pipeline() as pipeline:
            self.queue.enqueue(
                run_job,
                path,
                *args,
                job_id=job_id,
                job_timeout=timeout,
                failure_ttl=30 * 86400,
                meta={"request_id": current_request_id()},
                pipeline=pipeline,
            )
            pipeline.execute()

    def _worker_alive(self, job: Job) -> bool:
        """A worker that stops sending heartbeats (killed, crashed, lost) is dead once the lease
        of its last heartbeat runs out. rq keeps that lease as a time in the started-job registry
        (what rq itself uses to call a job abandoned), read here by our clock, so a sweep that
        reasons with `now` sees the same dead worker; the worker's key expires by Redis's clock."""
        if not job.worker_name:
            return False
        if job.id in job.started_job_registry.get_expired_job_ids():
            return False
        return bool(self.connection.exists(Worker.redis_worker_namespace_prefix + job.worker_name))


def build_job_queue(config: dict[str, Any]) -> JobQueue:
    if config.get("REDIS_URL"):
        return RqJobQueue(config["REDIS_URL"])
    return InlineJobQueue()


def job_queue() -> JobQueue:
    return current_app.extensions["job_queue"]


def enqueue_after_commit(
    func: Callable[..., Any],
    *args: Any,
    job_id: str | None = None,
    on_failure: Callable[[], None] | None = None,
    timeout: int = DEFAULT_TIMEOUT,
    fresh: bool = False,
) -> None:
    """Queue `func(*args)` to run once the current transaction commits (and never if it rolls
    back). If the queue cannot be reached the commit stands; `on_failure` may note that.
    `fresh`: `job_id` names a row this transaction made (see `RqJobQueue.enqueue`)."""
    path = job_path(func)
    queue = job_queue()

    def push() -> None:
        try:
            queue.enqueue(path, *args, job_id=job_id, timeout=timeout, fresh=fresh)
        except RedisError:
            log.exception("could not enqueue %s%r; its periodic sweeper will pick it up", path, args)
            if on_failure is not None:
                on_failure()

    # `db.session` is a scoped_session, which proxies only SQLAlchemy's own Session methods;
    # calling it returns this context's AppSession, where `after_commit` lives.
    db.session().after_commit(push)

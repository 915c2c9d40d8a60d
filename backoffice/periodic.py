"""Periodic jobs, in one list: run by `rq cron backoffice.cron_config` in production and by
`flask --app wsgi jobs run-periodic` inline in development."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    path: str
    interval_seconds: int


PERIODIC_JOBS: tuple[PeriodicJob, ...] = (
    PeriodicJob("outbox-sweeper", "backoffice.notifications.jobs.sweep_outbox", 60),
    PeriodicJob("idempotency-key-purge", "backoffice.idempotency.purge_expired", 3600),
    PeriodicJob("document-retention", "backoffice.review.jobs.purge_expired_documents", 86400),
    PeriodicJob("orphan-document-clean-up", "backoffice.review.jobs.purge_orphan_documents", 3600),
    PeriodicJob("call-planner", "backoffice.calls.jobs.replan_calls", 300),
    PeriodicJob("call-sla-alerts", "backoffice.calls.jobs.alert_at_risk_calls", 300),
    PeriodicJob("completion-link-expiry", "backoffice.review.jobs.expire_stale_invitations", 3600),
    PeriodicJob("association-rematch", "backoffice.customers.jobs.rematch_nightly", 86400),
)


def register_with_rq(queue_name: str = "default") -> None:
    """Hand every periodic job to rq's cron registry; each runs through `run_job`."""
    from rq import cron

    from backoffice.jobs import run_job

    for job in PERIODIC_JOBS:
        cron.register(run_job, queue_name, args=(job.path,), interval=job.interval_seconds, name=job.name)

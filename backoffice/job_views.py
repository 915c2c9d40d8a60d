"""Failed background jobs, for admins to inspect, re-queue or delete."""

from __future__ import annotations

from flask import current_app, flash, redirect, url_for
from flask_admin import expose
from flask_wtf import FlaskForm
from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job

from backoffice.admin import RoleBaseView
from backoffice.audit import record
from backoffice.extensions import db
from backoffice.jobs import RqJobQueue
from backoffice.staff.models import Role
from backoffice.web import staff_actor

PAGE_SIZE = 100


def _describe(job: Job) -> dict[str, object]:
    result = job.latest_result()
    traceback = (result.exc_string or "").strip() if result is not None else ""
    return {
        "id": job.id,
        "function": job.args[0] if job.args else job.func_name,
        "arguments": job.args[1:],
        "ended_at": job.ended_at,
        "error": traceback.splitlines()[-1] if traceback else "",
        "traceback": traceback,
    }


class FailedJobsView(RoleBaseView):
    allowed_roles = (Role.ADMIN,)

    def _queue(self) -> RqJobQueue | None:
        queue = current_app.extensions["job_queue"]
        return queue if isinstance(queue, RqJobQueue) else None

    @expose("/")
    def index(self):
        queue = self._queue()
        jobs, error = [], None
        if queue is not None:
            try:
                registry = queue.queue.failed_job_registry
                ids = registry.get_job_ids(0, PAGE_SIZE - 1)
                jobs = [_describe(job) for job in Job.fetch_many(ids, connection=queue.connection) if job]
            except RedisError as exc:
                error = f"Redis is not reachable: {exc}"
        return self.render(
            "admin/failed_jobs.html", inline=queue is None, jobs=jobs, error=error, form=FlaskForm()
        )

    @expose("/<job_id>/<operation>", methods=("POST",))
    def act(self, job_id: str, operation: str):
        queue = self._queue()
        if queue is None or operation not in ("requeue", "delete") or not FlaskForm().validate_on_submit():
            flash("That action is not available.", "error")
            return redirect(url_for(".index"))
        try:
            if operation == "requeue":
                queue.queue.failed_job_registry.requeue(job_id)
            else:
                Job.fetch(job_id, connection=queue.connection).delete()
        except (NoSuchJobError, RedisError, ValueError) as exc:
            flash(f"Could not {operation} job {job_id}: {exc}", "error")
            return redirect(url_for(".index"))
        record(f"job.{operation}d", actor=staff_actor(), subject_type="job", subject_id=job_id)
        db.session.commit()
        flash(f"Job {job_id} {'re-queued' if operation == 'requeue' else 'deleted'}.", "success")
        return redirect(url_for(".index"))

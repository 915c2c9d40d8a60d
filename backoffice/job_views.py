"""The operations page: queue depths, rq queues and workers, periodic jobs, and failed jobs for
admins to re-queue or (after a confirmation) delete."""

from __future__ import annotations

from flask import current_app, flash, redirect, request, url_for
from flask_admin import expose
from flask_babel import gettext as _
from flask_wtf import FlaskForm
from redis.exceptions import RedisError

from backoffice import operations
from backoffice.admin import RoleBaseView
from backoffice.jobs import RqJobQueue
from backoffice.operations import OperationError
from backoffice.staff.models import Role
from backoffice.web import staff_actor


def age(seconds: float | None) -> str:
    """`2 d 3 h`, `5 h 12 min`, `40 min`, `12 s`: the two largest units are enough at a glance."""
    if seconds is None:
        return "—"
    seconds = int(max(seconds, 0))
    parts = [(seconds // 86400, "d"), (seconds % 86400 // 3600, "h"), (seconds % 3600 // 60, "min")]
    shown = [f"{value} {unit}" for value, unit in parts if value][:2]
    return " ".join(shown) or f"{seconds} s"


class OperationsView(RoleBaseView):
    allowed_roles = (Role.ADMIN,)

    def _rq(self) -> RqJobQueue | None:
        queue = current_app.extensions["job_queue"]
        return queue if isinstance(queue, RqJobQueue) else None

    @expose("/")
    def index(self):
        jobs = self._rq()
        rq_queues, workers, failed, error = [], [], [], None
        if jobs is not None:
            try:
                rq_queues = operations.rq_queues(jobs)
                workers = operations.rq_workers(jobs)
                failed = operations.failed_jobs(jobs)
            except RedisError as exc:
                error = _("Redis is not reachable: %(error)s", error=exc)
        return self.render(
            "admin/operations.html",
            depths=operations.queue_depths(),
            periodic=operations.periodic_jobs(),
            inline=jobs is None,
            rq_queues=rq_queues,
            workers=workers,
            failed=failed,
            error=error,
            age=age,
            form=FlaskForm(),
        )

    @expose("/jobs/<job_id>/requeue", methods=("POST",))
    def requeue(self, job_id: str):
        jobs = self._rq()
        if jobs is None or not FlaskForm().validate_on_submit():
            flash(_("That action is not available."), "error")
            return redirect(url_for(".index"))
        try:
            operations.requeue_failed_job(jobs, job_id, actor=staff_actor())
        except (OperationError, RedisError) as exc:
            flash(_("Could not re-queue job %(id)s: %(error)s", id=job_id, error=exc), "error")
            return redirect(url_for(".index"))
        flash(_("Job %(id)s re-queued.", id=job_id), "success")
        return redirect(url_for(".index"))

    @expose("/jobs/<job_id>/delete", methods=("GET", "POST"))
    def delete(self, job_id: str):
        """GET asks for confirmation; only the confirmation form's POST deletes."""
        jobs = self._rq()
        if jobs is None:
            flash(_("That action is not available."), "error")
            return redirect(url_for(".index"))
        form = FlaskForm()
        try:
            if form.validate_on_submit() and request.form.get("confirm") == "yes":
                operations.delete_failed_job(jobs, job_id, actor=staff_actor())
                flash(_("Job %(id)s deleted.", id=job_id), "success")
                return redirect(url_for(".index"))
            job = operations.failed_job(jobs, job_id)
        except (OperationError, RedisError) as exc:
            flash(_("Could not delete job %(id)s: %(error)s", id=job_id, error=exc), "error")
            return redirect(url_for(".index"))
        return self.render("admin/operations_delete.html", job=job, form=form)

"""The agent console (agenda, start next call, the call screen) and the supervisors' SLA page.
Views parse the form, call the call service, and render."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import groupby

from flask import abort, current_app, flash, redirect, request, url_for
from flask_admin import expose
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, or_, select

from backoffice.admin import RoleBaseView
from backoffice.calls import service, sla
from backoffice.calls.models import CallAttempt, CallOutcome, CallTask, CallTaskStatus
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.review import completion
from backoffice.review.models import (
    ApplicationStatus,
    CompletionStatus,
    RepresentativeApplication,
    RepresentativeCompletion,
)
from backoffice.review.service import calendar
from backoffice.review.states import IllegalTransition
from backoffice.staff.models import Role, StaffUser
from backoffice.web import confirmation_page, confirmed, local, short_day, staff_actor, weekday_name

FIELD_LABELS = {
    "company_tax_id": _l("Company tax ID (CIF)"),
    "company_name": _l("Company name"),
    "first_name": _l("Representative's first name"),
    "last_name": _l("Representative's surname(s)"),
    "tax_id": _l("Representative's tax ID"),
    "email": _l("Email"),
    "phone": _l("Phone"),
}
# What the agent chooses when logging a call, and (shorter) what the attempts table says.
OUTCOME_LABELS = {
    CallOutcome.VALIDATED: _l("Validated: every detail confirmed or corrected"),
    CallOutcome.NO_ANSWER: _l("No answer"),
    CallOutcome.CALLBACK_REQUESTED: _l("Call back later"),
    CallOutcome.DATA_MISMATCH: _l("Data mismatch: back to legal"),
}
ATTEMPT_LABELS = {
    CallOutcome.VALIDATED: _l("Validated"),
    CallOutcome.NO_ANSWER: _l("No answer"),
    CallOutcome.CALLBACK_REQUESTED: _l("Callback requested"),
    CallOutcome.DATA_MISMATCH: _l("Data mismatch"),
}
# Where a task not in a call stands, as the call screen says it.
TASK_STATUS_SENTENCES = {
    CallTaskStatus.OPEN: _l("This task is open."),
    CallTaskStatus.DONE: _l("This task is done."),
    CallTaskStatus.FAILED: _l("This task has failed."),
    CallTaskStatus.CANCELLED: _l("This task was cancelled."),
}
LINK_STEP_LABELS = {
    CompletionStatus.INVITED: _l("Link sent"),
    CompletionStatus.PIN_SENT: _l("PIN sent"),
    CompletionStatus.SIGNED: _l("Contract signed"),
    CompletionStatus.ACTIVE: _l("Account active"),
}
# Why a detail on the call screen is refused (the service's stable codes).
FIELD_PROBLEMS = {
    "unchecked": _l("confirm or correct it"),
    "required": _l("required"),
    "too_long": _l("too long"),
    "invalid": _l("not valid"),
}
SLA_LABELS = {
    "on_track": _l("On track"),
    "at_risk": _l("At risk"),
    "breached": _l("Breached"),
    "met": _l("Met"),
}
SLA_STYLES = {"on_track": "success", "at_risk": "warning", "breached": "danger", "met": "secondary"}


def _task(task_id: int) -> CallTask:
    task = db.session.get(CallTask, task_id)
    if task is None:
        abort(404)
    return task


def _require_form() -> None:
    if not FlaskForm().validate_on_submit():
        abort(400)


def _questions(task: CallTask) -> dict[str, str]:
    """The outcomes that cannot be taken back, with what is asked before logging them: a
    mismatch sends the application back to legal, and the last unanswered attempt fails the call."""
    questions = {
        CallOutcome.DATA_MISMATCH.value: _(
            "Log a data mismatch? The application goes back to the legal team's queue."
        )
    }
    if task.failed_attempts + 1 >= int(current_app.config["CALL_MAX_ATTEMPTS"]):
        questions[CallOutcome.NO_ANSWER.value] = _(
            "This is the last attempt: log no answer? The call fails and the applicant is emailed."
        )
    return questions


def _preferred(task: CallTask) -> list[str]:
    return [
        f"{weekday_name(int(wish['weekday']))} {wish['from']}–{wish['to']}"
        for wish in task.application.preferred_call_times or ()
    ]


class CallConsoleView(RoleBaseView):
    """Call agents make the calls; supervisors may look over any task."""

    allowed_roles = (Role.CALL_AGENT, Role.SUPERVISOR)

    def _is_agent(self) -> bool:
        return current_user.role == Role.CALL_AGENT

    @expose("/")
    def index(self):
        now = utcnow()
        business = calendar()
        today = now.astimezone(business.tz).date()
        day_starts = datetime.combine(today, datetime.min.time(), tzinfo=business.tz)
        moment = func.coalesce(CallTask.callback_at, CallTask.slot_start)
        agenda = list(
            db.session.execute(
                select(CallTask)
                .where(
                    CallTask.status.in_(service.LIVE),
                    or_(
                        CallTask.assigned_agent_id == current_user.id,
                        CallTask.in_call_by_id == current_user.id,
                    ),
                    moment < day_starts + timedelta(days=1),
                )
                .order_by(moment, CallTask.deadline)
            ).scalars()
        )
        pool_due = db.session.scalar(
            select(func.count(CallTask.id)).where(
                CallTask.status == CallTaskStatus.OPEN,
                CallTask.assigned_agent_id.is_(None),
                CallTask.callback_at.is_(None),
                or_(CallTask.not_before.is_(None), CallTask.not_before <= now),
            )
        )
        made_today = db.session.scalar(
            select(func.count(CallAttempt.id)).where(
                CallAttempt.agent_id == current_user.id, CallAttempt.started_at >= day_starts
            )
        )
        return self.render(
            "admin/calls_agenda.html",
            agenda=[{"task": task, "sla": sla.sla_state(task, now=now)} for task in agenda],
            current=service.current_call(current_user) if self._is_agent() else None,
            pool_due=pool_due,
            made_today=made_today,
            window_open=business.is_open(now),
            window_message=service.window_message(business),
            is_agent=self._is_agent(),
            sla_labels=SLA_LABELS,
            sla_styles=SLA_STYLES,
            form=FlaskForm(),
            local=local,
        )

    @expose("/next", methods=("POST",))
    def start_next(self):
        _require_form()
        if not self._is_agent():
            abort(403)
        try:
            task = service.start_next_call(current_user, actor=staff_actor())
            db.session.commit()
        except service.CallError as exc:
            db.session.rollback()
            flash(exc.message, "error")
            return redirect(url_for(".index"))
        if task is None:
            flash(
                _("Nothing is due now: no call of yours has reached its time and the pool is empty."), "info"
            )
            return redirect(url_for(".index"))
        return redirect(url_for(".call", task_id=task.id))

    @expose("/<int:task_id>")
    def call(self, task_id: int):
        return self._render_call(_task(task_id))

    def _render_call(self, task: CallTask, *, errors: dict | None = None, status: int = 200):
        now = utcnow()
        business = calendar()
        slots = service.callback_slots(business, now=now)
        groups = (list(group) for _, group in groupby(slots, key=lambda s: s.astimezone(business.tz).date()))
        days = [(local(group[0]).rsplit(" ", 1)[0], group) for group in groups]
        page = self.render(
            "admin/call_screen.html",
            task=task,
            application=task.application,
            attempts=task.attempt_log,
            agents={u.id: u for u in db.session.execute(select(StaffUser)).scalars()},
            in_my_call=task.status == CallTaskStatus.IN_CALL and task.in_call_by_id == current_user.id,
            sla=sla.sla_state(task, now=now),
            sla_labels=SLA_LABELS,
            sla_styles=SLA_STYLES,
            fields=FIELD_LABELS,
            field_problems=FIELD_PROBLEMS,
            outcomes=OUTCOME_LABELS,
            attempt_labels=ATTEMPT_LABELS,
            task_status_sentences=TASK_STATUS_SENTENCES,
            questions=_questions(task),
            callback_days=days,
            preferred=_preferred(task),
            errors=errors or {},
            submitted=request.form if request.method == "POST" else {},
            form=FlaskForm(),
            local=local,
        )
        return page, status

    @expose("/<int:task_id>/log", methods=("POST",))
    def log(self, task_id: int):
        _require_form()
        if not self._is_agent():
            abort(403)
        task = _task(task_id)
        form = request.form
        question = _questions(task).get(form.get("outcome", ""))
        if question and not confirmed():
            return confirmation_page(self, question, cancel_url=url_for(".call", task_id=task.id))
        checks = {
            name: {"status": form.get(f"check_{name}", ""), "value": form.get(f"value_{name}", "")}
            for name in service.VALIDATED_FIELDS
            if form.get(f"check_{name}")
        }
        callback_at = None
        if form.get("callback_at"):
            try:
                callback_at = datetime.fromisoformat(form["callback_at"])
            except ValueError:
                callback_at = None
        try:
            logged = service.log_outcome(
                task,
                current_user,
                form.get("outcome", ""),
                actor=staff_actor(),
                checks=checks,
                notes=form.get("notes", "")[:5000],
                callback_at=callback_at,
            )
            db.session.commit()
        except (service.CallError, IllegalTransition) as exc:
            db.session.rollback()
            task = _task(task_id)
            message = exc.message if isinstance(exc, service.CallError) else str(exc)
            details = exc.details if isinstance(exc, service.CallError) else {}
            errors = {"form": message, **{field: codes for field, codes in details.get("errors", {}).items()}}
            for field in details.get("fields", ()):
                errors[field] = ["unchecked"]
            return self._render_call(task, errors=errors, status=422)
        flash(_("Call logged: %(outcome)s.", outcome=OUTCOME_LABELS[logged.attempt.outcome]), "success")
        if logged.warning:
            flash(logged.warning, "warning")
        if form.get("then") == "next":
            return self.start_next()
        return redirect(url_for(".index"))


class CallSlaView(RoleBaseView):
    """The 48-hour promise on calls: tasks at risk or breached, agent load, attainment."""

    allowed_roles = (Role.SUPERVISOR, Role.ADMIN)

    @expose("/")
    def index(self):
        now = utcnow()
        days, loads = sla.load_per_agent(now=now)
        at_risk_capacity = list(
            db.session.execute(
                select(CallTask)
                .where(CallTask.status == CallTaskStatus.OPEN, CallTask.at_risk_capacity.is_(True))
                .order_by(CallTask.deadline)
                .limit(200)
            ).scalars()
        )
        waiting = db.session.execute(
            select(RepresentativeApplication, RepresentativeCompletion)
            .join(
                RepresentativeCompletion,
                RepresentativeCompletion.application_id == RepresentativeApplication.id,
            )
            .where(
                RepresentativeApplication.status == ApplicationStatus.INVITED,
                RepresentativeCompletion.status != CompletionStatus.SUPERSEDED,
            )
            .order_by(RepresentativeCompletion.expires_at)
            .limit(200)
        ).all()
        return self.render(
            "admin/calls_sla.html",
            waiting=waiting,
            now=now,
            form=FlaskForm(),
            at_risk=sla.tasks_in("at_risk", now=now),
            breached=sla.tasks_in("breached", now=now),
            no_capacity=at_risk_capacity,
            attainments=[sla.attainment(7, now=now), sla.attainment(30, now=now)],
            days=days,
            today=now.astimezone(calendar().tz).date(),
            loads=loads,
            agents={u.id: u for u in db.session.execute(select(StaffUser)).scalars()},
            link_steps=LINK_STEP_LABELS,
            local=local,
            short_day=short_day,
            hours_left=lambda task: calendar().working_hours_between(now, task.deadline),
        )

    @expose("/resend/<application_id>", methods=("POST",))
    def resend_link(self, application_id: str):
        """A new completion link for a representative who lost theirs or let it expire."""
        _require_form()
        application = db.session.get(RepresentativeApplication, application_id)
        if application is None:
            abort(404)
        try:
            completion.reinvite(application, actor=staff_actor())
            db.session.commit()
        except completion.CompletionError as exc:
            db.session.rollback()
            flash(_("Not sent: %(error)s", error=exc), "error")
        else:
            flash(
                _(
                    "A new completion link was emailed to %(email)s; the old one no longer works.",
                    email=application.email,
                ),
                "success",
            )
        return redirect(url_for(".index", _anchor="waiting"))

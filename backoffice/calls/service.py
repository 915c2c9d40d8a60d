"""Call tasks: the plan, starting a call, logging its outcome, retries and callbacks.

Window
    Every call starts inside the call window (`BusinessCalendar.is_open`), checked here on
    the server: starting a call at Friday 22:05 or on a holiday is refused with a message
    naming the window, and so is a callback time outside it. An attempt is made when the call
    starts; that instant is what the SLA and the retry spacing count from.

The plan
    `replan` feeds every open, unpinned task to the pure scheduler and writes back each task's
    agent, slot and `at_risk_capacity`. Pinned tasks (personal callbacks) and calls in progress
    are not moved; they block their agent's slot. It runs after the events that change the
    picture (task opened, attempt logged, shift or absence changed: `request_replan`) and
    periodically. On PostgreSQL one transaction-scoped advisory lock serialises planners.

Starting a call
    `start_next_call` hands an agent, atomically, the earliest due task planned for them
    (a planned slot that has begun or begins within one slot length, or a callback due within
    `_CALLBACK_LEAD`), else the unassigned task with the earliest deadline that may be called
    now. PostgreSQL: the agent's staff row is locked, then `FOR UPDATE SKIP LOCKED`; SQLite:
    compare-and-set on the task's status.

Outcomes
    `validated` applies the agent's corrections (old and new values audited), moves the
    application to `validated` and sends the completion link; `no_answer` schedules the next
    attempt at least `CALL_RETRY_WINDOW_HOURS` window-hours later and in another part of the
    day, and the `CALL_MAX_ATTEMPTS`-th one fails the call (supervisors alerted, the applicant
    told how to reach us); `callback_requested` pins the task to the agent at a time inside the
    window; `data_mismatch` sends the application back to the legal queue with a note.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from flask import current_app
from flask_babel import force_locale, get_locale
from flask_babel import gettext as _
from sqlalchemy import and_, exists, func, or_, select, text, update
from sqlalchemy.orm import aliased

from backoffice import audit
from backoffice.audit import Actor
from backoffice.calls import scheduler
from backoffice.calls.calendar import BusinessCalendar
from backoffice.calls.models import (
    AgentAbsence,
    AgentShift,
    CallAttempt,
    CallOutcome,
    CallTask,
    CallTaskStatus,
)
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.i18n import DEFAULT_LANGUAGE
from backoffice.jobs import enqueue_after_commit
from backoffice.notifications.service import queue_email
from backoffice.review.models import ApplicationStatus, RepresentativeApplication, ReviewNote
from backoffice.review.service import calendar, normalised_details, window_text
from backoffice.review.states import transition
from backoffice.staff.models import Role, StaffUser

SUBJECT = "call_task"
# The details an agent validates by phone, in the order the call screen asks for them.
VALIDATED_FIELDS = ("company_tax_id", "company_name", "first_name", "last_name", "tax_id", "email", "phone")
# Parts of the day (local wall clock) a retry must change: morning, afternoon, evening.
PARTS_OF_DAY = (time(0), time(14), time(18))
_CALLBACK_LEAD = timedelta(minutes=5)
_ONE_MICROSECOND = timedelta(microseconds=1)
_PLANNER_LOCK = 0x5E7A_CA11
_CANDIDATES_PER_ROUND = 10
_MAX_ROUNDS = 20
LIVE = (CallTaskStatus.OPEN, CallTaskStatus.IN_CALL)


class CallError(Exception):
    """A call action refused; `code` is stable, `message` is for the agent."""

    def __init__(self, code: str, message: str, **details: Any):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Logged:
    """What logging an outcome did; `warning` is set when a callback lands after the deadline."""

    attempt: CallAttempt
    warning: str | None = None


# Settings and the window


def _setting(name: str) -> int:
    return int(current_app.config[name])


def slot_length() -> timedelta:
    return timedelta(minutes=_setting("CALL_SLOT_MINUTES"))


def window_message(business: BusinessCalendar | None = None) -> str:
    """The window in the reader's language (the agent's, on a page), with its day names."""
    business = business or calendar()
    locale = get_locale()
    return _(
        "Calls can only be made %(window)s (%(zone)s time), except on public holidays.",
        window=window_text(business, locale.language if locale else DEFAULT_LANGUAGE),
        zone=business.tz.key,
    )


def require_open(moment: datetime, business: BusinessCalendar | None = None) -> None:
    business = business or calendar()
    if not business.is_open(moment):
        raise CallError("outside_window", window_message(business), at=moment.isoformat())


def add_window_hours(business: BusinessCalendar, start: datetime, hours: float) -> datetime:
    """The instant `hours` of open call window after `start` (time outside the window does not
    count); DST-safe because each window day is measured between its own local instants."""
    cursor = start if business.is_open(start) else business.next_open(start)
    remaining = timedelta(hours=hours)
    while True:
        local = cursor.astimezone(business.tz)
        closes = datetime.combine(local.date(), business.closes, tzinfo=business.tz).astimezone(cursor.tzinfo)
        available = closes - cursor
        if remaining <= available:
            return cursor + remaining
        remaining -= available
        cursor = business.next_open(closes)


def part_of_day(business: BusinessCalendar, moment: datetime) -> int:
    local = moment.astimezone(business.tz).time()
    return sum(1 for boundary in PARTS_OF_DAY[1:] if local >= boundary)


def next_attempt_after(business: BusinessCalendar, attempt_at: datetime, window_hours: float) -> datetime:
    """Earliest retry: `window_hours` of open window later, moved on to the next open moment
    in another part of the day (morning, afternoon, evening) than the unanswered call."""
    candidate = add_window_hours(business, attempt_at, window_hours)
    missed = part_of_day(business, attempt_at)
    for _step in range(3 * len(PARTS_OF_DAY)):
        if part_of_day(business, candidate) != missed:
            return candidate
        local = candidate.astimezone(business.tz)
        following = [b for b in PARTS_OF_DAY if b > local.time()]
        boundary = (
            datetime.combine(local.date(), following[0], tzinfo=business.tz)
            if following
            else datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=business.tz)
        )
        candidate = business.next_open(boundary.astimezone(attempt_at.tzinfo))
    return candidate  # a window inside one part of the day: spacing alone applies


def callback_slots(business: BusinessCalendar, *, now: datetime, days: int = 5) -> list[datetime]:
    """The callback times the call screen offers: slot boundaries inside the window from now
    on, over the next `days` working days."""
    length = slot_length()
    slots: list[datetime] = []
    cursor = business.next_open(now)
    local_day = cursor.astimezone(business.tz).date()
    working_days = 0
    while working_days < days:
        if business.is_working_day(local_day):
            working_days += 1
            opens = datetime.combine(local_day, business.opens, tzinfo=business.tz)
            closes = datetime.combine(local_day, business.closes, tzinfo=business.tz)
            moment = opens
            while moment + length <= closes:
                utc_moment = moment.astimezone(now.tzinfo)
                if utc_moment >= now and business.is_open(utc_moment):
                    slots.append(utc_moment)
                moment = (moment.astimezone(now.tzinfo) + length).astimezone(business.tz)
        local_day += timedelta(days=1)
    return slots


# Planning


def request_replan() -> None:
    """Re-plan once the current transaction commits."""
    from backoffice.calls.jobs import replan_calls

    enqueue_after_commit(replan_calls)


def _is_postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def _active_agent_ids() -> list[int]:
    return list(
        db.session.execute(
            select(StaffUser.id).where(StaffUser.active.is_(True), StaffUser.role == Role.CALL_AGENT)
        ).scalars()
    )


def _preferences(application: RepresentativeApplication) -> tuple[scheduler.PreferredTime, ...]:
    return tuple(
        scheduler.PreferredTime(
            weekday=int(wish["weekday"]),
            start=time.fromisoformat(wish["from"]),
            end=time.fromisoformat(wish["to"]),
        )
        for wish in application.preferred_call_times or ()
    )


def replan(*, now: datetime | None = None) -> scheduler.Plan:
    """Plan every open unpinned task onto the agents' free slots and save the plan."""
    now = now or utcnow()
    if _is_postgres():
        db.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PLANNER_LOCK})
    release_late_callbacks(now=now)
    release_abandoned_calls(now=now)
    business = calendar()
    length = slot_length()
    agents = _active_agent_ids()
    shifts = [
        scheduler.AgentShift(shift.agent_id, shift.weekday, shift.starts, shift.ends)
        for shift in db.session.execute(
            select(AgentShift).where(AgentShift.agent_id.in_(agents)).order_by(AgentShift.id)
        ).scalars()
    ]
    busy = [
        scheduler.Absence(absence.agent_id, absence.starts_at, absence.ends_at)
        for absence in db.session.execute(
            select(AgentAbsence).where(AgentAbsence.agent_id.in_(agents), AgentAbsence.ends_at > now)
        ).scalars()
    ]
    tasks = list(
        db.session.execute(
            select(CallTask)
            .where(CallTask.status.in_(LIVE))
            .order_by(CallTask.deadline, CallTask.id)
            .execution_options(populate_existing=True)
        ).scalars()
    )
    requests: list[scheduler.TaskRequest] = []
    for task in tasks:
        if task.status == CallTaskStatus.IN_CALL and task.in_call_by_id is not None:
            busy.append(scheduler.Absence(task.in_call_by_id, now, now + length))
        elif task.callback_at is not None and task.assigned_agent_id is not None:
            busy.append(
                scheduler.Absence(task.assigned_agent_id, task.callback_at, task.callback_at + length)
            )
        else:
            requests.append(
                scheduler.TaskRequest(
                    id=task.id,
                    deadline=task.deadline,
                    created_at=task.created_at,
                    preferred=_preferences(task.application),
                    not_before=task.not_before,
                )
            )
    plan = scheduler.plan(
        requests,
        shifts,
        busy,
        calendar=business,
        now=now,
        horizon_days=_setting("CALL_PLAN_HORIZON_DAYS"),
        slot_minutes=_setting("CALL_SLOT_MINUTES"),
    )
    placed = {assignment.task_id: assignment for assignment in plan.assignments}
    at_risk = set(plan.at_risk_capacity)
    changed = 0
    for request in requests:
        task = db.session.get(CallTask, request.id)
        assignment = placed.get(request.id)
        agent = assignment.agent_id if assignment else None
        slot = assignment.slot_start if assignment else None
        flagged = request.id in at_risk
        if (task.assigned_agent_id, task.slot_start, task.at_risk_capacity) == (agent, slot, flagged):
            continue
        changed += db.session.execute(
            update(CallTask)
            .where(
                CallTask.id == task.id, CallTask.status == CallTaskStatus.OPEN, CallTask.callback_at.is_(None)
            )
            .values(assigned_agent_id=agent, slot_start=slot, at_risk_capacity=flagged)
            .execution_options(synchronize_session="fetch")
        ).rowcount
    if changed:
        audit.record(
            "call_plan.updated",
            actor=Actor.system("call planner"),
            subject_type="call_plan",
            subject_id="calls",
            after={"tasks": len(requests), "changed": changed, "at_risk_capacity": len(at_risk)},
        )
    return plan


def _unpin(task: CallTask, *, reason: str, actor: Actor, now: datetime) -> None:
    before = {
        "assigned_agent_id": task.assigned_agent_id,
        "slot_start": task.slot_start.isoformat() if task.slot_start else None,
        "callback_at": task.callback_at.isoformat() if task.callback_at else None,
    }
    if task.callback_at is not None:  # never call earlier than the applicant asked
        task.not_before = max(task.not_before or task.callback_at, task.callback_at)
    task.callback_at = None
    task.assigned_agent_id = None
    task.slot_start = None
    audit.record(
        "call_task.released",
        actor=actor,
        subject_type=SUBJECT,
        subject_id=task.id,
        before=before,
        after={"reason": reason, "not_before": task.not_before.isoformat() if task.not_before else None},
    )


def release_late_callbacks(*, now: datetime | None = None) -> int:
    """A personal callback not started `CALL_CALLBACK_GRACE_MINUTES` after its time goes
    back to the pool, so anyone may make it."""
    now = now or utcnow()
    late = now - timedelta(minutes=_setting("CALL_CALLBACK_GRACE_MINUTES"))
    tasks = db.session.execute(
        select(CallTask).where(
            CallTask.status == CallTaskStatus.OPEN,
            CallTask.callback_at.is_not(None),
            CallTask.callback_at <= late,
        )
    ).scalars()
    count = 0
    for task in tasks:
        _unpin(task, reason="callback_not_started", actor=Actor.system("call planner"), now=now)
        count += 1
    db.session.flush()
    return count


def release_abandoned_calls(*, now: datetime | None = None) -> int:
    """A call started more than `CALL_ABANDONED_MINUTES` ago and never logged (the agent's
    browser closed, the agent left) goes back to the pool. The attempt still counts for the
    promise; nothing is assumed about its outcome."""
    now = now or utcnow()
    stale = now - timedelta(minutes=_setting("CALL_ABANDONED_MINUTES"))
    tasks = db.session.execute(
        select(CallTask).where(CallTask.status == CallTaskStatus.IN_CALL, CallTask.in_call_since <= stale)
    ).scalars()
    count = 0
    for task in tasks:
        audit.record(
            "call_task.call_abandoned",
            actor=Actor.system("call planner"),
            subject_type=SUBJECT,
            subject_id=task.id,
            before={"status": CallTaskStatus.IN_CALL.value, "agent_id": task.in_call_by_id},
            after={"status": CallTaskStatus.OPEN.value, "in_call_since": task.in_call_since.isoformat()},
        )
        task.status = CallTaskStatus.OPEN
        task.in_call_by_id = None
        task.in_call_since = None
        task.assigned_agent_id = None
        task.slot_start = None
        count += 1
    db.session.flush()
    return count


def release_for_absence(absence: AgentAbsence, *, actor: Actor, now: datetime | None = None) -> int:
    """The absent agent's planned calls and personal callbacks inside the absence go back to
    the pool (and are re-planned)."""
    now = now or utcnow()
    moment = func.coalesce(CallTask.callback_at, CallTask.slot_start)
    tasks = db.session.execute(
        select(CallTask).where(
            CallTask.status == CallTaskStatus.OPEN,
            CallTask.assigned_agent_id == absence.agent_id,
            moment >= absence.starts_at - slot_length() + _ONE_MICROSECOND,
            moment < absence.ends_at,
        )
    ).scalars()
    count = 0
    for task in tasks:
        _unpin(task, reason="agent_absent", actor=actor, now=now)
        count += 1
    db.session.flush()
    request_replan()
    return count


# Starting a call


def _require_agent(agent: StaffUser) -> None:
    if agent is None or not agent.active or agent.role != Role.CALL_AGENT:
        raise CallError("not_an_agent", _("Only an active call agent can make calls."))


def _in_call_of(agent_id: int, table: Any = CallTask) -> Any:
    return and_(table.status == CallTaskStatus.IN_CALL, table.in_call_by_id == agent_id)


def current_call(agent: StaffUser) -> CallTask | None:
    return db.session.execute(
        select(CallTask).where(_in_call_of(agent.id)).order_by(CallTask.id).limit(1)
    ).scalar_one_or_none()


def _callable_now(now: datetime) -> Any:
    return and_(
        CallTask.status == CallTaskStatus.OPEN,
        or_(CallTask.not_before.is_(None), CallTask.not_before <= now),
    )


def _mine_due(agent_id: int, now: datetime) -> Any:
    return and_(
        _callable_now(now),
        CallTask.assigned_agent_id == agent_id,
        or_(
            and_(CallTask.callback_at.is_not(None), CallTask.callback_at <= now + _CALLBACK_LEAD),
            and_(CallTask.callback_at.is_(None), CallTask.slot_start <= now + slot_length()),
        ),
    )


def _pool_due(now: datetime) -> Any:
    return and_(_callable_now(now), CallTask.assigned_agent_id.is_(None), CallTask.callback_at.is_(None))


def _due_orders() -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    mine = (func.coalesce(CallTask.callback_at, CallTask.slot_start), CallTask.deadline, CallTask.id)
    return mine, (CallTask.deadline, CallTask.id)


def start_next_call(agent: StaffUser, *, actor: Actor, now: datetime | None = None) -> CallTask | None:
    """The agent's call in progress, or the next due task started for them; None when
    nothing is due. Flushes, never commits."""
    now = now or utcnow()
    _require_agent(agent)
    business = calendar()
    require_open(now, business)
    if _is_postgres():
        db.session.execute(
            select(StaffUser.id).where(StaffUser.id == agent.id).with_for_update(key_share=True)
        )
        held = current_call(agent)
        if held is not None:
            return held
        mine_order, pool_order = _due_orders()
        for condition, order in ((_mine_due(agent.id, now), mine_order), (_pool_due(now), pool_order)):
            task = db.session.execute(
                select(CallTask)
                .where(condition)
                .order_by(*order)
                .limit(1)
                .with_for_update(skip_locked=True, key_share=True)
                .execution_options(populate_existing=True)
            ).scalar_one_or_none()
            if task is not None:
                return _begin(task, agent, actor=actor, now=now)
        return None
    return _start_compare_and_set(agent, actor=actor, now=now)


def _start_compare_and_set(agent: StaffUser, *, actor: Actor, now: datetime) -> CallTask | None:
    other = aliased(CallTask)
    mine_order, pool_order = _due_orders()
    for _round in range(_MAX_ROUNDS):
        held = current_call(agent)
        if held is not None:
            return held
        candidates = list(
            db.session.execute(
                select(CallTask.id)
                .where(_mine_due(agent.id, now))
                .order_by(*mine_order)
                .limit(_CANDIDATES_PER_ROUND)
            ).scalars()
        ) or list(
            db.session.execute(
                select(CallTask.id).where(_pool_due(now)).order_by(*pool_order).limit(_CANDIDATES_PER_ROUND)
            ).scalars()
        )
        if not candidates:
            return None
        for task_id in candidates:
            won = db.session.execute(
                update(CallTask)
                .where(
                    CallTask.id == task_id,
                    CallTask.status == CallTaskStatus.OPEN,
                    ~exists().where(_in_call_of(agent.id, other)),
                )
                .values(status=CallTaskStatus.IN_CALL, in_call_by_id=agent.id, in_call_since=now)
                .execution_options(synchronize_session=False)
            ).rowcount
            if won:
                task = db.session.execute(
                    select(CallTask).where(CallTask.id == task_id).execution_options(populate_existing=True)
                ).scalar_one()
                return _begin(task, agent, actor=actor, now=now, claimed=True)
    raise CallError("busy", _("Too many agents are starting calls at once; try again."))


def _begin(
    task: CallTask, agent: StaffUser, *, actor: Actor, now: datetime, claimed: bool = False
) -> CallTask:
    before = {"status": CallTaskStatus.OPEN.value, "assigned_agent_id": task.assigned_agent_id}
    if not claimed:
        task.status = CallTaskStatus.IN_CALL
        task.in_call_by_id = agent.id
        task.in_call_since = now
    task.assigned_agent_id = agent.id
    task.first_attempt_at = task.first_attempt_at or now
    task.attempts += 1
    db.session.flush()
    audit.record(
        "call.started",
        actor=actor,
        subject_type=SUBJECT,
        subject_id=task.id,
        before=before,
        after={"status": CallTaskStatus.IN_CALL.value, "agent_id": agent.id, "attempt": task.attempts},
    )
    return task


# Outcomes


def _require_own_call(task: CallTask, agent: StaffUser) -> None:
    _require_agent(agent)
    if task.status != CallTaskStatus.IN_CALL or task.in_call_by_id != agent.id:
        raise CallError("not_in_call", _("This call is not in progress for you; start it from your agenda."))


def log_outcome(
    task: CallTask,
    agent: StaffUser,
    outcome: str,
    *,
    actor: Actor,
    checks: Mapping[str, Mapping[str, str]] | None = None,
    notes: str = "",
    callback_at: datetime | None = None,
    now: datetime | None = None,
) -> Logged:
    """Record the attempt in progress and act on its outcome (see the module docstring)."""
    now = now or utcnow()
    _require_own_call(task, agent)
    try:
        outcome = CallOutcome(outcome)
    except ValueError:
        raise CallError("invalid_outcome", _("Choose an outcome for the call.")) from None
    notes = (notes or "").strip()
    business = calendar()
    attempt = CallAttempt(
        task_id=task.id,
        agent_id=agent.id,
        started_at=task.in_call_since or now,
        logged_at=now,
        outcome=outcome,
        notes=notes,
    )
    warning = None
    if outcome == CallOutcome.VALIDATED:
        attempt.field_checks = _apply_checks(task, checks or {}, actor=actor, now=now)
    elif outcome == CallOutcome.CALLBACK_REQUESTED:
        warning = _check_callback(task, callback_at, business, now=now)
        attempt.callback_at = callback_at
    elif outcome == CallOutcome.DATA_MISMATCH and not notes:
        raise CallError("note_required", _("Say what did not match: legal will read your note."))
    db.session.add(attempt)
    task.status = CallTaskStatus.OPEN
    task.in_call_by_id = None
    task.in_call_since = None
    task.outcome = outcome.value
    db.session.flush()
    audit.record(
        "call.logged",
        actor=actor,
        subject_type=SUBJECT,
        subject_id=task.id,
        before={"status": CallTaskStatus.IN_CALL.value},
        after={
            "attempt_id": attempt.id,
            "outcome": outcome.value,
            "started_at": attempt.started_at.isoformat(),
            "callback_at": callback_at.isoformat() if callback_at else None,
        },
    )
    {
        CallOutcome.VALIDATED: _validated,
        CallOutcome.NO_ANSWER: _no_answer,
        CallOutcome.CALLBACK_REQUESTED: _callback,
        CallOutcome.DATA_MISMATCH: _data_mismatch,
    }[outcome](task, attempt, agent=agent, actor=actor, business=business, now=now)
    request_replan()
    return Logged(attempt, warning)


def _apply_checks(
    task: CallTask, checks: Mapping[str, Mapping[str, str]], *, actor: Actor, now: datetime
) -> dict[str, Any]:
    """Every field must be confirmed or corrected; corrections are normalised like a
    submission and written to the application, old and new values audited."""
    application = task.application
    missing = [
        name
        for name in VALIDATED_FIELDS
        if (checks.get(name) or {}).get("status") not in ("confirmed", "corrected")
    ]
    if missing:
        raise CallError(
            "fields_unchecked", _("Confirm or correct every field before validating."), fields=missing
        )
    merged = {name: getattr(application, name) for name in VALIDATED_FIELDS}
    for name in VALIDATED_FIELDS:
        if checks[name]["status"] == "corrected":
            merged[name] = checks[name].get("value") or ""
    values, errors = normalised_details(merged)
    if errors:
        raise CallError("invalid_correction", _("Some corrected values are not valid."), errors=errors)
    record: dict[str, Any] = {}
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    for name in VALIDATED_FIELDS:
        old, new = getattr(application, name), values[name]
        if checks[name]["status"] == "corrected" and new != old:
            before[name], after[name] = old, new
            setattr(application, name, new)
            record[name] = {"status": "corrected", "old": old, "new": new}
        else:
            record[name] = {"status": "confirmed", "value": old}
    if after:
        audit.record(
            "application.details_corrected",
            actor=actor,
            subject_type="representative_application",
            subject_id=application.id,
            before=before,
            after=after,
        )
    return record


def _check_callback(
    task: CallTask, callback_at: datetime | None, business: BusinessCalendar, *, now: datetime
) -> str | None:
    if callback_at is None or callback_at.utcoffset() is None:
        raise CallError("callback_required", _("Choose when to call back."))
    if callback_at <= now:
        raise CallError("callback_in_past", _("A callback must be in the future."))
    if not business.is_open(callback_at) or not business.is_open(
        callback_at + slot_length() - _ONE_MICROSECOND
    ):
        raise CallError("outside_window", window_message(business), at=callback_at.isoformat())
    if callback_at >= task.deadline:
        return _("This callback is after the deadline promised to the applicant.")
    return None


def _close(task: CallTask, status: CallTaskStatus, *, actor: Actor, now: datetime, reason: str) -> None:
    before = {"status": task.status.value}
    task.status = status
    task.closed_at = now
    task.slot_start = None
    audit.record(
        f"call_task.{status.value}",
        actor=actor,
        subject_type=SUBJECT,
        subject_id=task.id,
        before=before,
        after={"status": status.value, "reason": reason},
    )


def _validated(
    task: CallTask,
    attempt: CallAttempt,
    *,
    agent: StaffUser,
    actor: Actor,
    business: BusinessCalendar,
    now: datetime,
) -> None:
    from backoffice.review import completion

    _close(task, CallTaskStatus.DONE, actor=actor, now=now, reason="validated")
    application = task.application
    transition(
        application,
        ApplicationStatus.VALIDATED,
        actor=actor,
        now=now,
        attempt_id=attempt.id,
        fields={name: check["status"] for name, check in attempt.field_checks.items()},
    )
    completion.invite(application, actor=actor, now=now)


def _no_answer(
    task: CallTask,
    attempt: CallAttempt,
    *,
    agent: StaffUser,
    actor: Actor,
    business: BusinessCalendar,
    now: datetime,
) -> None:
    task.failed_attempts += 1
    if task.failed_attempts >= _setting("CALL_MAX_ATTEMPTS"):
        _fail(task, actor=actor, business=business, now=now)
        return
    task.assigned_agent_id = None
    task.slot_start = None
    task.callback_at = None
    task.not_before = next_attempt_after(business, attempt.started_at, _setting("CALL_RETRY_WINDOW_HOURS"))
    audit.record(
        "call_task.retry_scheduled",
        actor=actor,
        subject_type=SUBJECT,
        subject_id=task.id,
        after={"failed_attempts": task.failed_attempts, "not_before": task.not_before.isoformat()},
    )


def _fail(task: CallTask, *, actor: Actor, business: BusinessCalendar, now: datetime) -> None:
    _close(task, CallTaskStatus.FAILED, actor=actor, now=now, reason="no_answer")
    application = task.application
    transition(
        application, ApplicationStatus.CALL_FAILED, actor=actor, now=now, failed_attempts=task.failed_attempts
    )
    queue_email(
        application.email,
        "call_failed",
        {
            "name": application.first_name,
            "company": application.company_name,
            "contact_phone": current_app.config["CUSTOMER_CONTACT_PHONE"],
            "window": window_text(business, application.language),
            "attempts": task.failed_attempts,
            "application_id": application.id,
        },
        language=application.language,
    )
    alert_supervisors(
        "call_failed_supervisor",
        {
            "company": application.company_name,
            "company_tax_id": application.company_tax_id,
            "representative": application.representative_name,
            "application_id": application.id,
            "task_id": task.id,
            "attempts": task.failed_attempts,
        },
    )


def _callback(
    task: CallTask,
    attempt: CallAttempt,
    *,
    agent: StaffUser,
    actor: Actor,
    business: BusinessCalendar,
    now: datetime,
) -> None:
    task.assigned_agent_id = agent.id
    task.callback_at = attempt.callback_at
    task.slot_start = attempt.callback_at
    task.not_before = None


def _data_mismatch(
    task: CallTask,
    attempt: CallAttempt,
    *,
    agent: StaffUser,
    actor: Actor,
    business: BusinessCalendar,
    now: datetime,
) -> None:
    _close(task, CallTaskStatus.DONE, actor=actor, now=now, reason="data_mismatch")
    application = task.application
    db.session.add(
        ReviewNote(
            application_id=application.id,
            author_id=agent.id,
            text=f"Call: data mismatch. {attempt.notes}",
            created_at=now,
        )
    )
    transition(
        application,
        ApplicationStatus.SUBMITTED,
        actor=actor,
        now=now,
        reason="data_mismatch",
        attempt_id=attempt.id,
    )


def alert_supervisors(template: str, context: Mapping[str, Any]) -> int:
    """One email per active supervisor, through the outbox, in the language each reads the back
    office in: lazy values in `context` (labels, times) are written in it too."""
    supervisors = db.session.execute(
        select(StaffUser)
        .where(StaffUser.active.is_(True), StaffUser.role == Role.SUPERVISOR)
        .order_by(StaffUser.id)
    ).scalars()
    count = 0
    for supervisor in supervisors:
        with force_locale(supervisor.language):
            queue_email(supervisor.email, template, context, language=supervisor.language)
        count += 1
    return count

"""The 48-hour promise on call tasks: each task's state, the supervisors' lists, attainment,
agent load and the one-time at-risk alert.

The promise is met when the first attempt is made (the call starts) before the deadline.
A task without an attempt is `breached` from the deadline on, `at_risk` while fewer than
`CALL_AT_RISK_HOURS` working hours are left, else `on_track`. As in the review queue, "fewer
than H working hours left" is exactly `deadline < add_working_hours(now, H)` (working hours
left never decrease as the deadline moves later), so every state is a plain SQL range on
`deadline`, computed once per query with the business calendar.

Attainment over the last N days counts the promises that fell due in that period (deadline
in `(now - N days, now]`), cancelled tasks without an attempt left out: met / due.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from babel.dates import format_datetime
from flask import current_app
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString
from sqlalchemy import ColumnElement, and_, func, or_, select, update

from backoffice.calls.models import CallAttempt, CallTask, CallTaskStatus
from backoffice.calls.service import LIVE, alert_supervisors
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.review.service import calendar
from backoffice.staff.models import Role, StaffUser

SLA_STATES = ("on_track", "at_risk", "breached", "met")
# The states as the supervisors' alert email words them.
STATE_LABELS = {
    "on_track": _l("on track"),
    "at_risk": _l("at risk"),
    "breached": _l("breached"),
    "met": _l("met"),
}


def _at_risk_until(now: datetime) -> datetime:
    return calendar().add_working_hours(now, float(current_app.config["CALL_AT_RISK_HOURS"]))


def sla_state(task: CallTask, *, now: datetime | None = None) -> str:
    now = now or utcnow()
    if task.first_attempt_at is not None:
        return "met" if task.first_attempt_at < task.deadline else "breached"
    if now >= task.deadline:
        return "breached"
    if task.deadline < _at_risk_until(now):
        return "at_risk"
    return "on_track"


def condition(state: str, *, now: datetime) -> ColumnElement[bool]:
    """The SQL form of `sla_state` for tasks still open or in a call."""
    live = CallTask.status.in_(LIVE)
    no_attempt = CallTask.first_attempt_at.is_(None)
    if state == "met":
        return and_(live, CallTask.first_attempt_at < CallTask.deadline)
    if state == "breached":
        return and_(
            live,
            or_(and_(no_attempt, CallTask.deadline <= now), CallTask.first_attempt_at >= CallTask.deadline),
        )
    at_risk_until = _at_risk_until(now)
    if state == "at_risk":
        return and_(live, no_attempt, CallTask.deadline > now, CallTask.deadline < at_risk_until)
    if state == "on_track":
        return and_(live, no_attempt, CallTask.deadline >= at_risk_until)
    raise ValueError(f"unknown SLA state {state!r}")


def tasks_in(state: str, *, now: datetime | None = None, limit: int = 200) -> list[CallTask]:
    now = now or utcnow()
    return list(
        db.session.execute(
            select(CallTask)
            .where(condition(state, now=now))
            .order_by(CallTask.deadline, CallTask.id)
            .limit(limit)
        ).scalars()
    )


@dataclass(frozen=True)
class Attainment:
    days: int
    due: int
    met: int

    @property
    def rate(self) -> float | None:
        return self.met / self.due if self.due else None


def attainment(days: int, *, now: datetime | None = None) -> Attainment:
    now = now or utcnow()
    met = and_(CallTask.first_attempt_at.is_not(None), CallTask.first_attempt_at < CallTask.deadline)
    row = db.session.execute(
        select(func.count(), func.count().filter(met)).where(
            CallTask.deadline > now - timedelta(days=days),
            CallTask.deadline <= now,
            or_(CallTask.status != CallTaskStatus.CANCELLED, CallTask.first_attempt_at.is_not(None)),
        )
    ).one()
    return Attainment(days=days, due=row[0], met=row[1])


@dataclass(frozen=True)
class AgentLoad:
    agent: StaffUser
    planned: dict[date, int]
    attempts: dict[date, int]


def load_per_agent(*, now: datetime | None = None, days: int = 7) -> tuple[list[date], list[AgentLoad]]:
    """Per call agent and business-local day: calls planned (the next `days` days, callbacks
    included) and attempts made (the last `days` days)."""
    now = now or utcnow()
    tz = calendar().tz
    today = now.astimezone(tz).date()
    past = [today - timedelta(days=offset) for offset in range(days - 1, 0, -1)]
    future = [today + timedelta(days=offset) for offset in range(days)]
    agents = list(
        db.session.execute(
            select(StaffUser)
            .where(StaffUser.active.is_(True), StaffUser.role == Role.CALL_AGENT)
            .order_by(StaffUser.name, StaffUser.id)
        ).scalars()
    )
    planned: dict[int, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for agent_id, moment in db.session.execute(
        select(CallTask.assigned_agent_id, func.coalesce(CallTask.callback_at, CallTask.slot_start)).where(
            CallTask.status == CallTaskStatus.OPEN,
            CallTask.assigned_agent_id.is_not(None),
            func.coalesce(CallTask.callback_at, CallTask.slot_start) >= now - timedelta(days=1),
            func.coalesce(CallTask.callback_at, CallTask.slot_start) < now + timedelta(days=days + 1),
        )
    ):
        if moment is not None:
            planned[agent_id][_as_utc(moment).astimezone(tz).date()] += 1
    made: dict[int, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for agent_id, started in db.session.execute(
        select(CallAttempt.agent_id, CallAttempt.started_at).where(
            CallAttempt.started_at >= now - timedelta(days=days + 1)
        )
    ):
        made[agent_id][_as_utc(started).astimezone(tz).date()] += 1
    return (
        [*past, *future],
        [AgentLoad(agent, dict(planned[agent.id]), dict(made[agent.id])) for agent in agents],
    )


def _as_utc(moment: Any) -> datetime:
    """`coalesce(...)` comes back untyped from SQLite (a string); columns come back aware."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _when_read(moment: datetime, zone: tzinfo) -> LazyString:
    """A time written out when the email is rendered, in its reader's language."""
    return LazyString(
        lambda: format_datetime(moment, "EEE dd MMM yyyy HH:mm", tzinfo=zone, locale=get_locale())
    )


def alert_at_risk(*, now: datetime | None = None) -> int:
    """Email supervisors once about each task newly at risk (or that the plan could not fit
    before its deadline); returns how many tasks were reported."""
    now = now or utcnow()
    tasks = list(
        db.session.execute(
            select(CallTask)
            .where(
                CallTask.at_risk_alerted_at.is_(None),
                or_(
                    condition("at_risk", now=now),
                    condition("breached", now=now),
                    and_(CallTask.status == CallTaskStatus.OPEN, CallTask.at_risk_capacity.is_(True)),
                ),
            )
            .order_by(CallTask.deadline, CallTask.id)
        ).scalars()
    )
    if not tasks:
        return 0
    claimed = db.session.execute(
        update(CallTask)
        .where(CallTask.id.in_([task.id for task in tasks]), CallTask.at_risk_alerted_at.is_(None))
        .values(at_risk_alerted_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != len(tasks):  # another run reported some of them: report again next time
        db.session.rollback()
        return 0
    business = calendar()
    rows = [
        {
            "task_id": task.id,
            "company": task.application.company_name,
            "state": STATE_LABELS[sla_state(task, now=now)],
            "deadline": _when_read(task.deadline, business.tz),
            "no_capacity": task.at_risk_capacity,
        }
        for task in tasks
    ]
    alert_supervisors("calls_at_risk", {"rows": rows, "zone": business.tz.key})
    return len(tasks)

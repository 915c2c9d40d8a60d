"""The numbers behind the supervisors' dashboard, and their CSV export.

Every function takes `now` (and the reporting period where one applies), so a page, an
export and a test asked the same question get the same answer. Queues and the call SLA are
as of `now`. A period is business-local days (Europe/Madrid by default): from local midnight
of its first day to local midnight after its last day (or `now`, if earlier), so both ends
are included and a call at 23:30 local time belongs to that day. Everything is counted in SQL
(COUNT, MIN, GROUP BY); Python only reshapes the few result rows.

Funnels are cohorts: who registered (or first applied) in the period, and how far each of
them has got by now. A stage reached counts in every earlier stage.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, case, func, or_, select

from backoffice import audit
from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.calls import sla
from backoffice.calls.models import CallAttempt, CallOutcome, CallTask
from backoffice.calls.service import LIVE
from backoffice.customers.cases import ACTIVE as ACTIVE_CASES
from backoffice.customers.models import AssociationCase, AssociationStatus, CustomerAccount
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage, OutboxStatus
from backoffice.review.models import ApplicationStatus as S
from backoffice.review.models import RepresentativeApplication as Application
from backoffice.review.queue import REVIEWABLE
from backoffice.review.service import calendar
from backoffice.staff.models import StaffUser

DEFAULT_DAYS = 30
MAX_DAYS = 366
ATTAINMENT_DAYS = (7, 30)
ACCOUNT_STEPS = ("registered", "verified", "linked")
REPRESENTATIVE_STEPS = ("submitted", "approved", "validated", "completed")
# Statuses an application can only be in once it has reached the stage (history aside).
_AT_OR_PAST: dict[str, tuple[S, ...]] = {
    "approved": (S.APPROVED, S.CALL_SCHEDULED, S.CALL_FAILED, S.VALIDATED, S.INVITED, S.COMPLETED),
    "validated": (S.VALIDATED, S.INVITED, S.COMPLETED),
    "completed": (S.COMPLETED,),
}
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class PeriodError(ValueError):
    """The period typed in cannot be used; `code` is `invalid_date`, `to_before_from` or `too_long`."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class Period:
    """Business-local days, both ends included."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def bounds(self, tz: ZoneInfo, now: datetime) -> tuple[datetime, datetime]:
        """[from, to) as instants: local midnight of the first day to that after the last,
        or `now` when that is earlier (nothing that has not happened yet is counted)."""
        return _midnight(self.start, tz), min(_midnight(self.end + timedelta(days=1), tz), now)


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def _tz() -> ZoneInfo:
    return calendar().tz


def default_period(now: datetime) -> Period:
    """The last 30 business-local days, today included."""
    today = now.astimezone(_tz()).date()
    return Period(today - timedelta(days=DEFAULT_DAYS - 1), today)


def parse_period(raw_from: str | None, raw_to: str | None, *, now: datetime) -> Period:
    """ISO dates from a form. A missing end is today; a missing start makes a 30-day period."""
    tz = _tz()
    try:
        start = date.fromisoformat(raw_from) if raw_from else None
        end = date.fromisoformat(raw_to) if raw_to else default_period(now).end
        start = start or end - timedelta(days=DEFAULT_DAYS - 1)
        # Both ends must be instants a datetime can hold (not the very first or last day).
        _midnight(start, tz).astimezone(UTC)
        _midnight(end + timedelta(days=1), tz).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise PeriodError("invalid_date") from exc
    if end < start:
        raise PeriodError("to_before_from")
    period = Period(start, end)
    if period.days > MAX_DAYS:
        raise PeriodError("too_long")
    return period


# Queues


@dataclass(frozen=True)
class QueueRow:
    key: str
    size: int
    oldest_at: datetime | None
    age: timedelta | None


def _queue(key: str, since: Any, condition: ColumnElement[bool], now: datetime) -> QueueRow:
    size, oldest = db.session.execute(select(func.count(), func.min(since)).where(condition)).one()
    return QueueRow(key, size, oldest, now - oldest if oldest is not None else None)


def queues(*, now: datetime) -> list[QueueRow]:
    """What is waiting now, each queue counted on its status index; age from the oldest item."""
    return [
        _queue("legal_review", Application.submitted_at, Application.status.in_(REVIEWABLE), now),
        _queue("call_tasks", CallTask.created_at, CallTask.status.in_(LIVE), now),
        _queue("association_cases", AssociationCase.opened_at, AssociationCase.status.in_(ACTIVE_CASES), now),
        _queue("outbox_pending", OutboxMessage.created_at, OutboxMessage.status == OutboxStatus.PENDING, now),
    ]


# The call SLA


@dataclass(frozen=True)
class SlaSummary:
    attainments: list[sla.Attainment]
    at_risk: int
    breached: int


def sla_summary(*, now: datetime) -> SlaSummary:
    """The call SLA page's numbers: attainment as `calls.sla` defines it, and how many live
    tasks its at-risk and breached lists hold."""

    def count(state: str) -> int:
        return db.session.scalar(select(func.count(CallTask.id)).where(sla.condition(state, now=now))) or 0

    return SlaSummary(
        attainments=[sla.attainment(days, now=now) for days in ATTAINMENT_DAYS],
        at_risk=count("at_risk"),
        breached=count("breached"),
    )


# Calls per agent per day


@dataclass(frozen=True)
class AgentDay:
    day: date
    agent_id: int
    agent_name: str
    calls: int
    outcomes: dict[str, int]


def _local_day(column: Any, period: Period, tz: ZoneInfo) -> Any:
    """The index of the business-local day an instant falls in, as SQL: each day's end is
    worked out here (DST included), so SQLite and PostgreSQL group alike."""
    ends = [_midnight(period.start + timedelta(days=offset + 1), tz) for offset in range(period.days)]
    return case(*[(column < end, offset) for offset, end in enumerate(ends)])


def calls_per_agent(period: Period, *, now: datetime) -> list[AgentDay]:
    """Call attempts made in the period, one row per agent and local day, with outcome counts."""
    tz = _tz()
    start, end = period.bounds(tz, now)
    attempts = (
        select(
            _local_day(CallAttempt.started_at, period, tz).label("day"),
            CallAttempt.agent_id,
            CallAttempt.outcome,
        )
        .where(CallAttempt.started_at >= start, CallAttempt.started_at < end)
        .subquery()
    )
    rows = db.session.execute(
        select(
            attempts.c.day,
            attempts.c.agent_id,
            StaffUser.name,
            func.count(),
            *[func.count().filter(attempts.c.outcome == outcome) for outcome in CallOutcome],
        )
        .join(StaffUser, StaffUser.id == attempts.c.agent_id)
        .group_by(attempts.c.day, attempts.c.agent_id, StaffUser.name)
        .order_by(attempts.c.day, StaffUser.name, attempts.c.agent_id)
    ).all()
    return [
        AgentDay(
            day=period.start + timedelta(days=row[0]),
            agent_id=row[1],
            agent_name=row[2],
            calls=row[3],
            outcomes={outcome.value: n for outcome, n in zip(CallOutcome, row[4:], strict=True)},
        )
        for row in rows
    ]


# Funnels


@dataclass(frozen=True)
class FunnelStep:
    key: str
    count: int
    from_previous: float | None
    from_first: float | None


def _steps(keys: Sequence[str], counts: Sequence[int]) -> list[FunnelStep]:
    steps = []
    for index, (key, count) in enumerate(zip(keys, counts, strict=True)):
        previous = counts[index - 1] if index else None
        steps.append(
            FunnelStep(
                key=key,
                count=count,
                from_previous=count / previous if previous else None,
                from_first=count / counts[0] if index and counts[0] else None,
            )
        )
    return steps


def account_funnel(period: Period, *, now: datetime) -> list[FunnelStep]:
    """Individual accounts (those that sign in with their email: no tax ID as username)
    registered in the period: how many verified their email, how many are linked."""
    start, end = period.bounds(_tz(), now)
    linked = CustomerAccount.association_status == AssociationStatus.LINKED
    verified = or_(CustomerAccount.email_verified_at.is_not(None), linked)
    row = db.session.execute(
        select(func.count(), func.count().filter(verified), func.count().filter(linked)).where(
            CustomerAccount.tax_id.is_(None),
            CustomerAccount.created_at >= start,
            CustomerAccount.created_at < end,
        )
    ).one()
    return _steps(ACCOUNT_STEPS, list(row))


def representative_funnel(period: Period, *, now: datetime) -> list[FunnelStep]:
    """Representative applications first submitted in the period and the furthest stage each
    reached: its current status, or the state machine's audit events for stages it has since
    left (an application sent back to legal or expired after its invitation still counts)."""
    start, end = period.bounds(_tz(), now)
    in_period = and_(Application.created_at >= start, Application.created_at < end)
    stages = REPRESENTATIVE_STEPS[1:]
    actions = {stage: [f"application.{status.value}" for status in _AT_OR_PAST[stage]] for stage in stages}
    history = (
        select(
            AuditEvent.subject_id.label("application_id"),
            *[
                func.max(case((AuditEvent.action.in_(actions[stage]), 1), else_=0)).label(stage)
                for stage in stages
            ],
        )
        .where(
            AuditEvent.subject_type == "representative_application",
            AuditEvent.subject_id.in_(select(Application.id).where(in_period)),
            AuditEvent.action.in_(actions["approved"]),
        )
        .group_by(AuditEvent.subject_id)
        .subquery()
    )
    row = db.session.execute(
        select(
            func.count(),
            *[
                func.count().filter(or_(Application.status.in_(_AT_OR_PAST[stage]), history.c[stage] == 1))
                for stage in stages
            ],
        )
        .select_from(Application)
        .outerjoin(history, history.c.application_id == Application.id)
        .where(in_period)
    ).one()
    return _steps(REPRESENTATIVE_STEPS, list(row))


# The whole page


@dataclass(frozen=True)
class Overview:
    period: Period
    queues: list[QueueRow]
    sla: SlaSummary
    calls_per_agent: list[AgentDay]
    account_funnel: list[FunnelStep]
    representative_funnel: list[FunnelStep]


def overview(period: Period, *, now: datetime) -> Overview:
    return Overview(
        period=period,
        queues=queues(now=now),
        sla=sla_summary(now=now),
        calls_per_agent=calls_per_agent(period, now=now),
        account_funnel=account_funnel(period, now=now),
        representative_funnel=representative_funnel(period, now=now),
    )


# CSV export


@dataclass(frozen=True)
class Export:
    filename: str
    content: str


def _hours(age: timedelta | None) -> str:
    return "" if age is None else f"{age.total_seconds() / 3600:.1f}"


def _percent(rate: float | None) -> str:
    return "" if rate is None else f"{rate * 100:.1f}"


def _local_iso(moment: datetime | None, tz: ZoneInfo) -> str:
    return "" if moment is None else moment.astimezone(tz).isoformat(timespec="seconds")


def _queues_table(period: Period, now: datetime) -> list[list[Any]]:
    tz = _tz()
    return [
        ["queue", "size", "oldest_since", "oldest_age_hours"],
        *[[row.key, row.size, _local_iso(row.oldest_at, tz), _hours(row.age)] for row in queues(now=now)],
    ]


def _sla_table(period: Period, now: datetime) -> list[list[Any]]:
    summary = sla_summary(now=now)
    rows: list[list[Any]] = [["measure", "value"]]
    for attained in summary.attainments:
        rows += [
            [f"attainment_{attained.days}d_due", attained.due],
            [f"attainment_{attained.days}d_met", attained.met],
            [f"attainment_{attained.days}d_percent", _percent(attained.rate)],
        ]
    return [*rows, ["at_risk_tasks", summary.at_risk], ["breached_tasks", summary.breached]]


def _calls_table(period: Period, now: datetime) -> list[list[Any]]:
    outcomes = [outcome.value for outcome in CallOutcome]
    return [
        ["day", "agent_id", "agent", "calls", *outcomes],
        *[
            [
                row.day.isoformat(),
                row.agent_id,
                row.agent_name,
                row.calls,
                *[row.outcomes[o] for o in outcomes],
            ]
            for row in calls_per_agent(period, now=now)
        ],
    ]


def _funnel_table(steps: list[FunnelStep]) -> list[list[Any]]:
    return [
        ["step", "count", "percent_of_previous", "percent_of_first"],
        *[[s.key, s.count, _percent(s.from_previous), _percent(s.from_first)] for s in steps],
    ]


_TABLES: dict[str, Callable[[Period, datetime], list[list[Any]]]] = {
    "queues": _queues_table,
    "sla": _sla_table,
    "calls_per_agent": _calls_table,
    "account_funnel": lambda period, now: _funnel_table(account_funnel(period, now=now)),
    "representative_funnel": lambda period, now: _funnel_table(representative_funnel(period, now=now)),
}
TABLES = tuple(_TABLES)
# Tables that show the moment of export rather than the chosen period.
_SNAPSHOTS = ("queues", "sla")


def safe_cell(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula is prefixed with a quote."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def export(table: str, period: Period, *, now: datetime, actor: Actor) -> Export:
    """One dashboard table as CSV; the export is audited. Unknown tables raise KeyError."""
    rows = _TABLES[table](period, now)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows([[safe_cell(cell) for cell in row] for row in rows])
    if table in _SNAPSHOTS:
        stamp = now.astimezone(_tz()).date().isoformat()
    else:
        stamp = f"{period.start.isoformat()}_{period.end.isoformat()}"
    audit.record(
        "dashboard.exported",
        actor=actor,
        subject_type="dashboard",
        subject_id=table,
        after={"from": period.start.isoformat(), "to": period.end.isoformat(), "rows": len(rows) - 1},
    )
    return Export(filename=f"dashboard-{table}-{stamp}.csv", content=buffer.getvalue())

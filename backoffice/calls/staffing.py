"""Agents' weekly shifts and absences, edited by supervisors: the rules, audited, with a replan.

Shifts are weekly, in business local time (Monday = 0), and must lie inside the configured call
window on one of its open weekdays: a shift outside the window is refused with a message naming
the window, never clipped, so what a supervisor sees is what the planner uses. One agent's shifts
on one weekday may not overlap (touching is fine: 08:00-14:00 and 14:00-22:00).

Absences are instants in UTC. Supervisors type them in business local time; `local_instant`
turns such a wall-clock time into UTC with zoneinfo, refusing a time that a DST change skips and
taking the first of two that it repeats, so no fixed offset is ever added.

Every change writes an audit event with the record before and after, and asks the call planner
to run again once the request commits; a new absence also puts the agent's planned calls and
personal callbacks inside it back into the pool. Functions here flush, never commit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import or_, select

from backoffice import audit
from backoffice.audit import Actor
from backoffice.calls import service as calls_service
from backoffice.calls.calendar import BusinessCalendar
from backoffice.calls.models import AgentAbsence, AgentShift
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.i18n import DEFAULT_LANGUAGE
from backoffice.review.service import calendar, window_text
from backoffice.staff.models import Role, StaffUser

SHIFT_SUBJECT = "agent_shift"
ABSENCE_SUBJECT = "agent_absence"
REASON_MAX_LENGTH = 120
_SHIFT_ORDER = (AgentShift.agent_id, AgentShift.weekday, AgentShift.starts, AgentShift.id)
_ABSENCE_ORDER = (AgentAbsence.starts_at, AgentAbsence.id)


class StaffingError(ValueError):
    """A shift or absence change that is refused: a stable `code`, a message for the supervisor,
    and the form `field` it is about (None when it is about the whole change)."""

    def __init__(self, code: str, message: str, *, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass
class AgentWeek:
    """One row of the shifts page: an agent's week and upcoming absences."""

    agent: StaffUser
    days: dict[int, list[AgentShift]] = field(default_factory=dict)
    absences: list[AgentAbsence] = field(default_factory=list)

    @property
    def schedulable(self) -> bool:
        """Only active call agents get calls planned; others are listed so their rows can be cleared."""
        return _is_agent(self.agent)


# Reading


def call_agents() -> list[StaffUser]:
    """Active call agents, by name: the people shifts and absences can be given to."""
    return list(
        db.session.execute(
            select(StaffUser)
            .where(StaffUser.role == Role.CALL_AGENT, StaffUser.active.is_(True))
            .order_by(StaffUser.name, StaffUser.id)
        ).scalars()
    )


def week_of(agent: StaffUser, *, business: BusinessCalendar | None = None) -> dict[int, list[AgentShift]]:
    """The agent's shifts by weekday, earliest first; every open weekday is present (maybe empty),
    and a weekday the window no longer opens on is present only if it still holds a shift."""
    shifts = db.session.execute(
        select(AgentShift).where(AgentShift.agent_id == agent.id).order_by(*_SHIFT_ORDER)
    ).scalars()
    return _week(shifts, business or calendar())


def upcoming_absences(agent: StaffUser, *, now: datetime | None = None) -> list[AgentAbsence]:
    """Absences of the agent that have not ended yet (current ones included), earliest first."""
    return list(
        db.session.execute(
            select(AgentAbsence)
            .where(AgentAbsence.agent_id == agent.id, AgentAbsence.ends_at > (now or utcnow()))
            .order_by(*_ABSENCE_ORDER)
        ).scalars()
    )


def roster(*, now: datetime | None = None) -> list[AgentWeek]:
    """Every active call agent's week, plus anyone else who still holds shifts or upcoming
    absences (a deactivated or re-roled agent), so a supervisor can see and clear those rows.
    Three queries whatever the number of agents."""
    now = now or utcnow()
    business = calendar()
    shifts: dict[int, list[AgentShift]] = defaultdict(list)
    for shift in db.session.execute(select(AgentShift).order_by(*_SHIFT_ORDER)).scalars():
        shifts[shift.agent_id].append(shift)
    absences: dict[int, list[AgentAbsence]] = defaultdict(list)
    for absence in db.session.execute(
        select(AgentAbsence).where(AgentAbsence.ends_at > now).order_by(*_ABSENCE_ORDER)
    ).scalars():
        absences[absence.agent_id].append(absence)
    people = db.session.execute(
        select(StaffUser)
        .where(
            or_(
                (StaffUser.role == Role.CALL_AGENT) & StaffUser.active.is_(True),
                StaffUser.id.in_(set(shifts) | set(absences)),
            )
        )
        .order_by(StaffUser.name, StaffUser.id)
    ).scalars()
    return [AgentWeek(p, _week(shifts.get(p.id, ()), business), absences.get(p.id, [])) for p in people]


def _week(shifts: Iterable[AgentShift], business: BusinessCalendar) -> dict[int, list[AgentShift]]:
    week: dict[int, list[AgentShift]] = {day: [] for day in business.open_weekdays}
    for shift in shifts:
        week.setdefault(shift.weekday, []).append(shift)
    return dict(sorted(week.items()))


def window_for_reader(business: BusinessCalendar) -> str:
    """The call window in words, in the language the current page or message is written in."""
    locale = get_locale()
    return window_text(business, locale.language if locale else DEFAULT_LANGUAGE)


def shift_problem(shift: AgentShift, business: BusinessCalendar | None = None) -> str | None:
    """Why a stored shift no longer fits the window (the window's settings changed), else None."""
    business = business or calendar()
    if shift.weekday not in business.open_weekdays or not (
        business.opens <= shift.starts < shift.ends <= business.closes
    ):
        return _("Outside the call window (%(window)s).", window=window_for_reader(business))
    return None


# Shifts


def add_shift(agent: StaffUser, weekday: int, starts: time, ends: time, *, actor: Actor) -> AgentShift:
    """Give an active call agent a weekly shift inside the window that overlaps none of theirs."""
    _lock_agent(agent)
    _require_agent(agent)
    _check_shift(agent, weekday, starts, ends, calendar())
    shift = AgentShift(agent_id=agent.id, weekday=weekday, starts=starts, ends=ends)
    db.session.add(shift)
    db.session.flush()
    audit.record(
        "agent_shift.added",
        actor=actor,
        subject_type=SHIFT_SUBJECT,
        subject_id=shift.id,
        after=_shift_snapshot(shift),
    )
    calls_service.request_replan()
    return shift


def update_shift(shift: AgentShift, weekday: int, starts: time, ends: time, *, actor: Actor) -> AgentShift:
    """Move a shift to another weekday or other hours, under the same rules as a new one."""
    agent = _lock_agent(shift.agent)
    _require_agent(agent)
    _check_shift(agent, weekday, starts, ends, calendar(), ignore=shift)
    before = _shift_snapshot(shift)
    shift.weekday, shift.starts, shift.ends = weekday, starts, ends
    db.session.flush()
    after = _shift_snapshot(shift)
    if after != before:
        audit.record(
            "agent_shift.updated",
            actor=actor,
            subject_type=SHIFT_SUBJECT,
            subject_id=shift.id,
            before=before,
            after=after,
        )
        calls_service.request_replan()
    return shift


def delete_shift(shift: AgentShift, *, actor: Actor) -> None:
    """Remove a shift; allowed whoever holds it, so a former agent's shifts can be cleared."""
    before = _shift_snapshot(shift)
    shift_id = shift.id
    db.session.delete(shift)
    db.session.flush()
    audit.record(
        "agent_shift.deleted", actor=actor, subject_type=SHIFT_SUBJECT, subject_id=shift_id, before=before
    )
    calls_service.request_replan()


def _check_shift(
    agent: StaffUser,
    weekday: int,
    starts: time,
    ends: time,
    business: BusinessCalendar,
    *,
    ignore: AgentShift | None = None,
) -> None:
    window = window_for_reader(business)
    if isinstance(weekday, bool) or not isinstance(weekday, int) or weekday not in business.open_weekdays:
        raise StaffingError(
            "closed_weekday",
            _("The call window is not open on that day. Shifts can be given %(window)s.", window=window),
            field="weekday",
        )
    for name, moment in (("starts", starts), ("ends", ends)):
        if not isinstance(moment, time) or moment.tzinfo is not None:
            raise StaffingError("invalid_time", _("Give the time as a local HH:MM."), field=name)
        if moment.second or moment.microsecond:
            raise StaffingError("invalid_time", _("Shift times are whole minutes (HH:MM)."), field=name)
    if ends <= starts:
        raise StaffingError("shift_order", _("A shift must end after it starts."), field="ends")
    if starts < business.opens or ends > business.closes:
        raise StaffingError(
            "outside_window",
            _(
                "%(starts)s-%(ends)s is outside the call window: shifts must lie within %(window)s.",
                starts=f"{starts:%H:%M}",
                ends=f"{ends:%H:%M}",
                window=window,
            ),
            field="starts" if starts < business.opens else "ends",
        )
    query = select(AgentShift).where(
        AgentShift.agent_id == agent.id,
        AgentShift.weekday == weekday,
        AgentShift.starts < ends,
        AgentShift.ends > starts,
    )
    if ignore is not None and ignore.id is not None:
        query = query.where(AgentShift.id != ignore.id)
    clash = db.session.execute(query.order_by(AgentShift.starts).limit(1)).scalar_one_or_none()
    if clash is not None:
        raise StaffingError(
            "overlap",
            _(
                "%(agent)s already has a shift %(starts)s-%(ends)s that day; "
                "shifts of one agent may not overlap.",
                agent=agent.name,
                starts=f"{clash.starts:%H:%M}",
                ends=f"{clash.ends:%H:%M}",
            ),
            field="starts",
        )


def _shift_snapshot(shift: AgentShift) -> dict[str, Any]:
    return {
        "agent_id": shift.agent_id,
        "weekday": shift.weekday,
        "starts": shift.starts.strftime("%H:%M"),
        "ends": shift.ends.strftime("%H:%M"),
    }


# Absences


def local_instant(day: date, at: time, *, business: BusinessCalendar | None = None, field: str) -> datetime:
    """The UTC instant of a wall-clock time in the business time zone, DST-safe.

    A time skipped when clocks go forward (02:30 on the last Sunday of March in Madrid) does not
    exist and is refused; a time repeated when they go back is read as its first occurrence.
    """
    business = business or calendar()
    local = datetime.combine(day, at.replace(tzinfo=None), tzinfo=business.tz)  # fold=0: first occurrence
    try:
        instant = local.astimezone(UTC)
    except OverflowError:
        raise StaffingError("invalid_time", _("That date is out of range."), field=field) from None
    if instant.astimezone(business.tz).replace(tzinfo=None) != local.replace(tzinfo=None):
        raise StaffingError(
            "no_such_local_time",
            _(
                "%(moment)s does not exist in %(zone)s: the clocks skip it.",
                moment=f"{local:%Y-%m-%d %H:%M}",
                zone=business.tz.key,
            ),
            field=field,
        )
    return instant


def add_absence(
    agent: StaffUser,
    starts_at: datetime,
    ends_at: datetime,
    reason: str,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> AgentAbsence:
    """Record leave or sickness from `starts_at` (included) to `ends_at` (aware datetimes), and
    hand the agent's planned calls and callbacks inside it back to the pool."""
    now = now or utcnow()
    _lock_agent(agent)
    _require_agent(agent)
    for name, moment in (("starts_at", starts_at), ("ends_at", ends_at)):
        if not isinstance(moment, datetime) or moment.utcoffset() is None:
            raise StaffingError("naive_time", _("Give the time with its time zone."), field=name)
    starts_at, ends_at = starts_at.astimezone(UTC), ends_at.astimezone(UTC)
    if ends_at <= starts_at:
        raise StaffingError("absence_order", _("An absence must end after it starts."), field="ends_at")
    if ends_at <= now:
        raise StaffingError("absence_over", _("That absence is already over."), field="ends_at")
    reason = " ".join((reason or "").split())
    if not reason:
        raise StaffingError(
            "reason_required", _("Say why the agent is away, e.g. “Annual leave”."), field="reason"
        )
    if len(reason) > REASON_MAX_LENGTH:
        raise StaffingError(
            "reason_too_long",
            _("Keep the reason under %(count)d characters.", count=REASON_MAX_LENGTH),
            field="reason",
        )
    absence = AgentAbsence(
        agent_id=agent.id, starts_at=starts_at, ends_at=ends_at, reason=reason, created_at=now
    )
    db.session.add(absence)
    db.session.flush()
    audit.record(
        "agent_absence.added",
        actor=actor,
        subject_type=ABSENCE_SUBJECT,
        subject_id=absence.id,
        after=_absence_snapshot(absence),
    )
    # Also requests the re-plan (always, released or not: the agent's slots changed).
    calls_service.release_for_absence(absence, actor=actor, now=now)
    return absence


def delete_absence(absence: AgentAbsence, *, actor: Actor) -> None:
    """Remove an absence (entered by mistake, or leave cancelled); the planner may use the time again."""
    before = _absence_snapshot(absence)
    absence_id = absence.id
    db.session.delete(absence)
    db.session.flush()
    audit.record(
        "agent_absence.deleted",
        actor=actor,
        subject_type=ABSENCE_SUBJECT,
        subject_id=absence_id,
        before=before,
    )
    calls_service.request_replan()


def _absence_snapshot(absence: AgentAbsence) -> dict[str, Any]:
    return {
        "agent_id": absence.agent_id,
        "starts_at": absence.starts_at.astimezone(UTC).isoformat(),
        "ends_at": absence.ends_at.astimezone(UTC).isoformat(),
        "reason": absence.reason,
    }


# Agents


def _is_agent(agent: StaffUser) -> bool:
    return agent.active and agent.role == Role.CALL_AGENT


def _require_agent(agent: StaffUser) -> None:
    if not _is_agent(agent):
        raise StaffingError(
            "not_an_agent",
            _(
                "%(agent)s is not an active call agent: only they get shifts and absences.",
                agent=agent.name,
            ),
            field="agent_id",
        )


def _lock_agent(agent: StaffUser) -> StaffUser:
    """Hold the agent's row for the rest of the transaction (FOR UPDATE on PostgreSQL), so two
    supervisors cannot both pass the overlap check for the same agent; also re-reads role and
    active status."""
    return db.session.execute(
        select(StaffUser)
        .where(StaffUser.id == agent.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()

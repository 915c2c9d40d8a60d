"""Call scheduler: open call tasks onto free agent slots, earliest deadline first.

Pure and deterministic: no database, no Flask, no clock (`now` is passed in). The same input
always gives the same `Plan`.

Slots
    Slots lie on a grid of `slot_minutes` anchored at each local midnight (08:00, 08:20, ...
    for the default 20 minutes), built per local day and converted to UTC, so a DST change
    never shifts them. A slot is usable for an agent only when it starts at or after `now`
    (i.e. `now` is rounded up to the next grid boundary), starts within `horizon_days` of
    `now`, lies wholly inside the call window (`is_open` at its start and 1 µs before its end,
    which also rules out holidays), wholly inside one of the agent's weekly shifts, and does
    not overlap any of the agent's absences. A shift is clipped to the window, never widened.

Placement
    Tasks are taken in (deadline, created_at, id) order. A task's *last-call moment* is
    `calendar.last_open_before(deadline)`; a slot is on time when it starts strictly before
    it (a call started at the deadline itself does not keep the promise). A task never takes
    a slot starting before its `not_before` (a retry waits its 2 window-hours), on time or
    late. Among the on-time free slots the task takes the earliest one inside one of its
    preferred times (the whole slot inside the local weekday and hours), else the earliest
    on-time slot at all. Ties go to the earlier slot, then the lower agent id.

    A task with no free on-time slot is flagged in `at_risk_capacity` and, once every task
    that can still be on time has been placed, gets the earliest slot left in the horizon
    (so it is called as soon as possible without stealing a slot that would keep another
    task's promise); it stays unassigned only when the horizon has no slot left. Deferring
    late tasks is what makes the plan keep at least as many promises as a bare EDF loop: for
    tasks sharing a release time, the number of on-time placements does not depend on which
    on-time slot each task took, so honouring preferences costs no promises either.

    Release times (`not_before`) keep the earliest-slot choice optimal (a later-deadline task
    that wanted that slot can use any later one the earlier task could have taken instead),
    but a preference may then cost a promise: waiting for the preferred slot can take the
    only one a later-released task had. Accepted: retries are few, and such a loss is flagged.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from backoffice.calls.calendar import BusinessCalendar

DEFAULT_SLOT_MINUTES = 20
DEFAULT_HORIZON_DAYS = 7
_ONE_MICROSECOND = timedelta(microseconds=1)
_ONE_DAY = timedelta(days=1)
_MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class PreferredTime:
    """When the applicant would like to be called: a weekday (Monday = 0) and local hours."""

    weekday: int
    start: time
    end: time

    def __post_init__(self) -> None:
        _check_weekly(self.weekday, self.start, self.end, "preferred time")


@dataclass(frozen=True)
class TaskRequest:
    id: Hashable
    deadline: datetime
    created_at: datetime
    preferred: tuple[PreferredTime, ...] = ()
    not_before: datetime | None = None  # no slot starting earlier, e.g. a retry's next attempt


@dataclass(frozen=True)
class AgentShift:
    """A weekly shift in business local time; it may not cross midnight."""

    agent_id: Hashable
    weekday: int
    start: time
    end: time

    def __post_init__(self) -> None:
        _check_weekly(self.weekday, self.start, self.end, "shift")


@dataclass(frozen=True)
class Absence:
    """The agent is away from `start` (included) to `end` (excluded)."""

    agent_id: Hashable
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Slot:
    """One agent's slot; `start` and `end` are UTC."""

    start: datetime
    end: datetime
    agent_id: Hashable


@dataclass(frozen=True)
class Assignment:
    task_id: Hashable
    agent_id: Hashable
    slot_start: datetime


@dataclass(frozen=True)
class Plan:
    """Assignments sorted by (slot_start, agent_id); at-risk task ids in deadline order."""

    assignments: list[Assignment]
    at_risk_capacity: list[Hashable]


def build_slots(
    shifts: Iterable[AgentShift],
    absences: Iterable[Absence],
    *,
    calendar: BusinessCalendar,
    now: datetime,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    slot_minutes: int = DEFAULT_SLOT_MINUTES,
) -> list[Slot]:
    """Every usable agent slot in the horizon, sorted by (start, agent_id)."""
    now_utc = _utc(now, "now")
    _check_positive_int(horizon_days, "horizon_days")
    _check_positive_int(slot_minutes, "slot_minutes")
    tz = calendar.tz
    length = timedelta(minutes=slot_minutes)
    horizon_end = now_utc + timedelta(days=horizon_days)

    shifts_by_weekday: dict[int, list[AgentShift]] = defaultdict(list)
    for shift in shifts:
        shifts_by_weekday[shift.weekday].append(shift)
    away: dict[Hashable, list[tuple[datetime, datetime]]] = defaultdict(list)
    for absence in absences:
        away[absence.agent_id].append(
            (_utc(absence.start, "absence start"), _utc(absence.end, "absence end"))
        )

    seen: set[tuple[datetime, Hashable]] = set()
    slots: list[Slot] = []
    day = now_utc.astimezone(tz).date()
    last_day = horizon_end.astimezone(tz).date()
    while day <= last_day:
        todays_shifts = shifts_by_weekday.get(day.weekday())
        if todays_shifts and calendar.is_working_day(day):
            grid = _open_grid(calendar, day, slot_minutes, length, now_utc, horizon_end)
            starts = [start for start, _ in grid]
            for shift in todays_shifts:
                shift_begins = _instant(tz, day, shift.start)
                shift_ends = _instant(tz, day, shift.end)
                agent_away = away.get(shift.agent_id, ())
                for start, end in grid[bisect_left(starts, shift_begins) :]:
                    if end > shift_ends:
                        break
                    if any(a_start < end and start < a_end for a_start, a_end in agent_away):
                        continue
                    key = (start, shift.agent_id)
                    if key not in seen:  # overlapping shifts of one agent give one slot
                        seen.add(key)
                        slots.append(Slot(start, end, shift.agent_id))
        day += _ONE_DAY
    slots.sort(key=lambda slot: (slot.start, slot.agent_id))
    return slots


def plan(
    tasks: Iterable[TaskRequest],
    shifts: Iterable[AgentShift],
    absences: Iterable[Absence],
    *,
    calendar: BusinessCalendar,
    now: datetime,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    slot_minutes: int = DEFAULT_SLOT_MINUTES,
) -> Plan:
    """Assign tasks to free agent slots earliest-deadline-first (see the module docstring)."""
    ordered = _edf_order(tasks)
    slots = build_slots(
        shifts, absences, calendar=calendar, now=now, horizon_days=horizon_days, slot_minutes=slot_minutes
    )
    board = _FreeSlots(slots, calendar.tz, timedelta(minutes=slot_minutes))

    on_time: list[tuple[TaskRequest, tuple[int, Hashable]]] = []
    at_risk: list[tuple[TaskRequest, int]] = []
    for task, not_before in ordered:
        release = 0 if not_before is None else board.cutoff(not_before)
        cutoff = board.cutoff(_utc(calendar.last_open_before(task.deadline), "last call"))
        index = board.preferred(task.preferred, release, cutoff) if task.preferred else board.none
        if index == board.none:
            index = board.first(release)
        if index < cutoff:
            on_time.append((task, board.take(index)))
        else:
            at_risk.append((task, release))

    assignments = [Assignment(task.id, agent, board.local_start(index)) for (task, (index, agent)) in on_time]
    for task, release in at_risk:  # late anyway: the earliest slot left at or after its release
        index = board.first(release)
        if index != board.none:
            _, agent = board.take(index)
            assignments.append(Assignment(task.id, agent, board.local_start(index)))
    assignments.sort(key=lambda a: (a.slot_start, a.agent_id))
    return Plan(assignments=assignments, at_risk_capacity=[task.id for task, _ in at_risk])


def last_call(calendar: BusinessCalendar, deadline: datetime) -> datetime:
    """The instant a slot must start strictly before to keep the promise (UTC)."""
    return _utc(calendar.last_open_before(deadline), "last call")


class _FreeSlots:
    """Free slots grouped by start instant, with a skip-pointer to the next non-empty start.

    `first(i)` is near O(1) (path-compressed "next free start" links), preferred-time lookups
    bisect over each day's starts, so planning is O(tasks x preferences + slots log slots).
    """

    def __init__(self, slots: list[Slot], tz: ZoneInfo, length: timedelta) -> None:
        self.starts: list[datetime] = []
        self.agents: list[list[Hashable]] = []
        for slot in slots:  # sorted by (start, agent_id)
            if not self.starts or self.starts[-1] != slot.start:
                self.starts.append(slot.start)
                self.agents.append([])
            self.agents[-1].append(slot.agent_id)
        count = len(self.starts)
        self.none = count
        self.taken = [0] * count
        self.next = list(range(count + 1))
        self.tz = tz
        # Per local day: the index range and each start's local start/end in wall minutes.
        self.start_minutes: list[int] = []
        self.end_minutes: list[int] = []
        self.days: dict[date, tuple[int, int]] = {}
        self.days_by_weekday: dict[int, list[date]] = defaultdict(list)
        for index, start in enumerate(self.starts):
            local = start.astimezone(tz)
            day = local.date()
            midnight = datetime.combine(day, time(0))
            self.start_minutes.append(_minutes(local.replace(tzinfo=None) - midnight))
            end = (start + length).astimezone(tz)
            self.end_minutes.append(_minutes(end.replace(tzinfo=None) - midnight))
            if day not in self.days:
                self.days[day] = (index, index + 1)
                self.days_by_weekday[day.weekday()].append(day)
            else:
                self.days[day] = (self.days[day][0], index + 1)
        self._ranges: dict[PreferredTime, list[tuple[int, int]]] = {}

    def cutoff(self, moment: datetime) -> int:
        """Indices below this start strictly before `moment`."""
        return bisect_left(self.starts, moment)

    def first(self, index: int) -> int:
        """The first start at or after `index` with a free agent, else `none`."""
        root = index
        while self.next[root] != root:
            root = self.next[root]
        while self.next[index] != root:
            self.next[index], index = root, self.next[index]
        return root

    def preferred(self, preferred: tuple[PreferredTime, ...], release: int, cutoff: int) -> int:
        """The earliest free start in [release, cutoff) inside a preferred time, else `none`."""
        best = self.none
        for wish in preferred:
            for low, high in self._preferred_ranges(wish):
                low = max(low, release)
                high = min(high, cutoff, best)
                if low < high:
                    index = self.first(low)
                    if index < high:
                        best = index
        return best

    def take(self, index: int) -> tuple[int, Hashable]:
        agents = self.agents[index]
        agent = agents[self.taken[index]]
        self.taken[index] += 1
        if self.taken[index] == len(agents):
            self.next[index] = index + 1
        return index, agent

    def local_start(self, index: int) -> datetime:
        return self.starts[index].astimezone(self.tz)

    def _preferred_ranges(self, wish: PreferredTime) -> list[tuple[int, int]]:
        ranges = self._ranges.get(wish)
        if ranges is None:
            begin = wish.start.hour * 60 + wish.start.minute
            finish = wish.end.hour * 60 + wish.end.minute
            ranges = []
            for day in self.days_by_weekday.get(wish.weekday, ()):
                low, high = self.days[day]
                first = bisect_left(self.start_minutes, begin, low, high)
                after = bisect_right(self.end_minutes, finish, low, high)
                if first < after:
                    ranges.append((first, after))
            self._ranges[wish] = ranges
        return ranges


def _edf_order(tasks: Iterable[TaskRequest]) -> list[tuple[TaskRequest, datetime | None]]:
    """Tasks in (deadline, created_at, id) order, each with its `not_before` in UTC."""
    keyed = []
    ids: set[Hashable] = set()
    for task in tasks:
        if task.id in ids:
            raise ValueError(f"duplicate task id {task.id!r}")
        ids.add(task.id)
        key = (_utc(task.deadline, "deadline"), _utc(task.created_at, "created_at"), task.id)
        not_before = None if task.not_before is None else _utc(task.not_before, "not_before")
        keyed.append((key, task, not_before))
    keyed.sort(key=lambda item: item[0])
    return [(task, not_before) for _, task, not_before in keyed]


def _open_grid(
    calendar: BusinessCalendar,
    day: date,
    slot_minutes: int,
    length: timedelta,
    now_utc: datetime,
    horizon_end: datetime,
) -> list[tuple[datetime, datetime]]:
    """(start, end) in UTC of every grid slot of `day` that lies wholly in the call window."""
    grid: list[tuple[datetime, datetime]] = []
    for minute in range(0, _MINUTES_PER_DAY, slot_minutes):
        start = _instant(calendar.tz, day, time(minute // 60, minute % 60))
        if start < now_utc or start >= horizon_end or (grid and start <= grid[-1][0]):
            continue  # before now, past the horizon, or a wall time skipped by DST
        end = start + length
        if calendar.is_open(start) and calendar.is_open(end - _ONE_MICROSECOND):
            grid.append((start, end))
    return grid


def _instant(tz: ZoneInfo, day: date, at: time) -> datetime:
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


def _utc(dt: datetime, what: str) -> datetime:
    if not isinstance(dt, datetime):
        raise TypeError(f"{what} must be a datetime, got {type(dt).__name__}")
    if dt.utcoffset() is None:
        raise ValueError(f"{what} {dt.isoformat()} is naive: give it a time zone")
    return dt.astimezone(UTC)


def _check_positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_weekly(weekday: object, start: object, end: object, what: str) -> None:
    if isinstance(weekday, bool) or not isinstance(weekday, int) or not 0 <= weekday <= 6:
        raise ValueError(f"{what} weekday must be 0 (Monday) to 6 (Sunday), got {weekday!r}")
    if not isinstance(start, time) or not isinstance(end, time) or start.tzinfo or end.tzinfo:
        raise ValueError(f"{what} hours must be naive local times")
    if start >= end:
        raise ValueError(f"{what} must start before it ends, got {start:%H:%M}-{end:%H:%M}")

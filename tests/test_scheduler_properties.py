"""The call scheduler's guarantees, checked on generated weeks (hypothesis).

Each test states one guarantee from the module docstring of `backoffice.calls.scheduler`.
Pure-function tests: no database, no clock. The examples are derandomized, so every run checks
the same ones.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backoffice.calls.calendar import BusinessCalendar
from backoffice.calls.scheduler import (
    Absence,
    AgentShift,
    Assignment,
    Plan,
    PreferredTime,
    Slot,
    TaskRequest,
    build_slots,
    last_call,
    plan,
)

MADRID = ZoneInfo("Europe/Madrid")
CALENDARS = (BusinessCalendar(), BusinessCalendar(holidays_subdiv="MD"))
ONE_MICROSECOND = timedelta(microseconds=1)
# Shift bounds on 20- and 30-minute steps, plus the last minute of the day.
SHIFT_MINUTES = sorted({m for m in range(0, 24 * 60) if m % 20 == 0 or m % 30 == 0} | {23 * 60 + 59})
PREFERRED_MINUTES = range(8 * 60, 22 * 60 + 1, 15)

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@dataclass(frozen=True)
class Case:
    calendar: BusinessCalendar
    now: datetime
    tasks: list[TaskRequest]
    shifts: list[AgentShift]
    absences: list[Absence]
    horizon_days: int
    slot_minutes: int

    def plan(self, tasks=None, shifts=None, absences=None) -> Plan:
        return plan(
            self.tasks if tasks is None else tasks,
            self.shifts if shifts is None else shifts,
            self.absences if absences is None else absences,
            calendar=self.calendar,
            now=self.now,
            horizon_days=self.horizon_days,
            slot_minutes=self.slot_minutes,
        )

    def slots(self) -> list[Slot]:
        return build_slots(
            self.shifts,
            self.absences,
            calendar=self.calendar,
            now=self.now,
            horizon_days=self.horizon_days,
            slot_minutes=self.slot_minutes,
        )

    def last_call(self, task: TaskRequest) -> datetime:
        return last_call(self.calendar, task.deadline)


def clock(minutes: int) -> time:
    return time(minutes // 60, minutes % 60)


def edf_key(task: TaskRequest) -> tuple[datetime, datetime, Hashable]:
    return (task.deadline, task.created_at, task.id)


def spans(minutes: list[int]) -> list[tuple[time, time]]:
    return [(clock(a), clock(b)) for a in minutes for b in minutes if a < b]


# Strategies are built once: building them inside a draw costs more than planning.
zones = st.sampled_from([UTC, MADRID])
preferred_times = st.builds(
    lambda weekday, span: PreferredTime(weekday, *span),
    st.integers(0, 4),
    st.sampled_from(spans(list(PREFERRED_MINUTES))),
)
# Any span, or a usual one that overlaps the window (a random span often misses it).
usual_spans = [
    (time(8), time(22)),
    (time(7), time(23, 59)),
    (time(9), time(14)),
    (time(14, 20), time(21, 40)),
]
weekly_spans = st.tuples(
    st.integers(0, 6), st.sampled_from(spans(SHIFT_MINUTES)) | st.sampled_from(usual_spans)
)
task_fields = st.tuples(
    st.integers(-4 * 48, 48),  # submitted, in half hours from now: deadlines often tie
    st.integers(0, 3 * 24 * 60),  # created, in minutes after submission
    st.lists(preferred_times, max_size=3).map(tuple),
    st.none() | st.integers(-120, 6 * 24 * 60),  # not_before, in minutes from now
    zones,
)
absence_fields = st.tuples(st.integers(-24 * 60, 7 * 24 * 60), st.integers(1, 3 * 24 * 60), zones)


@st.composite
def cases(draw) -> Case:
    calendar = draw(st.sampled_from(CALENDARS))
    now = draw(
        st.datetimes(
            min_value=datetime(2026, 1, 1),
            max_value=datetime(2027, 12, 31, 23, 59),
            timezones=zones,
            allow_imaginary=False,
        )
    )

    def instant(minutes: int, zone: tzinfo) -> datetime:
        return (now + timedelta(minutes=minutes)).astimezone(zone)

    tasks = []
    count = draw(st.integers(0, 40))  # uniform: a list strategy would mostly draw a few tasks
    for task_id, (half_hours, created, preferred, not_before, zone) in enumerate(
        draw(st.lists(task_fields, min_size=count, max_size=count))
    ):
        submitted = instant(30 * half_hours, zone)
        tasks.append(
            TaskRequest(
                task_id,
                calendar.sla_deadline(submitted),
                submitted + timedelta(minutes=created),
                preferred,
                None if not_before is None else instant(not_before, zone),
            )
        )

    agents = range(1, draw(st.integers(1, 6)) + 1)
    shifts = [
        AgentShift(agent, weekday, start, end)
        for agent in agents
        for weekday, (start, end) in draw(st.lists(weekly_spans, min_size=1, max_size=10))
    ]
    absences = [
        Absence(agent, instant(begins, zone), instant(begins + length, zone))
        for agent, (begins, length, zone) in draw(
            st.lists(st.tuples(st.sampled_from(agents), absence_fields), max_size=4)
        )
    ]
    return Case(
        calendar=calendar,
        now=now,
        tasks=tasks,
        shifts=shifts,
        absences=absences,
        horizon_days=draw(st.sampled_from(range(1, 8))),
        slot_minutes=draw(st.sampled_from((15, 20, 30))),
    )


def slot_end(case: Case, assignment: Assignment) -> datetime:
    return assignment.slot_start + timedelta(minutes=case.slot_minutes)


@PROPERTY_SETTINGS
@given(cases())
def test_every_slot_lies_inside_the_call_window_on_a_working_day_and_not_before_now(case: Case) -> None:
    for assignment in case.plan().assignments:
        start, end = assignment.slot_start, slot_end(case, assignment)
        assert case.calendar.is_open(start)
        assert case.calendar.is_open(end - ONE_MICROSECOND)
        assert case.calendar.is_working_day(start.astimezone(case.calendar.tz).date())
        assert case.now <= start < case.now + timedelta(days=case.horizon_days)


@PROPERTY_SETTINGS
@given(cases())
def test_every_slot_lies_inside_one_of_the_agents_shifts_and_outside_their_absences(case: Case) -> None:
    tz = case.calendar.tz
    for assignment in case.plan().assignments:
        start, end = assignment.slot_start, slot_end(case, assignment)
        local_start, local_end = start.astimezone(tz), end.astimezone(tz)
        assert local_start.date() == local_end.date()
        assert any(
            shift.agent_id == assignment.agent_id
            and shift.weekday == local_start.weekday()
            and shift.start <= local_start.time()
            and local_end.time() <= shift.end
            for shift in case.shifts
        )
        assert not any(
            away.agent_id == assignment.agent_id and away.start < end and start < away.end
            for away in case.absences
        )


@PROPERTY_SETTINGS
@given(cases())
def test_no_agent_has_two_tasks_in_one_slot(case: Case) -> None:
    keys = [(a.agent_id, a.slot_start) for a in case.plan().assignments]

    assert len(keys) == len(set(keys))


@PROPERTY_SETTINGS
@given(cases())
def test_every_task_is_placed_at_most_once_and_never_before_its_not_before(case: Case) -> None:
    result = case.plan()
    by_id = {task.id: task for task in case.tasks}
    placed = [a.task_id for a in result.assignments]
    unassigned = by_id.keys() - set(placed)

    assert len(placed) == len(set(placed))
    assert set(placed) <= by_id.keys()
    assert len(placed) + len(unassigned) == len(case.tasks)
    assert unassigned <= set(result.at_risk_capacity)  # a task left without a slot is never silent
    for assignment in result.assignments:
        not_before = by_id[assignment.task_id].not_before
        assert not_before is None or assignment.slot_start >= not_before


@PROPERTY_SETTINGS
@given(cases())
def test_slots_go_earliest_deadline_first(case: Case) -> None:
    """What EDF really guarantees, preferences and release times notwithstanding.

    A task takes, when it is its turn, a free slot; the earliest free slot only moves later as
    slots fill, and late (at-risk) tasks are placed after every on-time one. So:

    * a task without preferences or `not_before` placed on time starts no later than any task
      after it in (deadline, created_at, id) order, and no later than any at-risk task;
    * a task without preferences placed on time took the earliest free slot from its
      `not_before`: every earlier usable slot from then on went to a task ahead of it;
    * an at-risk task had no usable slot from its `not_before` to its last-call moment left:
      every one went to a task ahead of it.
    """
    result = case.plan()
    tasks = sorted(case.tasks, key=edf_key)
    rank = {task.id: position for position, task in enumerate(tasks)}
    slot_of = {a.task_id: a.slot_start for a in result.assignments}
    holder = {(a.agent_id, a.slot_start): a.task_id for a in result.assignments}
    at_risk = set(result.at_risk_capacity)
    usable = [(slot.agent_id, slot.start) for slot in case.slots()]

    def taken_by_tasks_ahead_of(task: TaskRequest, before: datetime) -> bool:
        """Every usable slot from the task's `not_before` until `before` went to a task ahead."""
        return all(
            (agent, begins) in holder and rank[holder[agent, begins]] < rank[task.id]
            for agent, begins in usable
            if (task.not_before is None or task.not_before <= begins) and begins < before
        )

    for task in tasks:
        if task.id in at_risk:
            assert taken_by_tasks_ahead_of(task, case.last_call(task))
        elif not task.preferred:
            assert taken_by_tasks_ahead_of(task, slot_of[task.id])
            if task.not_before is None:
                later = [t.id for t in tasks[rank[task.id] + 1 :]] + list(at_risk)
                assert all(slot_of[task.id] <= slot_of[other] for other in later if other in slot_of)


@PROPERTY_SETTINGS
@given(cases(), st.data())
def test_the_same_input_in_any_order_gives_the_same_plan(case: Case, data: st.DataObject) -> None:
    shuffled = case.plan(
        data.draw(st.permutations(case.tasks)),
        data.draw(st.permutations(case.shifts)),
        data.draw(st.permutations(case.absences)),
    )

    assert shuffled == case.plan()


@PROPERTY_SETTINGS
@given(cases())
def test_a_task_is_at_risk_exactly_when_it_got_no_on_time_slot(case: Case) -> None:
    result = case.plan()
    slot_of = {a.task_id: a.slot_start for a in result.assignments}

    late = [
        task.id
        for task in sorted(case.tasks, key=edf_key)
        if task.id not in slot_of or slot_of[task.id] >= case.last_call(task)
    ]
    assert result.at_risk_capacity == late


@PROPERTY_SETTINGS
@given(cases())
def test_preferences_cost_no_promise_when_no_task_waits_for_a_not_before(case: Case) -> None:
    tasks = [TaskRequest(t.id, t.deadline, t.created_at, t.preferred) for t in case.tasks]
    plain = [TaskRequest(t.id, t.deadline, t.created_at) for t in case.tasks]

    # Release times all equal `now`: every task may use a prefix of the slots, so which slot in it
    # a task takes leaves the same number free in every later task's prefix.
    assert case.plan(tasks).at_risk_capacity == case.plan(plain).at_risk_capacity

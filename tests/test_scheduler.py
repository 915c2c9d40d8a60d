"""The call scheduler: slots only inside window, shift and presence; EDF; preferences; capacity.

Pure-function tests: fixed Madrid instants, no database, no clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from backoffice.calls.calendar import BusinessCalendar
from backoffice.calls.scheduler import (
    Absence,
    AgentShift,
    PreferredTime,
    TaskRequest,
    build_slots,
    plan,
)

MADRID = ZoneInfo("Europe/Madrid")
CALENDAR = BusinessCalendar()  # Mon-Fri 08:00-22:00 Madrid, Spanish national holidays
MONDAY = datetime(2027, 4, 12, 8, 0, tzinfo=MADRID)  # an ordinary week, no holidays
WEEKDAYS = range(5)


def at(month: int, day: int, hour: int = 0, minute: int = 0, year: int = 2027) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=MADRID)


def shifts(agent_id: int, start: time = time(8), end: time = time(22), days=WEEKDAYS) -> list[AgentShift]:
    return [AgentShift(agent_id, day, start, end) for day in days]


def task(
    task_id: int,
    deadline: datetime,
    created_at: datetime | None = None,
    preferred=(),
    not_before: datetime | None = None,
) -> TaskRequest:
    return TaskRequest(
        task_id, deadline, created_at or MONDAY - timedelta(days=3), tuple(preferred), not_before
    )


def local(dt: datetime) -> datetime:
    return dt.astimezone(MADRID)


def run(tasks, agent_shifts, absences=(), now=MONDAY, **options):
    return plan(tasks, agent_shifts, absences, calendar=CALENDAR, now=now, **options)


def test_a_shift_wider_than_the_window_is_clipped_to_it() -> None:
    slots = build_slots(shifts(1, time(7), time(23)), (), calendar=CALENDAR, now=at(4, 12, 0))

    assert {local(s.start).time() for s in slots} == {time(h, m) for h in range(8, 22) for m in (0, 20, 40)}
    assert all(
        CALENDAR.is_open(s.start) and CALENDAR.is_open(s.end - timedelta(microseconds=1)) for s in slots
    )
    assert {local(s.start).weekday() for s in slots} == set(WEEKDAYS)


def test_no_slot_outside_the_agents_shift() -> None:
    slots = build_slots(shifts(1, time(10, 10), time(11, 50)), (), calendar=CALENDAR, now=MONDAY)

    # 10:10 is off the 20-minute grid, and 11:40-12:00 would end after the shift.
    assert sorted({local(s.start).time() for s in slots}) == [
        time(10, 20),
        time(10, 40),
        time(11, 0),
        time(11, 20),
    ]


def test_no_slot_during_an_absence() -> None:
    away = Absence(1, at(4, 12, 9, 10), at(4, 12, 10, 0))
    slots = build_slots(shifts(1, time(8), time(11)), [away], calendar=CALENDAR, now=MONDAY)

    monday = sorted(local(s.start).time() for s in slots if local(s.start).date() == MONDAY.date())
    assert monday == [time(8), time(8, 20), time(8, 40), time(10), time(10, 20), time(10, 40)]


def test_no_slot_on_a_public_holiday() -> None:
    # Tuesday 12 October 2027 is Spain's National Day.
    result = run(
        [task(i, at(10, 15, 22)) for i in range(10)],
        shifts(1, time(8), time(8, 40), days=(0, 1, 2)),
        now=at(10, 11, 0),
    )

    days = sorted({local(a.slot_start).date().day for a in result.assignments})
    assert days == [11, 13]
    assert result.at_risk_capacity == list(range(4, 10))


def test_never_two_tasks_in_one_agent_slot() -> None:
    result = run([task(i, at(4, 16, 22)) for i in range(200)], shifts(1) + shifts(2, time(12), time(16)))

    keys = [(a.agent_id, a.slot_start) for a in result.assignments]
    assert len(keys) == len(set(keys)) == 200
    assert result.at_risk_capacity == []


def test_an_earlier_deadline_gets_the_earlier_slot() -> None:
    later = task(1, at(4, 14, 18), created_at=at(4, 9, 9))
    sooner = task(2, at(4, 13, 18), created_at=at(4, 9, 10))

    result = run([later, sooner], shifts(1))

    slot = {a.task_id: local(a.slot_start) for a in result.assignments}
    assert slot == {2: at(4, 12, 8), 1: at(4, 12, 8, 20)}


def test_a_preferred_time_is_honoured_when_it_comes_before_the_deadline() -> None:
    wish = PreferredTime(1, time(17), time(19))  # Tuesday afternoon
    result = run([task(1, at(4, 14, 18), preferred=[wish]), task(2, at(4, 14, 19))], shifts(1))

    slot = {a.task_id: local(a.slot_start) for a in result.assignments}
    assert slot == {1: at(4, 13, 17), 2: at(4, 12, 8)}


def test_a_preferred_time_after_the_last_call_moment_is_ignored() -> None:
    wish = PreferredTime(2, time(10), time(12))  # Wednesday, but the deadline is Tuesday 12:00
    result = run([task(1, at(4, 13, 12), preferred=[wish])], shifts(1))

    assert [local(a.slot_start) for a in result.assignments] == [at(4, 12, 8)]
    assert result.at_risk_capacity == []


def test_a_slot_must_start_strictly_before_the_last_call_moment() -> None:
    # Deadline Monday 08:40: the 08:40 slot is too late, two slots remain for three tasks.
    result = run([task(i, at(4, 12, 8, 40)) for i in (1, 2, 3)], shifts(1))

    assert result.at_risk_capacity == [3]
    slot = {a.task_id: local(a.slot_start) for a in result.assignments}
    assert slot == {1: at(4, 12, 8), 2: at(4, 12, 8, 20), 3: at(4, 12, 8, 40)}


def test_tasks_that_cannot_fit_before_their_deadline_are_flagged_at_risk() -> None:
    # One agent, 08:00-09:00: three slots a day; five tasks due Monday 22:00.
    result = run([task(i, at(4, 12, 22)) for i in range(5)], shifts(1, time(8), time(9)))

    assert result.at_risk_capacity == [3, 4]


def test_late_tasks_wait_behind_tasks_that_can_still_be_on_time() -> None:
    overdue = task(1, at(4, 9, 12))  # already past: last call was Friday 12:00
    due_soon = task(2, at(4, 12, 8, 20))

    result = run([overdue, due_soon], shifts(1))

    slot = {a.task_id: local(a.slot_start) for a in result.assignments}
    assert slot == {2: at(4, 12, 8), 1: at(4, 12, 8, 20)}
    assert result.at_risk_capacity == [1]


def test_at_risk_tasks_stay_unassigned_when_the_horizon_is_full() -> None:
    result = run(
        [task(i, at(4, 12, 9)) for i in range(4)],
        shifts(1, time(8), time(8, 40), days=(0,)),
        horizon_days=1,
    )

    assert [a.task_id for a in result.assignments] == [0, 1]
    assert result.at_risk_capacity == [2, 3]


def test_a_retry_is_not_placed_before_its_not_before() -> None:
    retry = task(1, at(4, 15, 22), not_before=at(4, 12, 10, 5))  # 2 window-hours after 08:05
    fresh = task(2, at(4, 16, 22))

    result = run([retry, fresh], shifts(1))

    slot = {a.task_id: local(a.slot_start) for a in result.assignments}
    assert slot == {1: at(4, 12, 10, 20), 2: at(4, 12, 8)}
    assert result.at_risk_capacity == []


def test_a_not_before_at_or_after_the_last_call_moment_flags_the_task_at_risk() -> None:
    # Deadline Tuesday 12:00 but no attempt before Tuesday 12:00: late, and still not earlier.
    result = run([task(1, at(4, 13, 12), not_before=at(4, 13, 12))], shifts(1))

    assert result.at_risk_capacity == [1]
    assert [local(a.slot_start) for a in result.assignments] == [at(4, 13, 12)]


def test_a_preferred_time_before_not_before_is_skipped() -> None:
    monday_morning = PreferredTime(0, time(9), time(11))
    tuesday_evening = PreferredTime(1, time(17), time(19))
    monday_late_morning = PreferredTime(0, time(9), time(13))
    skipped = task(1, at(4, 15, 22), preferred=[monday_morning, tuesday_evening], not_before=at(4, 12, 12))
    clipped = task(2, at(4, 15, 22), preferred=[monday_late_morning], not_before=at(4, 12, 10, 10))

    result = run([skipped, clipped], shifts(1))

    slot = {a.task_id: local(a.slot_start) for a in result.assignments}
    assert slot == {1: at(4, 13, 17), 2: at(4, 12, 10, 20)}


def test_a_naive_not_before_is_refused() -> None:
    with pytest.raises(ValueError, match="not_before .* is naive"):
        run([task(1, at(4, 15, 22), not_before=datetime(2027, 4, 12, 10))], shifts(1))


def test_ties_go_to_the_lower_agent_id() -> None:
    result = run([task(1, at(4, 13, 22))], shifts(7) + shifts(3))

    assert [(a.agent_id, local(a.slot_start)) for a in result.assignments] == [(3, at(4, 12, 8))]


def test_the_same_input_gives_the_same_plan() -> None:
    tasks = [
        task(
            i,
            at(4, 12 + i % 4, 9 + i % 12),
            preferred=[PreferredTime(i % 5, time(12), time(14))] * (i % 3 == 0),
        )
        for i in range(300)
    ]
    agents = [s for agent in range(6) for s in shifts(agent, time(8 + agent), time(14 + agent))]
    away = [Absence(2, at(4, 13, 9), at(4, 13, 12))]

    first = run(tasks, agents, away)
    second = run(list(reversed(tasks)), list(reversed(agents)), away)

    assert first == second


def test_the_slot_length_is_configurable() -> None:
    result = run([task(i, at(4, 16, 22)) for i in range(3)], shifts(1), slot_minutes=45)

    assert [local(a.slot_start) for a in result.assignments] == [
        at(4, 12, 8, 15),
        at(4, 12, 9),
        at(4, 12, 9, 45),
    ]


def test_now_is_rounded_up_to_the_next_slot_boundary() -> None:
    result = run([task(1, at(4, 16, 22))], shifts(1), now=at(4, 12, 10, 5))

    assert [local(a.slot_start) for a in result.assignments] == [at(4, 12, 10, 20)]


def test_slots_keep_local_hours_across_the_spring_dst_change() -> None:
    # Friday 26 March 2027 is Good Friday; clocks go forward on Sunday 28 March.
    result = run([task(1, at(3, 31, 22, year=2027))], shifts(1), now=at(3, 26, 9, year=2027))

    (assignment,) = result.assignments
    assert local(assignment.slot_start) == at(3, 29, 8, year=2027)
    assert assignment.slot_start.astimezone(UTC).hour == 6  # CEST, not CET


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        run([], shifts(1), now=datetime(2027, 4, 12, 8))


def test_a_shift_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="start before it ends"):
        AgentShift(1, 0, time(18), time(8))

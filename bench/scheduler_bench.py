"""Benchmark the call scheduler against a bare EDF loop and first-come-first-served.

    python bench/scheduler_bench.py [--tasks 10000] [--agents 100] [--seed 1]

One generated week, the same input for all three planners:

* tasks submitted over the 48 working hours before `now` (Monday 08:00, Madrid), each with
  its SLA deadline from `BusinessCalendar.sla_deadline(submitted)` and created (approved by
  legal) some time between submission and `now`; about 30 % carry preferred call times;
* agents on varied weekly shifts inside the call window, a few of them absent for a while.

Every planner is timed end to end (building the agents' slots included), best of 3 with
`time.perf_counter`. A breach is a task whose slot starts at or after its last-call moment
(`calendar.last_open_before(deadline)`), or a task left without a slot.
"""

from __future__ import annotations

import argparse
import random
import sys
import time as clock
from collections.abc import Callable, Hashable
from datetime import datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backoffice.calls.calendar import BusinessCalendar  # noqa: E402
from backoffice.calls.scheduler import (  # noqa: E402
    Absence,
    AgentShift,
    PreferredTime,
    TaskRequest,
    build_slots,
    last_call,
    plan,
)

MADRID = ZoneInfo("Europe/Madrid")
NOW = datetime(2027, 4, 12, 8, 0, tzinfo=MADRID)  # Monday of an ordinary week
SHIFT_PATTERNS = [
    (time(8), time(16)),
    (time(9), time(17)),
    (time(10), time(18)),
    (time(12), time(20)),
    (time(14), time(22)),
    (time(8), time(14)),
    (time(16), time(22)),
]
TIMED_RUNS = 3

Assigned = dict[Hashable, datetime]  # task id -> slot start


def generate(calendar: BusinessCalendar, tasks: int, agents: int, seed: int):
    rng = random.Random(seed)
    # The instant 48 working hours before now: a real-time span that includes the weekend.
    earliest = NOW - timedelta(hours=48)
    while calendar.working_hours_between(earliest, NOW) < 48:
        earliest -= timedelta(hours=1)
    span = (NOW - earliest).total_seconds()
    requests = []
    for task_id in range(tasks):
        submitted = earliest + timedelta(seconds=rng.uniform(0, span))
        created = submitted + timedelta(seconds=rng.uniform(0, (NOW - submitted).total_seconds()))
        preferred: tuple[PreferredTime, ...] = ()
        if rng.random() < 0.3:
            hour = rng.randrange(8, 20)
            preferred = tuple(
                PreferredTime(day, time(hour), time(hour + 2))
                for day in rng.sample(range(5), rng.randint(1, 3))
            )
        requests.append(TaskRequest(task_id, calendar.sla_deadline(submitted), created, preferred))
    rng.shuffle(requests)

    shifts = []
    for agent in range(agents):
        start, end = rng.choice(SHIFT_PATTERNS)
        days = sorted(rng.sample(range(5), rng.choice((4, 5, 5, 5))))
        shifts.extend(AgentShift(agent, day, start, end) for day in days)
    absences = []
    for agent in rng.sample(range(agents), max(1, agents // 20)):
        begins = NOW + timedelta(days=rng.randrange(5), hours=rng.randrange(0, 10))
        absences.append(Absence(agent, begins, begins + timedelta(hours=rng.choice((2, 4, 24)))))
    return requests, shifts, absences


def ours(requests, shifts, absences, calendar) -> Assigned:
    result = plan(requests, shifts, absences, calendar=calendar, now=NOW)
    return {a.task_id: a.slot_start for a in result.assignments}


def _greedy(order, shifts, absences, calendar) -> Assigned:
    """Each task in turn takes the earliest free slot of any agent; no preferences."""
    slots = build_slots(shifts, absences, calendar=calendar, now=NOW)
    return {task.id: slot.start for task, slot in zip(order, slots, strict=False)}


def bare_edf(requests, shifts, absences, calendar) -> Assigned:
    return _greedy(
        sorted(requests, key=lambda t: (t.deadline, t.created_at, t.id)), shifts, absences, calendar
    )


def fcfs(requests, shifts, absences, calendar) -> Assigned:
    return _greedy(sorted(requests, key=lambda t: (t.created_at, t.id)), shifts, absences, calendar)


def breaches(requests, assigned: Assigned, calendar) -> int:
    count = 0
    for task in requests:
        slot = assigned.get(task.id)
        if slot is None or slot >= last_call(calendar, task.deadline):
            count += 1
    return count


def timed(planner: Callable[..., Assigned], *args) -> tuple[float, Assigned]:
    best, result = float("inf"), {}
    for _ in range(TIMED_RUNS):
        started = clock.perf_counter()
        result = planner(*args)
        best = min(best, clock.perf_counter() - started)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    calendar = BusinessCalendar()
    requests, shifts, absences = generate(calendar, args.tasks, args.agents, args.seed)
    slot_count = len(build_slots(shifts, absences, calendar=calendar, now=NOW))
    print(
        f"{len(requests)} tasks, {args.agents} agents, {len(shifts)} shifts, {len(absences)} absences, "
        f"{slot_count} slots over 7 days from {NOW:%a %Y-%m-%d %H:%M %Z}, seed {args.seed}"
    )

    results = {}
    for name, planner in (("scheduler", ours), ("bare EDF", bare_edf), ("FCFS", fcfs)):
        seconds, assigned = timed(planner, requests, shifts, absences, calendar)
        results[name] = (seconds, breaches(requests, assigned, calendar))
        print(f"{name:<10} time {seconds:8.4f} s   breaches {results[name][1]:6d}")

    (our_time, our_breaches), (edf_time, edf_breaches), (_, fcfs_breaches) = results.values()
    ratio = our_time / edf_time
    print(f"time ratio scheduler / bare EDF: {ratio:.2f}x")

    checks = [
        (f"breaches {our_breaches} <= bare EDF {edf_breaches}", our_breaches <= edf_breaches),
        (
            f"breaches {our_breaches} < FCFS {fcfs_breaches} (when FCFS has any)",
            fcfs_breaches == 0 or our_breaches < fcfs_breaches,
        ),
        (f"time ratio {ratio:.2f}x <= 20x", ratio <= 20),
    ]
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())

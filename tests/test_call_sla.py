"""The 48-hour promise on call tasks: states across a weekend, attainment, one-time alerts."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import func, select

from backoffice.calls import sla
from backoffice.calls.calendar import BusinessCalendar
from backoffice.calls.models import CallTask, CallTaskStatus
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage
from backoffice.staff.models import Role
from tests.factories import make_call_task, make_staff

MADRID = ZoneInfo("Europe/Madrid")
FRIDAY_18H = datetime(2026, 11, 20, 18, 0, tzinfo=MADRID)
DEADLINE = BusinessCalendar().sla_deadline(FRIDAY_18H)  # Tuesday 18:00


def test_the_deadline_of_a_friday_evening_submission_is_tuesday_evening():
    assert datetime(2026, 11, 24, 18, 0, tzinfo=MADRID) == DEADLINE


@pytest.mark.parametrize(
    ("moment", "state"),
    [
        (datetime(2026, 11, 21, 12, 0), "on_track"),  # Saturday: the clock does not run
        (datetime(2026, 11, 22, 23, 59), "on_track"),  # Sunday night: 42 working hours left
        (datetime(2026, 11, 24, 13, 59), "on_track"),  # Tuesday: 4 h 1 min left
        (datetime(2026, 11, 24, 14, 1), "at_risk"),  # under 4 working hours left
        (datetime(2026, 11, 24, 17, 59), "at_risk"),
        (datetime(2026, 11, 24, 18, 0), "breached"),  # the deadline itself
        (datetime(2026, 11, 25, 9, 0), "breached"),
    ],
)
def test_sla_state_across_a_weekend(app, moment, state):
    task = make_call_task(DEADLINE, created_at=FRIDAY_18H)

    with time_machine.travel(moment.replace(tzinfo=MADRID), tick=False):
        assert sla.sla_state(task) == state
        assert [t.id for t in sla.tasks_in(state)] == [task.id]


def test_the_promise_is_met_by_a_first_attempt_before_the_deadline(app):
    task = make_call_task(DEADLINE, created_at=FRIDAY_18H)
    task.first_attempt_at = DEADLINE - timedelta(minutes=1)
    db.session.commit()

    with time_machine.travel(DEADLINE + timedelta(days=1), tick=False):
        assert sla.sla_state(task) == "met"
        assert [t.id for t in sla.tasks_in("met")] == [task.id]


def test_a_first_attempt_at_the_deadline_is_too_late(app):
    task = make_call_task(DEADLINE, created_at=FRIDAY_18H)
    task.first_attempt_at = DEADLINE

    assert sla.sla_state(task, now=DEADLINE) == "breached"


def test_attainment_counts_promises_due_in_the_period(app):
    now = datetime(2026, 11, 30, 12, 0, tzinfo=MADRID)
    for days_ago, attempt_offset in ((1, -1), (2, -1), (3, +1), (10, -1), (40, -1)):
        task = make_call_task(now - timedelta(days=days_ago))
        task.first_attempt_at = task.deadline + timedelta(hours=attempt_offset)
        task.status = CallTaskStatus.DONE
    never_called = make_call_task(now - timedelta(days=5))
    make_call_task(now + timedelta(days=1))  # not due yet
    db.session.commit()

    week, month = sla.attainment(7, now=now), sla.attainment(30, now=now)

    assert (week.due, week.met) == (4, 2)
    assert (month.due, month.met) == (5, 3)
    assert week.rate == 0.5
    assert never_called.first_attempt_at is None


def test_supervisors_are_alerted_once_per_task_at_risk(app):
    supervisor = make_staff(Role.SUPERVISOR)
    make_staff(Role.CALL_AGENT)
    task = make_call_task(DEADLINE, created_at=FRIDAY_18H)
    make_call_task(DEADLINE + timedelta(days=2), created_at=FRIDAY_18H)  # on track
    at_risk_time = DEADLINE - timedelta(hours=2)

    assert sla.alert_at_risk(now=at_risk_time) == 1
    db.session.commit()
    assert sla.alert_at_risk(now=at_risk_time + timedelta(minutes=5)) == 0
    db.session.commit()

    [message] = db.session.execute(select(OutboxMessage)).scalars()
    assert message.recipient == supervisor.email
    assert f"Task {task.id}" in message.body_text
    assert db.session.get(CallTask, task.id).at_risk_alerted_at == at_risk_time


def test_each_supervisor_is_alerted_in_the_language_they_chose(app):
    spanish = make_staff(Role.SUPERVISOR, language="es")
    english = make_staff(Role.SUPERVISOR, language="en")
    task = make_call_task(DEADLINE, created_at=FRIDAY_18H)

    assert sla.alert_at_risk(now=DEADLINE - timedelta(hours=2)) == 1

    mail = {message.recipient: message for message in db.session.execute(select(OutboxMessage)).scalars()}
    assert mail[spanish.email].language == "es"
    assert f"- Tarea {task.id}, " in mail[spanish.email].body_text
    assert "plazo mar 24 nov 2026 18:00" in mail[spanish.email].body_text
    assert mail[english.email].language == "en"
    assert f"- Task {task.id}, " in mail[english.email].body_text
    assert "at risk, deadline Tue 24 Nov 2026 18:00" in mail[english.email].body_text


def test_a_task_the_plan_cannot_fit_is_reported_too(app):
    make_staff(Role.SUPERVISOR)
    task = make_call_task(DEADLINE + timedelta(days=3), created_at=FRIDAY_18H)
    task.at_risk_capacity = True
    db.session.commit()

    assert sla.alert_at_risk(now=FRIDAY_18H + timedelta(hours=1)) == 1
    assert (
        "no agent slot before the deadline"
        in db.session.execute(select(OutboxMessage.body_text)).scalar_one()
    )


def test_load_per_agent_counts_planned_calls_by_local_day(app):
    agent = make_staff(Role.CALL_AGENT)
    monday = datetime(2026, 11, 23, 9, 0, tzinfo=MADRID)
    for minutes in (0, 20, 40):
        task = make_call_task(monday + timedelta(days=1))
        task.assigned_agent_id, task.slot_start = agent.id, monday + timedelta(minutes=minutes)
    db.session.commit()

    days, loads = sla.load_per_agent(now=monday - timedelta(hours=2))

    [load] = loads
    assert load.planned == {monday.date(): 3}
    assert monday.date() in days
    assert db.session.scalar(select(func.count(CallTask.id))) == 3

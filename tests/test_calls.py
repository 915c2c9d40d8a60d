"""Calls (issue 6): the window enforced on the server, start next call, outcomes, retries,
callbacks, absences and the plan written back to the tasks."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask_babel import force_locale
from sqlalchemy import func, select

from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.calls import service
from backoffice.calls.calendar import BusinessCalendar
from backoffice.calls.models import AgentAbsence, AgentShift, CallAttempt, CallTask, CallTaskStatus
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage
from backoffice.review.models import ApplicationStatus, ReviewNote
from backoffice.staff.models import Role
from tests.conftest import requires_postgres
from tests.factories import make_call_task, make_staff

pytestmark = pytest.mark.usefixtures("clock_before_the_fixed_dates")

MADRID = ZoneInfo("Europe/Madrid")
MONDAY_9H = datetime(2026, 11, 23, 9, 0, tzinfo=MADRID)
FRIDAY_22H05 = datetime(2026, 11, 27, 22, 5, tzinfo=MADRID)
HOLIDAY_NOON = datetime(2026, 12, 8, 12, 0, tzinfo=MADRID)  # Tuesday, Immaculate Conception
BUSINESS = BusinessCalendar()


def agent(**kwargs):
    return make_staff(Role.CALL_AGENT, **kwargs)


def start(user, now):
    task = service.start_next_call(user, actor=Actor.staff(user), now=now)
    db.session.commit()
    return task


def log(task, user, outcome, now, **kwargs):
    logged = service.log_outcome(task, user, outcome, actor=Actor.staff(user), now=now, **kwargs)
    db.session.commit()
    return logged


def all_confirmed() -> dict[str, dict[str, str]]:
    return {name: {"status": "confirmed"} for name in service.VALIDATED_FIELDS}


def actions(subject_id) -> list[str]:
    return list(
        db.session.execute(
            select(AuditEvent.action).where(AuditEvent.subject_id == str(subject_id)).order_by(AuditEvent.seq)
        ).scalars()
    )


# The window, enforced on the server


@pytest.mark.parametrize("moment", [FRIDAY_22H05, HOLIDAY_NOON, datetime(2026, 11, 28, 10, tzinfo=MADRID)])
def test_a_call_outside_the_window_is_refused_with_a_message_naming_it(app, moment):
    make_call_task(moment + timedelta(days=3))
    user = agent()

    with force_locale("en"), pytest.raises(service.CallError) as refused:
        service.start_next_call(user, actor=Actor.staff(user), now=moment)

    assert refused.value.code == "outside_window"
    assert "Monday to Friday from 08:00 to 22:00" in refused.value.message
    assert db.session.scalar(select(func.count(CallTask.id)).where(CallTask.status == "in_call")) == 0


def test_the_window_closes_at_22_exactly(app):
    with pytest.raises(service.CallError):
        service.require_open(datetime(2026, 11, 27, 22, 0, tzinfo=MADRID))
    service.require_open(datetime(2026, 11, 27, 21, 59, tzinfo=MADRID))


# Start next call


def test_start_next_call_takes_the_unassigned_task_with_the_earliest_deadline(app):
    later = make_call_task(MONDAY_9H + timedelta(days=2))
    sooner = make_call_task(MONDAY_9H + timedelta(days=1))
    user = agent()

    task = start(user, MONDAY_9H)

    assert task.id == sooner.id
    assert task.status == CallTaskStatus.IN_CALL
    assert task.in_call_by_id == user.id
    assert task.first_attempt_at == MONDAY_9H
    assert db.session.get(CallTask, later.id).status == CallTaskStatus.OPEN
    assert "call.started" in actions(task.id)


def test_my_planned_task_comes_before_an_earlier_unassigned_one(app):
    user = agent()
    pool = make_call_task(MONDAY_9H + timedelta(hours=5))
    mine = make_call_task(MONDAY_9H + timedelta(days=1))
    mine.assigned_agent_id, mine.slot_start = user.id, MONDAY_9H
    db.session.commit()

    assert start(user, MONDAY_9H).id == mine.id
    assert db.session.get(CallTask, pool.id).status == CallTaskStatus.OPEN


def test_a_task_planned_for_another_agent_is_not_handed_out(app):
    me, other = agent(), agent()
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    task.assigned_agent_id, task.slot_start = other.id, MONDAY_9H
    db.session.commit()

    assert start(me, MONDAY_9H) is None


def test_a_planned_slot_far_ahead_is_not_due_yet(app):
    user = agent()
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    task.assigned_agent_id, task.slot_start = user.id, MONDAY_9H + timedelta(hours=2)
    db.session.commit()

    assert start(user, MONDAY_9H) is None


def test_an_agent_in_a_call_gets_the_same_call_back(app):
    user = agent()
    make_call_task(MONDAY_9H + timedelta(days=1))
    make_call_task(MONDAY_9H + timedelta(days=2))
    first = start(user, MONDAY_9H)

    assert start(user, MONDAY_9H + timedelta(minutes=1)).id == first.id
    assert db.session.scalar(select(func.count(CallTask.id)).where(CallTask.status == "in_call")) == 1


def test_a_retry_waits_for_its_next_attempt_time(app):
    user = agent()
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    task.not_before = MONDAY_9H + timedelta(hours=1)
    db.session.commit()

    assert start(user, MONDAY_9H) is None
    assert start(user, MONDAY_9H + timedelta(hours=1)).id == task.id


def test_only_call_agents_start_calls(app):
    make_call_task(MONDAY_9H + timedelta(days=1))
    reviewer = make_staff(Role.LEGAL_REVIEWER)

    with pytest.raises(service.CallError) as refused:
        service.start_next_call(reviewer, actor=Actor.staff(reviewer), now=MONDAY_9H)

    assert refused.value.code == "not_an_agent"


def _start_until_empty(app, agent_ids: list[int]) -> tuple[list[int], list[BaseException]]:
    """Each agent, in its own thread and session, starts and finishes calls until none is due."""
    import threading

    from backoffice.staff.models import StaffUser

    taken: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(agent_id: int) -> None:
        with app.app_context():
            try:
                while True:
                    user = db.session.get(StaffUser, agent_id)
                    task = service.start_next_call(user, actor=Actor.staff(user), now=MONDAY_9H)
                    if task is None:
                        break
                    task_id = task.id
                    task.status = CallTaskStatus.DONE  # finish it so the next start takes another
                    task.in_call_by_id = None
                    db.session.commit()
                    with lock:
                        taken.append(task_id)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                db.session.rollback()
                errors.append(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=work, args=(agent_id,)) for agent_id in agent_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread starting calls hung"
    return taken, errors


def test_concurrent_agents_each_get_a_different_task(app):
    tasks = [make_call_task(MONDAY_9H + timedelta(hours=4, minutes=n)).id for n in range(12)]

    taken, errors = _start_until_empty(app, [agent().id for _ in range(4)])

    assert errors == []
    assert sorted(taken) == sorted(tasks)


@requires_postgres
def test_sixteen_concurrent_agents_start_every_call_exactly_once_on_postgres(app):
    tasks = [make_call_task(MONDAY_9H + timedelta(hours=4, minutes=n)).id for n in range(64)]

    taken, errors = _start_until_empty(app, [agent().id for _ in range(16)])

    assert errors == []
    assert sorted(taken) == sorted(tasks)
    started = db.session.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "call.started")
    )
    assert started == len(tasks)


# Outcomes


def test_validated_needs_every_field_confirmed_or_corrected(app):
    user = agent()
    make_call_task(MONDAY_9H + timedelta(days=1))
    task = start(user, MONDAY_9H)
    checks = all_confirmed()
    del checks["phone"]

    with pytest.raises(service.CallError) as refused:
        service.log_outcome(task, user, "validated", checks=checks, actor=Actor.staff(user), now=MONDAY_9H)

    assert refused.value.code == "fields_unchecked"
    assert refused.value.details["fields"] == ["phone"]


def test_an_invalid_correction_is_refused_and_changes_nothing(app):
    user = agent()
    make_call_task(MONDAY_9H + timedelta(days=1))
    task = start(user, MONDAY_9H)
    checks = {**all_confirmed(), "tax_id": {"status": "corrected", "value": "12345678A"}}

    with pytest.raises(service.CallError) as refused:
        service.log_outcome(task, user, "validated", checks=checks, actor=Actor.staff(user), now=MONDAY_9H)
    db.session.rollback()

    assert refused.value.details["errors"] == {"tax_id": ["invalid"]}
    assert db.session.get(CallTask, task.id).application.tax_id == "12345678Z"


def test_a_correction_is_normalised_applied_and_audited_with_old_and_new_values(app):
    user = agent()
    make_call_task(MONDAY_9H + timedelta(days=1))
    task = start(user, MONDAY_9H)
    application_id = task.application_id
    checks = {**all_confirmed(), "phone": {"status": "corrected", "value": "622 333 444"}}

    logged = log(task, user, "validated", MONDAY_9H + timedelta(minutes=6), checks=checks)

    application = db.session.get(CallTask, task.id).application
    assert application.phone == "+34622333444"
    assert logged.attempt.field_checks["phone"] == {
        "status": "corrected",
        "old": "+34611222333",
        "new": "+34622333444",
    }
    assert logged.attempt.field_checks["email"]["status"] == "confirmed"
    [event] = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "application.details_corrected")
    ).scalars()
    assert event.subject_id == application_id
    assert event.before == {"phone": "+34611222333"}
    assert event.after == {"phone": "+34622333444"}


def test_validated_closes_the_task_and_invites_the_applicant(app):
    user = agent()
    make_call_task(MONDAY_9H + timedelta(days=1))
    task = start(user, MONDAY_9H)

    log(task, user, "validated", MONDAY_9H + timedelta(minutes=5), checks=all_confirmed())

    task = db.session.get(CallTask, task.id)
    assert task.status == CallTaskStatus.DONE
    assert task.application.status == ApplicationStatus.INVITED
    events = actions(task.application_id)
    assert events.index("application.validated") < events.index("application.invited")
    message = db.session.execute(
        select(OutboxMessage).where(OutboxMessage.recipient == task.application.email)
    ).scalar_one()
    assert "/representatives/complete?token=" in message.body_text


def test_no_answer_schedules_a_retry_two_window_hours_later_in_another_part_of_the_day(app):
    user = agent()
    make_call_task(MONDAY_9H + timedelta(days=1))
    task = start(user, MONDAY_9H)

    log(task, user, "no_answer", MONDAY_9H + timedelta(minutes=2))

    task = db.session.get(CallTask, task.id)
    assert task.status == CallTaskStatus.OPEN
    assert task.failed_attempts == 1
    assert task.assigned_agent_id is None
    assert task.not_before == datetime(2026, 11, 23, 14, 0, tzinfo=MADRID)


@pytest.mark.parametrize(
    ("attempt", "retry"),
    [
        (datetime(2026, 11, 23, 9, 0), datetime(2026, 11, 23, 14, 0)),  # morning → afternoon
        (datetime(2026, 11, 23, 13, 0), datetime(2026, 11, 23, 15, 0)),  # 2 h later is afternoon
        (datetime(2026, 11, 23, 16, 30), datetime(2026, 11, 23, 18, 30)),  # afternoon → evening
        (datetime(2026, 11, 23, 21, 0), datetime(2026, 11, 24, 9, 0)),  # 1 h tonight + 1 h tomorrow
        (datetime(2026, 11, 27, 20, 30), datetime(2026, 11, 30, 8, 30)),  # over the weekend
        (datetime(2026, 12, 7, 21, 30), datetime(2026, 12, 9, 9, 30)),  # over a holiday
        (datetime(2026, 11, 23, 10, 0), datetime(2026, 11, 23, 14, 0)),  # 12:00 is still morning
        (datetime(2026, 11, 23, 19, 0), datetime(2026, 11, 24, 8, 0)),  # 21:00 is still evening
    ],
)
def test_retry_spacing(attempt, retry):
    got = service.next_attempt_after(BUSINESS, attempt.replace(tzinfo=MADRID), 2)

    assert got == retry.replace(tzinfo=MADRID)
    assert service.part_of_day(BUSINESS, got) != service.part_of_day(BUSINESS, attempt.replace(tzinfo=MADRID))
    assert BUSINESS.is_open(got)


def test_window_hours_skip_closed_time_across_the_autumn_dst_change():
    friday_21h = datetime(2026, 10, 23, 21, 0, tzinfo=MADRID)

    assert service.add_window_hours(BUSINESS, friday_21h, 3) == datetime(2026, 10, 26, 10, 0, tzinfo=MADRID)


def test_the_third_unanswered_call_fails_the_call_and_tells_everyone(app):
    user = agent()
    supervisor = make_staff(Role.SUPERVISOR)
    task = make_call_task(MONDAY_9H + timedelta(days=2))
    now = MONDAY_9H
    for _ in range(3):
        task = start(user, now)
        log(task, user, "no_answer", now)
        now = db.session.get(CallTask, task.id).not_before or now

    task = db.session.get(CallTask, task.id)
    assert task.status == CallTaskStatus.FAILED
    assert task.application.status == ApplicationStatus.CALL_FAILED
    recipients = set(db.session.execute(select(OutboxMessage.recipient)).scalars())
    assert {task.application.email, supervisor.email} <= recipients
    applicant_mail = db.session.execute(
        select(OutboxMessage).where(OutboxMessage.recipient == task.application.email)
    ).scalar_one()
    assert "917 83 83 83" in applicant_mail.body_text
    assert db.session.scalar(select(func.count(CallAttempt.id))) == 3


def test_a_callback_inside_the_window_is_pinned_to_the_agent(app):
    user = agent()
    make_call_task(MONDAY_9H + timedelta(days=2))
    task = start(user, MONDAY_9H)
    at = datetime(2026, 11, 23, 17, 0, tzinfo=MADRID)

    logged = log(task, user, "callback_requested", MONDAY_9H, callback_at=at)

    task = db.session.get(CallTask, task.id)
    assert logged.warning is None
    assert (task.status, task.assigned_agent_id, task.callback_at) == (CallTaskStatus.OPEN, user.id, at)
    assert start(user, at - timedelta(minutes=30)) is None
    assert start(user, at).id == task.id


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 11, 23, 22, 0, tzinfo=MADRID),
        datetime(2026, 11, 23, 21, 50, tzinfo=MADRID),  # the call would run past closing
        datetime(2026, 11, 28, 10, 0, tzinfo=MADRID),
        datetime(2026, 12, 8, 10, 0, tzinfo=MADRID),
    ],
)
def test_a_callback_outside_the_window_is_refused(app, at):
    user = agent()
    make_call_task(MONDAY_9H + timedelta(days=2))
    task = start(user, MONDAY_9H)

    with pytest.raises(service.CallError) as refused:
        service.log_outcome(
            task, user, "callback_requested", callback_at=at, actor=Actor.staff(user), now=MONDAY_9H
        )

    assert refused.value.code == "outside_window"


def test_a_callback_after_the_deadline_is_accepted_with_a_warning(app):
    user = agent()
    make_call_task(MONDAY_9H + timedelta(hours=3))
    task = start(user, MONDAY_9H)

    with force_locale("en"):
        logged = log(task, user, "callback_requested", MONDAY_9H, callback_at=MONDAY_9H + timedelta(days=1))

    assert "after the deadline" in logged.warning


def test_a_callback_not_started_fifteen_minutes_after_its_time_goes_back_to_the_pool(app):
    user = agent()
    make_call_task(MONDAY_9H + timedelta(days=2))
    task = start(user, MONDAY_9H)
    at = MONDAY_9H + timedelta(hours=3)
    log(task, user, "callback_requested", MONDAY_9H, callback_at=at)

    assert service.release_late_callbacks(now=at + timedelta(minutes=14)) == 0
    assert service.release_late_callbacks(now=at + timedelta(minutes=15)) == 1
    db.session.commit()

    task = db.session.get(CallTask, task.id)
    assert (task.assigned_agent_id, task.callback_at, task.not_before) == (None, None, at)
    assert "call_task.released" in actions(task.id)


def test_a_call_never_logged_goes_back_to_the_pool_after_an_hour(app):
    user = agent()
    make_call_task(MONDAY_9H + timedelta(days=1))
    task = start(user, MONDAY_9H)

    assert service.release_abandoned_calls(now=MONDAY_9H + timedelta(minutes=59)) == 0
    assert service.release_abandoned_calls(now=MONDAY_9H + timedelta(minutes=60)) == 1
    db.session.commit()

    task = db.session.get(CallTask, task.id)
    assert (task.status, task.in_call_by_id, task.assigned_agent_id) == (CallTaskStatus.OPEN, None, None)
    assert task.first_attempt_at == MONDAY_9H
    assert "call_task.call_abandoned" in actions(task.id)
    assert start(agent(), MONDAY_9H + timedelta(minutes=61)).id == task.id


def test_data_mismatch_needs_a_note(app):
    user = agent()
    make_call_task(MONDAY_9H + timedelta(days=1))
    task = start(user, MONDAY_9H)

    with pytest.raises(service.CallError) as refused:
        service.log_outcome(task, user, "data_mismatch", notes="  ", actor=Actor.staff(user), now=MONDAY_9H)

    assert refused.value.code == "note_required"


def test_data_mismatch_sends_the_application_back_to_legal_with_the_note(app):
    user = agent()
    make_call_task(MONDAY_9H + timedelta(days=1))
    task = start(user, MONDAY_9H)

    log(task, user, "data_mismatch", MONDAY_9H, notes="The CIF belongs to another company")

    task = db.session.get(CallTask, task.id)
    assert task.status == CallTaskStatus.DONE
    assert task.application.status == ApplicationStatus.SUBMITTED
    note = db.session.execute(select(ReviewNote)).scalar_one()
    assert "another company" in note.text
    assert note.author_id == user.id


# The plan


def shift(user, weekday=0, starts=time(9), ends=time(10)):
    db.session.add(AgentShift(agent_id=user.id, weekday=weekday, starts=starts, ends=ends))
    db.session.commit()


def test_replan_assigns_open_tasks_to_agent_slots_earliest_deadline_first(app):
    user = agent()
    shift(user)
    later = make_call_task(MONDAY_9H + timedelta(days=2))
    sooner = make_call_task(MONDAY_9H + timedelta(days=1))

    service.replan(now=MONDAY_9H - timedelta(hours=1))
    db.session.commit()

    assert (
        db.session.get(CallTask, sooner.id).assigned_agent_id,
        db.session.get(CallTask, sooner.id).slot_start,
    ) == (
        user.id,
        MONDAY_9H,
    )
    assert db.session.get(CallTask, later.id).slot_start == MONDAY_9H + timedelta(minutes=20)


def test_replan_flags_tasks_it_cannot_fit_before_the_deadline(app):
    user = agent()
    shift(user, starts=time(9), ends=time(9, 20))
    make_call_task(MONDAY_9H + timedelta(hours=2))
    late = make_call_task(MONDAY_9H + timedelta(hours=3))

    service.replan(now=MONDAY_9H - timedelta(hours=1))
    db.session.commit()

    assert db.session.get(CallTask, late.id).at_risk_capacity is True


def test_replan_leaves_a_personal_callback_in_place_and_plans_around_it(app):
    user = agent()
    shift(user)
    pinned = make_call_task(MONDAY_9H + timedelta(days=3))
    pinned.assigned_agent_id, pinned.callback_at, pinned.slot_start = user.id, MONDAY_9H, MONDAY_9H
    other = make_call_task(MONDAY_9H + timedelta(days=1))
    db.session.commit()

    service.replan(now=MONDAY_9H - timedelta(hours=1))
    db.session.commit()

    assert db.session.get(CallTask, pinned.id).callback_at == MONDAY_9H
    assert db.session.get(CallTask, other.id).slot_start == MONDAY_9H + timedelta(minutes=20)


def test_an_absence_puts_the_agents_planned_calls_back_in_the_pool(app):
    user, colleague = agent(), agent()
    shift(user)
    shift(colleague, starts=time(11), ends=time(12))
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    service.replan(now=MONDAY_9H - timedelta(hours=1))
    db.session.commit()
    assert db.session.get(CallTask, task.id).assigned_agent_id == user.id

    absence = AgentAbsence(
        agent_id=user.id, starts_at=MONDAY_9H - timedelta(hours=1), ends_at=MONDAY_9H + timedelta(days=1)
    )
    db.session.add(absence)
    db.session.flush()
    assert (
        service.release_for_absence(absence, actor=Actor.system("tests"), now=MONDAY_9H - timedelta(hours=1))
        == 1
    )
    service.replan(now=MONDAY_9H - timedelta(hours=1))
    db.session.commit()

    task = db.session.get(CallTask, task.id)
    assert task.assigned_agent_id == colleague.id
    assert task.slot_start == MONDAY_9H + timedelta(hours=2)


def test_replan_never_places_a_retry_before_its_next_attempt_time(app):
    user = agent()
    shift(user, starts=time(9), ends=time(15))
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    task.not_before = MONDAY_9H + timedelta(hours=5)
    db.session.commit()

    service.replan(now=MONDAY_9H)
    db.session.commit()

    assert db.session.get(CallTask, task.id).slot_start == MONDAY_9H + timedelta(hours=5)

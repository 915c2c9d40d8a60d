"""Agents' shifts and absences, edited by supervisors: the rules in the service, their audit and
the re-plan they trigger, and the "Agent shifts" page (roles, forms, CSRF, errors)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from flask_babel import force_locale
from sqlalchemy import func, select

from backoffice.audit.models import AuditEvent
from backoffice.calls import staffing
from backoffice.calls.models import AgentAbsence, AgentShift, CallTask, CallTaskStatus
from backoffice.calls.staffing import StaffingError
from backoffice.extensions import db
from backoffice.review.models import RepresentativeApplication
from backoffice.staff.models import Role
from tests.conftest import csrf_token_from
from tests.factories import TEST_ACTOR, make_staff, signed_in_client
from tests.test_api_representatives import FRIDAY_18H
from tests.test_api_representatives import submit as api_submit

MADRID = ZoneInfo("Europe/Madrid")
WINDOW = "Monday to Friday from 08:00 to 22:00"
MONDAY_9H = datetime(2026, 11, 23, 9, 0, tzinfo=MADRID)
PAGE = "/admin/staffing/"


@pytest.fixture
def app(make_app):
    app = make_app(REDIS_URL=None)  # the planner runs inline, right after each commit
    with app.app_context():
        yield app


@pytest.fixture
def agent(app):
    return make_staff(Role.CALL_AGENT, name="Ana Agente")


def count(model) -> int:
    return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def events(subject_type: str) -> list[AuditEvent]:
    return list(
        db.session.execute(
            select(AuditEvent).where(AuditEvent.subject_type == subject_type).order_by(AuditEvent.seq)
        ).scalars()
    )


def refused(code: str, call) -> StaffingError:
    """The refusal, with its message in English (outside a request the service speaks Spanish)."""
    with pytest.raises(StaffingError) as caught, force_locale("en"):
        call()
    db.session.rollback()
    assert caught.value.code == code, caught.value.message
    return caught.value


# Shifts: the rules


def test_a_shift_inside_the_window_is_added_and_audited(agent):
    shift = staffing.add_shift(agent, 0, time(8), time(14), actor=TEST_ACTOR)
    db.session.commit()

    assert (shift.agent_id, shift.weekday, shift.starts, shift.ends) == (agent.id, 0, time(8), time(14))
    (event,) = events("agent_shift")
    assert (event.action, event.subject_id, event.actor_label) == (
        "agent_shift.added",
        str(shift.id),
        "tests",
    )
    assert event.after == {"agent_id": agent.id, "weekday": 0, "starts": "08:00", "ends": "14:00"}


@pytest.mark.parametrize(
    ("starts", "ends", "field"),
    [(time(7, 30), time(12), "starts"), (time(18), time(22, 30), "ends"), (time(6), time(23), "starts")],
)
def test_a_shift_outside_the_window_is_refused_naming_the_window(agent, starts, ends, field):
    error = refused("outside_window", lambda: staffing.add_shift(agent, 1, starts, ends, actor=TEST_ACTOR))

    assert WINDOW in error.message
    assert error.field == field
    assert count(AgentShift) == 0
    assert events("agent_shift") == []


def test_the_whole_window_is_a_valid_shift(agent):
    staffing.add_shift(agent, 4, time(8), time(22), actor=TEST_ACTOR)

    assert count(AgentShift) == 1


@pytest.mark.parametrize("weekday", [5, 6, 7, -1])
def test_a_shift_on_a_day_the_window_is_closed_is_refused(agent, weekday):
    error = refused(
        "closed_weekday", lambda: staffing.add_shift(agent, weekday, time(9), time(12), actor=TEST_ACTOR)
    )

    assert WINDOW in error.message
    assert count(AgentShift) == 0


def test_a_shift_must_end_after_it_starts(agent):
    refused("shift_order", lambda: staffing.add_shift(agent, 0, time(12), time(12), actor=TEST_ACTOR))
    refused("shift_order", lambda: staffing.add_shift(agent, 0, time(12), time(9), actor=TEST_ACTOR))


def test_the_window_comes_from_the_configuration(make_app):
    app = make_app(REDIS_URL=None, CALL_WINDOW="Mon,Wed 09:00-13:00")
    with app.app_context():
        agent = make_staff(Role.CALL_AGENT)

        error = refused(
            "outside_window", lambda: staffing.add_shift(agent, 0, time(8), time(12), actor=TEST_ACTOR)
        )
        assert "Monday, Wednesday from 09:00 to 13:00" in error.message
        refused("closed_weekday", lambda: staffing.add_shift(agent, 1, time(9), time(12), actor=TEST_ACTOR))
        staffing.add_shift(agent, 2, time(9), time(13), actor=TEST_ACTOR)
        db.session.commit()
        assert count(AgentShift) == 1


def test_shifts_of_one_agent_on_one_day_may_not_overlap(agent):
    staffing.add_shift(agent, 0, time(8), time(14), actor=TEST_ACTOR)
    db.session.commit()

    error = refused("overlap", lambda: staffing.add_shift(agent, 0, time(13), time(16), actor=TEST_ACTOR))
    assert "08:00-14:00" in error.message
    refused("overlap", lambda: staffing.add_shift(agent, 0, time(9), time(10), actor=TEST_ACTOR))
    refused("overlap", lambda: staffing.add_shift(agent, 0, time(8), time(22), actor=TEST_ACTOR))

    staffing.add_shift(agent, 0, time(14), time(22), actor=TEST_ACTOR)  # touching is fine
    staffing.add_shift(agent, 1, time(8), time(14), actor=TEST_ACTOR)  # another day
    staffing.add_shift(make_staff(Role.CALL_AGENT), 0, time(8), time(14), actor=TEST_ACTOR)  # another agent
    db.session.commit()
    assert count(AgentShift) == 4


@pytest.mark.parametrize(
    ("role", "active"), [(Role.SUPERVISOR, True), (Role.ADMIN, True), (Role.CALL_AGENT, False)]
)
def test_only_an_active_call_agent_gets_shifts_and_absences(app, role, active):
    person = make_staff(role, active=active)

    error = refused(
        "not_an_agent", lambda: staffing.add_shift(person, 0, time(9), time(12), actor=TEST_ACTOR)
    )
    assert error.field == "agent_id"
    refused(
        "not_an_agent",
        lambda: staffing.add_absence(
            person,
            MONDAY_9H,
            MONDAY_9H + timedelta(hours=2),
            "Annual leave",
            actor=TEST_ACTOR,
            now=FRIDAY_18H,
        ),
    )
    assert count(AgentShift) == count(AgentAbsence) == 0


def test_a_shift_is_moved_under_the_same_rules_and_audited(agent):
    morning = staffing.add_shift(agent, 0, time(8), time(14), actor=TEST_ACTOR)
    staffing.add_shift(agent, 0, time(16), time(20), actor=TEST_ACTOR)
    db.session.commit()

    staffing.update_shift(morning, 0, time(9), time(15), actor=TEST_ACTOR)  # overlaps only itself
    db.session.commit()
    refused("overlap", lambda: staffing.update_shift(morning, 0, time(9), time(17), actor=TEST_ACTOR))
    refused("outside_window", lambda: staffing.update_shift(morning, 0, time(9), time(23), actor=TEST_ACTOR))
    refused("closed_weekday", lambda: staffing.update_shift(morning, 6, time(9), time(12), actor=TEST_ACTOR))

    db.session.refresh(morning)
    assert (morning.weekday, morning.starts, morning.ends) == (0, time(9), time(15))
    updated = [e for e in events("agent_shift") if e.action == "agent_shift.updated"]
    assert len(updated) == 1
    assert updated[0].before["starts"] == "08:00" and updated[0].after["starts"] == "09:00"


def test_an_unchanged_shift_writes_no_event(agent):
    shift = staffing.add_shift(agent, 0, time(8), time(14), actor=TEST_ACTOR)
    staffing.update_shift(shift, 0, time(8), time(14), actor=TEST_ACTOR)

    assert [e.action for e in events("agent_shift")] == ["agent_shift.added"]


def test_deleting_a_shift_is_audited_with_what_it_was(agent):
    shift = staffing.add_shift(agent, 2, time(10), time(12), actor=TEST_ACTOR)
    db.session.commit()
    shift_id = shift.id

    staffing.delete_shift(shift, actor=TEST_ACTOR)
    db.session.commit()

    assert count(AgentShift) == 0
    event = events("agent_shift")[-1]
    assert (event.action, event.subject_id) == ("agent_shift.deleted", str(shift_id))
    assert event.before == {"agent_id": agent.id, "weekday": 2, "starts": "10:00", "ends": "12:00"}


def test_week_of_lists_every_open_weekday_earliest_shift_first(agent):
    staffing.add_shift(agent, 0, time(14), time(22), actor=TEST_ACTOR)
    staffing.add_shift(agent, 0, time(8), time(14), actor=TEST_ACTOR)

    week = staffing.week_of(agent)

    assert list(week) == [0, 1, 2, 3, 4]
    assert [s.starts for s in week[0]] == [time(8), time(14)]
    assert week[1] == []


# Absences: the rules


def test_an_absence_is_added_in_utc_and_audited(agent):
    starts_at = staffing.local_instant(MONDAY_9H.date(), time(0), field="starts_at")
    ends_at = staffing.local_instant(MONDAY_9H.date() + timedelta(days=5), time(0), field="ends_at")

    absence = staffing.add_absence(
        agent, starts_at, ends_at, "  Annual   leave ", actor=TEST_ACTOR, now=FRIDAY_18H
    )
    db.session.commit()

    db.session.refresh(absence)
    assert absence.starts_at == datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # CET is UTC+1
    assert absence.reason == "Annual leave"
    (event,) = events("agent_absence")
    assert event.action == "agent_absence.added"
    assert event.after == {
        "agent_id": agent.id,
        "starts_at": "2026-11-22T23:00:00+00:00",
        "ends_at": "2026-11-27T23:00:00+00:00",
        "reason": "Annual leave",
    }


def test_an_absence_must_end_after_it_starts(agent):
    for ends_at in (MONDAY_9H, MONDAY_9H - timedelta(minutes=1)):
        error = refused(
            "absence_order",
            lambda ends_at=ends_at: staffing.add_absence(
                agent, MONDAY_9H, ends_at, "Sick", actor=TEST_ACTOR, now=FRIDAY_18H
            ),
        )
        assert error.field == "ends_at"
    assert count(AgentAbsence) == 0
    assert events("agent_absence") == []


@pytest.mark.parametrize(
    ("reason", "code"), [("", "reason_required"), ("   ", "reason_required"), ("x" * 121, "reason_too_long")]
)
def test_an_absence_needs_a_short_reason(agent, reason, code):
    refused(
        code,
        lambda: staffing.add_absence(
            agent, MONDAY_9H, MONDAY_9H + timedelta(hours=1), reason, actor=TEST_ACTOR, now=FRIDAY_18H
        ),
    )


def test_an_absence_already_over_or_naive_is_refused(agent):
    refused(
        "absence_over",
        lambda: staffing.add_absence(
            agent, FRIDAY_18H - timedelta(days=2), FRIDAY_18H, "Sick", actor=TEST_ACTOR, now=FRIDAY_18H
        ),
    )
    naive = datetime(2026, 11, 23, 9, 0)
    refused(
        "naive_time",
        lambda: staffing.add_absence(
            agent, naive, naive + timedelta(hours=1), "Sick", actor=TEST_ACTOR, now=FRIDAY_18H
        ),
    )


def test_local_times_are_converted_with_the_zone_rules_not_a_fixed_offset(app):
    summer = staffing.local_instant(datetime(2026, 7, 1).date(), time(10), field="starts_at")
    winter = staffing.local_instant(datetime(2026, 12, 1).date(), time(10), field="starts_at")
    repeated = staffing.local_instant(datetime(2026, 10, 25).date(), time(2, 30), field="starts_at")

    assert summer == datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
    assert winter == datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert repeated == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # the first 02:30 (CEST)
    skipped = refused(
        "no_such_local_time",
        lambda: staffing.local_instant(datetime(2026, 3, 29).date(), time(2, 30), field="ends_at"),
    )
    assert skipped.field == "ends_at"


def test_deleting_an_absence_is_audited(agent):
    absence = staffing.add_absence(
        agent, MONDAY_9H, MONDAY_9H + timedelta(hours=3), "Doctor", actor=TEST_ACTOR, now=FRIDAY_18H
    )
    db.session.commit()

    staffing.delete_absence(absence, actor=TEST_ACTOR)
    db.session.commit()

    assert count(AgentAbsence) == 0
    assert [e.action for e in events("agent_absence")] == ["agent_absence.added", "agent_absence.deleted"]
    assert events("agent_absence")[-1].before["reason"] == "Doctor"


# The plan follows the changes


def open_task(client) -> CallTask:
    """An application submitted on Friday 18:00 (deadline Tuesday 18:00) with an open call task."""
    with time_machine.travel(FRIDAY_18H, tick=False):
        response = api_submit(client)
    assert response.status_code == 201, response.json
    application = db.session.get(RepresentativeApplication, response.json["id"])
    task = CallTask(
        application_id=application.id,
        status=CallTaskStatus.OPEN,
        deadline=application.call_deadline,
        created_at=FRIDAY_18H,
    )
    db.session.add(task)
    db.session.commit()
    return task


def test_a_new_shift_gets_calls_planned_and_an_absence_hands_them_to_another_agent(client, agent):
    task = open_task(client)
    other = make_staff(Role.CALL_AGENT, name="Beatriz Otra")
    assert task.assigned_agent_id is None

    with time_machine.travel(MONDAY_9H, tick=False):
        staffing.add_shift(agent, 0, time(10), time(12), actor=TEST_ACTOR)
        db.session.commit()  # the planner runs once this commits
        db.session.refresh(task)
        assert (task.assigned_agent_id, task.slot_start) == (agent.id, MONDAY_9H + timedelta(hours=1))

        staffing.add_shift(other, 0, time(10), time(12), actor=TEST_ACTOR)
        db.session.commit()
        db.session.refresh(task)
        assert task.assigned_agent_id == agent.id  # ties go to the lower agent id

        staffing.add_absence(
            agent, MONDAY_9H, MONDAY_9H + timedelta(hours=4), "Doctor", actor=TEST_ACTOR, now=MONDAY_9H
        )
        db.session.commit()
        db.session.refresh(task)
        assert (task.assigned_agent_id, task.slot_start) == (other.id, MONDAY_9H + timedelta(hours=1))

    released = db.session.execute(
        select(AuditEvent).where(
            AuditEvent.action == "call_task.released", AuditEvent.subject_id == str(task.id)
        )
    ).scalar_one()
    assert released.after["reason"] == "agent_absent"


def test_deleting_the_only_shift_leaves_the_task_unplanned(client, agent):
    task = open_task(client)

    with time_machine.travel(MONDAY_9H, tick=False):
        shift = staffing.add_shift(agent, 0, time(10), time(12), actor=TEST_ACTOR)
        db.session.commit()
        db.session.refresh(task)
        assert task.assigned_agent_id == agent.id

        staffing.delete_shift(shift, actor=TEST_ACTOR)
        db.session.commit()
        db.session.refresh(task)
        assert (task.assigned_agent_id, task.slot_start) == (None, None)


def test_the_replan_waits_for_the_commit(client, agent):
    task = open_task(client)

    with time_machine.travel(MONDAY_9H, tick=False):
        staffing.add_shift(agent, 0, time(10), time(12), actor=TEST_ACTOR)
        db.session.rollback()
        db.session.refresh(task)

    assert task.assigned_agent_id is None
    assert count(AgentShift) == 0


# The page: roles


@pytest.mark.parametrize(
    ("role", "status"),
    [
        (Role.SUPERVISOR, 200),
        (Role.ADMIN, 200),
        (Role.CALL_AGENT, 403),
        (Role.LEGAL_REVIEWER, 403),
        (Role.ASSOCIATION_CLERK, 403),
    ],
)
def test_only_supervisors_and_admins_open_the_page(app, role, status):
    client, _ = signed_in_client(app, role)

    assert client.get(PAGE).status_code == status


@pytest.mark.parametrize("role", [Role.CALL_AGENT, Role.LEGAL_REVIEWER])
def test_other_roles_cannot_change_shifts_or_absences(app, agent, role):
    shift = staffing.add_shift(agent, 0, time(8), time(14), actor=TEST_ACTOR)
    absence = staffing.add_absence(
        agent, MONDAY_9H, MONDAY_9H + timedelta(hours=1), "Doctor", actor=TEST_ACTOR, now=FRIDAY_18H
    )
    db.session.commit()
    client, _ = signed_in_client(app, role)
    token = csrf_token_from(client, "/admin/")

    posts = {
        f"{PAGE}shifts/add": {"agent_id": agent.id, "weekday": 1, "starts": "08:00", "ends": "12:00"},
        f"{PAGE}shifts/{shift.id}/edit": {"weekday": 1, "starts": "08:00", "ends": "12:00"},
        f"{PAGE}shifts/{shift.id}/delete": {},
        f"{PAGE}absences/{absence.id}/delete": {},
    }
    for url, data in posts.items():
        assert client.post(url, data={"csrf_token": token, **data}).status_code == 403, url
    assert client.get(f"{PAGE}shifts/{shift.id}/edit").status_code == 403
    assert (count(AgentShift), count(AgentAbsence)) == (1, 1)


def test_the_page_asks_anonymous_visitors_to_sign_in(client):
    response = client.get(PAGE)

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


# The page: what it shows


def test_the_page_shows_each_agents_week_and_upcoming_absences(app, agent):
    staffing.add_shift(agent, 0, time(8), time(14), actor=TEST_ACTOR)
    staffing.add_shift(agent, 3, time(16, 30), time(22), actor=TEST_ACTOR)
    staffing.add_absence(
        agent,
        datetime(2099, 8, 3, 0, 0, tzinfo=MADRID),
        datetime(2099, 8, 15, 0, 0, tzinfo=MADRID),
        "Annual leave",
        actor=TEST_ACTOR,
    )
    gone = datetime.now(UTC) - timedelta(hours=1)
    staffing.add_absence(
        agent, gone - timedelta(hours=2), gone, "Long gone", actor=TEST_ACTOR, now=gone - timedelta(hours=3)
    )
    db.session.commit()
    client, _ = signed_in_client(app, Role.SUPERVISOR)

    page = client.get(PAGE).get_data(as_text=True)

    assert "Ana Agente" in page
    assert "08:00–14:00" in page and "16:30–22:00" in page
    assert "Mon 03 Aug 2099 00:00" in page  # local time, not UTC (22:00 the day before)
    assert "Annual leave" in page
    assert "Long gone" not in page
    assert WINDOW in page
    assert "<script>" not in page.split("</nav>", 1)[-1]  # no inline script in the page body


def test_the_forms_offer_only_open_weekdays_and_times_inside_the_window(app, agent):
    client, _ = signed_in_client(app, Role.SUPERVISOR)

    page = client.get(PAGE).get_data(as_text=True)
    weekday_select = re.search(r'<select[^>]*id="shift-weekday".*?</select>', page, re.S).group(0)
    starts_select = re.search(r'<select[^>]*id="shift-starts".*?</select>', page, re.S).group(0)

    assert re.findall(r">(\w+day)<", weekday_select) == [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
    ]
    times = re.findall(r'value="(\d\d:\d\d)"', starts_select)
    assert times[0] == "08:00" and times[-1] == "22:00" and "07:30" not in times and "22:30" not in times
    assert len(times) == 29


def test_a_former_agents_leftover_shifts_are_listed_for_clearing(app, agent):
    staffing.add_shift(agent, 0, time(8), time(14), actor=TEST_ACTOR)
    db.session.commit()
    agent.active = False
    db.session.commit()
    client, _ = signed_in_client(app, Role.SUPERVISOR)

    page = client.get(PAGE).get_data(as_text=True)

    assert "Ana Agente" in page and "not an active call agent" in page


# The page: changes through the forms


def test_a_supervisor_adds_a_shift_through_the_form(app, agent):
    client, supervisor = signed_in_client(app, Role.SUPERVISOR)

    response = client.post(
        f"{PAGE}shifts/add",
        data={
            "csrf_token": csrf_token_from(client, PAGE),
            "agent_id": agent.id,
            "weekday": 2,
            "starts": "09:30",
            "ends": "13:00",
        },
        follow_redirects=True,
    )

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Shift added: Ana Agente, Wednesday 09:30-13:00." in page
    shift = db.session.execute(select(AgentShift)).scalar_one()
    assert (shift.agent_id, shift.weekday, shift.starts, shift.ends) == (agent.id, 2, time(9, 30), time(13))
    assert events("agent_shift")[0].actor_id == str(supervisor.id)


def test_a_form_post_without_csrf_token_is_refused(app, agent):
    client, _ = signed_in_client(app, Role.SUPERVISOR)

    response = client.post(
        f"{PAGE}shifts/add", data={"agent_id": agent.id, "weekday": 2, "starts": "09:30", "ends": "13:00"}
    )

    assert response.status_code == 400
    assert count(AgentShift) == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"weekday": 5, "starts": "09:00", "ends": "12:00"}, "Not a valid choice"),  # Saturday is not offered
        ({"weekday": 0, "starts": "07:00", "ends": "12:00"}, "Not a valid choice"),
        ({"weekday": 0, "starts": "12:00", "ends": "09:00"}, "A shift must end after it starts."),
        ({"weekday": "x", "starts": "09:00", "ends": "12:00"}, "Invalid Choice"),
        ({"weekday": 0, "starts": "09:00"}, "Required."),
        ({"weekday": 0, "starts": "9 o'clock", "ends": "12:00"}, "Not a valid choice"),
    ],
)
def test_bad_shift_input_is_shown_next_to_the_field_and_nothing_is_written(app, agent, data, message):
    client, _ = signed_in_client(app, Role.SUPERVISOR)

    response = client.post(
        f"{PAGE}shifts/add", data={"csrf_token": csrf_token_from(client, PAGE), "agent_id": agent.id, **data}
    )

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert message in page
    assert "invalid-feedback" in page
    assert count(AgentShift) == 0
    assert events("agent_shift") == []


def test_an_overlap_is_explained_on_the_form(app, agent):
    staffing.add_shift(agent, 0, time(8), time(14), actor=TEST_ACTOR)
    db.session.commit()
    client, _ = signed_in_client(app, Role.SUPERVISOR)

    response = client.post(
        f"{PAGE}shifts/add",
        data={
            "csrf_token": csrf_token_from(client, PAGE),
            "agent_id": agent.id,
            "weekday": 0,
            "starts": "12:00",
            "ends": "16:00",
        },
    )

    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "already has a shift 08:00-14:00" in page
    assert count(AgentShift) == 1


def test_a_non_agent_is_not_offered_and_refused(app):
    reviewer = make_staff(Role.LEGAL_REVIEWER, name="Rita Revisora")
    client, _ = signed_in_client(app, Role.SUPERVISOR)
    page = client.get(PAGE).get_data(as_text=True)
    assert "Rita Revisora" not in page

    response = client.post(
        f"{PAGE}shifts/add",
        data={
            "csrf_token": csrf_token_from(client, PAGE),
            "agent_id": reviewer.id,
            "weekday": 0,
            "starts": "09:00",
            "ends": "12:00",
        },
    )

    assert response.status_code == 200
    assert "Not a valid choice" in response.get_data(as_text=True)
    assert count(AgentShift) == 0


def test_a_shift_is_edited_through_its_page(app, agent):
    shift = staffing.add_shift(agent, 0, time(8), time(14), actor=TEST_ACTOR)
    db.session.commit()
    client, _ = signed_in_client(app, Role.ADMIN)
    url = f"{PAGE}shifts/{shift.id}/edit"

    form_page = client.get(url).get_data(as_text=True)
    assert re.search(r'<option selected value="08:00">|<option value="08:00" selected>', form_page)

    bad = client.post(
        url,
        data={"csrf_token": csrf_token_from(client, url), "weekday": 0, "starts": "15:00", "ends": "10:00"},
    )
    assert bad.status_code == 200 and "A shift must end after it starts." in bad.get_data(as_text=True)

    response = client.post(
        url,
        data={"csrf_token": csrf_token_from(client, url), "weekday": 1, "starts": "14:00", "ends": "22:00"},
        follow_redirects=True,
    )

    assert "Shift changed: Ana Agente, Tuesday 14:00-22:00." in response.get_data(as_text=True)
    db.session.refresh(shift)
    assert (shift.weekday, shift.starts, shift.ends) == (1, time(14), time(22))
    assert client.get(f"{PAGE}shifts/999999/edit").status_code == 404


def test_deleting_a_shift_asks_first(app, agent):
    shift = staffing.add_shift(agent, 0, time(8), time(14), actor=TEST_ACTOR)
    db.session.commit()
    client, _ = signed_in_client(app, Role.SUPERVISOR)
    url = f"{PAGE}shifts/{shift.id}/delete"

    confirm = client.get(url)
    assert confirm.status_code == 200
    assert "Delete this shift?" in confirm.get_data(as_text=True)
    assert count(AgentShift) == 1

    response = client.post(url, data={"csrf_token": csrf_token_from(client, url)}, follow_redirects=True)

    assert "Shift deleted: Ana Agente, Monday 08:00-14:00." in response.get_data(as_text=True)
    assert count(AgentShift) == 0
    assert events("agent_shift")[-1].action == "agent_shift.deleted"


def test_a_supervisor_adds_an_absence_in_local_time(app, agent):
    client, _ = signed_in_client(app, Role.SUPERVISOR)

    response = client.post(
        f"{PAGE}absences/add",
        data={
            "csrf_token": csrf_token_from(client, PAGE),
            "agent_id": agent.id,
            "starts_at": "2099-07-01T09:00",
            "ends_at": "2099-07-01T13:30",
            "reason": "Doctor",
        },
        follow_redirects=True,
    )

    assert response.status_code == 200
    assert "Absence added: Ana Agente, Wed 01 Jul 2099 09:00 to Wed 01 Jul 2099 13:30 (Doctor)." in (
        response.get_data(as_text=True)
    )
    absence = db.session.execute(select(AgentAbsence)).scalar_one()
    assert (absence.starts_at, absence.ends_at) == (  # summer time: UTC+2
        datetime(2099, 7, 1, 7, 0, tzinfo=UTC),
        datetime(2099, 7, 1, 11, 30, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"starts_at": "2099-07-01T13:00", "ends_at": "2099-07-01T09:00"},
            "An absence must end after it starts.",
        ),
        ({"starts_at": "2099-07-01T09:00", "ends_at": "2099-07-01T10:00", "reason": ""}, "Required."),
        ({"starts_at": "tomorrow", "ends_at": "2099-07-01T10:00"}, "Not a valid datetime value."),
        ({"starts_at": "2099-03-29T02:30", "ends_at": "2099-03-29T10:00"}, "the clocks skip it"),
        ({"starts_at": "2020-01-01T09:00", "ends_at": "2020-01-02T09:00"}, "That absence is already over."),
        (
            {"starts_at": "2099-07-01T09:00", "ends_at": "2099-07-01T10:00", "reason": "x" * 200},
            "Field cannot be longer",
        ),
    ],
)
def test_bad_absence_input_is_shown_and_nothing_is_written(app, agent, data, message):
    client, _ = signed_in_client(app, Role.SUPERVISOR)

    response = client.post(
        f"{PAGE}absences/add",
        data={"csrf_token": csrf_token_from(client, PAGE), "agent_id": agent.id, "reason": "Sick", **data},
    )

    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    assert count(AgentAbsence) == 0
    assert events("agent_absence") == []


def test_deleting_an_absence_asks_first(app, agent):
    absence = staffing.add_absence(
        agent,
        datetime(2099, 7, 1, 9, 0, tzinfo=MADRID),
        datetime(2099, 7, 1, 13, 0, tzinfo=MADRID),
        "Doctor",
        actor=TEST_ACTOR,
    )
    db.session.commit()
    client, _ = signed_in_client(app, Role.SUPERVISOR)
    url = f"{PAGE}absences/{absence.id}/delete"

    assert "Delete this absence?" in client.get(url).get_data(as_text=True)
    assert client.post(url, data={}).status_code == 400  # no CSRF token: nothing deleted
    assert count(AgentAbsence) == 1

    response = client.post(url, data={"csrf_token": csrf_token_from(client, url)}, follow_redirects=True)

    assert "Absence deleted: Ana Agente" in response.get_data(as_text=True)
    assert count(AgentAbsence) == 0
    assert client.get(url).status_code == 404

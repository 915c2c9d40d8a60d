"""The agent console and the supervisors' call SLA page, through the browser's requests."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import func, select

from backoffice.calls.calendar import BusinessCalendar
from backoffice.calls.models import CallAttempt, CallTask, CallTaskStatus
from backoffice.extensions import db
from backoffice.review.models import ApplicationStatus
from backoffice.staff.models import Role
from tests.conftest import csrf_token_from
from tests.factories import last_link_token, make_call_task, signed_in_client

pytestmark = pytest.mark.usefixtures("clock_before_the_fixed_dates")

MADRID = ZoneInfo("Europe/Madrid")
MONDAY_9H = datetime(2026, 11, 23, 9, 0, tzinfo=MADRID)
FRIDAY_22H05 = datetime(2026, 11, 27, 22, 5, tzinfo=MADRID)
FIELDS = ("company_tax_id", "company_name", "first_name", "last_name", "tax_id", "email", "phone")


@pytest.fixture
def at_monday_9h():
    with time_machine.travel(MONDAY_9H, tick=False):
        yield


def start_next(client):
    token = csrf_token_from(client, "/admin/calls/")
    return client.post("/admin/calls/next", data={"csrf_token": token})


@pytest.mark.parametrize(
    ("role", "url", "status"),
    [
        (Role.CALL_AGENT, "/admin/calls/", 200),
        (Role.SUPERVISOR, "/admin/calls/", 200),
        (Role.LEGAL_REVIEWER, "/admin/calls/", 403),
        (Role.ASSOCIATION_CLERK, "/admin/calls/", 403),
        (Role.SUPERVISOR, "/admin/call-sla/", 200),
        (Role.ADMIN, "/admin/call-sla/", 200),
        (Role.CALL_AGENT, "/admin/call-sla/", 403),
    ],
)
def test_roles_are_checked_on_the_server(app, role, url, status):
    client, _ = signed_in_client(app, role)

    assert client.get(url).status_code == status


def test_start_next_call_opens_the_call_screen(app, at_monday_9h):
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    client, agent = signed_in_client(app, Role.CALL_AGENT)

    response = start_next(client)

    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/admin/calls/{task.id}")
    page = client.get(f"/admin/calls/{task.id}").get_data(as_text=True)
    assert "Transportes Ejemplo" in page
    assert "+34611222333" in page
    db.session.expire_all()
    assert db.session.get(CallTask, task.id).in_call_by_id == agent.id


def test_start_next_call_outside_the_window_is_refused_naming_the_window(app):
    make_call_task(FRIDAY_22H05 + timedelta(days=3))
    client, _ = signed_in_client(app, Role.CALL_AGENT)

    with time_machine.travel(FRIDAY_22H05, tick=False):
        response = start_next(client)
        page = client.get(response.headers["Location"]).get_data(as_text=True)

    assert "Monday to Friday from 08:00 to 22:00" in page
    assert db.session.scalar(select(func.count(CallTask.id)).where(CallTask.status == "in_call")) == 0


def test_the_agenda_does_not_offer_start_next_call_while_the_window_is_closed(app):
    client, _ = signed_in_client(app, Role.CALL_AGENT)

    with time_machine.travel(FRIDAY_22H05, tick=False):
        page = client.get("/admin/calls/").get_data(as_text=True)

    assert re.search(r"<button[^>]*disabled[^>]*>Start next call", page)


def test_callback_times_offered_are_all_inside_the_window(app, at_monday_9h):
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    client, _ = signed_in_client(app, Role.CALL_AGENT)
    start_next(client)

    page = client.get(f"/admin/calls/{task.id}").get_data(as_text=True)

    offered = [datetime.fromisoformat(value) for value in re.findall(r'<option value="(2026-[^"]+)"', page)]
    business = BusinessCalendar()
    assert len(offered) > 100
    assert all(
        business.is_open(moment) and business.is_open(moment + timedelta(minutes=19)) for moment in offered
    )


def test_logging_a_validated_call_through_the_form_invites_the_applicant(app, at_monday_9h):
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    client, _ = signed_in_client(app, Role.CALL_AGENT)
    start_next(client)
    form = {f"check_{name}": "confirmed" for name in FIELDS}
    form.update(
        {
            "check_email": "corrected",
            "value_email": "Lucia.Perez@Transportes.example",
            "outcome": "validated",
            "csrf_token": csrf_token_from(client, f"/admin/calls/{task.id}"),
        }
    )

    response = client.post(f"/admin/calls/{task.id}/log", data=form)

    assert response.status_code == 302
    db.session.expire_all()
    task = db.session.get(CallTask, task.id)
    assert task.status == CallTaskStatus.DONE
    assert task.application.status == ApplicationStatus.INVITED
    assert task.application.email == "lucia.perez@transportes.example"


def test_an_unchecked_field_is_a_form_error_and_nothing_is_logged(app, at_monday_9h):
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    client, _ = signed_in_client(app, Role.CALL_AGENT)
    start_next(client)
    form = {f"check_{name}": "confirmed" for name in FIELDS if name != "phone"}
    form.update({"outcome": "validated", "csrf_token": csrf_token_from(client, f"/admin/calls/{task.id}")})

    response = client.post(f"/admin/calls/{task.id}/log", data=form)

    assert response.status_code == 422
    assert "Confirm or correct every field" in response.get_data(as_text=True)
    assert db.session.scalar(select(func.count(CallAttempt.id))) == 0
    assert db.session.get(CallTask, task.id).status == CallTaskStatus.IN_CALL


def test_log_and_start_next_goes_straight_to_the_next_call(app, at_monday_9h):
    first = make_call_task(MONDAY_9H + timedelta(days=1))
    second = make_call_task(MONDAY_9H + timedelta(days=2))
    client, _ = signed_in_client(app, Role.CALL_AGENT)
    start_next(client)
    form = {
        "outcome": "no_answer",
        "then": "next",
        "csrf_token": csrf_token_from(client, f"/admin/calls/{first.id}"),
    }

    response = client.post(f"/admin/calls/{first.id}/log", data=form)

    assert response.headers["Location"].endswith(f"/admin/calls/{second.id}")


def test_a_supervisor_cannot_log_an_agents_call(app, at_monday_9h):
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    agent_client, _ = signed_in_client(app, Role.CALL_AGENT)
    start_next(agent_client)
    client, _ = signed_in_client(app, Role.SUPERVISOR)
    token = csrf_token_from(client, "/admin/calls/")

    response = client.post(f"/admin/calls/{task.id}/log", data={"outcome": "no_answer", "csrf_token": token})

    assert response.status_code == 403


def _log_without_confirmation(client, task, outcome, **fields):
    token = csrf_token_from(client, f"/admin/calls/{task.id}")
    return client.post(
        f"/admin/calls/{task.id}/log", data={"outcome": outcome, "csrf_token": token, **fields}
    )


def test_a_data_mismatch_without_confirmation_asks_and_logs_nothing(app, at_monday_9h):
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    client, _ = signed_in_client(app, Role.CALL_AGENT)
    start_next(client)

    response = _log_without_confirmation(client, task, "data_mismatch", notes="The CIF is another company's.")

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'data-testid="confirmation"' in page
    assert "The CIF is another company&#39;s." in page
    assert db.session.scalar(select(func.count(CallAttempt.id))) == 0
    assert db.session.get(CallTask, task.id).status == CallTaskStatus.IN_CALL


def test_a_confirmed_data_mismatch_sends_the_application_back_to_legal(app, at_monday_9h):
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    client, _ = signed_in_client(app, Role.CALL_AGENT)
    start_next(client)

    response = _log_without_confirmation(
        client, task, "data_mismatch", notes="The CIF is another company's.", confirmed="1"
    )

    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(CallTask, task.id).application.status == ApplicationStatus.SUBMITTED


def test_the_last_unanswered_attempt_without_confirmation_asks_and_logs_nothing(app, at_monday_9h):
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    task.failed_attempts = 2
    db.session.commit()
    client, _ = signed_in_client(app, Role.CALL_AGENT)
    start_next(client)

    response = _log_without_confirmation(client, task, "no_answer")

    assert 'data-testid="confirmation"' in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(CallTask, task.id).status == CallTaskStatus.IN_CALL


def test_the_call_screen_asks_only_before_the_outcomes_that_cannot_be_taken_back(app, at_monday_9h):
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    client, _ = signed_in_client(app, Role.CALL_AGENT)
    start_next(client)

    page = client.get(f"/admin/calls/{task.id}").get_data(as_text=True)

    radios = dict(re.findall(r'data-testid="outcome-(\w+)"([^>]*)>', page))
    assert [outcome for outcome, rest in radios.items() if "data-confirm" in rest] == ["data_mismatch"]
    assert 'data-testid="log-call-next" data-shortcut="n"' in page


def test_the_sla_page_lists_at_risk_tasks_and_attainment(app, at_monday_9h):
    make_call_task(MONDAY_9H + timedelta(hours=3), created_at=MONDAY_9H - timedelta(days=2))
    met = make_call_task(MONDAY_9H - timedelta(hours=1))
    met.first_attempt_at = MONDAY_9H - timedelta(hours=2)
    met.status = CallTaskStatus.DONE
    db.session.commit()
    client, _ = signed_in_client(app, Role.SUPERVISOR)

    page = client.get("/admin/call-sla/").get_data(as_text=True)

    assert "At risk (1)" in page
    assert "100.0 %" in page
    assert "1 of 1 due" in page


def test_a_supervisor_resends_the_completion_link_and_the_old_one_stops_working(app, at_monday_9h):
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    agent_client, _ = signed_in_client(app, Role.CALL_AGENT)
    start_next(agent_client)
    form = {f"check_{name}": "confirmed" for name in FIELDS}
    form.update(
        {"outcome": "validated", "csrf_token": csrf_token_from(agent_client, f"/admin/calls/{task.id}")}
    )
    agent_client.post(f"/admin/calls/{task.id}/log", data=form)
    email = task.application.email
    first = last_link_token(email)
    client, _ = signed_in_client(app, Role.SUPERVISOR)
    page = client.get("/admin/call-sla/").get_data(as_text=True)
    assert "Waiting for the representative to complete (1)" in page

    response = client.post(
        f"/admin/call-sla/resend/{task.application_id}",
        data={"csrf_token": csrf_token_from(client, "/admin/call-sla/")},
    )

    assert response.status_code == 302
    second = last_link_token(email)
    assert second != first
    assert client.get(f"/api/v1/representative-completions/{first}").status_code == 404
    assert client.get(f"/api/v1/representative-completions/{second}").status_code == 200

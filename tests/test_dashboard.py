"""The supervisors' dashboard: queue sizes, the call SLA, calls per agent per local day, the two
funnels, the period filter, CSV export and the SVG charts."""

from __future__ import annotations

import csv
import io
import secrets
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import select

from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.calls import sla
from backoffice.calls.models import CallAttempt, CallOutcome, CallTaskStatus
from backoffice.customers.models import AssociationCase, AssociationStatus, CaseStatus, CustomerAccount
from backoffice.dashboard import charts, service
from backoffice.dashboard.service import Period
from backoffice.extensions import db
from backoffice.notifications.models import Channel, OutboxMessage, OutboxStatus
from backoffice.review.models import ApplicationStatus as S
from backoffice.review.models import RepresentativeApplication
from backoffice.review.states import transition
from backoffice.staff.models import Role
from tests.factories import TEST_ACTOR, make_call_task, make_staff, sign_in

MADRID = ZoneInfo("Europe/Madrid")
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=MADRID)  # a Tuesday
MARCH = Period(datetime(2026, 3, 1).date(), datetime(2026, 3, 10).date())


def madrid(*args: int) -> datetime:
    return datetime(*args, tzinfo=MADRID)


def _application(created_at: datetime, status: S = S.SUBMITTED, *, submitted_at=None):
    application = RepresentativeApplication(
        id=secrets.token_hex(16),
        access_key_hash="0" * 64,
        company_tax_id="B12345674",
        company_name="Transportes Ejemplo S.L.",
        first_name="Lucía",
        last_name="Pérez Gil",
        tax_id="12345678Z",
        email=f"{secrets.token_hex(4)}@transportes.example",
        phone="+34611222333",
        status=status,
        created_at=created_at,
        submitted_at=submitted_at or created_at,
        call_deadline=created_at + timedelta(days=2),
    )
    db.session.add(application)
    db.session.commit()
    return application


def _account(created_at: datetime, *, verified: bool = False, linked: bool = False, tax_id=None):
    account = CustomerAccount(
        email=f"{secrets.token_hex(4)}@correo.example",
        tax_id=tax_id,
        password_hash="x",
        created_at=created_at,
        email_verified_at=created_at + timedelta(hours=1) if verified else None,
        association_status=AssociationStatus.LINKED if linked else AssociationStatus.NONE,
        linked_at=created_at + timedelta(hours=2) if linked else None,
    )
    db.session.add(account)
    db.session.commit()
    return account


def _attempt(agent, started_at: datetime, outcome: CallOutcome) -> None:
    task = make_call_task(started_at + timedelta(days=1))
    db.session.add(CallAttempt(task_id=task.id, agent_id=agent.id, started_at=started_at, outcome=outcome))
    db.session.commit()


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# Queues


def test_queue_sizes_and_the_age_of_the_oldest_item(app):
    _application(NOW - timedelta(hours=5))
    _application(NOW - timedelta(hours=30), S.IN_REVIEW)
    _application(NOW - timedelta(days=9), S.APPROVED)  # decided: not waiting for review
    for hours in (3, 50):
        make_call_task(NOW + timedelta(days=1), created_at=NOW - timedelta(hours=hours))
    done = make_call_task(NOW + timedelta(days=1), created_at=NOW - timedelta(days=20))
    done.status = CallTaskStatus.DONE
    for status, hours in ((CaseStatus.OPEN, 1), (CaseStatus.WAITING_CUSTOMER, 4), (CaseStatus.LINKED, 99)):
        account = _account(NOW - timedelta(days=10))
        db.session.add(
            AssociationCase(
                account_id=account.id,
                status=status,
                reason="ambiguous",
                opened_at=NOW - timedelta(hours=hours),
            )
        )
    for status, minutes in ((OutboxStatus.PENDING, 7), (OutboxStatus.SENT, 600)):
        db.session.add(
            OutboxMessage(
                channel=Channel.EMAIL,
                recipient="a@correo.example",
                template="t",
                language="es",
                body_text="b",
                status=status,
                created_at=NOW - timedelta(minutes=minutes),
            )
        )
    db.session.commit()

    rows = {row.key: row for row in service.queues(now=NOW)}

    assert {key: row.size for key, row in rows.items()} == {
        "legal_review": 2,
        "call_tasks": 2,
        "association_cases": 2,
        "outbox_pending": 1,
    }
    assert rows["legal_review"].age == timedelta(hours=30)
    assert rows["call_tasks"].age == timedelta(hours=50)
    assert rows["association_cases"].age == timedelta(hours=4)
    assert rows["outbox_pending"].oldest_at == NOW - timedelta(minutes=7)


def test_an_empty_queue_has_no_oldest_item(app):
    rows = service.queues(now=NOW)

    assert [(row.size, row.oldest_at, row.age) for row in rows] == [(0, None, None)] * 4


# The call SLA


def test_sla_numbers_are_those_of_the_call_sla_module(app):
    for days_ago, attempt_offset in ((1, -1), (2, +1), (10, -1), (40, -1)):
        task = make_call_task(NOW - timedelta(days=days_ago))
        task.first_attempt_at = task.deadline + timedelta(hours=attempt_offset)
        task.status = CallTaskStatus.DONE
    make_call_task(NOW - timedelta(days=3))  # never called: breached
    make_call_task(NOW + timedelta(hours=1))  # under 4 working hours left: at risk
    make_call_task(NOW + timedelta(days=5))  # on track
    db.session.commit()

    summary = service.sla_summary(now=NOW)

    assert summary.attainments == [sla.attainment(7, now=NOW), sla.attainment(30, now=NOW)]
    assert [(a.days, a.due, a.met) for a in summary.attainments] == [(7, 3, 1), (30, 4, 2)]
    assert summary.at_risk == len(sla.tasks_in("at_risk", now=NOW)) == 1
    assert summary.breached == len(sla.tasks_in("breached", now=NOW)) == 1


# Calls per agent per day


def test_calls_are_grouped_by_agent_and_business_local_day(app):
    ana = make_staff(Role.CALL_AGENT, name="Ana")
    bruno = make_staff(Role.CALL_AGENT, name="Bruno")
    _attempt(ana, madrid(2026, 6, 30, 10, 0), CallOutcome.VALIDATED)
    _attempt(ana, madrid(2026, 6, 30, 23, 30), CallOutcome.NO_ANSWER)  # 21:30 UTC
    _attempt(ana, madrid(2026, 7, 1, 0, 30), CallOutcome.VALIDATED)  # still 30 June in UTC
    _attempt(bruno, madrid(2026, 7, 1, 9, 0), CallOutcome.CALLBACK_REQUESTED)
    _attempt(bruno, madrid(2026, 6, 29, 23, 59), CallOutcome.VALIDATED)  # before the period
    _attempt(bruno, madrid(2026, 7, 2, 0, 0), CallOutcome.VALIDATED)  # after it

    rows = service.calls_per_agent(
        Period(datetime(2026, 6, 30).date(), datetime(2026, 7, 1).date()), now=madrid(2026, 7, 10, 12, 0)
    )

    assert [(r.day.isoformat(), r.agent_name, r.calls) for r in rows] == [
        ("2026-06-30", "Ana", 2),
        ("2026-07-01", "Ana", 1),
        ("2026-07-01", "Bruno", 1),
    ]
    assert rows[0].outcomes == {"validated": 1, "no_answer": 1, "callback_requested": 0, "data_mismatch": 0}
    assert rows[2].outcomes["callback_requested"] == 1


def test_a_day_with_a_clock_change_is_one_local_day(app):
    ana = make_staff(Role.CALL_AGENT, name="Ana")
    _attempt(ana, madrid(2026, 3, 29, 0, 30), CallOutcome.VALIDATED)  # UTC+1, before the change
    _attempt(ana, madrid(2026, 3, 29, 23, 30), CallOutcome.VALIDATED)  # UTC+2, after it
    _attempt(ana, madrid(2026, 3, 30, 0, 30), CallOutcome.VALIDATED)

    rows = service.calls_per_agent(
        Period(datetime(2026, 3, 29).date(), datetime(2026, 3, 30).date()), now=madrid(2026, 4, 1, 9, 0)
    )

    assert [(r.day.isoformat(), r.calls) for r in rows] == [("2026-03-29", 2), ("2026-03-30", 1)]


# Funnels


def test_account_funnel_counts_the_cohort_registered_in_the_period(app):
    _account(madrid(2026, 3, 1, 0, 0), verified=True, linked=True)  # first moment of the period
    _account(madrid(2026, 3, 10, 23, 30), verified=True)  # last day, late evening
    _account(madrid(2026, 3, 5, 12, 0))
    _account(madrid(2026, 3, 5, 13, 0), verified=True, linked=True)
    _account(madrid(2026, 2, 28, 23, 59), verified=True)  # the day before
    _account(madrid(2026, 3, 11, 0, 0), verified=True)  # the day after
    _account(madrid(2026, 3, 5, 9, 0), verified=True, linked=True, tax_id="12345678Z")  # e-Customer

    steps = service.account_funnel(MARCH, now=madrid(2026, 3, 20, 9, 0))

    assert [(s.key, s.count) for s in steps] == [("registered", 4), ("verified", 3), ("linked", 2)]
    assert [s.from_previous for s in steps] == [None, 0.75, pytest.approx(2 / 3)]
    assert [s.from_first for s in steps] == [None, 0.75, 0.5]


def test_representative_funnel_counts_stages_reached_even_when_left_since(app):
    moment = madrid(2026, 3, 4, 10, 0)
    for status in (S.SUBMITTED, S.IN_REVIEW, S.APPROVED, S.COMPLETED, S.REJECTED):
        _application(moment, status)
    expired = _application(moment, S.CALL_SCHEDULED)
    for status in (S.VALIDATED, S.INVITED, S.EXPIRED):  # validated, invited, then let the link lapse
        transition(expired, status, actor=TEST_ACTOR, now=moment)
    db.session.commit()
    _application(madrid(2026, 3, 11, 0, 0), S.COMPLETED)  # outside the period

    steps = service.representative_funnel(MARCH, now=madrid(2026, 3, 20, 9, 0))

    assert [(s.key, s.count) for s in steps] == [
        ("submitted", 6),
        ("approved", 3),
        ("validated", 2),
        ("completed", 1),
    ]
    assert [s.from_previous for s in steps] == [None, 0.5, pytest.approx(2 / 3), 0.5]
    assert [s.from_first for s in steps] == [None, 0.5, pytest.approx(1 / 3), pytest.approx(1 / 6)]


def test_an_empty_cohort_has_no_conversion(app):
    steps = service.account_funnel(MARCH, now=NOW)

    assert [(s.count, s.from_previous, s.from_first) for s in steps] == [(0, None, None)] * 3


# The period


def test_the_default_period_is_the_last_30_local_days(app):
    late_evening = madrid(2026, 3, 10, 23, 30)  # already 11 March in UTC? no: 22:30 UTC, 10 March

    period = service.parse_period(None, None, now=late_evening)

    assert (period.start.isoformat(), period.end.isoformat(), period.days) == ("2026-02-09", "2026-03-10", 30)


@pytest.mark.parametrize(
    ("raw_from", "raw_to", "code"),
    [
        ("2026-13-01", "2026-03-10", "invalid_date"),
        ("yesterday", None, "invalid_date"),
        ("2026-03-10", "2026-03-01", "to_before_from"),
        (None, "0001-01-01", "invalid_date"),  # 30 days back would be before the first date
        ("9999-12-30", "9999-12-31", "invalid_date"),  # the day after the end cannot be written
        ("2024-01-01", "2026-03-10", "too_long"),
    ],
)
def test_an_unusable_period_is_refused_with_a_reason(app, raw_from, raw_to, code):
    with pytest.raises(service.PeriodError) as refused:
        service.parse_period(raw_from, raw_to, now=NOW)

    assert refused.value.code == code


# The page


def _signed_in(app, role: Role):
    user = make_staff(role)
    client = app.test_client()
    assert sign_in(client, user.email).status_code == 302
    return client


@pytest.mark.parametrize("role", list(Role), ids=[role.value for role in Role])
def test_only_supervisors_and_admins_open_the_dashboard(app, role):
    client = _signed_in(app, role)

    page = client.get("/admin/dashboard/")
    export = client.get("/admin/dashboard/export/queues.csv")

    expected = 200 if role in (Role.SUPERVISOR, Role.ADMIN) else 403
    assert (page.status_code, export.status_code) == (expected, expected)


def test_the_page_shows_the_numbers_as_text_in_its_charts(app):
    with time_machine.travel(NOW, tick=False):
        client = _signed_in(app, Role.SUPERVISOR)
        _application(NOW - timedelta(hours=3))
        _account(madrid(2026, 3, 2, 9, 0), verified=True)

        page = client.get("/admin/dashboard/?from=2026-03-01&to=2026-03-10").get_data(as_text=True)

    assert page.count('role="img"') == 4  # no calls in the period: no per-agent chart
    assert "Items waiting per queue" in page
    assert "<title>Legal review: 1</title>" in page
    assert "1 · 100.0 % of previous · 100.0 % of first" in page
    assert 'value="2026-03-01"' in page


def test_queue_links_go_only_to_lists_the_viewer_can_open(app):
    supervisor_page = _signed_in(app, Role.SUPERVISOR).get("/admin/dashboard/").get_data(as_text=True)
    admin_page = _signed_in(app, Role.ADMIN).get("/admin/dashboard/").get_data(as_text=True)

    assert 'href="/admin/review/?status=submitted&amp;status=in_review"' in supervisor_page
    assert 'href="/admin/call-sla/#at-risk"' in supervisor_page
    assert 'href="/admin/call-sla/#breached"' in supervisor_page
    assert 'href="/admin/outbox/"' not in supervisor_page
    assert 'href="/admin/outbox/"' in admin_page
    assert 'href="/admin/review/' not in admin_page


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("from=2026-02-30&to=2026-03-10", "Dates must be real dates written as YYYY-MM-DD."),
        ("from=2026-03-10&to=2026-03-01", "The end date is before the start date."),
        ("from=%3Cscript%3E", "Dates must be real dates written as YYYY-MM-DD."),
        ("from=9999-12-30&to=9999-12-31", "Dates must be real dates written as YYYY-MM-DD."),
        ("from=2025-01-01&to=2026-03-10", "A period can be at most 366 days long."),
    ],
)
def test_a_bad_period_shows_an_error_and_the_default_period(app, query, message):
    with time_machine.travel(NOW, tick=False):
        client = _signed_in(app, Role.SUPERVISOR)

        response = client.get(f"/admin/dashboard/?{query}")

    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert message in page
    assert "Showing the last 30 days instead: 2026-02-09 to 2026-03-10." in page
    assert "<script>" not in page


# CSV export


def test_calls_per_agent_export_is_an_audited_csv_attachment(app):
    ana = make_staff(Role.CALL_AGENT, name="Ana")
    _attempt(ana, madrid(2026, 3, 2, 9, 0), CallOutcome.NO_ANSWER)
    with time_machine.travel(NOW, tick=False):
        client = _signed_in(app, Role.SUPERVISOR)

        response = client.get("/admin/dashboard/export/calls_per_agent.csv?from=2026-03-01&to=2026-03-10")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"] == (
        'attachment; filename="dashboard-calls_per_agent-2026-03-01_2026-03-10.csv"'
    )
    assert _rows(response.get_data(as_text=True)) == [
        [
            "day",
            "agent_id",
            "agent",
            "calls",
            "validated",
            "no_answer",
            "callback_requested",
            "data_mismatch",
        ],
        ["2026-03-02", str(ana.id), "Ana", "1", "0", "1", "0", "0"],
    ]
    event = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "dashboard.exported")
    ).scalar_one()
    assert (event.subject_id, event.after) == (
        "calls_per_agent",
        {"from": "2026-03-01", "to": "2026-03-10", "rows": 1},
    )


def test_funnel_export_has_counts_and_conversions(app):
    _account(madrid(2026, 3, 2, 9, 0), verified=True, linked=True)
    _account(madrid(2026, 3, 3, 9, 0))

    exported = service.export("account_funnel", MARCH, now=NOW, actor=Actor.system("tests"))

    assert _rows(exported.content) == [
        ["step", "count", "percent_of_previous", "percent_of_first"],
        ["registered", "2", "", ""],
        ["verified", "1", "50.0", "50.0"],
        ["linked", "1", "100.0", "50.0"],
    ]


def test_queue_export_is_a_snapshot_named_after_today(app):
    _application(NOW - timedelta(hours=2))

    exported = service.export("queues", MARCH, now=NOW, actor=Actor.system("tests"))

    assert exported.filename == "dashboard-queues-2026-03-10.csv"
    assert _rows(exported.content)[:2] == [
        ["queue", "size", "oldest_since", "oldest_age_hours"],
        ["legal_review", "1", "2026-03-10T10:00:00+01:00", "2.0"],
    ]


def test_export_cells_cannot_start_a_spreadsheet_formula(app):
    agent = make_staff(Role.CALL_AGENT, name='=HYPERLINK("http://evil.example","x")')
    _attempt(agent, madrid(2026, 3, 2, 9, 0), CallOutcome.VALIDATED)

    exported = service.export("calls_per_agent", MARCH, now=NOW, actor=Actor.system("tests"))

    assert _rows(exported.content)[1][2] == '\'=HYPERLINK("http://evil.example","x")'


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx"])
def test_formula_like_text_is_quoted(cell):
    assert service.safe_cell(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["Ana", "", 5, -3])
def test_ordinary_cells_are_left_alone(cell):
    assert service.safe_cell(cell) == cell


def test_an_unknown_table_is_not_found_and_a_bad_period_is_refused(app):
    client = _signed_in(app, Role.ADMIN)

    assert client.get("/admin/dashboard/export/staff.csv").status_code == 404
    refused = client.get("/admin/dashboard/export/queues.csv?from=2026-03-10&to=2026-03-01")
    assert refused.status_code == 400
    assert "The end date is before the start date." in refused.get_data(as_text=True)


# Charts


def test_every_bar_carries_its_label_and_number_as_text():
    svg = charts.bar_chart(
        [charts.Bar("Legal review", 12, "12"), charts.Bar("Outbox <pending>", 0, "0")],
        chart_id="c",
        title="Waiting",
        description="Items per queue.",
    )

    assert 'role="img"' in svg
    assert 'aria-label="Waiting"' in svg
    assert '<title id="c-title">Waiting</title>' in svg
    assert '<desc id="c-desc">Items per queue. Legal review: 12; Outbox &lt;pending&gt;: 0</desc>' in svg
    assert ">12</text>" in svg
    assert ">0</text>" in svg
    assert "Outbox &lt;pending&gt;</text>" in svg
    assert svg.count('fill="url(#c-p') == 1  # the empty bar draws nothing but its text


def test_each_bar_has_its_own_pattern_not_only_a_colour():
    svg = charts.bar_chart([charts.Bar(str(n), n + 1, str(n + 1)) for n in range(3)], chart_id="c", title="t")

    assert all(f'fill="url(#c-p{n})"' in svg for n in range(3))


def test_funnel_bars_shrink_with_the_share_of_the_first_step():
    svg = charts.funnel_chart(
        [charts.Bar("Registered", 10, "10"), charts.Bar("Verified", 5, "5 · 50.0 %")],
        chart_id="f",
        title="Funnel",
    )

    assert f'width="{charts.BAR_AREA:.1f}"' in svg
    assert f'width="{charts.BAR_AREA / 2:.1f}"' in svg
    assert ">5 · 50.0 %</text>" in svg

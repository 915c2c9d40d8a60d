"""One journey per back-office role, in a real browser: what staff actually click (and press),
with the JavaScript the pages ship (confirm.js, shortcuts.js) running. Elements are found by
data-testid or id, never by visible text, which will be translated."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from playwright.sync_api import Page, expect
from sqlalchemy import select

from backoffice.audit.models import AuditEvent
from backoffice.calls.models import CallTask, CallTaskStatus
from backoffice.customers.models import AssociationCase, AssociationStatus, CaseStatus, CustomerAccount
from backoffice.extensions import db
from backoffice.review.models import ApplicationStatus, DocumentStatus, RepresentativeApplication
from backoffice.staff.models import Role
from tests.factories import make_call_task, make_policyholder, make_staff
from tests.test_association_cases import _case as open_case
from tests.test_review_views import _application as submitted_application

MONDAY_9H = datetime(2026, 11, 23, 9, 0, tzinfo=ZoneInfo("Europe/Madrid"))
VALIDATED_FIELDS = ("company_tax_id", "company_name", "first_name", "last_name", "tax_id", "email", "phone")


def submit(page: Page, testid: str) -> None:
    """Click a button that posts a form and wait until the page it leads to has loaded, scripts
    included: a click that beat confirm.js would get the server's confirmation page instead."""
    with page.expect_navigation():
        page.get_by_test_id(testid).click()


def test_a_legal_reviewer_claims_views_accepts_all_and_approves(app, page: Page, sign_in, dialogs):
    application = submitted_application(app)
    reviewer = make_staff(Role.LEGAL_REVIEWER)
    sign_in(reviewer)

    page.goto("/admin/review/")
    page.keyboard.press("n")  # the queue's "claim next" shortcut
    page.wait_for_url(re.compile(rf"/admin/review/{application.id}$"))
    with page.context.expect_event("response", predicate=lambda r: "/files/" in r.url) as served:
        page.get_by_test_id("view-document").first.click()
    submit(page, "accept-all")
    expect(page.get_by_test_id("accept-all")).to_have_count(0)
    submit(page, "approve")
    expect(page.get_by_test_id("approve")).to_have_count(0)

    assert served.value.status == 200
    assert served.value.headers["content-type"] == "application/pdf"
    assert len(dialogs) == 1  # confirm.js asked before approving, and only then
    db.session.expire_all()
    application = db.session.get(RepresentativeApplication, application.id)
    assert application.status == ApplicationStatus.CALL_SCHEDULED
    assert {document.status for document in application.documents} == {DocumentStatus.ACCEPTED}
    viewed = db.session.execute(select(AuditEvent).where(AuditEvent.action == "document.viewed")).scalar_one()
    assert viewed.actor_id == str(reviewer.id)


def test_shortcut_keys_typed_into_a_field_are_just_text(app, page: Page, sign_in):
    application = submitted_application(app)
    sign_in(make_staff(Role.LEGAL_REVIEWER))

    page.goto("/admin/review/")
    page.fill("input[name=q]", "")
    page.keyboard.type("n")
    with page.expect_navigation():
        page.keyboard.press("Enter")  # the search form, not "claim next"

    assert re.search(r"/admin/review/\?q=n", page.url)
    db.session.expire_all()
    assert db.session.get(RepresentativeApplication, application.id).claimed_by_id is None


def test_the_question_mark_shows_the_list_of_shortcuts(app, page: Page, sign_in):
    sign_in(make_staff(Role.ASSOCIATION_CLERK))
    page.goto("/admin/association/")
    help_list = page.get_by_test_id("shortcut-help")
    expect(help_list).not_to_have_attribute("open", "")

    page.keyboard.press("?")

    expect(help_list).to_have_attribute("open", "")


@pytest.fixture
def monday_9h():
    """Inside the call window, for the test and for the server thread alike."""
    with time_machine.travel(MONDAY_9H, tick=False):
        yield


def test_a_call_agent_starts_the_next_call_and_logs_it_validated(
    app, monday_9h, page: Page, sign_in, dialogs
):
    task = make_call_task(MONDAY_9H + timedelta(days=1))
    sign_in(make_staff(Role.CALL_AGENT))

    page.goto("/admin/calls/")
    page.get_by_test_id("start-next-call").click()
    page.wait_for_url(re.compile(rf"/admin/calls/{task.id}$"))
    for name in VALIDATED_FIELDS:
        page.check(f"#confirm_{name}")
    page.get_by_test_id("outcome-validated").check()
    with page.expect_navigation():
        page.keyboard.press("s")  # "log the call", pressed with the focus still on the outcome
    page.wait_for_url(re.compile(r"/admin/calls/$"))

    assert dialogs == []  # a validated call is not one of the outcomes that ask first
    db.session.expire_all()
    task = db.session.get(CallTask, task.id)
    assert task.status == CallTaskStatus.DONE
    assert task.application.status == ApplicationStatus.INVITED


def test_a_clerk_claims_a_case_and_links_the_candidate(app, page: Page, sign_in, dialogs):
    holder = make_policyholder()
    case = open_case(candidates=[holder])
    sign_in(make_staff(Role.ASSOCIATION_CLERK))

    page.goto("/admin/association/")
    page.get_by_test_id("claim-next").click()
    page.wait_for_url(re.compile(rf"/admin/association/{case.id}$"))
    submit(page, "link-candidate")
    expect(page.get_by_test_id("link-candidate")).to_have_count(0)

    assert len(dialogs) == 1 and f"({holder.tax_id})" in dialogs[0]
    db.session.expire_all()
    assert db.session.get(AssociationCase, case.id).status == CaseStatus.LINKED
    account = db.session.get(CustomerAccount, case.account_id)
    assert (account.association_status, account.policyholder_id) == (AssociationStatus.LINKED, holder.id)


def test_a_supervisor_opens_the_dashboard(app, page: Page, sign_in):
    sign_in(make_staff(Role.SUPERVISOR))

    response = page.goto("/admin/dashboard/")

    assert response is not None and response.status == 200
    expect(page.get_by_test_id("dashboard")).to_be_visible()
    expect(page.locator("#queues-heading")).to_be_visible()

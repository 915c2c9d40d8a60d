"""The legal review queue and review page, driven through the back office as staff use it."""

import html
import re
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from backoffice.audit.models import AuditEvent
from backoffice.calls.models import CallTask
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage
from backoffice.review import queue
from backoffice.review.models import ApplicationStatus, DocumentStatus, RepresentativeApplication
from backoffice.staff.models import Role
from tests.conftest import csrf_token_from
from tests.factories import signed_in_client
from tests.test_api_representatives import FIELDS, submit


def _application(app, **fields) -> RepresentativeApplication:
    response = submit(app.test_client(), fields={**FIELDS, **fields})
    assert response.status_code == 201, response.json
    return db.session.get(RepresentativeApplication, response.json["id"])


def _post(client, url, **data):
    token = csrf_token_from(client, "/admin/review/")
    return client.post(url, data={"csrf_token": token, **data}, follow_redirects=True)


def _claimed(app):
    application = _application(app)
    reviewer, user = signed_in_client(app, Role.LEGAL_REVIEWER)
    _post(reviewer, "/admin/review/claim-next")
    db.session.refresh(application)
    return application, reviewer, user


def _accept_all(reviewer, application):
    for document in application.documents:
        _post(reviewer, f"/admin/review/{application.id}/documents/{document.id}/review", decision="accept")


def test_queue_lists_applications_with_their_sla_state(app):
    application = _application(app)
    reviewer, _ = signed_in_client(app, Role.LEGAL_REVIEWER)

    page = reviewer.get("/admin/review/").get_data(as_text=True)

    assert application.company_name in page
    assert "On track" in page or "At risk" in page or "Breached" in page


def test_queue_search_finds_by_tax_id(app):
    _application(app)
    _application(app, company_name="Otra Empresa S.A.", company_tax_id="A58818501")
    reviewer, _ = signed_in_client(app, Role.LEGAL_REVIEWER)

    page = reviewer.get("/admin/review/", query_string={"q": "a58818501"}).get_data(as_text=True)

    assert "Otra Empresa" in page
    assert "Transportes Ejemplo" not in page


def test_claim_next_opens_the_earliest_application_for_review(app):
    application, _, user = _claimed(app)

    assert application.status == ApplicationStatus.IN_REVIEW
    assert application.claimed_by_id == user.id


def test_claim_next_on_an_empty_queue_says_so(app):
    reviewer, _ = signed_in_client(app, Role.LEGAL_REVIEWER)

    page = _post(reviewer, "/admin/review/claim-next").get_data(as_text=True)

    assert "nothing is waiting" in page


def test_viewing_a_document_is_audited_and_opens_a_short_lived_link(app):
    application, reviewer, user = _claimed(app)
    document = application.documents[0]

    response = reviewer.get(f"/admin/review/{application.id}/documents/{document.id}/view")

    assert response.status_code == 302
    assert response.headers["Location"].startswith("/files/")
    served = reviewer.get(response.headers["Location"])
    served.close()
    assert served.status_code == 200 and served.content_type == "application/pdf"
    event = db.session.execute(select(AuditEvent).where(AuditEvent.action == "document.viewed")).scalar_one()
    assert (event.actor_id, event.subject_id) == (str(user.id), str(document.id))


def test_accepting_all_documents_then_approving_opens_a_call_task(app):
    application, reviewer, _ = _claimed(app)
    _accept_all(reviewer, application)

    _post(reviewer, f"/admin/review/{application.id}/approve", confirmed="1")

    db.session.refresh(application)
    assert application.status == ApplicationStatus.CALL_SCHEDULED
    task = db.session.execute(select(CallTask)).scalar_one()
    assert task.deadline == application.call_deadline


def test_approve_is_refused_while_a_document_is_not_accepted(app):
    application, reviewer, _ = _claimed(app)

    page = _post(reviewer, f"/admin/review/{application.id}/approve", confirmed="1").get_data(as_text=True)

    db.session.refresh(application)
    assert application.status == ApplicationStatus.IN_REVIEW
    assert "Not done" in page


def test_requesting_documents_emails_the_applicant_and_pauses(app):
    application, reviewer, _ = _claimed(app)
    deed = application.documents[0]
    _post(
        reviewer,
        f"/admin/review/{application.id}/documents/{deed.id}/review",
        decision="reject",
        reason="illegible",
    )

    _post(
        reviewer,
        f"/admin/review/{application.id}/request-documents",
        kinds="public_deed",
        message="Necesitamos una copia legible de la escritura.",
        confirmed="1",
    )

    db.session.refresh(application)
    assert application.status == ApplicationStatus.NEEDS_DOCUMENTS
    assert application.requested_documents == ["public_deed"]
    email = db.session.execute(select(OutboxMessage).order_by(OutboxMessage.id.desc())).scalars().first()
    assert "Necesitamos una copia legible de la escritura." in email.body_text


def test_rejection_needs_a_second_reviewer(app):
    application, first, _ = _claimed(app)
    _post(first, f"/admin/review/{application.id}/reject", reason="La empresa no existe en el registro.")
    db.session.refresh(application)
    assert application.status == ApplicationStatus.IN_REVIEW

    own = _post(first, f"/admin/review/{application.id}/confirm-rejection", confirmed="1").get_data(
        as_text=True
    )
    second, _ = signed_in_client(app, Role.LEGAL_REVIEWER)
    _post(second, f"/admin/review/{application.id}/confirm-rejection", confirmed="1")

    assert "Not done" in own
    db.session.refresh(application)
    assert application.status == ApplicationStatus.REJECTED


def test_only_the_claim_holder_can_decide(app):
    application, _, _ = _claimed(app)
    other, _ = signed_in_client(app, Role.LEGAL_REVIEWER)
    document = application.documents[0]

    _post(other, f"/admin/review/{application.id}/documents/{document.id}/review", decision="accept")

    db.session.refresh(document)
    assert document.status == DocumentStatus.PENDING


def test_supervisors_read_but_cannot_decide(app):
    application, _, _ = _claimed(app)
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)

    assert supervisor.get(f"/admin/review/{application.id}").status_code == 200
    token = csrf_token_from(supervisor, "/admin/review/")
    response = supervisor.post(f"/admin/review/{application.id}/approve", data={"csrf_token": token})

    assert response.status_code == 403


def test_supervisor_reassigns_in_bulk(app):
    first = _application(app)
    second = _application(app, company_tax_id="A58818501")
    target_client, target = signed_in_client(app, Role.LEGAL_REVIEWER)
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)

    token = csrf_token_from(supervisor, "/admin/review/")
    supervisor.post(
        "/admin/review/reassign",
        data={"csrf_token": token, "application_id": [first.id, second.id], "reviewer_id": str(target.id)},
    )

    db.session.refresh(first)
    db.session.refresh(second)
    assert first.claimed_by_id == second.claimed_by_id == target.id
    mine = target_client.get("/admin/review/", query_string={"reviewer": "mine"}).get_data(as_text=True)
    assert mine.count(FIELDS["company_name"]) == 2


def test_other_roles_cannot_open_the_queue(app):
    agent, _ = signed_in_client(app, Role.CALL_AGENT)

    assert agent.get("/admin/review/").status_code == 403


def test_unknown_filter_values_are_ignored_not_a_crash(app):
    _application(app)
    reviewer, _ = signed_in_client(app, Role.LEGAL_REVIEWER)

    response = reviewer.get(
        "/admin/review/", query_string={"sla": "nonsense", "status": "x", "from": "yesterday"}
    )

    assert response.status_code == 200
    assert FIELDS["company_name"] in response.get_data(as_text=True)


def _next_page_url(page: str) -> str | None:
    found = re.search(r'href="([^"]+)" data-testid="next-page"', page)
    return html.unescape(found.group(1)) if found else None


def test_the_queue_shows_one_page_and_links_to_the_next(app, monkeypatch):
    monkeypatch.setattr(queue, "PAGE_SIZE", 1)
    sooner = _application(app)
    later = _application(app, company_name="Otra Empresa S.A.", company_tax_id="A58818501")
    # Submitted outside business hours, both would share a deadline and the order would be the ids'.
    later.call_deadline = sooner.call_deadline + timedelta(minutes=1)
    db.session.commit()
    reviewer, _ = signed_in_client(app, Role.LEGAL_REVIEWER)

    first = reviewer.get("/admin/review/").get_data(as_text=True)
    second = reviewer.get(_next_page_url(first)).get_data(as_text=True)

    assert "Transportes Ejemplo" in first and "Otra Empresa" not in first
    assert "Otra Empresa" in second and "Transportes Ejemplo" not in second
    assert _next_page_url(second) is None
    assert 'data-testid="first-page"' in second


def test_the_next_page_link_keeps_the_filters(app, monkeypatch):
    monkeypatch.setattr(queue, "PAGE_SIZE", 1)
    _application(app)
    _application(app, company_name="Otra Empresa S.A.", company_tax_id="A58818501")
    reviewer, _ = signed_in_client(app, Role.LEGAL_REVIEWER)

    first = reviewer.get("/admin/review/", query_string={"status": "submitted"}).get_data(as_text=True)

    assert "status=submitted" in _next_page_url(first)


def test_an_unknown_page_anchor_shows_the_first_page(app):
    _application(app)
    reviewer, _ = signed_in_client(app, Role.LEGAL_REVIEWER)

    response = reviewer.get("/admin/review/", query_string={"after": "no-such-application"})

    assert response.status_code == 200
    assert FIELDS["company_name"] in response.get_data(as_text=True)


def test_the_queue_page_counts_no_rows(app):
    _application(app)
    reviewer, _ = signed_in_client(app, Role.LEGAL_REVIEWER)
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement.lower())

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert reviewer.get("/admin/review/").status_code == 200
    finally:
        event.remove(db.engine, "before_cursor_execute", record)

    assert statements
    assert not [statement for statement in statements if "count(" in statement]


def test_reassigning_to_an_unknown_reviewer_is_refused(app):
    application, _, user = _claimed(app)
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)
    token = csrf_token_from(supervisor, "/admin/review/")

    supervisor.post(
        "/admin/review/reassign",
        data={"csrf_token": token, "application_id": application.id, "reviewer_id": "99999"},
    )

    db.session.refresh(application)
    assert application.claimed_by_id == user.id


def test_accept_all_accepts_every_pending_document_one_audit_event_each(app):
    application, reviewer, _ = _claimed(app)

    _post(reviewer, f"/admin/review/{application.id}/accept-pending")

    db.session.expire_all()
    assert {document.status for document in application.documents} == {DocumentStatus.ACCEPTED}
    events = db.session.execute(select(AuditEvent).where(AuditEvent.action == "document.accepted")).scalars()
    assert sorted(event.subject_id for event in events) == sorted(str(d.id) for d in application.documents)


@pytest.mark.parametrize(
    ("action", "fields"),
    [("approve", {}), ("request-documents", {"kinds": "public_deed", "message": "Otra copia, por favor."})],
)
def test_a_decision_without_confirmation_asks_first_and_changes_nothing(app, action, fields):
    application, reviewer, _ = _claimed(app)
    _accept_all(reviewer, application)

    response = _post(reviewer, f"/admin/review/{application.id}/{action}", **fields)

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'data-testid="confirmation"' in page
    assert f'action="/admin/review/{application.id}/{action}"' in page
    db.session.refresh(application)
    assert application.status == ApplicationStatus.IN_REVIEW
    assert db.session.execute(select(CallTask)).first() is None


def test_the_confirmation_page_resends_the_decision_confirmed(app):
    application, reviewer, _ = _claimed(app)
    _accept_all(reviewer, application)
    page = _post(reviewer, f"/admin/review/{application.id}/approve").get_data(as_text=True)
    form = page[page.index('data-testid="confirmation"') :].split("</form>")[0]
    hidden = dict(re.findall(r'name="([^"]+)"[^>]*value="([^"]*)"', form))

    reviewer.post(f"/admin/review/{application.id}/approve", data=hidden)

    assert hidden["confirmed"] == "1"
    db.session.refresh(application)
    assert application.status == ApplicationStatus.CALL_SCHEDULED


def test_confirming_a_rejection_without_confirmation_changes_nothing(app):
    application, first, _ = _claimed(app)
    _post(first, f"/admin/review/{application.id}/reject", reason="La empresa no existe en el registro.")
    second, _ = signed_in_client(app, Role.LEGAL_REVIEWER)

    page = _post(second, f"/admin/review/{application.id}/confirm-rejection").get_data(as_text=True)

    assert 'data-testid="confirmation"' in page
    db.session.refresh(application)
    assert application.status == ApplicationStatus.IN_REVIEW


def test_approve_and_claim_next_opens_the_next_application(app):
    application, reviewer, user = _claimed(app)
    following = _application(app, company_name="Otra Empresa S.A.", company_tax_id="A58818501")
    _accept_all(reviewer, application)
    token = csrf_token_from(reviewer, "/admin/review/")

    response = reviewer.post(
        f"/admin/review/{application.id}/approve",
        data={"csrf_token": token, "confirmed": "1", "then": "next"},
    )

    assert response.headers["Location"].endswith(f"/admin/review/{following.id}")
    db.session.refresh(application)
    db.session.refresh(following)
    assert application.status == ApplicationStatus.CALL_SCHEDULED
    assert (following.status, following.claimed_by_id) == (ApplicationStatus.IN_REVIEW, user.id)


def test_deciding_and_claiming_next_on_an_empty_queue_goes_back_to_the_queue(app):
    application, reviewer, _ = _claimed(app)
    _accept_all(reviewer, application)

    response = _post(reviewer, f"/admin/review/{application.id}/approve", confirmed="1", then="next")

    assert response.request.path == "/admin/review/"
    assert "nothing is waiting" in response.get_data(as_text=True)
    db.session.refresh(application)
    assert application.status == ApplicationStatus.CALL_SCHEDULED


def test_a_failed_decision_does_not_claim_the_next_application(app):
    application, reviewer, _ = _claimed(app)
    following = _application(app, company_tax_id="A58818501")

    page = _post(reviewer, f"/admin/review/{application.id}/approve", confirmed="1", then="next")

    assert page.request.path == f"/admin/review/{application.id}"
    db.session.refresh(following)
    assert following.claimed_by_id is None


def test_the_review_page_declares_its_keyboard_shortcuts(app):
    application, reviewer, _ = _claimed(app)

    page = reviewer.get(f"/admin/review/{application.id}").get_data(as_text=True)

    assert page.count('data-shortcut="d"') == 3
    assert 'data-testid="accept-all" data-shortcut="a"' in page
    assert 'data-testid="shortcut-help"' in page
    assert "js/shortcuts.js" in page and "js/confirm.js" in page

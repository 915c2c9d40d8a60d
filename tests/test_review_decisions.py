"""The legal review (issue 5): per-document decisions, notes, timeline, approve / request
documents / reject, and the retention of documents."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.audit.service import verify_chain
from backoffice.calls.models import CallTask, CallTaskStatus
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage, OutboxStatus
from backoffice.review import decisions
from backoffice.review.decisions import ReviewError
from backoffice.review.jobs import purge_expired_documents
from backoffice.review.models import (
    ApplicationDocument,
    ApplicationStatus,
    DocumentStatus,
    RepresentativeApplication,
    ReviewNote,
)
from backoffice.review.states import transition
from backoffice.staff.models import Role
from backoffice.storage import StorageError
from tests.factories import make_staff
from tests.test_api_representatives import FRIDAY_18H, MADRID, files, pdf_bytes
from tests.test_api_representatives import submit as api_submit

KINDS = ("public_deed", "power_of_attorney", "tax_id_document")
SYSTEM = Actor.system("tests")
MONDAY_10H = FRIDAY_18H + timedelta(days=2, hours=16)  # Monday 23 November 2026, 10:00 Madrid


@pytest.fixture
def app(make_app):
    app = make_app(REDIS_URL=None)  # outbox delivered inline, right after each commit
    with app.app_context():
        yield app


@pytest.fixture
def reviewer():
    return make_staff(Role.LEGAL_REVIEWER)


@pytest.fixture
def second_reviewer():
    return make_staff(Role.LEGAL_REVIEWER)


def new_application(client, *, language: str = "es") -> tuple[RepresentativeApplication, str]:
    """Submitted through the real API on Friday 18:00 (deadline Tuesday 18:00)."""
    with time_machine.travel(FRIDAY_18H, tick=False):
        response = api_submit(client, headers={"Accept-Language": language})
    assert response.status_code == 201, response.json
    return db.session.get(RepresentativeApplication, response.json["id"]), response.json["access_key"]


def start_review(application: RepresentativeApplication, reviewer) -> RepresentativeApplication:
    """What claiming from the queue does, as far as these rules care."""
    transition(application, ApplicationStatus.IN_REVIEW, actor=SYSTEM, now=MONDAY_10H)
    application.claimed_by_id = reviewer.id
    application.claimed_at = MONDAY_10H
    db.session.commit()
    return application


@pytest.fixture
def in_review(client, reviewer) -> RepresentativeApplication:
    application, _ = new_application(client)
    return start_review(application, reviewer)


def document(application: RepresentativeApplication, kind: str) -> ApplicationDocument:
    return decisions.current_documents(application)[kind]


def accept(application, reviewer, *kinds: str) -> None:
    for kind in kinds or KINDS:
        decisions.review_document(
            document(application, kind), accepted=True, reviewer=reviewer, actor=Actor.staff(reviewer)
        )


def reject(application, reviewer, kind: str, reason_code: str, reason_text: str | None = None) -> None:
    decisions.review_document(
        document(application, kind),
        accepted=False,
        reason_code=reason_code,
        reason_text=reason_text,
        reviewer=reviewer,
        actor=Actor.staff(reviewer),
    )


def emails(template: str) -> list[OutboxMessage]:
    return list(
        db.session.execute(
            select(OutboxMessage).where(OutboxMessage.template == template).order_by(OutboxMessage.id)
        ).scalars()
    )


def events(action: str) -> list[AuditEvent]:
    return list(
        db.session.execute(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        ).scalars()
    )


# Documents


def test_accepting_a_document_records_the_reviewer_and_is_audited(in_review, reviewer):
    deed = document(in_review, "public_deed")

    decisions.review_document(
        deed, accepted=True, reviewer=reviewer, actor=Actor.staff(reviewer), now=MONDAY_10H
    )
    db.session.commit()

    assert deed.status == DocumentStatus.ACCEPTED
    assert deed.reviewed_by_id == reviewer.id
    assert deed.reviewed_at == MONDAY_10H
    [event] = events("document.accepted")
    assert (event.subject_type, event.subject_id) == ("application_document", str(deed.id))
    assert event.before["status"] == "pending"
    assert event.after["status"] == "accepted"
    assert event.actor_id == str(reviewer.id)


def test_rejecting_a_document_keeps_the_reason_and_is_audited(in_review, reviewer):
    reject(in_review, reviewer, "power_of_attorney", "expired")
    db.session.commit()

    power = document(in_review, "power_of_attorney")
    assert (power.status, power.reason_code, power.reason_text) == (DocumentStatus.REJECTED, "expired", None)
    [event] = events("document.rejected")
    assert event.before == {"status": "pending", "reason_code": None, "reason_text": None}
    assert event.after["reason_code"] == "expired"


def test_accepting_the_pending_documents_leaves_a_rejected_one_rejected(in_review, reviewer):
    reject(in_review, reviewer, "power_of_attorney", "expired")

    accepted = decisions.accept_pending_documents(
        in_review, reviewer=reviewer, actor=Actor.staff(reviewer), now=MONDAY_10H
    )
    db.session.commit()

    assert [d.kind.value for d in accepted] == ["public_deed", "tax_id_document"]
    assert {kind: document(in_review, kind).status for kind in KINDS} == {
        "public_deed": DocumentStatus.ACCEPTED,
        "power_of_attorney": DocumentStatus.REJECTED,
        "tax_id_document": DocumentStatus.ACCEPTED,
    }
    assert sorted(event.subject_id for event in events("document.accepted")) == sorted(
        str(d.id) for d in accepted
    )


def test_accepting_the_pending_documents_with_none_pending_is_refused(in_review, reviewer):
    accept(in_review, reviewer)

    with pytest.raises(ReviewError) as refused:
        decisions.accept_pending_documents(in_review, reviewer=reviewer, actor=Actor.staff(reviewer))

    assert refused.value.code == "nothing_pending"


def test_accepting_the_pending_documents_needs_the_application_in_review(client, reviewer):
    application, _ = new_application(client)

    with pytest.raises(ReviewError) as refused:
        decisions.accept_pending_documents(application, reviewer=reviewer, actor=Actor.staff(reviewer))

    assert refused.value.code == "not_in_review"
    assert events("document.accepted") == []


@pytest.mark.parametrize(("reason_code", "code"), [(None, "reason_required"), ("blurry", "unknown_reason")])
def test_a_rejection_needs_a_reason_from_the_list(in_review, reviewer, reason_code, code):
    with pytest.raises(ReviewError) as refused:
        reject(in_review, reviewer, "public_deed", reason_code)

    assert refused.value.code == code
    assert document(in_review, "public_deed").status == DocumentStatus.PENDING
    assert events("document.rejected") == []


def test_other_needs_a_text(in_review, reviewer):
    with pytest.raises(ReviewError) as refused:
        reject(in_review, reviewer, "public_deed", "other", "   ")

    assert refused.value.code == "reason_text_required"


def test_other_with_a_text_is_kept(in_review, reviewer):
    reject(in_review, reviewer, "public_deed", "other", " Falta la firma del notario. ")

    deed = document(in_review, "public_deed")
    assert (deed.reason_code, deed.reason_text) == ("other", "Falta la firma del notario.")


def test_accepting_after_rejecting_clears_the_reason(in_review, reviewer):
    reject(in_review, reviewer, "public_deed", "other", "Falta una página")
    accept(in_review, reviewer, "public_deed")

    deed = document(in_review, "public_deed")
    assert (deed.status, deed.reason_code, deed.reason_text) == (DocumentStatus.ACCEPTED, None, None)


def test_documents_are_reviewed_only_while_the_application_is_in_review(client, reviewer):
    application, _ = new_application(client)

    with pytest.raises(ReviewError) as refused:
        accept(application, reviewer, "public_deed")

    assert refused.value.code == "not_in_review"
    assert document(application, "public_deed").status == DocumentStatus.PENDING


def test_reviewing_a_superseded_document_is_refused(client, reviewer):
    application, access_key = new_application(client)
    start_review(application, reviewer)
    old_deed = document(application, "public_deed")
    reject(application, reviewer, "public_deed", "illegible")
    decisions.request_documents(
        application, ["public_deed"], "- Escritura", reviewer=reviewer, actor=Actor.staff(reviewer)
    )
    db.session.commit()
    assert resubmit(client, application, access_key, ["public_deed"]).status_code == 200
    start_review(application, reviewer)

    with pytest.raises(ReviewError) as refused:
        decisions.review_document(old_deed, accepted=True, reviewer=reviewer, actor=Actor.staff(reviewer))

    assert refused.value.code == "document_not_current"
    assert old_deed.status == DocumentStatus.SUPERSEDED


# Notes and timeline


def test_a_note_is_kept_and_its_text_stays_out_of_the_audit(in_review, reviewer):
    note = decisions.add_note(
        in_review, author=reviewer, text="  Llamar al notario para confirmar  ", actor=Actor.staff(reviewer)
    )
    db.session.commit()

    assert db.session.get(ReviewNote, note.id).text == "Llamar al notario para confirmar"
    [event] = events("application.note_added")
    assert event.subject_id == in_review.id
    assert event.after["note_id"] == note.id
    assert event.after["length"] == len("Llamar al notario para confirmar")
    assert "notario" not in str(event.after)


@pytest.mark.parametrize(("text", "code"), [("   ", "note_required"), ("x" * 5001, "note_too_long")])
def test_empty_or_overlong_notes_are_refused(in_review, reviewer, text, code):
    with pytest.raises(ReviewError) as refused:
        decisions.add_note(in_review, author=reviewer, text=text, actor=Actor.staff(reviewer))

    assert refused.value.code == code
    assert db.session.execute(select(func.count(ReviewNote.id))).scalar() == 0


def test_timeline_lists_the_application_and_document_events_oldest_first(client, reviewer):
    other, _ = new_application(client)  # its events must not appear
    application, _ = new_application(client)
    start_review(application, reviewer)
    accept(application, reviewer)
    decisions.add_note(application, author=reviewer, text="Todo en orden", actor=Actor.staff(reviewer))
    decisions.approve(application, reviewer=reviewer, actor=Actor.staff(reviewer))
    db.session.commit()

    timeline = decisions.timeline(application)

    assert [event.action for event in timeline] == [
        "application.submitted",
        "application.in_review",
        "document.accepted",
        "document.accepted",
        "document.accepted",
        "application.note_added",
        "application.approved",
        "call_task.opened",
        "application.call_scheduled",
    ]
    assert [event.seq for event in timeline] == sorted(event.seq for event in timeline)
    assert other.id not in {event.subject_id for event in timeline}


# Approve


def test_approve_is_refused_until_all_three_documents_are_accepted(in_review, reviewer):
    accept(in_review, reviewer, "public_deed", "power_of_attorney")

    with pytest.raises(ReviewError) as refused:
        decisions.approve(in_review, reviewer=reviewer, actor=Actor.staff(reviewer))

    assert refused.value.code == "documents_not_accepted"
    assert refused.value.details["documents"]["tax_id_document"] == "pending"
    assert in_review.status == ApplicationStatus.IN_REVIEW
    assert db.session.execute(select(func.count(CallTask.id))).scalar() == 0


def test_approve_opens_one_call_task_with_the_applications_deadline(in_review, reviewer):
    accept(in_review, reviewer)

    task = decisions.approve(in_review, reviewer=reviewer, actor=Actor.staff(reviewer), now=MONDAY_10H)
    db.session.commit()

    assert in_review.status == ApplicationStatus.CALL_SCHEDULED
    assert in_review.claimed_by_id is None
    [stored] = db.session.execute(select(CallTask)).scalars().all()
    assert stored.id == task.id
    assert stored.application_id == in_review.id
    assert stored.status == CallTaskStatus.OPEN
    assert stored.deadline == in_review.call_deadline
    assert stored.deadline.astimezone(MADRID) == FRIDAY_18H + timedelta(days=4)  # Tuesday 18:00
    [opened] = events("call_task.opened")
    assert opened.subject_id == str(task.id)
    assert opened.after["application_id"] == in_review.id


def test_approve_is_refused_while_a_rejection_is_proposed(in_review, reviewer, second_reviewer):
    accept(in_review, reviewer)
    decisions.propose_rejection(in_review, "Empresa disuelta", reviewer=reviewer, actor=Actor.staff(reviewer))

    with pytest.raises(ReviewError) as refused:
        decisions.approve(in_review, reviewer=second_reviewer, actor=Actor.staff(second_reviewer))

    assert refused.value.code == "rejection_proposed"


# Request documents


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        (
            "es",
            "- Escritura pública: Ilegible\n"
            "- Documento de identidad del representante (DNI/NIE): Otro motivo — Falta el reverso",
        ),
        (
            "en",
            "- Public deed: Illegible\n"
            "- Representative's tax ID document (DNI/NIE): Other reason — The back is missing",
        ),
    ],
)
def test_the_request_message_is_composed_from_the_rejection_reasons(client, reviewer, language, expected):
    application, _ = new_application(client, language=language)
    start_review(application, reviewer)
    accept(application, reviewer, "power_of_attorney")
    reject(application, reviewer, "public_deed", "illegible")
    text = "Falta el reverso" if language == "es" else "The back is missing"
    reject(application, reviewer, "tax_id_document", "other", text)

    message = decisions.compose_documents_request(application, ["tax_id_document", "public_deed"])

    assert message == expected


def test_requesting_documents_sends_the_edited_message_and_pauses_the_application(in_review, reviewer):
    accept(in_review, reviewer, "public_deed", "tax_id_document")
    reject(in_review, reviewer, "power_of_attorney", "expired")
    edited = decisions.compose_documents_request(in_review, ["power_of_attorney"]) + (
        "\nEl poder debe estar vigente a fecha de hoy. <Gracias>"
    )

    decisions.request_documents(
        in_review,
        ["power_of_attorney"],
        edited,
        reviewer=reviewer,
        actor=Actor.staff(reviewer),
        now=MONDAY_10H,
    )
    db.session.commit()

    assert in_review.status == ApplicationStatus.NEEDS_DOCUMENTS
    assert in_review.requested_documents == ["power_of_attorney"]
    assert in_review.claimed_by_id is None
    [email] = emails("documents_requested")
    assert email.recipient == "lucia.perez@transportes.example"
    assert email.language == "es"
    assert email.status == OutboxStatus.SENT
    assert "- Poder notarial: Caducado" in email.body_text
    assert "El poder debe estar vigente a fecha de hoy. <Gracias>" in email.body_text
    assert f"POST /api/v1/representative-applications/{in_review.id}/documents" in email.body_text
    assert "clave de acceso" in email.body_text
    assert "&lt;Gracias&gt;" in email.body_html
    [event] = events("application.needs_documents")
    assert event.after["requested"] == ["power_of_attorney"]


def test_the_english_request_says_how_to_upload(client, reviewer):
    application, _ = new_application(client, language="en")
    start_review(application, reviewer)
    reject(application, reviewer, "public_deed", "name_mismatch")

    decisions.request_documents(
        application, ["public_deed"], "- Public deed: wrong name", reviewer=reviewer, actor=SYSTEM
    )
    db.session.commit()

    [email] = emails("documents_requested")
    assert email.language == "en"
    assert "- Public deed: wrong name" in email.body_text
    assert "access key" in email.body_text
    assert f"/api/v1/representative-applications/{application.id}/documents" in email.body_text


def resubmit(client, application, access_key, kinds):
    uploads = files(**{kind: (None, None) for kind in KINDS if kind not in kinds})
    for kind in kinds:
        uploads[kind] = files(**{kind: (pdf_bytes(f"Nuevo {kind}"), f"{kind}.pdf")})[kind]
    with time_machine.travel(MONDAY_10H + timedelta(days=1), tick=False):  # Tuesday 10:00
        response = client.post(
            f"/api/v1/representative-applications/{application.id}/documents",
            data=uploads,
            headers={"X-Access-Key": access_key},
            content_type="multipart/form-data",
        )
    db.session.expire_all()  # the request committed in its own session
    return response


def test_the_applicants_upload_puts_it_back_with_a_new_deadline_and_only_new_documents_pending(
    client, reviewer
):
    application, access_key = new_application(client)
    start_review(application, reviewer)
    accept(application, reviewer, "public_deed", "tax_id_document")
    reject(application, reviewer, "power_of_attorney", "expired")
    decisions.request_documents(
        application, ["power_of_attorney"], "- Poder", reviewer=reviewer, actor=SYSTEM, now=MONDAY_10H
    )
    db.session.commit()

    response = resubmit(client, application, access_key, ["power_of_attorney"])

    assert response.status_code == 200, response.json
    assert application.status == ApplicationStatus.SUBMITTED
    # Tuesday 10:00 + 48 working-day hours = Thursday 10:00
    assert application.call_deadline.astimezone(MADRID) == MONDAY_10H + timedelta(days=3)
    current = {kind: doc.status for kind, doc in decisions.current_documents(application).items()}
    assert current == {
        "public_deed": DocumentStatus.ACCEPTED,
        "power_of_attorney": DocumentStatus.PENDING,
        "tax_id_document": DocumentStatus.ACCEPTED,
    }


@pytest.mark.parametrize(("kinds", "code"), [([], "nothing_requested"), (["passport"], "unknown_document")])
def test_the_requested_documents_must_be_a_non_empty_subset_of_the_three(in_review, reviewer, kinds, code):
    with pytest.raises(ReviewError) as refused:
        decisions.request_documents(in_review, kinds, "Envíalos", reviewer=reviewer, actor=SYSTEM)

    assert refused.value.code == code
    assert in_review.status == ApplicationStatus.IN_REVIEW
    assert emails("documents_requested") == []


def test_the_request_needs_a_message(in_review, reviewer):
    with pytest.raises(ReviewError) as refused:
        decisions.request_documents(in_review, ["public_deed"], "  \n ", reviewer=reviewer, actor=SYSTEM)

    assert refused.value.code == "message_required"


# Reject


def test_a_proposed_rejection_waits_for_a_second_reviewer(in_review, reviewer):
    decisions.propose_rejection(
        in_review, "La empresa no figura en el registro", reviewer=reviewer, actor=Actor.staff(reviewer)
    )
    db.session.commit()

    assert in_review.status == ApplicationStatus.IN_REVIEW
    assert in_review.rejection_proposed_by_id == reviewer.id
    assert events("application.rejection_proposed")[0].after["rejection_reason"] == (
        "La empresa no figura en el registro"
    )
    assert emails("application_rejected") == []


def test_the_proposer_cannot_confirm_their_own_rejection(in_review, reviewer):
    decisions.propose_rejection(in_review, "Motivo", reviewer=reviewer, actor=Actor.staff(reviewer))

    with pytest.raises(ReviewError) as refused:
        decisions.confirm_rejection(in_review, confirmer=reviewer, actor=Actor.staff(reviewer))

    assert refused.value.code == "same_reviewer"
    assert in_review.status == ApplicationStatus.IN_REVIEW


def test_a_second_reviewer_confirms_and_the_applicant_is_emailed_the_reason(
    in_review, reviewer, second_reviewer
):
    reason = "La escritura no corresponde a la empresa indicada."
    decisions.propose_rejection(in_review, reason, reviewer=reviewer, actor=Actor.staff(reviewer))

    decisions.confirm_rejection(
        in_review, confirmer=second_reviewer, actor=Actor.staff(second_reviewer), now=MONDAY_10H
    )
    db.session.commit()

    assert in_review.status == ApplicationStatus.REJECTED
    assert in_review.decided_at == MONDAY_10H
    [event] = events("application.rejected")
    assert event.actor_id == str(second_reviewer.id)
    assert event.after["proposed_by_id"] == reviewer.id
    assert event.after["confirmed_by_id"] == second_reviewer.id
    [email] = emails("application_rejected")
    assert email.recipient == in_review.email
    assert email.subject == "Tu solicitud de alta como representante no ha sido aprobada"
    assert reason in email.body_text
    assert "90 días" in email.body_text


@pytest.mark.parametrize("who", ["call_agent", "inactive"])
def test_only_an_active_legal_reviewer_confirms(in_review, reviewer, who):
    if who == "inactive":
        confirmer = make_staff(Role.LEGAL_REVIEWER, active=False)
    else:
        confirmer = make_staff(Role.CALL_AGENT)
    decisions.propose_rejection(in_review, "Motivo", reviewer=reviewer, actor=SYSTEM)

    with pytest.raises(ReviewError) as refused:
        decisions.confirm_rejection(in_review, confirmer=confirmer, actor=SYSTEM)

    assert refused.value.code == "not_a_reviewer"


def test_a_withdrawn_rejection_cannot_be_confirmed(in_review, reviewer, second_reviewer):
    decisions.propose_rejection(in_review, "Motivo", reviewer=reviewer, actor=SYSTEM)
    decisions.withdraw_rejection(in_review, reviewer=reviewer, actor=SYSTEM)

    with pytest.raises(ReviewError) as refused:
        decisions.confirm_rejection(in_review, confirmer=second_reviewer, actor=SYSTEM)

    assert refused.value.code == "no_rejection_proposed"
    assert [event.action for event in decisions.timeline(in_review)][-2:] == [
        "application.rejection_proposed",
        "application.rejection_withdrawn",
    ]


def test_a_rejection_needs_a_reason(in_review, reviewer):
    with pytest.raises(ReviewError) as refused:
        decisions.propose_rejection(in_review, " ", reviewer=reviewer, actor=SYSTEM)

    assert refused.value.code == "reason_required"


def test_without_confirmation_one_reviewer_rejects_at_once(make_app):
    app = make_app(REDIS_URL=None, REVIEW_REJECTION_NEEDS_CONFIRMATION=False)
    with app.app_context():
        reviewer = make_staff(Role.LEGAL_REVIEWER)
        application, _ = new_application(app.test_client(), language="en")
        start_review(application, reviewer)

        decisions.propose_rejection(
            application, "The company is dissolved.", reviewer=reviewer, actor=Actor.staff(reviewer)
        )
        db.session.commit()

        assert application.status == ApplicationStatus.REJECTED
        assert events("application.rejection_proposed") == []
        assert events("application.rejected")[0].after["confirmation"] == "not_required"
        [email] = emails("application_rejected")
        assert email.language == "en"
        assert "The company is dissolved." in email.body_text


# Illegal moves


def test_approving_a_submitted_application_is_refused(client, reviewer):
    application, _ = new_application(client)

    with pytest.raises(ReviewError) as refused:
        decisions.approve(application, reviewer=reviewer, actor=SYSTEM)

    assert refused.value.code == "not_in_review"
    assert application.status == ApplicationStatus.SUBMITTED
    assert events("application.approved") == []


def test_confirming_without_a_proposal_is_refused(in_review, second_reviewer):
    with pytest.raises(ReviewError) as refused:
        decisions.confirm_rejection(in_review, confirmer=second_reviewer, actor=SYSTEM)

    assert refused.value.code == "no_rejection_proposed"
    assert in_review.status == ApplicationStatus.IN_REVIEW


@pytest.mark.parametrize(
    "decide",
    [
        lambda app, who: decisions.request_documents(app, ["public_deed"], "x", reviewer=who, actor=SYSTEM),
        lambda app, who: decisions.propose_rejection(app, "x", reviewer=who, actor=SYSTEM),
        lambda app, who: decisions.approve(app, reviewer=who, actor=SYSTEM),
    ],
    ids=["request_documents", "propose_rejection", "approve"],
)
def test_no_decision_on_an_application_already_decided(in_review, reviewer, second_reviewer, decide):
    decisions.propose_rejection(in_review, "Motivo", reviewer=reviewer, actor=SYSTEM)
    decisions.confirm_rejection(in_review, confirmer=second_reviewer, actor=SYSTEM)
    db.session.commit()

    with pytest.raises(ReviewError) as refused:
        decide(in_review, reviewer)

    assert refused.value.code == "not_in_review"
    assert in_review.status == ApplicationStatus.REJECTED


# Retention


def rejected_application(client, reviewer, second_reviewer, *, at):
    application, _ = new_application(client)
    start_review(application, reviewer)
    decisions.propose_rejection(application, "Motivo", reviewer=reviewer, actor=SYSTEM)
    decisions.confirm_rejection(application, confirmer=second_reviewer, actor=SYSTEM, now=at)
    db.session.commit()
    return application


def stored_keys(application) -> list[str]:
    return [doc.storage_key for doc in application.documents]


@pytest.mark.parametrize(("days", "purged"), [(89, 0), (90, 3)])
def test_documents_are_deleted_from_storage_90_days_after_the_rejection(
    app, client, reviewer, second_reviewer, days, purged
):
    application = rejected_application(client, reviewer, second_reviewer, at=MONDAY_10H)
    keys = stored_keys(application)
    storage = app.extensions["storage"]

    count = purge_expired_documents(now=MONDAY_10H + timedelta(days=days))
    db.session.commit()

    assert count == purged
    assert [storage.exists(key) for key in keys] == [not purged] * 3


def test_purging_keeps_the_metadata_and_the_audit_and_is_audited(client, reviewer, second_reviewer):
    application = rejected_application(client, reviewer, second_reviewer, at=MONDAY_10H)
    hashes = [doc.sha256 for doc in application.documents]
    later = MONDAY_10H + timedelta(days=90)

    purge_expired_documents(now=later)
    db.session.commit()

    documents = db.session.execute(select(ApplicationDocument)).scalars().all()
    assert [doc.sha256 for doc in documents] == hashes
    assert all(doc.storage_key is None and doc.deleted_at == later for doc in documents)
    assert db.session.get(RepresentativeApplication, application.id).status == ApplicationStatus.REJECTED
    [event] = events("documents.purged")
    assert event.subject_id == application.id
    assert event.actor_kind == "system"
    assert sorted(event.after["documents"]) == sorted(doc.id for doc in documents)
    assert "application.rejected" in [e.action for e in decisions.timeline(application)]
    assert verify_chain().ok


def test_a_second_run_purges_nothing(client, reviewer, second_reviewer):
    rejected_application(client, reviewer, second_reviewer, at=MONDAY_10H)
    purge_expired_documents(now=MONDAY_10H + timedelta(days=90))
    db.session.commit()

    assert purge_expired_documents(now=MONDAY_10H + timedelta(days=91)) == 0
    assert len(events("documents.purged")) == 1


def test_expired_applications_are_purged_and_live_ones_are_not(app, client, reviewer):
    expired, _ = new_application(client)
    transition(expired, ApplicationStatus.EXPIRED, actor=SYSTEM, now=MONDAY_10H)
    db.session.commit()
    approved, _ = new_application(client)
    start_review(approved, reviewer)
    accept(approved, reviewer)
    decisions.approve(approved, reviewer=reviewer, actor=SYSTEM, now=MONDAY_10H)
    db.session.commit()

    count = purge_expired_documents(now=MONDAY_10H + timedelta(days=365))
    db.session.commit()

    assert count == 3
    assert all(doc.deleted_at is not None for doc in expired.documents)
    assert all(app.extensions["storage"].exists(key) for key in stored_keys(approved))


def test_a_storage_failure_on_one_file_does_not_stop_the_others(
    app, client, reviewer, second_reviewer, monkeypatch, caplog
):
    first = rejected_application(client, reviewer, second_reviewer, at=MONDAY_10H)
    second = rejected_application(client, reviewer, second_reviewer, at=MONDAY_10H)
    storage = app.extensions["storage"]
    broken = first.documents[1]
    broken_key = broken.storage_key
    real_delete = storage.delete

    def delete(key):
        if key == broken_key:
            raise StorageError("S3 delete_object failed")
        real_delete(key)

    monkeypatch.setattr(storage, "delete", delete)

    count = purge_expired_documents(now=MONDAY_10H + timedelta(days=90))
    db.session.commit()

    assert count == 5
    assert broken.storage_key == broken_key and broken.deleted_at is None
    assert storage.exists(broken_key)
    assert all(doc.deleted_at is not None for doc in second.documents)
    assert str(broken.id) in caplog.text
    [first_event] = [e for e in events("documents.purged") if e.subject_id == first.id]
    assert first_event.after["failed"] == [broken.id]


def test_the_retention_job_runs_from_the_periodic_runner(app, client, reviewer, second_reviewer):
    rejected_application(client, reviewer, second_reviewer, at=MONDAY_10H)

    with time_machine.travel(MONDAY_10H + timedelta(days=100), tick=False):
        result = app.test_cli_runner().invoke(args=["jobs", "run-periodic"])

    assert result.exit_code == 0, result.output
    assert "document-retention: 3" in result.output.splitlines()

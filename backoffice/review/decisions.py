"""The legal team's review: each document accepted or rejected with a reason, internal notes,
the application's timeline, and the decisions (approve, request documents, reject).

Every status change goes through `states.transition`, which refuses illegal moves and audits
them. The functions here refuse, with a `ReviewError` and a stable code, what the state
machine would allow but the review rules do not (approving with a document not accepted,
confirming one's own rejection, ...). They flush, never commit: the caller commits, and the
emails written to the outbox leave only then.

Audit subjects: an application is `representative_application`, a document
`application_document` (its id), a call task `call_task`. `timeline` reads those three.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import and_, func, or_, select

from backoffice import audit
from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.calls.models import CallTask, CallTaskStatus
from backoffice.calls.service import request_replan
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.notifications.service import pick_language, queue_email
from backoffice.review.models import (
    ApplicationDocument,
    ApplicationStatus,
    DocumentKind,
    DocumentStatus,
    RepresentativeApplication,
    ReviewNote,
)
from backoffice.review.states import STATUS_LABELS, transition
from backoffice.staff.models import Role, StaffUser

APPLICATION_SUBJECT = "representative_application"
DOCUMENT_SUBJECT = "application_document"
CALL_TASK_SUBJECT = "call_task"

REJECTION_REASONS = ("illegible", "expired", "wrong_document", "name_mismatch", "incomplete", "other")
REASON_LABELS: dict[str, dict[str, str]] = {
    "es": {
        "illegible": "Ilegible",
        "expired": "Caducado",
        "wrong_document": "No es el documento solicitado",
        "name_mismatch": "El nombre no coincide con el de la solicitud",
        "incomplete": "Incompleto (faltan páginas o partes)",
        "other": "Otro motivo",
    },
    "en": {
        "illegible": "Illegible",
        "expired": "Expired",
        "wrong_document": "Not the requested document",
        "name_mismatch": "The name does not match the application",
        "incomplete": "Incomplete (pages or parts missing)",
        "other": "Other reason",
    },
}
DOCUMENT_LABELS: dict[str, dict[str, str]] = {
    "es": {
        "public_deed": "Escritura pública",
        "power_of_attorney": "Poder notarial",
        "tax_id_document": "Documento de identidad del representante (DNI/NIE)",
    },
    "en": {
        "public_deed": "Public deed",
        "power_of_attorney": "Power of attorney",
        "tax_id_document": "Representative's tax ID document (DNI/NIE)",
    },
}
DOCUMENT_KINDS = tuple(kind.value for kind in DocumentKind)

MAX_NOTE_LENGTH = 5000
MAX_REASON_TEXT_LENGTH = 2000
MAX_MESSAGE_LENGTH = 5000
MAX_REJECTION_REASON_LENGTH = 5000
UPLOAD_PATH = "/api/v1/representative-applications/{id}/documents"


class ReviewError(Exception):
    """A review action refused by the rules; nothing was changed. `code` is stable (views
    translate it); `details` says more where useful (e.g. which documents are not accepted).

    Codes: not_in_review, document_not_current, reason_required, unknown_reason,
    reason_text_required, reason_too_long, note_required, note_too_long,
    documents_not_accepted, rejection_proposed, nothing_requested, unknown_document,
    message_required, message_too_long, no_rejection_proposed, same_reviewer, not_a_reviewer,
    nothing_pending."""

    def __init__(self, code: str, message: str | None = None, **details: Any):
        super().__init__(message or code)
        self.code = code
        self.details = details


# Reading


def current_documents(application: RepresentativeApplication) -> dict[str, ApplicationDocument]:
    """The document under review for each kind (a resubmission supersedes the older one)."""
    return {
        document.kind.value: document
        for document in application.documents
        if document.status != DocumentStatus.SUPERSEDED
    }


def timeline(application: RepresentativeApplication) -> list[AuditEvent]:
    """The application's audit events, its documents' and its call tasks', oldest first
    (by the audit log's sequence, which is the order they were written in)."""
    document_ids = [str(document.id) for document in application.documents]
    task_ids = [
        str(task_id)
        for task_id in db.session.execute(
            select(CallTask.id).where(CallTask.application_id == application.id)
        ).scalars()
    ]
    conditions = [
        and_(AuditEvent.subject_type == APPLICATION_SUBJECT, AuditEvent.subject_id == application.id)
    ]
    if document_ids:
        conditions.append(
            and_(AuditEvent.subject_type == DOCUMENT_SUBJECT, AuditEvent.subject_id.in_(document_ids))
        )
    if task_ids:
        conditions.append(
            and_(AuditEvent.subject_type == CALL_TASK_SUBJECT, AuditEvent.subject_id.in_(task_ids))
        )
    return list(
        db.session.execute(select(AuditEvent).where(or_(*conditions)).order_by(AuditEvent.seq)).scalars()
    )


# Helpers


def _lock(application: RepresentativeApplication) -> RepresentativeApplication:
    """Re-read the application under a row lock (PostgreSQL), so two reviewers deciding at
    once are serialised and the second one sees the first one's decision."""
    db.session.flush()
    db.session.refresh(application, with_for_update=True)
    return application


def _require_in_review(application: RepresentativeApplication) -> None:
    if application.status != ApplicationStatus.IN_REVIEW:
        raise ReviewError(
            "not_in_review",
            _(
                "Application %(id)s is %(status)s, not in review.",
                id=application.id,
                status=STATUS_LABELS[application.status],
            ),
        )


def _require_no_proposal(application: RepresentativeApplication) -> None:
    if application.rejection_proposed_by_id is not None:
        raise ReviewError("rejection_proposed", _("A rejection is proposed: confirm or withdraw it first."))


def _at_most(limit: int) -> str:
    return _("At most %(limit)d characters.", limit=limit)


def _release_claim(application: RepresentativeApplication) -> None:
    application.claimed_by_id = None
    application.claimed_at = None


def _language(application: RepresentativeApplication) -> str:
    return pick_language(application.language)


def _requested_kinds(kinds: Iterable[str]) -> list[str]:
    """A non-empty subset of the three kinds, in the usual order, without repeats."""
    chosen = {kinds} if isinstance(kinds, str) else {str(kind) for kind in kinds}
    unknown = sorted(chosen - set(DOCUMENT_KINDS))
    if unknown:
        raise ReviewError(
            "unknown_document",
            _("Unknown document kinds: %(kinds)s.", kinds=", ".join(unknown)),
            kinds=unknown,
        )
    if not chosen:
        raise ReviewError("nothing_requested", _("Choose at least one document to request."))
    return [kind for kind in DOCUMENT_KINDS if kind in chosen]


def _clean_text(value: str | None) -> str:
    return (value or "").strip()


def _document_state(document: ApplicationDocument) -> dict[str, Any]:
    return {
        "status": document.status.value,
        "reason_code": document.reason_code,
        "reason_text": document.reason_text,
    }


# Documents and notes


def review_document(
    document: ApplicationDocument,
    *,
    accepted: bool,
    reason_code: str | None = None,
    reason_text: str | None = None,
    reviewer: StaffUser,
    actor: Actor,
    now: datetime | None = None,
) -> ApplicationDocument:
    """Accept, or reject with a reason from `REJECTION_REASONS` ("other" needs a text).

    The reason text is optional for the other reasons; it is written for the applicant (it
    goes into the default "request documents" message), so internal remarks belong in notes.
    A reviewer may change their mind while the application is in review."""
    now = now or utcnow()
    application = _lock(document.application)
    _require_in_review(application)
    if document.status == DocumentStatus.SUPERSEDED or document.deleted_at is not None:
        raise ReviewError("document_not_current", _("This document was replaced by a newer upload."))
    text = _clean_text(reason_text)
    if accepted:
        code, text = None, ""
        new_status = DocumentStatus.ACCEPTED
    else:
        code = _clean_text(reason_code)
        if not code:
            raise ReviewError("reason_required", _("Choose why the document is rejected."))
        if code not in REJECTION_REASONS:
            raise ReviewError("unknown_reason", _("Unknown rejection reason %(reason)s.", reason=repr(code)))
        if code == "other" and not text:
            raise ReviewError("reason_text_required", _("Describe the reason when it is “Other reason”."))
        if len(text) > MAX_REASON_TEXT_LENGTH:
            raise ReviewError("reason_too_long", _at_most(MAX_REASON_TEXT_LENGTH))
        new_status = DocumentStatus.REJECTED
    before = _document_state(document)
    document.status = new_status
    document.reason_code = code
    document.reason_text = text or None
    document.reviewed_by_id = reviewer.id
    document.reviewed_at = now
    application.last_activity_at = now
    audit.record(
        "document.accepted" if accepted else "document.rejected",
        actor=actor,
        subject_type=DOCUMENT_SUBJECT,
        subject_id=document.id,
        before=before,
        after={**_document_state(document), "application_id": application.id, "kind": document.kind.value},
    )
    db.session.flush()
    return document


def accept_pending_documents(
    application: RepresentativeApplication,
    *,
    reviewer: StaffUser,
    actor: Actor,
    now: datetime | None = None,
) -> list[ApplicationDocument]:
    """Accept, in one step, every current document nobody has decided on yet: the usual case is
    three good documents. Each goes through `review_document` (same rules, one audit event
    each); a document already rejected stays rejected, since overriding it takes a decision."""
    now = now or utcnow()
    _require_in_review(_lock(application))
    pending = [
        document
        for document in current_documents(application).values()
        if document.status == DocumentStatus.PENDING and document.deleted_at is None
    ]
    if not pending:
        raise ReviewError("nothing_pending", _("No document is waiting for a decision."))
    return [
        review_document(document, accepted=True, reviewer=reviewer, actor=actor, now=now)
        for document in sorted(pending, key=lambda document: DOCUMENT_KINDS.index(document.kind.value))
    ]


def add_note(
    application: RepresentativeApplication,
    *,
    author: StaffUser,
    text: str,
    actor: Actor,
    now: datetime | None = None,
) -> ReviewNote:
    """An internal note (never shown to the applicant), in any status.

    Its text stays out of the audit log, which more people read than the legal team: the
    event records the note's id, length and SHA-256, which is enough to show later that the
    stored note is the one written then."""
    now = now or utcnow()
    text = _clean_text(text)
    if not text:
        raise ReviewError("note_required", _("The note is empty."))
    if len(text) > MAX_NOTE_LENGTH:
        raise ReviewError("note_too_long", _at_most(MAX_NOTE_LENGTH))
    note = ReviewNote(application_id=application.id, author_id=author.id, text=text, created_at=now)
    db.session.add(note)
    if application.status == ApplicationStatus.IN_REVIEW:
        application.last_activity_at = now
    db.session.flush()
    audit.record(
        "application.note_added",
        actor=actor,
        subject_type=APPLICATION_SUBJECT,
        subject_id=application.id,
        after={
            "note_id": note.id,
            "length": len(text),
            "sha256": hashlib.sha256(text.encode()).hexdigest(),
        },
    )
    return note


# Decisions


def approve(
    application: RepresentativeApplication,
    *,
    reviewer: StaffUser,
    actor: Actor,
    now: datetime | None = None,
) -> CallTask:
    """All three current documents accepted → `approved`, and a call task carrying the
    application's deadline (the promise made at the last submission) is opened."""
    now = now or utcnow()
    application = _lock(application)
    _require_in_review(application)
    _require_no_proposal(application)
    current = current_documents(application)
    statuses = {kind: current[kind].status.value if kind in current else None for kind in DOCUMENT_KINDS}
    if any(status != DocumentStatus.ACCEPTED.value for status in statuses.values()):
        raise ReviewError(
            "documents_not_accepted", _("All three documents must be accepted first."), documents=statuses
        )
    _release_claim(application)
    transition(
        application,
        ApplicationStatus.APPROVED,
        actor=actor,
        now=now,
        reviewer_id=reviewer.id,
        call_deadline=application.call_deadline.isoformat(),
    )
    task = db.session.execute(
        select(CallTask).where(
            CallTask.application_id == application.id, CallTask.status == CallTaskStatus.OPEN
        )
    ).scalar_one_or_none()
    if task is not None:  # approved again while a task is still open
        before = {"deadline": task.deadline.isoformat()}
        task.deadline = application.call_deadline
        action = "call_task.deadline_changed"
    else:
        before = None
        # A call already made (one that sent the application back to review) kept the promise.
        earlier_attempt = db.session.execute(
            select(func.min(CallTask.first_attempt_at)).where(CallTask.application_id == application.id)
        ).scalar()
        task = CallTask(
            application_id=application.id,
            status=CallTaskStatus.OPEN,
            deadline=application.call_deadline,
            created_at=now,
            first_attempt_at=earlier_attempt,
            source="legal_approval",
        )
        db.session.add(task)
        action = "call_task.opened"
    db.session.flush()
    audit.record(
        action,
        actor=actor,
        subject_type=CALL_TASK_SUBJECT,
        subject_id=task.id,
        before=before,
        after={"application_id": application.id, "deadline": task.deadline.isoformat(), "status": "open"},
    )
    transition(application, ApplicationStatus.CALL_SCHEDULED, actor=actor, now=now, call_task_id=task.id)
    request_replan()
    return task


def compose_documents_request(application: RepresentativeApplication, kinds: Iterable[str]) -> str:
    """The default message to the applicant, in their language: one line per requested
    document, naming it and why it was rejected (the label, then the reviewer's text if any)."""
    language = _language(application)
    current = current_documents(application)
    lines = []
    for kind in _requested_kinds(kinds):
        name = DOCUMENT_LABELS[language][kind]
        document = current.get(kind)
        if document is None or document.status != DocumentStatus.REJECTED or not document.reason_code:
            lines.append(f"- {name}")
            continue
        reason = REASON_LABELS[language].get(document.reason_code, document.reason_code)
        if document.reason_text:
            reason = f"{reason} — {document.reason_text}"
        lines.append(f"- {name}: {reason}")
    return "\n".join(lines)


def request_documents(
    application: RepresentativeApplication,
    kinds: Iterable[str],
    message: str,
    *,
    reviewer: StaffUser,
    actor: Actor,
    now: datetime | None = None,
) -> RepresentativeApplication:
    """Ask the applicant for some documents again, with the (edited) message → `needs_documents`.

    The promise is paused: the applicant's upload (`service.resubmit_documents`) puts the
    application back in the queue with a new 48-hour deadline and only the new documents
    pending. The claim is released, so whoever is free reviews the new documents."""
    now = now or utcnow()
    application = _lock(application)
    _require_in_review(application)
    _require_no_proposal(application)
    requested = _requested_kinds(kinds)
    message = _clean_text(message)
    if not message:
        raise ReviewError("message_required", _("Write the message to the applicant."))
    if len(message) > MAX_MESSAGE_LENGTH:
        raise ReviewError("message_too_long", _at_most(MAX_MESSAGE_LENGTH))
    language = _language(application)
    application.requested_documents = requested
    _release_claim(application)
    transition(
        application,
        ApplicationStatus.NEEDS_DOCUMENTS,
        actor=actor,
        now=now,
        reviewer_id=reviewer.id,
        requested=requested,
    )
    queue_email(
        application.email,
        "documents_requested",
        {
            "name": application.first_name,
            "company": application.company_name,
            "application_id": application.id,
            "message": message,
            "documents": [DOCUMENT_LABELS[language][kind] for kind in requested],
            "kinds": requested,
            "upload_path": UPLOAD_PATH.format(id=application.id),
            "contact_phone": current_app.config["CUSTOMER_CONTACT_PHONE"],
        },
        language=language,
    )
    return application


def propose_rejection(
    application: RepresentativeApplication,
    reason: str,
    *,
    reviewer: StaffUser,
    actor: Actor,
    now: datetime | None = None,
) -> RepresentativeApplication:
    """Propose rejecting, with the reason the applicant will read. With
    REVIEW_REJECTION_NEEDS_CONFIRMATION (the default) a second, different legal reviewer must
    confirm it; without it the application is rejected at once. A new proposal replaces an
    earlier one (audited); its author then cannot confirm it."""
    now = now or utcnow()
    application = _lock(application)
    _require_in_review(application)
    reason = _clean_text(reason)
    if not reason:
        raise ReviewError("reason_required", _("Write the reason for the rejection."))
    if len(reason) > MAX_REJECTION_REASON_LENGTH:
        raise ReviewError("reason_too_long", _at_most(MAX_REJECTION_REASON_LENGTH))
    before = _proposal(application)
    application.rejection_reason = reason
    application.rejection_proposed_by_id = reviewer.id
    application.rejection_proposed_at = now
    application.last_activity_at = now
    if not current_app.config["REVIEW_REJECTION_NEEDS_CONFIRMATION"]:
        return _reject(application, confirmed_by=None, actor=actor, now=now)
    audit.record(
        "application.rejection_proposed",
        actor=actor,
        subject_type=APPLICATION_SUBJECT,
        subject_id=application.id,
        before=before,
        after=_proposal(application),
    )
    db.session.flush()
    return application


def confirm_rejection(
    application: RepresentativeApplication,
    *,
    confirmer: StaffUser,
    actor: Actor,
    now: datetime | None = None,
) -> RepresentativeApplication:
    """The second legal reviewer confirms the proposed rejection → `rejected`, and the
    applicant is emailed the reason."""
    now = now or utcnow()
    application = _lock(application)
    _require_in_review(application)
    if application.rejection_proposed_by_id is None or not application.rejection_reason:
        raise ReviewError("no_rejection_proposed", _("No rejection has been proposed."))
    if confirmer.id == application.rejection_proposed_by_id:
        raise ReviewError("same_reviewer", _("The rejection must be confirmed by another reviewer."))
    if not confirmer.active or confirmer.role != Role.LEGAL_REVIEWER:
        raise ReviewError("not_a_reviewer", _("Only an active legal reviewer can confirm a rejection."))
    return _reject(application, confirmed_by=confirmer, actor=actor, now=now)


def withdraw_rejection(
    application: RepresentativeApplication,
    *,
    reviewer: StaffUser,
    actor: Actor,
    now: datetime | None = None,
) -> RepresentativeApplication:
    """Clear a proposed rejection (its author changed their mind, or a second reviewer
    disagrees); the application stays in review."""
    now = now or utcnow()
    application = _lock(application)
    _require_in_review(application)
    if application.rejection_proposed_by_id is None:
        raise ReviewError("no_rejection_proposed", _("No rejection has been proposed."))
    before = _proposal(application)
    application.rejection_reason = None
    application.rejection_proposed_by_id = None
    application.rejection_proposed_at = None
    application.last_activity_at = now
    audit.record(
        "application.rejection_withdrawn",
        actor=actor,
        subject_type=APPLICATION_SUBJECT,
        subject_id=application.id,
        before=before,
        after={**_proposal(application), "withdrawn_by_id": reviewer.id},
    )
    db.session.flush()
    return application


def _proposal(application: RepresentativeApplication) -> dict[str, Any]:
    return {
        "rejection_reason": application.rejection_reason,
        "proposed_by_id": application.rejection_proposed_by_id,
        "proposed_at": application.rejection_proposed_at.isoformat()
        if application.rejection_proposed_at
        else None,
    }


def _reject(
    application: RepresentativeApplication,
    *,
    confirmed_by: StaffUser | None,
    actor: Actor,
    now: datetime,
) -> RepresentativeApplication:
    _release_claim(application)
    transition(
        application,
        ApplicationStatus.REJECTED,
        actor=actor,
        now=now,
        reason=application.rejection_reason,
        proposed_by_id=application.rejection_proposed_by_id,
        confirmed_by_id=confirmed_by.id if confirmed_by is not None else None,
        confirmation="given" if confirmed_by is not None else "not_required",
    )
    queue_email(
        application.email,
        "application_rejected",
        {
            "name": application.first_name,
            "company": application.company_name,
            "application_id": application.id,
            "reason": application.rejection_reason,
            "retention_days": current_app.config["DOCUMENT_RETENTION_DAYS"],
            "contact_phone": current_app.config["CUSTOMER_CONTACT_PHONE"],
        },
        language=_language(application),
    )
    db.session.flush()
    return application

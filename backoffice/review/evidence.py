"""The evidence bundle of a representative application (issue 8.5): the submission, the
documents' hashes (as recorded, and as the stored files hash now), the legal team's decisions
and who made them, the validation calls with the fields confirmed or corrected, the completion
links (never their tokens), the SMS PIN's deliveries and tries (never a PIN), the signature
evidence with the contract as signed, the linked account and the audit trail.

Internal review notes stay out: their audit events (id, length, SHA-256) are in the trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask_babel import gettext as _
from sqlalchemy import select

from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.calls.models import CallTask
from backoffice.db import utcnow
from backoffice.evidence_bundle import (
    SIGNED_CONTRACT_SUBJECT,
    Bundle,
    Section,
    account_record,
    audit_events,
    audit_record,
    audit_section,
    build_bundle,
    code_record,
    code_section,
    record_download,
    signature_evidence,
    staff_of,
    stamp,
    stored_sha256,
)
from backoffice.extensions import db
from backoffice.review.completion import provider_terms
from backoffice.review.decisions import APPLICATION_SUBJECT, CALL_TASK_SUBJECT, DOCUMENT_SUBJECT
from backoffice.review.models import RepresentativeApplication, RepresentativeCompletion

# The legal team's decisions, as the audit log records them (each with its reviewer).
DECISION_ACTIONS = (
    "document.accepted",
    "document.rejected",
    "application.approved",
    "application.needs_documents",
    "application.rejection_proposed",
    "application.rejection_withdrawn",
    "application.rejected",
)
PIN_ACTIONS = ("completion.pin_rejected", "completion.contract_signed")


def _person(staff: dict[str, dict[str, Any]], staff_id: Any) -> dict[str, Any] | None:
    return None if staff_id is None else staff.get(str(staff_id), {"id": staff_id})


def _name(person: dict[str, Any] | None) -> str:
    if person is None:
        return "—"
    return f"{person.get('name', '?')} (staff #{person['id']})"


def _submission(application: RepresentativeApplication, staff: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": application.id,
        "status": application.status.value,
        "company_tax_id": application.company_tax_id,
        "company_name": application.company_name,
        "first_name": application.first_name,
        "last_name": application.last_name,
        "tax_id": application.tax_id,
        "email": application.email,
        "phone": application.phone,
        "preferred_call_times": application.preferred_call_times,
        "language": application.language,
        "created_at": application.created_at,
        "submitted_at": application.submitted_at,
        "call_deadline": application.call_deadline,
        "requested_documents": application.requested_documents,
        "decided_at": application.decided_at,
        "rejection_reason": application.rejection_reason,
        "rejection_proposed_by": _person(staff, application.rejection_proposed_by_id),
        "rejection_proposed_at": application.rejection_proposed_at,
        "note": "Current values; corrections made on the validation call are in records/calls.json.",
    }


def _documents(
    application: RepresentativeApplication, staff: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every upload, superseded ones too, each with the stored file's hash as it is now."""
    records = []
    for document in application.documents:
        current = stored_sha256(document.storage_key) if document.storage_key else None
        records.append(
            {
                "id": document.id,
                "kind": document.kind.value,
                "status": document.status.value,
                "display_name": document.display_name,
                "content_type": document.content_type,
                "size": document.size,
                "uploaded_at": document.uploaded_at,
                "sha256": document.sha256,
                "stored_file_sha256": current,
                "stored_file_matches": None if current is None else current == document.sha256,
                "reviewed_by": _person(staff, document.reviewed_by_id),
                "reviewed_at": document.reviewed_at,
                "reason_code": document.reason_code,
                "reason_text": document.reason_text,
                "deleted_at": document.deleted_at,
            }
        )
    return records


def _decisions(events: list[AuditEvent], staff: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "at": event.occurred_at,
            "action": event.action,
            "reviewer": _person(staff, event.actor_id) if event.actor_kind == "staff" else None,
            "actor_label": event.actor_label,
            "subject_type": event.subject_type,
            "subject_id": event.subject_id,
            "before": event.before,
            "after": event.after,
            "audit_seq": event.seq,
        }
        for event in events
        if event.action in DECISION_ACTIONS
    ]


def _calls(tasks: list[CallTask], staff: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "id": task.id,
            "status": task.status.value,
            "source": task.source,
            "created_at": task.created_at,
            "deadline": task.deadline,
            "first_attempt_at": task.first_attempt_at,
            "promise_met": None if task.first_attempt_at is None else task.first_attempt_at <= task.deadline,
            "closed_at": task.closed_at,
            "outcome": task.outcome,
            "assigned_agent": _person(staff, task.assigned_agent_id),
            "attempts": [
                {
                    "id": attempt.id,
                    "agent": _person(staff, attempt.agent_id),
                    "started_at": attempt.started_at,
                    "logged_at": attempt.logged_at,
                    "outcome": attempt.outcome.value,
                    "notes": attempt.notes,
                    "callback_at": attempt.callback_at,
                    "field_checks": attempt.field_checks,
                }
                for attempt in task.attempt_log
            ],
        }
        for task in tasks
    ]


def _completion(completion: RepresentativeCompletion) -> dict[str, Any]:
    """The link's record without its token hash or the contract's storage key."""
    return {
        "id": completion.id,
        "status": completion.status.value,
        "language": completion.language,
        "created_at": completion.created_at,
        "expires_at": completion.expires_at,
        "confirm_failures": completion.confirm_failures,
        "terms_version": completion.terms_version,
        "terms_sha256": completion.terms_sha256,
        "terms_accepted_at": completion.terms_accepted_at,
        "terms_accepted_ip": completion.terms_accepted_ip,
        "contract_version": completion.contract_version,
        "contract_sha256": completion.contract_sha256,
        "challenge_id": completion.challenge_id,
        "signed_contract_id": completion.signed_contract_id,
        "account_id": completion.account_id,
        "signed_at": completion.signed_at,
        "completed_at": completion.completed_at,
    }


def _terms_files(completions: list[RepresentativeCompletion]) -> dict[str, bytes]:
    """The exact provider terms each accepted, named by version and language."""
    files = {}
    for completion in completions:
        if completion.terms_version:
            terms = provider_terms(completion.language, completion.terms_version)
            files[f"provider-terms-{terms.version}-{terms.language}.txt"] = terms.text.encode()
    return files


def _pin_attempts(events: list[AuditEvent], completion: RepresentativeCompletion) -> list[AuditEvent]:
    return [
        event
        for event in events
        if event.action in PIN_ACTIONS and (event.after or {}).get("completion_id") == completion.id
    ]


def _document_row(document: dict[str, Any]) -> tuple[str, str]:
    if document["stored_file_matches"] is None:
        stored = _("stored file deleted")
    elif document["stored_file_matches"]:
        stored = _("stored file matches")
    else:
        stored = _("stored file DOES NOT match (now %(sha)s)", sha=document["stored_file_sha256"])
    return (
        f"{document['kind']} #{document['id']}",
        f"{document['status']} · {document['display_name']} · {document['content_type']} · "
        f"{document['size']} bytes · {stamp(document['uploaded_at'])}\n"
        f"SHA-256 {document['sha256']}; {stored}",
    )


def _attempt_row(attempt: dict[str, Any]) -> tuple[str, str]:
    checks = "; ".join(
        f"{field} {check['status']}"
        + (f" ({check.get('old')} -> {check.get('new')})" if check.get("status") == "corrected" else "")
        for field, check in sorted(attempt["field_checks"].items())
    )
    return (
        stamp(attempt["started_at"]),
        f"{attempt['outcome']} · {_name(attempt['agent'])}" + (f"\n{checks}" if checks else ""),
    )


def application_bundle(
    application: RepresentativeApplication, *, actor: Actor, now: datetime | None = None
) -> Bundle:
    """Build the bundle and audit that `actor` took it. StorageError propagates (503)."""
    now = now or utcnow()
    tasks = list(
        db.session.execute(
            select(CallTask).where(CallTask.application_id == application.id).order_by(CallTask.id)
        ).scalars()
    )
    completions = list(
        db.session.execute(
            select(RepresentativeCompletion)
            .where(RepresentativeCompletion.application_id == application.id)
            .order_by(RepresentativeCompletion.id)
        ).scalars()
    )
    signed = next((c for c in reversed(completions) if c.signed_contract_id), None)
    account_id = next((c.account_id for c in reversed(completions) if c.account_id), None)
    contract_ids = [c.signed_contract_id for c in completions if c.signed_contract_id]
    events = audit_events(
        {
            APPLICATION_SUBJECT: [application.id],
            DOCUMENT_SUBJECT: [d.id for d in application.documents],
            CALL_TASK_SUBJECT: [t.id for t in tasks],
            SIGNED_CONTRACT_SUBJECT: contract_ids,
        },
        account_id=account_id,
    )
    staff = staff_of(
        [application.rejection_proposed_by_id]
        + [d.reviewed_by_id for d in application.documents]
        + [e.actor_id for e in events if e.actor_kind == "staff"]
        + [t.assigned_agent_id for t in tasks]
        + [a.agent_id for t in tasks for a in t.attempt_log]
    )

    submission = _submission(application, staff)
    documents = _documents(application, staff)
    decisions = _decisions(events, staff)
    calls = _calls(tasks, staff)
    codes = [code_record(c.challenge_id, _pin_attempts(events, c)) for c in completions if c.challenge_id]
    signature, contract_files, signature_section = signature_evidence(
        signed.signed_contract_id if signed else None
    )
    account, account_section = account_record(account_id)

    sections = [
        Section(
            _("Application"),
            [
                (_("Company"), f"{application.company_name} ({application.company_tax_id})"),
                (_("Representative"), f"{application.representative_name}, {application.tax_id}"),
                (_("Email / phone"), f"{application.email} / {application.phone}"),
                (_("Status"), application.status.value),
                (_("Submitted at"), stamp(application.submitted_at)),
                (_("Call deadline"), stamp(application.call_deadline)),
                (_("Decided at"), stamp(application.decided_at)),
            ],
        ),
        Section(_("Documents"), [_document_row(document) for document in documents]),
        Section(
            _("Review decisions"),
            [(stamp(d["at"]), f"{d['action']} · {_name(d['reviewer'])}") for d in decisions],
        ),
        Section(_("Validation calls"), [_attempt_row(a) for task in calls for a in task["attempts"]]),
        Section(
            _("Completion links"),
            [
                (
                    _("Link #%(id)s", id=c.id),
                    _(
                        "%(status)s; sent %(sent)s; expires %(expires)s; terms %(terms)s accepted %(accepted)s",
                        status=c.status.value,
                        sent=stamp(c.created_at),
                        expires=stamp(c.expires_at),
                        terms=c.terms_version or "—",
                        accepted=stamp(c.terms_accepted_at),
                    ),
                )
                for c in completions
            ],
        ),
        *(code_section(record) for record in codes),
        signature_section,
        account_section,
        audit_section(events),
    ]
    bundle = build_bundle(
        filename=f"evidence-application-{application.id}-{now:%Y%m%dT%H%M%SZ}.zip",
        title=_("Evidence bundle: application %(company)s", company=application.company_name),
        subject_type=APPLICATION_SUBJECT,
        subject_id=application.id,
        sections=sections,
        records={
            "submission": submission,
            "documents": documents,
            "review_decisions": decisions,
            "calls": calls,
            "completion_links": [_completion(c) for c in completions],
            "sms_codes": codes,
            "signature": signature,
            "account": account,
            "audit_events": audit_record(events),
        },
        files={**contract_files, **_terms_files(completions)},
        actor=actor,
        now=now,
    )
    record_download(bundle, subject_type=APPLICATION_SUBJECT, subject_id=application.id, actor=actor)
    return bundle

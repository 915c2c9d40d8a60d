"""Linking portal accounts to policyholder records, and the association cases clerks work on.

Deciding *which* holder is the matching engine's job (`customers/matching.py`,
`match_account`); this module holds the writes both the engine and other flows use (the
e-Customer and representative sign-ups link directly), each with its audit event.
Automatic links send no email; the clerk console sends the "linked" email for its own links.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select

from backoffice import audit
from backoffice.audit import Actor
from backoffice.customers.models import (
    AssociationCase,
    AssociationStatus,
    CaseStatus,
    CustomerAccount,
    Policyholder,
)
from backoffice.db import utcnow
from backoffice.extensions import db

if TYPE_CHECKING:
    from backoffice.customers.matching import Candidate

SYSTEM = Actor.system("association")


def link(
    account: CustomerAccount, holder: Policyholder, *, actor: Actor, now: datetime | None = None
) -> None:
    before = {"status": str(account.association_status), "policyholder_id": account.policyholder_id}
    account.policyholder = holder  # the relationship too: a loaded account shows its holder at once
    account.association_status = AssociationStatus.LINKED
    account.linked_at = now or utcnow()
    db.session.flush()
    audit.record(
        "customer.linked",
        actor=actor,
        subject_type="customer_account",
        subject_id=account.id,
        before=before,
        after={"status": "linked", "policyholder_id": holder.id},
    )


def _ids_and_evidence(candidates: Sequence[int | Candidate]) -> tuple[list[int], list[dict]]:
    """Cases accept plain holder ids (flows with no engine evidence) or the engine's candidates."""
    ids = [item if isinstance(item, int) else item.policyholder_id for item in candidates]
    evidence = [item.as_json() for item in candidates if not isinstance(item, int)]
    return ids, evidence


def open_case(
    account: CustomerAccount,
    reason: str,
    candidates: Sequence[int | Candidate],
    *,
    actor: Actor = SYSTEM,
    now: datetime | None = None,
) -> AssociationCase:
    """A new case for a clerk, with the ranked candidates (and their evidence, when the
    engine found them); the account becomes `pending`."""
    ids, evidence = _ids_and_evidence(candidates)
    account.association_status = AssociationStatus.PENDING
    case = AssociationCase(
        account_id=account.id,
        reason=reason,
        candidate_ids=ids,
        evidence=evidence,
        opened_at=now or utcnow(),
    )
    db.session.add(case)
    db.session.flush()
    audit.record(
        "association.case_opened",
        actor=actor,
        subject_type="association_case",
        subject_id=case.id,
        after={"account_id": account.id, "reason": reason, "candidate_ids": ids},
    )
    return case


def refresh_case(
    case: AssociationCase, reason: str, candidates: Sequence[int | Candidate], *, actor: Actor = SYSTEM
) -> bool:
    """Replace an open case's candidates and evidence with a fresh match (new records imported,
    profile completed). Its status, claim and history stay. Audited only when the candidates
    or the reason changed; returns whether anything changed."""
    ids, evidence = _ids_and_evidence(candidates)
    if case.reason == reason and case.candidate_ids == ids and case.evidence == evidence:
        return False
    before = {"reason": case.reason, "candidate_ids": case.candidate_ids}
    case.reason, case.candidate_ids, case.evidence = reason, ids, evidence
    db.session.flush()
    if before != {"reason": reason, "candidate_ids": ids}:
        audit.record(
            "association.case_refreshed",
            actor=actor,
            subject_type="association_case",
            subject_id=case.id,
            before=before,
            after={"reason": reason, "candidate_ids": ids},
        )
    return True


def reopen_after_customer_reply(account: CustomerAccount, *, actor: Actor) -> AssociationCase | None:
    """The customer changed their profile after we asked them to check it: their case goes
    back to the clerks' open queue (unless the engine has just linked them)."""
    case = db.session.execute(
        select(AssociationCase).where(
            AssociationCase.account_id == account.id, AssociationCase.status == CaseStatus.WAITING_CUSTOMER
        )
    ).scalar_one_or_none()
    if case is None:
        return None
    case.status = CaseStatus.OPEN
    db.session.flush()
    audit.record(
        "association.case_reopened",
        actor=actor,
        subject_type="association_case",
        subject_id=case.id,
        before={"status": CaseStatus.WAITING_CUSTOMER.value},
        after={"status": CaseStatus.OPEN.value, "reason": "profile_updated"},
    )
    return case


def close_case_linked(
    case: AssociationCase, holder: Policyholder, *, actor: Actor = SYSTEM, now: datetime | None = None
) -> None:
    """The account got linked (here: by the engine, once a sure match appeared): the case
    is closed with that holder; no clerk decided it."""
    before = {"status": str(case.status)}
    case.status = CaseStatus.LINKED
    case.policyholder_id = holder.id
    case.closed_at = now or utcnow()
    case.decision_reason = "automatic match"
    db.session.flush()
    audit.record(
        "association.case_closed",
        actor=actor,
        subject_type="association_case",
        subject_id=case.id,
        before=before,
        after={"status": "linked", "policyholder_id": holder.id, "decision_reason": "automatic match"},
    )

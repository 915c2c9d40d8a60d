"""Linking portal accounts to policyholder records.

For now the rule the Spanish guide implies: the email the policy was taken out with. Exactly one
policyholder with that email links the account; none or several open a case for the back office.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select

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

SYSTEM = Actor.system("association")


def link(
    account: CustomerAccount, holder: Policyholder, *, actor: Actor, now: datetime | None = None
) -> None:
    before = {"status": str(account.association_status), "policyholder_id": account.policyholder_id}
    account.policyholder_id = holder.id
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


def open_case(
    account: CustomerAccount, reason: str, candidate_ids: list[int], *, now: datetime | None = None
) -> AssociationCase:
    account.association_status = AssociationStatus.PENDING
    case = AssociationCase(
        account_id=account.id, reason=reason, candidate_ids=candidate_ids, opened_at=now or utcnow()
    )
    db.session.add(case)
    db.session.flush()
    audit.record(
        "association.case_opened",
        actor=SYSTEM,
        subject_type="association_case",
        subject_id=case.id,
        after={"account_id": account.id, "reason": reason, "candidate_ids": candidate_ids},
    )
    return case


def associate_by_email(account: CustomerAccount, *, now: datetime | None = None) -> AssociationStatus:
    if account.association_status == AssociationStatus.LINKED:
        return account.association_status
    holders = (
        db.session.execute(
            select(Policyholder).where(func.lower(Policyholder.email) == account.email.lower()).limit(10)
        )
        .scalars()
        .all()
    )
    if len(holders) == 1:
        link(account, holders[0], actor=SYSTEM, now=now)
    else:
        already_open = db.session.execute(
            select(AssociationCase.id).where(
                AssociationCase.account_id == account.id, AssociationCase.status == CaseStatus.OPEN
            )
        ).first()
        if already_open is None:
            open_case(
                account, "no_match" if not holders else "several_matches", [h.id for h in holders], now=now
            )
        account.association_status = AssociationStatus.PENDING
    return account.association_status

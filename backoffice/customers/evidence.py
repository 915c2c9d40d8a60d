"""The evidence bundle of an e-Customer registration (issue 8.5): the tax ID, email and phone
submitted and the policyholder record they matched, the SMS code's deliveries and tries (never
a code), the signature evidence with the contract as signed, the linked account and the audit
trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask_babel import gettext as _

from backoffice.audit import Actor
from backoffice.customers.ecustomer import SUBJECT_TYPE
from backoffice.customers.models import EcustomerRegistration
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
    stamp,
)

CODE_ACTIONS = ("ecustomer.code_rejected", "ecustomer.contract_signed")
# start() refuses unless all three equal the policyholder record's.
MATCHED_ON = ("tax_id", "email", "phone")


def _registration(registration: EcustomerRegistration) -> dict[str, Any]:
    """The registration's record without the contract's storage key."""
    return {
        "id": registration.id,
        "status": registration.status.value,
        "tax_id": registration.tax_id,
        "email": registration.email,
        "phone": registration.phone,
        "language": registration.language,
        "created_at": registration.created_at,
        "expires_at": registration.expires_at,
        "contract_version": registration.contract_version,
        "contract_sha256": registration.contract_sha256,
        "challenge_id": registration.challenge_id,
        "signed_contract_id": registration.signed_contract_id,
        "account_id": registration.account_id,
        "signed_at": registration.signed_at,
        "activated_at": registration.activated_at,
        "ip": registration.ip,
        "user_agent": registration.user_agent,
    }


def _identity_match(registration: EcustomerRegistration) -> dict[str, Any]:
    """What was submitted and the record it matched (as that record reads today)."""
    holder = registration.policyholder
    return {
        "submitted": {
            "tax_id": registration.tax_id,
            "email": registration.email,
            "phone": registration.phone,
        },
        "matched_on": list(MATCHED_ON),
        "matched_at": registration.created_at,
        "policyholder": {
            "id": holder.id,
            "tax_id": holder.tax_id,
            "kind": holder.kind.value,
            "name": holder.name,
            "email": holder.email,
            "phone": holder.phone,
            "updated_at": holder.updated_at,
            "policies": [
                {"number": policy.number, "product": policy.product, "status": policy.status}
                for policy in holder.policies
            ],
        },
    }


def registration_bundle(
    registration: EcustomerRegistration, *, actor: Actor, now: datetime | None = None
) -> Bundle:
    """Build the bundle and audit that `actor` took it. StorageError propagates (503)."""
    now = now or utcnow()
    events = audit_events(
        {
            SUBJECT_TYPE: [registration.id],
            SIGNED_CONTRACT_SUBJECT: [registration.signed_contract_id]
            if registration.signed_contract_id
            else [],
        },
        account_id=registration.account_id,
    )
    codes = code_record(registration.challenge_id, [e for e in events if e.action in CODE_ACTIONS])
    signature, contract_files, signature_section = signature_evidence(registration.signed_contract_id)
    account, account_section = account_record(registration.account_id)
    match = _identity_match(registration)
    holder = match["policyholder"]

    sections = [
        Section(
            _("e-Customer registration"),
            [
                (_("Registration"), registration.id),
                (_("Status"), registration.status.value),
                (_("Started at"), stamp(registration.created_at)),
                (_("Signed at"), stamp(registration.signed_at)),
                (_("Activated at"), stamp(registration.activated_at)),
                (_("IP / user agent"), f"{registration.ip or '—'} / {registration.user_agent or '—'}"),
            ],
        ),
        Section(
            _("Identity match"),
            [
                (
                    _("Submitted"),
                    f"{registration.tax_id} · {registration.email} · {registration.phone}",
                ),
                (_("Matched policyholder"), f"#{holder['id']} {holder['name']} ({holder['tax_id']})"),
                (_("Matched on"), ", ".join(MATCHED_ON)),
            ],
        ),
        code_section(codes),
        signature_section,
        account_section,
        audit_section(events),
    ]
    bundle = build_bundle(
        filename=f"evidence-ecustomer-{registration.tax_id}-{now:%Y%m%dT%H%M%SZ}.zip",
        title=_("Evidence bundle: e-Customer %(tax_id)s", tax_id=registration.tax_id),
        subject_type=SUBJECT_TYPE,
        subject_id=registration.id,
        sections=sections,
        records={
            "registration": _registration(registration),
            "identity_match": match,
            "sms_codes": codes,
            "signature": signature,
            "account": account,
            "audit_events": audit_record(events),
        },
        files=contract_files,
        actor=actor,
        now=now,
    )
    record_download(bundle, subject_type=SUBJECT_TYPE, subject_id=registration.id, actor=actor)
    return bundle

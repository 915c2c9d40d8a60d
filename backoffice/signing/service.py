"""Signing a stored contract through the signing port and keeping the evidence, shared by the
e-Customer and the representative flows (both sign with an SMS code bound to the hash)."""

from __future__ import annotations

import hashlib
import io
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from flask import current_app

from backoffice.extensions import db
from backoffice.identity import mask_phone
from backoffice.signing.contract import render_contract
from backoffice.signing.models import SignedContract


class PendingSignature(Protocol):
    """What a sign-up step holds about the contract it will sign (registration or completion)."""

    contract_version: str | None
    language: str
    contract_key: str | None
    contract_sha256: str | None
    challenge_id: int | None


def store_contract(*, language: str, holder_name: str, tax_id: str, now: datetime) -> tuple[str, str]:
    """Render the current contract for this signer and store it: (storage key, SHA-256) of the
    exact bytes the SMS code will be bound to. StorageError propagates with nothing stored."""
    contract = render_contract(
        language=language,
        holder_name=holder_name,
        tax_id=tax_id,
        signing_date=now.astimezone(ZoneInfo(current_app.config["BUSINESS_TZ"])).date(),
    )
    key = current_app.extensions["storage"].put(
        io.BytesIO(contract), prefix="contracts-unsigned", content_type="application/pdf"
    )
    return key, hashlib.sha256(contract).hexdigest()


def stored_contract(pending: PendingSignature) -> bytes:
    """Exactly the bytes shown to the customer: refused if storage no longer matches the hash."""
    with current_app.extensions["storage"].open(pending.contract_key) as stream:
        data = stream.read()
    if hashlib.sha256(data).hexdigest() != pending.contract_sha256:
        raise RuntimeError(f"stored contract {pending.contract_key} does not match its hash")
    return data


def sign_stored_contract(
    pending: PendingSignature,
    *,
    kind: str,
    signer_name: str,
    signer_tax_id: str,
    phone: str,
    policyholder_id: int | None,
    reason: str,
    ip: str | None,
    user_agent: str | None,
    now: datetime,
) -> SignedContract:
    """PAdES-sign the stored contract, store the signed PDF and write the evidence record.
    StorageError or SigningError propagate with nothing written: the caller answers 503."""
    signer = current_app.extensions["signer"]
    signed = signer.sign(stored_contract(pending), signer_name=signer_name, reason=reason, location="Spain")
    signed_key = current_app.extensions["storage"].put(
        io.BytesIO(signed.data), prefix="contracts-signed", content_type="application/pdf"
    )
    contract = SignedContract(
        kind=kind,
        policyholder_id=policyholder_id,
        contract_version=pending.contract_version,
        language=pending.language,
        unsigned_sha256=pending.contract_sha256,
        signed_sha256=hashlib.sha256(signed.data).hexdigest(),
        unsigned_key=pending.contract_key,
        signed_key=signed_key,
        signer_name=signer_name,
        signer_tax_id=signer_tax_id,
        masked_phone=mask_phone(phone),
        challenge_id=pending.challenge_id,
        signed_at=now,
        ip=ip,
        user_agent=(user_agent or "")[:255] or None,
        provider=signer.name,
        timestamped=signed.timestamped,
    )
    db.session.add(contract)
    db.session.flush()
    return contract

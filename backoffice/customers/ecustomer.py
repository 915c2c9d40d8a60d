"""e-Customer sign-up (the insurer's e-Customer page): tax ID, email and phone must match one
person policyholder; an SMS code proves the phone and signs the service contract; then a
password, and the username is the tax ID.

A mismatch never says which detail was wrong. Every step is audited; the signature is made
only with the right code and the contract explicitly accepted.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select

from backoffice import audit, otp
from backoffice.audit import Actor
from backoffice.customers.association import link
from backoffice.customers.models import (
    CustomerAccount,
    EcustomerRegistration,
    HolderKind,
    Policyholder,
    RegistrationStatus,
)
from backoffice.customers.service import AccountError, find_by_email
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.identity import IdentityError, normalise_email, normalise_phone, normalise_tax_id
from backoffice.notifications.service import pick_language
from backoffice.passwords import hash_password, password_problems
from backoffice.signing.contract import CONTRACT_VERSION
from backoffice.signing.models import SignedContract
from backoffice.signing.providers import SigningError
from backoffice.signing.service import sign_stored_contract, store_contract, stored_contract
from backoffice.storage import StorageError

OTP_PURPOSE = "ecustomer_contract"
SUBJECT_TYPE = "ecustomer_registration"
REPRESENTATIVES_ROUTE = "/api/v1/representative-applications"
SIGN_IN_ROUTE = "/api/v1/sessions"
PASSWORD_RESET_ROUTE = "/api/v1/password-resets"  # noqa: S105 (a route, not a password)


def _details_mismatch() -> AccountError:
    """Says how to reach us (the phone line, or their broker), never which detail differed."""
    return AccountError(422, "details_mismatch", contact_phone=current_app.config["CUSTOMER_CONTACT_PHONE"])


def _registration_actor(registration: EcustomerRegistration, ip: str | None) -> Actor:
    return Actor(kind="customer", id=None, label=f"e-Customer {registration.tax_id}", ip=ip)


def start(
    tax_id: str,
    email: str,
    phone: str,
    *,
    language: str | None,
    ip: str | None,
    user_agent: str | None,
    now: datetime | None = None,
) -> EcustomerRegistration:
    """Match the three details against the records, render the contract, send the code."""
    now = now or utcnow()
    errors: dict[str, list[str]] = {}
    normalised: dict[str, str] = {}
    for field, value, rule in (
        ("tax_id", tax_id, lambda v: normalise_tax_id(v)),
        ("email", email, normalise_email),
        ("phone", phone, normalise_phone),
    ):
        try:
            normalised[field] = rule(value)
        except IdentityError as exc:
            errors[field] = [exc.code]
    if errors:
        raise AccountError(422, "validation_error", errors)
    parsed_tax_id = normalised["tax_id"]
    if not parsed_tax_id.is_person:
        raise AccountError(422, "company_tax_id", representatives=REPRESENTATIVES_ROUTE)

    holder = db.session.execute(
        select(Policyholder).where(Policyholder.tax_id == parsed_tax_id.value)
    ).scalar_one_or_none()
    if (
        holder is None
        or holder.kind != HolderKind.PERSON
        or (holder.email or "").lower() != normalised["email"]
        or holder.phone != normalised["phone"]
    ):
        raise _details_mismatch()
    if db.session.execute(select(CustomerAccount.id).where(CustomerAccount.tax_id == holder.tax_id)).first():
        raise AccountError(
            409, "already_registered", sign_in=SIGN_IN_ROUTE, password_reset=PASSWORD_RESET_ROUTE
        )

    language = pick_language(language)
    try:
        contract_key, contract_sha256 = store_contract(
            language=language, holder_name=holder.name, tax_id=holder.tax_id, now=now
        )
    except StorageError as exc:
        raise service_unavailable(exc) from exc
    registration_id = secrets.token_urlsafe(24)
    challenge = otp.open_challenge(
        purpose=OTP_PURPOSE,
        subject_type=SUBJECT_TYPE,
        subject_id=registration_id,
        phone=holder.phone,
        document_sha256=contract_sha256,
        language=language,
        now=now,
    )
    registration = EcustomerRegistration(
        id=registration_id,
        policyholder_id=holder.id,
        tax_id=holder.tax_id,
        email=normalised["email"],
        phone=holder.phone,
        language=language,
        created_at=now,
        expires_at=now + timedelta(hours=current_app.config["ECUSTOMER_REGISTRATION_HOURS"]),
        contract_version=CONTRACT_VERSION,
        contract_key=contract_key,
        contract_sha256=contract_sha256,
        challenge_id=challenge.id,
        ip=ip,
        user_agent=(user_agent or "")[:255] or None,
    )
    db.session.add(registration)
    db.session.flush()
    audit.record(
        "ecustomer.registration_started",
        actor=_registration_actor(registration, ip),
        subject_type=SUBJECT_TYPE,
        subject_id=registration.id,
        after={
            "policyholder_id": holder.id,
            "contract_version": CONTRACT_VERSION,
            "contract_sha256": contract_sha256,
        },
    )
    return registration


def find(registration_id: str, *, now: datetime | None = None) -> EcustomerRegistration:
    """Unknown ids answer 404; a registration older than 24 h is gone (410)."""
    registration = (
        db.session.get(EcustomerRegistration, registration_id) if len(registration_id) <= 64 else None
    )
    if registration is None:
        raise AccountError(404, "not_found")
    if registration.status != RegistrationStatus.ACTIVE and registration.expires_at <= (now or utcnow()):
        raise AccountError(410, "registration_expired")
    return registration


def _challenge(registration: EcustomerRegistration) -> otp.OtpChallenge:
    return db.session.get(otp.OtpChallenge, registration.challenge_id)


def otp_failure(error: otp.OtpError) -> AccountError:
    """Wrong tries and sent codes stay recorded although the request is refused."""
    if error.code in ("resend_too_soon", "resend_limit"):
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
        return AccountError(429, error.code, keep_changes=True, headers=headers)
    if error.code == "code_invalid":
        return AccountError(422, "code_invalid", keep_changes=True, attempts_left=error.attempts_left)
    if error.code in ("code_expired", "attempts_exhausted"):
        return AccountError(410, error.code, keep_changes=True)
    return AccountError(409, error.code, keep_changes=True)


def service_unavailable(error: Exception) -> AccountError:
    """Storage or the signing provider is down: 503, and the request changes nothing."""
    current_app.logger.error("signing step failed: %s", error)
    return AccountError(503, "service_unavailable")


def resend_code(registration: EcustomerRegistration, *, ip: str | None, now: datetime | None = None) -> None:
    if registration.status != RegistrationStatus.CODE_SENT:
        raise AccountError(409, "already_signed")
    try:
        otp.resend_code(_challenge(registration), language=registration.language, now=now)
    except otp.OtpError as exc:
        raise otp_failure(exc) from exc
    audit.record(
        "ecustomer.code_resent",
        actor=_registration_actor(registration, ip),
        subject_type=SUBJECT_TYPE,
        subject_id=registration.id,
    )


def contract_bytes(registration: EcustomerRegistration) -> bytes:
    """Exactly the bytes the signature will be made over."""
    if registration.status != RegistrationStatus.CODE_SENT:
        raise AccountError(409, "already_signed")
    try:
        return stored_contract(registration)
    except StorageError as exc:
        raise service_unavailable(exc) from exc


def sign(
    registration: EcustomerRegistration,
    code: str,
    accept_contract: bool,
    *,
    ip: str | None,
    user_agent: str | None,
    now: datetime | None = None,
) -> SignedContract:
    """Sign the stored contract with the SMS code. A wrong code is counted even though the
    request fails: the caller commits the attempt before answering."""
    now = now or utcnow()
    if registration.status != RegistrationStatus.CODE_SENT:
        raise AccountError(409, "already_signed")
    if accept_contract is not True:
        raise AccountError(422, "validation_error", {"accept_contract": ["required"]})
    try:
        otp.verify_code(_challenge(registration), code, document_sha256=registration.contract_sha256, now=now)
    except otp.OtpError as exc:
        audit.record(
            "ecustomer.code_rejected",
            actor=_registration_actor(registration, ip),
            subject_type=SUBJECT_TYPE,
            subject_id=registration.id,
            after={"reason": exc.code, "attempts_left": exc.attempts_left},
        )
        raise otp_failure(exc) from exc

    holder = registration.policyholder
    try:
        contract = sign_stored_contract(
            registration,
            kind="ecustomer",
            signer_name=holder.name,
            signer_tax_id=registration.tax_id,
            phone=registration.phone,
            policyholder_id=holder.id,
            reason=f"e-Customer service contract {registration.contract_version}",
            ip=ip,
            user_agent=user_agent,
            now=now,
        )
    except (StorageError, SigningError) as exc:
        raise service_unavailable(exc) from exc
    registration.status = RegistrationStatus.SIGNED
    registration.signed_contract_id = contract.id
    registration.signed_at = now
    audit.record(
        "ecustomer.contract_signed",
        actor=_registration_actor(registration, ip),
        subject_type=SUBJECT_TYPE,
        subject_id=registration.id,
        after={
            "contract_id": contract.id,
            "signed_sha256": contract.signed_sha256,
            "provider": contract.provider,
        },
    )
    return contract


def activate(
    registration: EcustomerRegistration, password: str, *, ip: str | None, now: datetime | None = None
) -> CustomerAccount:
    """The account: username = tax ID, email from the record, already linked to the holder.
    An individual account that already uses that email is the same person: it gains the tax ID."""
    now = now or utcnow()
    if registration.status != RegistrationStatus.SIGNED:
        raise AccountError(
            409, "not_signed" if registration.status == RegistrationStatus.CODE_SENT else "already_active"
        )
    problems = password_problems(password, email=registration.email, tax_id=registration.tax_id)
    if problems:
        raise AccountError(422, "validation_error", {"password": problems})
    account = find_by_email(registration.email)
    if account is not None and account.tax_id not in (None, registration.tax_id):
        raise AccountError(409, "already_registered")
    if account is None:
        account = CustomerAccount(email=registration.email, language=registration.language, created_at=now)
        db.session.add(account)
    account.tax_id = registration.tax_id
    account.password_hash = hash_password(password)
    account.email_verified_at = account.email_verified_at or now
    account.terms_accepted_at = account.terms_accepted_at or registration.signed_at
    if account.phone in (None, registration.phone):  # the signing code proved this number
        account.phone = registration.phone
        account.phone_verified_at = account.phone_verified_at or registration.signed_at
    db.session.flush()
    actor = Actor.customer(account.id, account.tax_id, ip)
    link(account, registration.policyholder, actor=actor, now=now)
    contract = db.session.get(SignedContract, registration.signed_contract_id)
    contract.account_id = account.id
    registration.status = RegistrationStatus.ACTIVE
    registration.account_id = account.id
    registration.activated_at = now
    audit.record(
        "ecustomer.activated",
        actor=actor,
        subject_type=SUBJECT_TYPE,
        subject_id=registration.id,
        after={"account_id": account.id, "username": account.tax_id},
    )
    return account


def contracts_of(account: CustomerAccount) -> list[SignedContract]:
    return list(
        db.session.execute(
            select(SignedContract)
            .where(SignedContract.account_id == account.id)
            .order_by(SignedContract.signed_at)
        ).scalars()
    )


def contract_of(account: CustomerAccount, contract_id: str) -> SignedContract:
    """Checked after authentication, so a stranger learns nothing from the id's shape."""
    contract = (
        db.session.get(SignedContract, int(contract_id))
        if contract_id.isdigit() and len(contract_id) < 12
        else None
    )
    if contract is None or contract.account_id != account.id:
        raise AccountError(404, "not_found")
    return contract


def signed_pdf(contract: SignedContract) -> bytes:
    try:
        with current_app.extensions["storage"].open(contract.signed_key) as stream:
            return stream.read()
    except StorageError as exc:
        raise service_unavailable(exc) from exc

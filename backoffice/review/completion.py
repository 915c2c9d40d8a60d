"""Completing a validated representative application from the emailed link (e-Customer page,
companies, step 5): the representative re-enters the details the call agent validated, accepts
the e-signature provider's terms, signs the representative contract with an SMS PIN and
chooses a password; the username is their tax ID.

The link is a random token; only its SHA-256 is stored, and a newer link supersedes older
ones. A mismatch never says which detail was wrong, and is counted: after
MAX_CONFIRM_FAILURES the link is dead. Signing follows the e-Customer rules (the same OTP
module, bound to the contract's hash). Every step is audited on the application, so the back
office timeline shows it; the application moves validated → invited → completed (or expired)
only through `states.transition`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import force_locale, format_datetime
from flask_babel import gettext as _
from sqlalchemy import select, update

from backoffice import audit, otp
from backoffice.audit import Actor
from backoffice.customers.association import link, open_case
from backoffice.customers.ecustomer import otp_failure, service_unavailable
from backoffice.customers.models import AssociationStatus, CustomerAccount, Policyholder
from backoffice.customers.service import AccountError, find_by_email
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.identity import IdentityError, normalise_email, normalise_phone, normalise_tax_id
from backoffice.notifications.service import queue_email
from backoffice.passwords import hash_password, password_problems
from backoffice.review.models import (
    ApplicationStatus,
    CompletionStatus,
    RepresentativeApplication,
    RepresentativeCompletion,
)
from backoffice.review.states import STATUS_LABELS, transition
from backoffice.signing.contract import CONTRACT_VERSION, TEMPLATES
from backoffice.signing.models import SignedContract
from backoffice.signing.providers import SigningError
from backoffice.signing.service import sign_stored_contract, store_contract
from backoffice.storage import StorageError

OTP_PURPOSE = "representative_contract"
APPLICATION_SUBJECT = "representative_application"
CHALLENGE_SUBJECT = "representative_completion"
EMAIL_TEMPLATE = "representative_completion"
PORTAL_PATH = "/representatives/complete"
PROVIDER_TERMS_VERSION = "2026.1"
FIELDS_TO_CONFIRM = ("company_tax_id", "tax_id", "email", "phone")
MAX_CONFIRM_FAILURES = 5
SIGN_IN_ROUTE = "/api/v1/sessions"
PASSWORD_RESET_ROUTE = "/api/v1/password-resets"  # noqa: S105 (a route, not a password)
# The contract names the company next to the representative who signs for it.
ON_BEHALF_OF = {"es": "{name}, en nombre y representación de {company} ({cif})"}
ON_BEHALF_OF_DEFAULT = "{name}, on behalf of {company} ({cif})"
_TOKEN_FORMAT = re.compile(r"[A-Za-z0-9_-]{16,128}")
_OPEN = (CompletionStatus.INVITED, CompletionStatus.PIN_SENT, CompletionStatus.SIGNED)


class CompletionError(ValueError):
    """A staff or job action the application's state does not allow; nothing was changed."""


@dataclass(frozen=True)
class ProviderTerms:
    version: str
    language: str
    text: str
    sha256: str


def token_hash(token: str) -> str:
    """What is stored for a link token (and what rate limits are keyed by)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


@lru_cache(maxsize=8)
def provider_terms(language: str, version: str = PROVIDER_TERMS_VERSION) -> ProviderTerms:
    """The e-signature provider's terms in `templates/terms/provider/<version>/<language>.txt`.
    A published version is never edited; the SHA-256 of the file's bytes is recorded with the
    acceptance, so it always names the exact text accepted."""
    data = (TEMPLATES / "terms" / "provider" / version / f"{language}.txt").read_bytes()
    return ProviderTerms(version, language, data.decode("utf-8"), hashlib.sha256(data).hexdigest())


def _application_actor(application: RepresentativeApplication, ip: str | None) -> Actor:
    return Actor(kind="customer", id=None, label=f"representative {application.tax_id}", ip=ip)


def _record(action: str, completion: RepresentativeCompletion, *, actor: Actor, **after: Any) -> None:
    audit.record(
        action,
        actor=actor,
        subject_type=APPLICATION_SUBJECT,
        subject_id=completion.application_id,
        after={"completion_id": completion.id, **after},
    )


# Staff: the link


def _issue_link(
    application: RepresentativeApplication, now: datetime
) -> tuple[RepresentativeCompletion, str, list[int]]:
    """Supersede the application's open links, create a new one and email it."""
    superseded = list(
        db.session.execute(
            select(RepresentativeCompletion.id).where(
                RepresentativeCompletion.application_id == application.id,
                RepresentativeCompletion.status.in_(_OPEN),
            )
        ).scalars()
    )
    if superseded:
        db.session.execute(
            update(RepresentativeCompletion)
            .where(RepresentativeCompletion.id.in_(superseded))
            .values(status=CompletionStatus.SUPERSEDED)
            .execution_options(synchronize_session="fetch")
        )
    token = secrets.token_urlsafe(32)
    completion = RepresentativeCompletion(
        application_id=application.id,
        token_hash=token_hash(token),
        status=CompletionStatus.INVITED,
        language=application.language,
        created_at=now,
        expires_at=now + timedelta(days=int(current_app.config["COMPLETION_LINK_DAYS"])),
        confirm_failures=0,
    )
    db.session.add(completion)
    db.session.flush()
    with force_locale(application.language):
        expires = format_datetime(
            completion.expires_at.astimezone(ZoneInfo(current_app.config["BUSINESS_TZ"])),
            "EEEE d MMMM y, HH:mm",
            rebase=False,
        )
    queue_email(
        application.email,
        EMAIL_TEMPLATE,
        {
            "name": application.first_name,
            "company": application.company_name,
            "link": f"{current_app.config['CUSTOMER_PORTAL_URL'].rstrip('/')}{PORTAL_PATH}?token={token}",
            "expires": expires,
            "contact_phone": current_app.config["CUSTOMER_CONTACT_PHONE"],
            "application_id": application.id,
        },
        language=application.language,
    )
    return completion, token, superseded


def invite(
    application: RepresentativeApplication, *, actor: Actor, now: datetime | None = None
) -> tuple[RepresentativeCompletion, str]:
    """After a successful validation call: email the completion link and move the application
    to `invited`. Returns the new completion and its token, which is never stored (only its
    hash) and is given back so that the caller can show or test it."""
    now = now or utcnow()
    if application.status != ApplicationStatus.VALIDATED:
        raise CompletionError(
            _(
                "Application %(id)s is %(status)s: only a validated application can be invited.",
                id=application.id,
                status=STATUS_LABELS[application.status],
            )
        )
    completion, token, superseded = _issue_link(application, now)
    transition(
        application,
        ApplicationStatus.INVITED,
        actor=actor,
        now=now,
        completion_id=completion.id,
        expires_at=completion.expires_at.isoformat(),
    )
    _record(
        "completion.invited",
        completion,
        actor=actor,
        expires_at=completion.expires_at.isoformat(),
        superseded=superseded,
    )
    return completion, token


def reinvite(
    application: RepresentativeApplication, *, actor: Actor, now: datetime | None = None
) -> tuple[RepresentativeCompletion, str]:
    """A new link for an invited representative whose link expired or was lost: the old link
    stops working at once. The application stays `invited`."""
    now = now or utcnow()
    if application.status != ApplicationStatus.INVITED:
        raise CompletionError(
            _(
                "Application %(id)s is %(status)s: only an invited application can get a new link.",
                id=application.id,
                status=STATUS_LABELS[application.status],
            )
        )
    completion, token, superseded = _issue_link(application, now)
    _record(
        "completion.reinvited",
        completion,
        actor=actor,
        expires_at=completion.expires_at.isoformat(),
        superseded=superseded,
    )
    return completion, token


# The representative: the link's steps


def _challenge(completion: RepresentativeCompletion) -> otp.OtpChallenge | None:
    return db.session.get(otp.OtpChallenge, completion.challenge_id) if completion.challenge_id else None


def _exhausted(completion: RepresentativeCompletion) -> bool:
    """Too many mismatched details, or too many wrong PINs: the link is dead."""
    if completion.confirm_failures >= MAX_CONFIRM_FAILURES:
        return True
    challenge = _challenge(completion)
    return challenge is not None and challenge.exhausted_at is not None


def find(token: str, *, now: datetime | None = None) -> RepresentativeCompletion:
    """Unknown or superseded: 404 `token_invalid`. Used (account created): 410 `token_used`.
    Past its expiry: 410 `token_expired`. Killed by wrong tries: 410 `attempts_exhausted`."""
    now = now or utcnow()
    completion = (
        db.session.execute(
            select(RepresentativeCompletion).where(RepresentativeCompletion.token_hash == token_hash(token))
        ).scalar_one_or_none()
        if isinstance(token, str) and _TOKEN_FORMAT.fullmatch(token)
        else None
    )
    if completion is None or completion.status == CompletionStatus.SUPERSEDED:
        raise AccountError(404, "token_invalid")
    application = completion.application
    if completion.status == CompletionStatus.ACTIVE or application.status == ApplicationStatus.COMPLETED:
        raise AccountError(410, "token_used")
    if completion.expires_at <= now or application.status != ApplicationStatus.INVITED:
        raise AccountError(410, "token_expired")
    if _exhausted(completion):
        raise AccountError(
            410, "attempts_exhausted", contact_phone=current_app.config["CUSTOMER_CONTACT_PHONE"]
        )
    return completion


def describe(completion: RepresentativeCompletion) -> dict[str, Any]:
    """What the link's page shows: where the representative is, the provider's terms to accept,
    and which details to type again. The values themselves are never sent back."""
    terms = provider_terms(completion.language)
    return {
        "status": str(completion.status),
        "provider_terms": {
            "version": terms.version,
            "language": terms.language,
            "text": terms.text,
            "sha256": terms.sha256,
        },
        "fields_to_confirm": list(FIELDS_TO_CONFIRM),
    }


def _validated_details(
    company_tax_id: str, tax_id: str, email: str, phone: str, accept_provider_terms: bool
) -> dict[str, str]:
    """The four details in the form the application stored them in (the identity rules'
    normalised form), or 422 with field codes; the terms must be accepted explicitly."""
    errors: dict[str, list[str]] = {}
    parsed: dict[str, Any] = {}
    for field, value, rule in (
        ("company_tax_id", company_tax_id, normalise_tax_id),
        ("tax_id", tax_id, normalise_tax_id),
        ("email", email, normalise_email),
        ("phone", phone, normalise_phone),
    ):
        try:
            parsed[field] = rule(value)
        except IdentityError as exc:
            errors[field] = [exc.code]
    if "company_tax_id" in parsed and parsed["company_tax_id"].is_person:
        errors["company_tax_id"] = ["invalid"]
    if "tax_id" in parsed and not parsed["tax_id"].is_person:
        errors["tax_id"] = ["invalid"]
    if accept_provider_terms is not True:
        errors["accept_provider_terms"] = ["required"]
    if errors:
        raise AccountError(422, "validation_error", errors)
    return {field: str(value) for field, value in parsed.items()}


def _locked(completion: RepresentativeCompletion) -> RepresentativeCompletion:
    """Re-read under a row lock (PostgreSQL), so concurrent tries cannot both miss a failure."""
    return db.session.execute(
        select(RepresentativeCompletion)
        .where(RepresentativeCompletion.id == completion.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def _count_mismatch(completion: RepresentativeCompletion, actor: Actor) -> AccountError:
    """Says how to reach us, never which detail differed. The failure stays counted although
    the request fails (the caller commits it); the last one kills the link."""
    completion.confirm_failures += 1
    attempts_left = max(MAX_CONFIRM_FAILURES - completion.confirm_failures, 0)
    db.session.flush()
    _record("completion.details_mismatch", completion, actor=actor, attempts_left=attempts_left)
    contact_phone = current_app.config["CUSTOMER_CONTACT_PHONE"]
    if attempts_left == 0:
        _record("completion.attempts_exhausted", completion, actor=actor, reason="details_mismatch")
        return AccountError(410, "attempts_exhausted", keep_changes=True, contact_phone=contact_phone)
    return AccountError(
        422, "details_mismatch", keep_changes=True, contact_phone=contact_phone, attempts_left=attempts_left
    )


def _on_behalf_of(application: RepresentativeApplication, language: str) -> str:
    return ON_BEHALF_OF.get(language, ON_BEHALF_OF_DEFAULT).format(
        name=application.representative_name, company=application.company_name, cif=application.company_tax_id
    )


def confirm(
    completion: RepresentativeCompletion,
    company_tax_id: str,
    tax_id: str,
    email: str,
    phone: str,
    accept_provider_terms: bool,
    *,
    ip: str | None,
    user_agent: str | None,
    now: datetime | None = None,
) -> RepresentativeCompletion:
    """The details must equal the ones the agent validated (the application's current values).
    The first confirmation records the terms' acceptance, renders and stores the contract and
    sends the PIN; confirming again while the PIN is pending sends a new PIN (OTP resend
    limits apply)."""
    now = now or utcnow()
    completion = _locked(completion)
    if completion.status not in (CompletionStatus.INVITED, CompletionStatus.PIN_SENT):
        raise AccountError(409, "already_signed")
    application = completion.application
    actor = _application_actor(application, ip)
    values = _validated_details(company_tax_id, tax_id, email, phone, accept_provider_terms)
    expected = {
        "company_tax_id": application.company_tax_id,
        "tax_id": application.tax_id,
        "email": application.email,
        "phone": application.phone,
    }
    if values != expected:
        raise _count_mismatch(completion, actor)

    if completion.status == CompletionStatus.PIN_SENT:
        challenge = _challenge(completion)
        try:
            otp.resend_code(challenge, language=completion.language, now=now)
        except otp.OtpError as exc:
            raise otp_failure(exc) from exc
        _record("completion.pin_resent", completion, actor=actor)
        return completion

    terms = provider_terms(completion.language)
    try:
        contract_key, contract_sha256 = store_contract(
            language=completion.language,
            holder_name=_on_behalf_of(application, completion.language),
            tax_id=application.tax_id,
            now=now,
        )
    except StorageError as exc:
        raise service_unavailable(exc) from exc
    challenge = otp.open_challenge(
        purpose=OTP_PURPOSE,
        subject_type=CHALLENGE_SUBJECT,
        subject_id=str(completion.id),
        phone=application.phone,
        document_sha256=contract_sha256,
        language=completion.language,
        now=now,
    )
    completion.terms_version = terms.version
    completion.terms_sha256 = terms.sha256
    completion.terms_accepted_at = now
    completion.terms_accepted_ip = ip
    completion.contract_version = CONTRACT_VERSION
    completion.contract_key = contract_key
    completion.contract_sha256 = contract_sha256
    completion.challenge_id = challenge.id
    completion.status = CompletionStatus.PIN_SENT
    db.session.flush()
    _record(
        "completion.confirmed",
        completion,
        actor=actor,
        terms_version=terms.version,
        terms_sha256=terms.sha256,
        contract_version=CONTRACT_VERSION,
        contract_sha256=contract_sha256,
        user_agent=(user_agent or "")[:255] or None,
    )
    return completion


def _company_holder(application: RepresentativeApplication) -> Policyholder | None:
    return db.session.execute(
        select(Policyholder).where(Policyholder.tax_id == application.company_tax_id)
    ).scalar_one_or_none()


def sign(
    completion: RepresentativeCompletion,
    pin: str,
    *,
    ip: str | None,
    user_agent: str | None,
    now: datetime | None = None,
) -> SignedContract:
    """Sign the stored contract with the SMS PIN, as the e-Customer signature: a wrong PIN is
    counted even though the request fails (the caller commits it before answering)."""
    now = now or utcnow()
    if completion.status != CompletionStatus.PIN_SENT:
        raise AccountError(
            409, "not_confirmed" if completion.status == CompletionStatus.INVITED else "already_signed"
        )
    application = completion.application
    actor = _application_actor(application, ip)
    try:
        otp.verify_code(_challenge(completion), pin, document_sha256=completion.contract_sha256, now=now)
    except otp.OtpError as exc:
        _record(
            "completion.pin_rejected",
            completion,
            actor=actor,
            reason=exc.code,
            attempts_left=exc.attempts_left,
        )
        raise otp_failure(exc) from exc

    holder = _company_holder(application)
    try:
        contract = sign_stored_contract(
            completion,
            kind="representative",
            signer_name=application.representative_name,
            signer_tax_id=application.tax_id,
            phone=application.phone,
            policyholder_id=holder.id if holder is not None else None,
            reason=f"e-Customer representative contract {completion.contract_version} "
            f"for {application.company_name} ({application.company_tax_id})",
            ip=ip,
            user_agent=user_agent,
            now=now,
        )
    except (StorageError, SigningError) as exc:
        raise service_unavailable(exc) from exc
    completion.status = CompletionStatus.SIGNED
    completion.signed_contract_id = contract.id
    completion.signed_at = now
    _record(
        "completion.contract_signed",
        completion,
        actor=actor,
        contract_id=contract.id,
        signed_sha256=contract.signed_sha256,
        provider=contract.provider,
    )
    return contract


def _account_for(application: RepresentativeApplication, now: datetime) -> CustomerAccount:
    """A new account, or the individual account that already uses this email (same person)."""
    taken = db.session.execute(
        select(CustomerAccount.id).where(CustomerAccount.tax_id == application.tax_id)
    ).first()
    account = find_by_email(application.email)
    if taken is not None or (account is not None and account.tax_id is not None):
        raise AccountError(
            409, "already_registered", sign_in=SIGN_IN_ROUTE, password_reset=PASSWORD_RESET_ROUTE
        )
    if account is None:
        account = CustomerAccount(email=application.email, language=application.language, created_at=now)
        db.session.add(account)
    return account


def activate(
    completion: RepresentativeCompletion, password: str, *, ip: str | None, now: datetime | None = None
) -> CustomerAccount:
    """The account: username = the representative's tax ID, email from the application,
    linked to the company's policyholder record (or queued for a clerk when there is none).
    The link is then used up and the application completed."""
    now = now or utcnow()
    if completion.status != CompletionStatus.SIGNED:
        raise AccountError(
            409, "already_active" if completion.status == CompletionStatus.ACTIVE else "not_signed"
        )
    application = completion.application
    problems = password_problems(password, email=application.email, tax_id=application.tax_id)
    if problems:
        raise AccountError(422, "validation_error", {"password": problems})
    account = _account_for(application, now)
    account.tax_id = application.tax_id
    account.password_hash = hash_password(password)
    account.email_verified_at = account.email_verified_at or now
    account.terms_accepted_at = account.terms_accepted_at or completion.signed_at
    db.session.flush()
    actor = Actor.customer(account.id, account.tax_id, ip)
    holder = _company_holder(application)
    if holder is not None:
        link(account, holder, actor=actor, now=now)
    elif account.association_status != AssociationStatus.LINKED:
        open_case(account, "representative_company_not_found", [], now=now)
    db.session.get(SignedContract, completion.signed_contract_id).account_id = account.id
    completion.status = CompletionStatus.ACTIVE
    completion.account_id = account.id
    completion.completed_at = now
    transition(application, ApplicationStatus.COMPLETED, actor=actor, now=now, account_id=account.id)
    _record("completion.activated", completion, actor=actor, account_id=account.id, username=account.tax_id)
    return account

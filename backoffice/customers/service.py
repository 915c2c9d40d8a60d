"""Portal accounts: registration, email verification, sign-in sessions, password reset, profile.

The rules of the Spanish guide live here once: the API only parses and renders. Nothing here
reveals whether an email has an account: registration and reset answer the same either way
and cost the same password-hash work.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from flask import current_app
from sqlalchemy import Select, bindparam, func, select, text, update
from sqlalchemy.orm import contains_eager

from backoffice import audit
from backoffice.audit import Actor
from backoffice.customers.association import reopen_after_customer_reply
from backoffice.customers.matching import SYSTEM as MATCHER
from backoffice.customers.matching import match_account
from backoffice.customers.models import (
    AccountToken,
    AssociationStatus,
    CustomerAccount,
    CustomerSession,
    Policy,
    Policyholder,
    TokenPurpose,
)
from backoffice.db import read_one_row, utcnow
from backoffice.extensions import db
from backoffice.identity import IdentityError, normalise_email, normalise_phone, normalise_tax_id
from backoffice.notifications.service import pick_language, queue_email
from backoffice.passwords import hash_password, password_problems, spend_a_verification, verify_password

PROFILE_ADDRESS_FIELDS = ("line1", "line2", "postal_code", "city", "province", "country")


class AccountError(Exception):
    """A request the account rules refuse. `code` is the API's stable code, `errors` the
    per-field codes; `status` is the HTTP status the API answers with."""

    def __init__(
        self,
        status: int,
        code: str,
        errors: dict[str, list[str]] | None = None,
        *,
        keep_changes: bool = False,
        **extra: Any,
    ):
        super().__init__(code)
        self.status = status
        self.code = code
        self.errors = errors or {}
        self.keep_changes = keep_changes  # e.g. a wrong code must stay counted although the request fails
        self.extra = extra


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _portal_link(path: str, token: str) -> str:
    return f"{current_app.config['CUSTOMER_PORTAL_URL'].rstrip('/')}{path}?token={token}"


def _hours(setting: str) -> timedelta:
    return timedelta(hours=current_app.config[setting])


def find_by_email(email: str) -> CustomerAccount | None:
    """Stored emails are lower-cased (`normalise_email`), so comparing the column itself lets the
    unique index answer; `lower(email)` would scan the whole table on every registration."""
    return db.session.execute(
        select(CustomerAccount).where(CustomerAccount.email == email.lower())
    ).scalar_one_or_none()


def _issue_token(account: CustomerAccount, purpose: TokenPurpose, lifetime: timedelta, now: datetime) -> str:
    token = secrets.token_urlsafe(32)
    db.session.add(
        AccountToken(
            account_id=account.id,
            purpose=purpose,
            token_hash=_hash_token(token),
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    return token


def _send_verification(account: CustomerAccount, now: datetime, template: str = "verify_email") -> None:
    lifetime = _hours("VERIFY_TOKEN_HOURS")
    token = _issue_token(account, TokenPurpose.VERIFY_EMAIL, lifetime, now)
    queue_email(
        account.email,
        template,
        {"link": _portal_link("/verify-email", token), "hours": int(lifetime.total_seconds() // 3600)},
        language=account.language,
    )


_NEW_ACCOUNT_FIELDS = (
    "email",
    "password_hash",
    "language",
    "created_at",
    "terms_accepted_at",
    "association_status",
)


_INSERT_NEW_ACCOUNT = (
    "INSERT INTO {table} ({fields}) VALUES ({values}) ON CONFLICT (email) DO NOTHING RETURNING {returned}"
)


@cache
def _insert_new_account() -> Select[tuple[CustomerAccount]]:
    """A new account in one statement for the usual case, a new email (no look-up first); a
    concurrent sign-up with the same email returns nothing instead of failing on the unique
    index. Written as SQL text because SQLAlchemy cannot cache its ON CONFLICT construct and
    compiled it again on every registration (PostgreSQL and SQLite share this syntax)."""
    table = CustomerAccount.__table__
    statement = text(
        _INSERT_NEW_ACCOUNT.format(
            table=table.name,
            fields=", ".join(_NEW_ACCOUNT_FIELDS),
            values=", ".join(f":{name}" for name in _NEW_ACCOUNT_FIELDS),
            returned=", ".join(column.name for column in table.columns),
        )
    )
    typed = statement.bindparams(*(bindparam(name, type_=table.c[name].type) for name in _NEW_ACCOUNT_FIELDS))
    return select(CustomerAccount).from_statement(typed.columns(*table.columns))


def register(
    email: str,
    password: str,
    accept_terms: bool,
    *,
    language: str | None,
    ip: str | None,
    now: datetime | None = None,
) -> None:
    """Create an unverified account and email its verification link. An email that already has
    an account gets a warning email instead; the caller answers the same either way."""
    now = now or utcnow()
    errors: dict[str, list[str]] = {}
    try:
        email = normalise_email(email)
    except IdentityError as exc:
        errors["email"] = [exc.code]
    problems = password_problems(password, email=None if "email" in errors else email)
    if problems:
        errors["password"] = problems
    if accept_terms is not True:
        errors["accept_terms"] = ["required"]
    if errors:
        raise AccountError(422, "validation_error", errors)

    password_hash = hash_password(password)
    new_account = {
        "email": email,
        "password_hash": password_hash,
        "language": pick_language(language),
        "created_at": now,
        "terms_accepted_at": now,
        "association_status": AssociationStatus.NONE,
    }
    account = db.session.scalars(_insert_new_account(), new_account).one_or_none()
    if account is None:
        existing = find_by_email(email)
        if existing is not None:
            _warn_existing_owner(existing, now)
        return
    _send_verification(account, now)
    audit.record(
        "customer.registered",
        actor=Actor.customer(account.id, account.email, ip),
        subject_type="customer_account",
        subject_id=account.id,
        after={"email": account.email, "language": account.language},
    )


def _warn_existing_owner(account: CustomerAccount, now: datetime) -> None:
    """Someone tried to register with this email: tell the owner (and, if they never verified,
    give them a fresh link) instead of telling the requester anything."""
    if account.email_verified_at is None:
        _send_verification(account, now, template="registration_repeated_unverified")
    else:
        queue_email(
            account.email,
            "registration_attempt",
            {"reset_link": f"{current_app.config['CUSTOMER_PORTAL_URL'].rstrip('/')}/reset-password"},
            language=account.language,
        )


def _use_token(token: str, purpose: TokenPurpose, now: datetime) -> AccountToken:
    record = db.session.execute(
        select(AccountToken)
        .where(AccountToken.token_hash == _hash_token(token), AccountToken.purpose == purpose)
        .with_for_update()
    ).scalar_one_or_none()
    if record is None:
        raise AccountError(404, "token_invalid")
    if record.used_at is not None:
        raise AccountError(410, "token_used")
    if record.expires_at <= now:
        raise AccountError(410, "token_expired")
    record.used_at = now
    return record


@dataclass(frozen=True)
class IssuedSession:
    token: str
    expires_in: int
    account: CustomerAccount


def _open_session(
    account: CustomerAccount, *, ip: str | None, user_agent: str | None, now: datetime
) -> IssuedSession:
    lifetime = _hours("CUSTOMER_SESSION_HOURS")
    token = secrets.token_urlsafe(32)
    db.session.add(
        CustomerSession(
            token_hash=_hash_token(token),
            account_id=account.id,
            created_at=now,
            expires_at=now + lifetime,
            ip=ip,
            user_agent=(user_agent or "")[:255] or None,
        )
    )
    account.last_sign_in_at = now
    db.session.flush()
    return IssuedSession(token, int(lifetime.total_seconds()), account)


def verify_email(
    token: str, *, ip: str | None, user_agent: str | None, now: datetime | None = None
) -> IssuedSession:
    """The emailed link verifies the address, signs the customer in, and tries to associate the
    account with a policyholder."""
    now = now or utcnow()
    record = _use_token(token, TokenPurpose.VERIFY_EMAIL, now)
    account = record.account
    if account.email_verified_at is None:
        account.email_verified_at = now
        audit.record(
            "customer.verified",
            actor=Actor.customer(account.id, account.email, ip),
            subject_type="customer_account",
            subject_id=account.id,
        )
        match_account(account, actor=MATCHER, now=now)
    return _open_session(account, ip=ip, user_agent=user_agent, now=now)


def find_by_username(username: str) -> CustomerAccount | None:
    """Email (case-insensitive) or, for accounts that have one, tax ID."""
    username = username.strip()
    if "@" in username:
        return find_by_email(username)
    try:
        tax_id = normalise_tax_id(username).value
    except IdentityError:
        return None
    return db.session.execute(
        select(CustomerAccount).where(CustomerAccount.tax_id == tax_id)
    ).scalar_one_or_none()


def sign_in(
    username: str, password: str, *, ip: str | None, user_agent: str | None, now: datetime | None = None
) -> IssuedSession:
    """One password-hash check whether or not the account exists; one answer for both failures."""
    now = now or utcnow()
    account = find_by_username(username)
    if account is None:
        spend_a_verification(password)
        valid = False
    else:
        valid = verify_password(account.password_hash, password)
    if not valid:
        audit.record(
            "customer.sign_in_failed",
            actor=Actor(
                kind="customer", id=str(account.id) if account else None, label=username[:255], ip=ip
            ),
            subject_type="customer_account",
            subject_id=account.id if account else None,
        )
        raise AccountError(401, "invalid_credentials")
    if account.email_verified_at is None:
        raise AccountError(403, "email_not_verified")
    issued = _open_session(account, ip=ip, user_agent=user_agent, now=now)
    audit.record(
        "customer.signed_in",
        actor=Actor.customer(account.id, account.username, ip),
        subject_type="customer_account",
        subject_id=account.id,
    )
    return issued


@cache
def _session_with_account() -> Select[tuple[CustomerSession]]:
    """A session with its account and the account's policyholder, in one statement: every
    authenticated request needs the first two, and PATCH /me, the phone proof and /me/policies
    the third (GET /me reads its own columns: `account_summary`). Built once, so SQLAlchemy
    reuses it without working out its cache key again on each request."""
    return (
        select(CustomerSession)
        .join(CustomerSession.account)
        .outerjoin(CustomerAccount.policyholder)
        .options(contains_eager(CustomerSession.account).contains_eager(CustomerAccount.policyholder))
        .where(CustomerSession.token_hash == bindparam("token_hash"))
    )


@cache
def _account_summary() -> Select[Any]:
    """GET /me's answer for a live session's token, as plain columns named like the account's
    attributes (what `profile_of` and the API's body read). It is the API's most frequent
    request: loading the session, account and holder as objects (41 columns, three identities)
    cost more client time than the query itself."""
    account = CustomerAccount
    return (
        select(
            account.id,
            account.email,
            func.coalesce(account.tax_id, account.email).label("username"),
            account.email_verified_at.is_not(None).label("email_verified"),
            account.phone,
            account.phone_verified_at.is_not(None).label("phone_verified"),
            account.address_line1,
            account.address_line2,
            account.postal_code,
            account.city,
            account.province,
            account.country,
            account.first_name,
            account.last_name,
            account.declared_tax_id,
            account.association_status,
            Policyholder.name.label("policyholder_name"),
        )
        .select_from(CustomerSession)
        .join(account, account.id == CustomerSession.account_id)
        .outerjoin(Policyholder, Policyholder.id == account.policyholder_id)
        .where(
            CustomerSession.token_hash == bindparam("token_hash"),
            CustomerSession.revoked_at.is_(None),
            CustomerSession.expires_at > bindparam("now", type_=CustomerSession.expires_at.type),
        )
    )


def account_summary(token: str | None, *, now: datetime | None = None) -> Any | None:
    """What GET /me shows of the account a bearer token signs in, or None when the token is
    unknown, expired or revoked (the same test as `session_account`): a row whose fields are
    named like the account's attributes (`db.read_one_row`)."""
    if not token:
        return None
    parameters = {"token_hash": _hash_token(token), "now": now or utcnow()}
    return read_one_row(db.session, _account_summary(), parameters)


def session_account(
    token: str | None, *, now: datetime | None = None
) -> tuple[CustomerAccount, CustomerSession] | None:
    if not token:
        return None
    now = now or utcnow()
    session = db.session.execute(
        _session_with_account(), {"token_hash": _hash_token(token)}
    ).scalar_one_or_none()
    if session is None or session.revoked_at is not None or session.expires_at <= now:
        return None
    return session.account, session


def sign_out(session: CustomerSession, *, ip: str | None, now: datetime | None = None) -> None:
    session.revoked_at = now or utcnow()
    audit.record(
        "customer.signed_out",
        actor=Actor.customer(session.account_id, session.account.username, ip),
        subject_type="customer_account",
        subject_id=session.account_id,
    )


def request_password_reset(email: str, *, ip: str | None, now: datetime | None = None) -> None:
    """Emails a reset link when the account exists. A request for an unknown email is audited
    too: the answer is the same, and so is the database write that costs the most, so the
    response time does not tell whether the account exists."""
    now = now or utcnow()
    try:
        email = normalise_email(email)
    except IdentityError:
        return
    account = find_by_email(email)
    if account is None:
        audit.record(
            "customer.password_reset_requested",
            actor=Actor(kind="customer", label=email[:255], ip=ip),
            subject_type="customer_account",
        )
        return
    lifetime = _hours("RESET_TOKEN_HOURS")
    token = _issue_token(account, TokenPurpose.RESET_PASSWORD, lifetime, now)
    queue_email(
        account.email,
        "password_reset",
        {"link": _portal_link("/reset-password", token), "hours": int(lifetime.total_seconds() // 3600)},
        language=account.language,
    )
    audit.record(
        "customer.password_reset_requested",
        actor=Actor.customer(account.id, account.email, ip),
        subject_type="customer_account",
        subject_id=account.id,
    )


def reset_password(token: str, password: str, *, ip: str | None, now: datetime | None = None) -> None:
    """A new password, and every existing session signed out."""
    now = now or utcnow()
    record = _use_token(token, TokenPurpose.RESET_PASSWORD, now)
    account = record.account
    problems = password_problems(password, email=account.email, tax_id=account.tax_id)
    if problems:
        raise AccountError(422, "validation_error", {"password": problems})
    account.password_hash = hash_password(password)
    if account.email_verified_at is None:
        account.email_verified_at = now
        match_account(account, actor=MATCHER, now=now)
    db.session.execute(
        update(CustomerSession)
        .where(CustomerSession.account_id == account.id, CustomerSession.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    audit.record(
        "customer.password_reset",
        actor=Actor.customer(account.id, account.email, ip),
        subject_type="customer_account",
        subject_id=account.id,
    )


def profile_of(account: CustomerAccount) -> dict[str, Any]:
    return {
        "address": {
            "line1": account.address_line1,
            "line2": account.address_line2,
            "postal_code": account.postal_code,
            "city": account.city,
            "province": account.province,
            "country": account.country,
        },
        "phone": account.phone,
        "phone_verified": account.phone_verified,
        "first_name": account.first_name,
        "last_name": account.last_name,
        "tax_id": account.declared_tax_id,
    }


# Profile fields the matching engine uses as evidence: changing one re-matches the account.
MATCHING_FIELDS = ("phone", "first_name", "last_name", "tax_id")


@dataclass
class ProfileChange:
    """The fields a customer sent; absent fields are left as they are. `sent` names the
    optional plain fields present in the request (`None` there clears the value)."""

    address: dict[str, str | None] | None = None
    phone: str | None = None
    phone_sent: bool = False
    errors: dict[str, list[str]] = field(default_factory=dict)
    first_name: str | None = None
    last_name: str | None = None
    tax_id: str | None = None
    sent: frozenset[str] = frozenset()


def _clean_text(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    value = " ".join(value.split())
    return value[:limit] or None


def update_profile(
    account: CustomerAccount, change: ProfileChange, *, ip: str | None, now: datetime | None = None
) -> CustomerAccount:
    """Postal address, phone, name and tax ID; the phone is stored in E.164, a Spanish postal
    code has 5 digits, the tax ID must be a person's (NIF/NIE). The name and tax ID are only
    evidence for matching the account to its policyholder record (never a username), so an
    account not linked yet is re-matched when they or the phone change."""
    before = profile_of(account)
    errors: dict[str, list[str]] = {}
    updates: dict[str, Any] = {}
    for name in ("first_name", "last_name"):
        if name in change.sent:
            updates[name] = _clean_text(getattr(change, name), 128)
    if "tax_id" in change.sent:
        if change.tax_id in (None, "") or not change.tax_id.strip():
            updates["declared_tax_id"] = None
        else:
            try:
                tax_id = normalise_tax_id(change.tax_id)
            except IdentityError as exc:
                errors["tax_id"] = [exc.code]
            else:
                if tax_id.is_person:
                    updates["declared_tax_id"] = tax_id.value
                else:
                    errors["tax_id"] = ["invalid"]
    if change.phone_sent:
        if change.phone in (None, ""):
            updates["phone"] = None
        else:
            try:
                updates["phone"] = normalise_phone(change.phone)
            except IdentityError as exc:
                errors["phone"] = [exc.code]
    if change.address is not None:
        country = change.address.get("country", account.country)
        if country is not None:
            country = country.strip().upper()
            if len(country) != 2 or not country.isalpha():
                errors["address.country"] = ["invalid"]
        postal_code = _clean_text(change.address.get("postal_code", account.postal_code), 16)
        if (
            postal_code
            and (country or "ES") == "ES"
            and not (len(postal_code) == 5 and postal_code.isdigit())
        ):
            errors["address.postal_code"] = ["invalid"]
        updates.update(
            {
                "address_line1": _clean_text(change.address.get("line1", account.address_line1), 255),
                "address_line2": _clean_text(change.address.get("line2", account.address_line2), 255),
                "postal_code": postal_code,
                "city": _clean_text(change.address.get("city", account.city), 128),
                "province": _clean_text(change.address.get("province", account.province), 128),
                "country": country,
            }
        )
    if errors:
        raise AccountError(422, "validation_error", errors)
    if "phone" in updates and updates["phone"] != account.phone:
        account.phone_verified_at = None  # a proof of the old number says nothing of the new one
    for name, value in updates.items():
        setattr(account, name, value)
    db.session.flush()
    after = profile_of(account)
    if after != before:
        audit.record(
            "customer.profile_changed",
            actor=Actor.customer(account.id, account.username, ip),
            subject_type="customer_account",
            subject_id=account.id,
            before=before,
            after=after,
        )
        if any(before[name] != after[name] for name in MATCHING_FIELDS):
            match_account(account, actor=MATCHER, now=now)
            reopen_after_customer_reply(account, actor=Actor.customer(account.id, account.username, ip))
    return account


def policies_of(account: CustomerAccount) -> list[Policy]:
    if account.policyholder_id is None:
        return []
    return list(
        db.session.execute(
            select(Policy).where(Policy.policyholder_id == account.policyholder_id).order_by(Policy.number)
        ).scalars()
    )

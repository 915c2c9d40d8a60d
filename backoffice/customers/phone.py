"""Proving the profile phone with an SMS code.

The email is proven by the link we send; the phone a customer types is only a claim until they
type back a code sent to it. A proven phone is evidence the matching engine may rely on (see
`matching.explain`): whoever reads that number's SMS holds the number on the policyholder's
record, as the e-Customer sign-up already accepts.

The codes are the one-time codes of `backoffice.otp`, bound to this account and this number:
changing the phone leaves an old code unable to prove the new one.
"""

from __future__ import annotations

from datetime import datetime
from hashlib import sha256
from typing import Any

from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from backoffice import audit, otp
from backoffice.audit import Actor
from backoffice.customers.association import reopen_after_customer_reply
from backoffice.customers.ecustomer import otp_failure
from backoffice.customers.matching import SYSTEM as MATCHER
from backoffice.customers.matching import match_account
from backoffice.customers.models import CustomerAccount
from backoffice.customers.service import AccountError
from backoffice.db import utcnow
from backoffice.extensions import db

OTP_PURPOSE = "phone_verification"
SUBJECT_TYPE = "customer_account"
CODES_EXHAUSTED = _l("Too many wrong codes. Ask for a new code.")


def _binding(account: CustomerAccount) -> str:
    """What a code proves: this account holds this number (the challenge's "document")."""
    return sha256(f"phone-verification:{account.id}:{account.phone}".encode()).hexdigest()


def _customer(account: CustomerAccount, ip: str | None) -> Actor:
    return Actor.customer(account.id, account.username, ip)


def _record(action: str, account: CustomerAccount, ip: str | None, after: dict[str, object]) -> None:
    audit.record(
        action, actor=_customer(account, ip), subject_type=SUBJECT_TYPE, subject_id=account.id, after=after
    )


def _open_challenge(account: CustomerAccount) -> otp.OtpChallenge | None:
    """The newest challenge still open for the account's current phone."""
    return db.session.execute(
        select(otp.OtpChallenge)
        .where(
            otp.OtpChallenge.purpose == OTP_PURPOSE,
            otp.OtpChallenge.subject_type == SUBJECT_TYPE,
            otp.OtpChallenge.subject_id == str(account.id),
            otp.OtpChallenge.document_sha256 == _binding(account),
            otp.OtpChallenge.completed_at.is_(None),
            otp.OtpChallenge.exhausted_at.is_(None),
        )
        .order_by(otp.OtpChallenge.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def _require_unproven_phone(account: CustomerAccount) -> None:
    if account.phone is None:
        raise AccountError(409, "phone_missing")
    if account.phone_verified:
        raise AccountError(409, "phone_already_verified")


def _retry_after_limit(*where: Any, setting: str, now: datetime) -> int | None:
    """Seconds until fewer than `setting` phone-proof challenges matching `where` were opened in
    the last hour, or None when fewer already were."""
    opened = list(
        db.session.execute(
            select(otp.OtpChallenge.created_at)
            .where(
                otp.OtpChallenge.purpose == OTP_PURPOSE,
                otp.OtpChallenge.created_at > now - otp.RESEND_WINDOW,
                *where,
            )
            .order_by(otp.OtpChallenge.created_at)
        ).scalars()
    )
    limit = int(current_app.config[setting])
    if len(opened) < limit:
        return None
    return otp.seconds_until(opened[-limit] + otp.RESEND_WINDOW, now)


def _limit_new_challenges(account: CustomerAccount, now: datetime) -> None:
    """A new challenge's first code is not a resend, so it is limited here, twice: an account
    cannot make us text one number after another (someone else's, typed into its profile), and
    many accounts typing the same number cannot add up guesses at its codes (each challenge
    allows OTP_MAX_WRONG_ATTEMPTS)."""
    waits = [
        _retry_after_limit(
            otp.OtpChallenge.subject_type == SUBJECT_TYPE,
            otp.OtpChallenge.subject_id == str(account.id),
            setting="PHONE_VERIFICATION_NUMBERS_PER_HOUR",
            now=now,
        ),
        _retry_after_limit(
            otp.OtpChallenge.phone == account.phone,
            setting="PHONE_VERIFICATION_STARTS_PER_NUMBER_PER_HOUR",
            now=now,
        ),
    ]
    waits = [wait for wait in waits if wait is not None]
    if waits:
        raise otp.OtpError("resend_limit", retry_after=max(waits))


def send_code(account: CustomerAccount, *, ip: str | None, now: datetime | None = None) -> otp.OtpChallenge:
    """Send a code to the profile phone. A second request resends within the one-time codes'
    limits (interval and hourly count, per challenge and per phone), so asking again never
    gives more guesses or more SMS than the e-Customer sign-up allows."""
    now = now or utcnow()
    _require_unproven_phone(account)
    challenge = _open_challenge(account)
    try:
        if challenge is None:
            _limit_new_challenges(account, now)
            challenge = otp.open_challenge(
                purpose=OTP_PURPOSE,
                subject_type=SUBJECT_TYPE,
                subject_id=str(account.id),
                phone=account.phone,
                document_sha256=_binding(account),
                language=account.language,
                now=now,
            )
        else:
            otp.resend_code(challenge, language=account.language, now=now)
    except otp.OtpError as exc:
        raise otp_failure(exc) from exc
    _record("customer.phone_code_sent", account, ip, {"phone": account.phone})
    return challenge


def confirm(account: CustomerAccount, code: str, *, ip: str | None, now: datetime | None = None) -> None:
    """Prove the phone with the code. A wrong code is counted even though the request fails (the
    caller commits it before answering). A proven phone re-matches an account not linked yet."""
    now = now or utcnow()
    _require_unproven_phone(account)
    challenge = _open_challenge(account)
    if challenge is None:
        raise AccountError(409, "no_code_sent")
    try:
        otp.verify_code(challenge, code, document_sha256=_binding(account), now=now)
    except otp.OtpError as exc:
        _record(
            "customer.phone_code_rejected",
            account,
            ip,
            {"reason": exc.code, "attempts_left": exc.attempts_left},
        )
        failure = otp_failure(exc)
        if exc.code == "attempts_exhausted":
            failure.extra["title"] = str(CODES_EXHAUSTED)
        raise failure from exc
    account.phone_verified_at = now
    _record("customer.phone_verified", account, ip, {"phone": account.phone})
    db.session.flush()
    match_account(account, actor=MATCHER, now=now)
    reopen_after_customer_reply(account, actor=_customer(account, ip))

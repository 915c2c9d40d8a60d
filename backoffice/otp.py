"""One-time codes sent by SMS to prove a phone and to sign a document (NIST SP 800-63B rev. 4).

A challenge binds its codes to one subject (a registration, an account) and to the SHA-256 of
the one document they may sign (for a phone proof, of the account and number proven). Codes are stored only as an HMAC; wrong tries are counted on the
challenge, so a resend never gives an attacker more guesses.
"""

from __future__ import annotations

import hmac
import math
import re
import secrets
from datetime import datetime, timedelta
from hashlib import sha256
from typing import Any

from flask import current_app
from sqlalchemy import ForeignKey, Index, String, func, select, update
from sqlalchemy.orm import Mapped, aliased, mapped_column

from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.notifications.service import queue_sms


class OtpChallenge(db.Model):
    __tablename__ = "otp_challenges"
    __table_args__ = (Index("ix_otp_challenges_subject", "subject_type", "subject_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    purpose: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(64))
    subject_id: Mapped[str] = mapped_column(String(64))
    phone: Mapped[str] = mapped_column(String(32), index=True)
    document_sha256: Mapped[str] = mapped_column(String(64))
    wrong_attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    exhausted_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class OtpCode(db.Model):
    """One code sent; a newer code supersedes it, a right answer uses it."""

    __tablename__ = "otp_codes"
    __table_args__ = (Index("ix_otp_codes_phone_sent", "phone", "sent_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    challenge_id: Mapped[int] = mapped_column(ForeignKey("otp_challenges.id"), index=True)
    phone: Mapped[str] = mapped_column(String(32))
    code_hmac: Mapped[str] = mapped_column(String(64))
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    superseded_at: Mapped[datetime | None]
    used_at: Mapped[datetime | None]


# The service. Like every service it flushes and never commits; a refused try raises OtpError
# AFTER flushing the wrong-try count, so the caller must commit before answering (otherwise a
# rollback would hand the guesser unlimited tries).

PURPOSES = ("ecustomer_contract", "representative_contract", "phone_verification")
SMS_TEMPLATE = "one_time_code"
CODE_DIGITS = 6
RESEND_WINDOW = timedelta(hours=1)
_CODE_FORMAT = re.compile(r"[0-9]{6}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class OtpError(Exception):
    """A refused one-time-code operation. `code` is stable (the API's error code);
    `attempts_left` is set on wrong tries, `retry_after` (seconds) on refused resends."""

    def __init__(self, code: str, *, attempts_left: int | None = None, retry_after: int | None = None):
        super().__init__(code)
        self.code = code
        self.attempts_left = attempts_left
        self.retry_after = retry_after


def _setting(name: str) -> int:
    return int(current_app.config[name])


def _hmac_key() -> bytes:
    """A key for this purpose only, derived from SECRET_KEY (rotating SECRET_KEY kills live codes)."""
    return hmac.new(current_app.config["SECRET_KEY"].encode(), b"otp-code-v1", sha256).digest()


def _code_hmac(challenge_id: int, code: str) -> str:
    return hmac.new(_hmac_key(), f"{challenge_id}:{code}".encode(), sha256).hexdigest()


def seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


def _locked(challenge: OtpChallenge) -> OtpChallenge:
    """Re-read the challenge under a row lock (PostgreSQL), so two concurrent tries cannot both
    read the same wrong-try count; `populate_existing` refreshes the caller's object in place."""
    return db.session.execute(
        select(OtpChallenge)
        .where(OtpChallenge.id == challenge.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def _newest_code(challenge: OtpChallenge) -> OtpCode | None:
    return db.session.execute(
        select(OtpCode).where(OtpCode.challenge_id == challenge.id).order_by(OtpCode.id.desc()).limit(1)
    ).scalar_one_or_none()


def _send_code(challenge: OtpChallenge, *, language: str, now: datetime) -> None:
    """Supersede the live code, store the new one as an HMAC only, and queue the SMS (its text
    is blanked once a real provider has it)."""
    db.session.execute(
        update(OtpCode)
        .where(
            OtpCode.challenge_id == challenge.id, OtpCode.superseded_at.is_(None), OtpCode.used_at.is_(None)
        )
        .values(superseded_at=now)
        .execution_options(synchronize_session="fetch")
    )
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    lifetime = _setting("OTP_LIFETIME_MINUTES")
    db.session.add(
        OtpCode(
            challenge_id=challenge.id,
            phone=challenge.phone,
            code_hmac=_code_hmac(challenge.id, code),
            sent_at=now,
            expires_at=now + timedelta(minutes=lifetime),
        )
    )
    message = queue_sms(
        challenge.phone,
        SMS_TEMPLATE,
        {"code": code, "minutes": lifetime, "purpose": challenge.purpose},
        language=language,
    )
    message.redact_after_delivery = True
    db.session.flush()


def open_challenge(
    *,
    purpose: str,
    subject_type: str,
    subject_id: str,
    phone: str,
    document_sha256: str,
    language: str,
    now: datetime | None = None,
) -> OtpChallenge:
    """Create a challenge bound to `subject` and to the SHA-256 (hex) of the one document its
    codes may sign, and send the first code to `phone` (already normalised to E.164 by the
    caller: the per-phone resend limit compares it as stored).

    Opening is not rate-limited here: the caller limits how often a flow may start (the
    e-Customer registration limits per IP and per tax ID)."""
    now = now or utcnow()
    if purpose not in PURPOSES:
        raise ValueError(f"unknown one-time code purpose {purpose!r}")
    if not _SHA256_HEX.fullmatch(document_sha256.lower()):
        raise ValueError("document_sha256 must be a SHA-256 in hexadecimal")
    challenge = OtpChallenge(
        purpose=purpose,
        subject_type=subject_type,
        subject_id=str(subject_id),
        phone=phone,
        document_sha256=document_sha256.lower(),
        wrong_attempts=0,
        created_at=now,
    )
    db.session.add(challenge)
    db.session.flush()
    _send_code(challenge, language=language, now=now)
    return challenge


def _resends_since(since: datetime, *where: Any) -> list[datetime]:
    """`sent_at` of the codes matching `where` sent after `since` that are resends, i.e. not
    the first code of their own challenge; oldest first."""
    first = aliased(OtpCode)
    first_of_challenge = (
        select(func.min(first.id)).where(first.challenge_id == OtpCode.challenge_id).scalar_subquery()
    )
    return list(
        db.session.execute(
            select(OtpCode.sent_at)
            .where(*where, OtpCode.sent_at > since, OtpCode.id != first_of_challenge)
            .order_by(OtpCode.sent_at)
        ).scalars()
    )


def resend_code(challenge: OtpChallenge, *, language: str, now: datetime | None = None) -> None:
    """Send a new code that supersedes the previous one. The wrong-try count is never reset.

    Refusals: `challenge_closed` (completed or exhausted: start again), `resend_too_soon`
    (the last code is younger than OTP_RESEND_INTERVAL_SECONDS), `resend_limit` (already
    OTP_MAX_RESENDS_PER_HOUR resends in the last hour). Both 429-style refusals carry
    `retry_after`; when both apply, `resend_limit` wins with the later of the two times.

    What is counted: resends only, i.e. every code except the first one of each challenge,
    sent in the last hour, (a) for this challenge and (b) to this phone across all challenges.
    A challenge's first code is not counted, so starting a flow is never refused here as if it
    were a resend; how often flows may start is the caller's limit (registrations per IP and
    per tax ID). Counting first codes per phone would instead let anyone who knows a phone
    number block its owner's resends by starting flows. The per-phone rule is what stops a
    caller from dodging the per-challenge limit by juggling several challenges.
    """
    now = now or utcnow()
    challenge = _locked(challenge)
    if challenge.completed_at is not None or challenge.exhausted_at is not None:
        raise OtpError("challenge_closed")

    interval = timedelta(seconds=_setting("OTP_RESEND_INTERVAL_SECONDS"))
    last = _newest_code(challenge)
    too_soon_until = last.sent_at + interval if last is not None and last.sent_at + interval > now else None

    limit = _setting("OTP_MAX_RESENDS_PER_HOUR")
    since = now - RESEND_WINDOW
    limited_until = None
    for where in (OtpCode.challenge_id == challenge.id, OtpCode.phone == challenge.phone):
        resends = _resends_since(since, where)
        if len(resends) >= limit:
            # Allowed again once enough of them have left the one-hour window.
            until = resends[len(resends) - limit] + RESEND_WINDOW
            limited_until = until if limited_until is None else max(limited_until, until)

    if limited_until is not None:
        until = max(limited_until, too_soon_until) if too_soon_until else limited_until
        raise OtpError("resend_limit", retry_after=seconds_until(until, now))
    if too_soon_until is not None:
        raise OtpError("resend_too_soon", retry_after=seconds_until(too_soon_until, now))
    _send_code(challenge, language=language, now=now)


def verify_code(
    challenge: OtpChallenge, code: str, *, document_sha256: str, now: datetime | None = None
) -> None:
    """Check `code` against the challenge's newest code, for signing `document_sha256`.

    In this order: a completed challenge is `challenge_closed`; an exhausted one is
    `attempts_exhausted`; another document is `document_mismatch`, and is NOT counted as a
    wrong try: the hash comes from the server's own record of what is being signed, not from
    the person guessing, and the code is not even looked at, so nothing is learnt from it. No
    live code (none sent, superseded, or the newest expired) is `code_expired`, not counted
    either (nothing was compared). Otherwise the code is compared, as an HMAC, in constant
    time: surrounding spaces are ignored, anything that is not exactly 6 ASCII digits is a
    wrong try. A wrong try is counted (flushed: the caller must commit it even though this
    raises) and answered `code_invalid` with `attempts_left`, or `attempts_exhausted` on the
    OTP_MAX_WRONG_ATTEMPTS-th. The right code is used once and completes the challenge.
    """
    now = now or utcnow()
    challenge = _locked(challenge)
    maximum = _setting("OTP_MAX_WRONG_ATTEMPTS")
    if challenge.completed_at is not None:
        raise OtpError("challenge_closed")
    if challenge.exhausted_at is not None or challenge.wrong_attempts >= maximum:
        raise OtpError("attempts_exhausted", attempts_left=0)
    if not hmac.compare_digest(document_sha256.lower().encode(), challenge.document_sha256.lower().encode()):
        raise OtpError("document_mismatch")
    live = _newest_code(challenge)
    if live is None or live.superseded_at is not None or live.used_at is not None or live.expires_at <= now:
        raise OtpError("code_expired", attempts_left=maximum - challenge.wrong_attempts)

    candidate = code.strip() if isinstance(code, str) else ""
    well_formed = _CODE_FORMAT.fullmatch(candidate) is not None
    matches = hmac.compare_digest(_code_hmac(challenge.id, candidate), live.code_hmac)
    if well_formed and matches:
        live.used_at = now
        challenge.completed_at = now
        db.session.flush()
        return

    challenge.wrong_attempts += 1
    attempts_left = max(maximum - challenge.wrong_attempts, 0)
    if attempts_left == 0:
        challenge.exhausted_at = now
    db.session.flush()
    if attempts_left == 0:
        raise OtpError("attempts_exhausted", attempts_left=0)
    raise OtpError("code_invalid", attempts_left=attempts_left)

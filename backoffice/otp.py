"""One-time codes sent by SMS to prove a phone and to sign a document (NIST SP 800-63B rev. 4).

A challenge binds its codes to one subject (a registration) and to the SHA-256 of the one
document they may sign. Codes are stored only as an HMAC; wrong tries are counted on the
challenge, so a resend never gives an attacker more guesses.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from backoffice.db import utcnow
from backoffice.extensions import db


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

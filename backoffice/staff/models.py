"""Staff users and their server-side sessions."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backoffice.db import utcnow, value_enum
from backoffice.extensions import db


class Role(enum.StrEnum):
    LEGAL_REVIEWER = "legal_reviewer"
    CALL_AGENT = "call_agent"
    ASSOCIATION_CLERK = "association_clerk"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class StaffUser(db.Model):
    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(value_enum(Role))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    # The back office's language for this person ("es" or "en"); Spanish unless they choose.
    language: Mapped[str] = mapped_column(String(8), default="es", server_default="es")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_sign_in_at: Mapped[datetime | None]
    # Two-step sign-in (backoffice/staff/mfa.py). The TOTP secret is stored encrypted and is
    # shown only while enrolling; until `mfa_enrolled_at` is set it is a pending one.
    totp_secret_encrypted: Mapped[str | None] = mapped_column(String(255))
    mfa_enrolled_at: Mapped[datetime | None]
    # The last accepted TOTP time step: that code, and any older one, is never accepted again.
    totp_last_step: Mapped[int | None]

    sessions: Mapped[list[StaffSession]] = relationship(back_populates="user", lazy="raise")

    # Flask-Login's user protocol
    is_anonymous = False

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    def get_id(self) -> str:
        return str(self.id)

    def has_role(self, *roles: Role) -> bool:
        return self.role in roles

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


class StaffSession(db.Model):
    """A signed-in browser. The cookie carries a random token; only its SHA-256 is stored,
    so signing out (or deactivation) kills the session on the server, whatever the cookie says.

    A session opened by a correct password is only half signed in until the second step
    (`mfa_verified_at`); it ends after a spell without activity or a fixed lifetime, whichever
    comes first (STAFF_IDLE_MINUTES, STAFF_SESSION_HOURS)."""

    __tablename__ = "staff_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    mfa_verified_at: Mapped[datetime | None]
    # The last time the password and a code were entered again, for changes that ask for it.
    reauthenticated_at: Mapped[datetime | None]
    # Wrong codes in a row on this session; too many end it (back to the password).
    mfa_failures: Mapped[int] = mapped_column(default=0, server_default="0")

    user: Mapped[StaffUser] = relationship(back_populates="sessions", lazy="joined")

    @property
    def authenticated_at(self) -> datetime | None:
        """When the password and a code were last proved on this session."""
        moments = [moment for moment in (self.mfa_verified_at, self.reauthenticated_at) if moment]
        return max(moments, default=None)


class RecoveryCode(db.Model):
    """A single-use code for when the authenticator is lost. Codes are long and random, so a
    SHA-256 of the normalised code is enough to store."""

    __tablename__ = "staff_recovery_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]

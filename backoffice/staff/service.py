"""Staff accounts and sign-in: creation, roles, deactivation, sessions. Every change is audited.

Sessions end on the server: on sign-out, deactivation, an MFA reset, after STAFF_IDLE_MINUTES
without a request, or STAFF_SESSION_HOURS after the password was entered. Role changes and
deactivation by staff need the password and a code entered within STAFF_REAUTH_MINUTES.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString
from sqlalchemy import func, select, update

from backoffice import audit, identity
from backoffice.audit import Actor
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.i18n import DEFAULT_LANGUAGE, LANGUAGES
from backoffice.passwords import (
    hash_password,
    needs_rehash,
    password_problems,
    spend_a_verification,
    verify_password,
)
from backoffice.staff.models import Role, StaffSession, StaffUser

SESSION_TOUCH_SECONDS = 60


class StaffError(ValueError):
    """A staff change that cannot be made; `errors` maps field names to stable codes."""

    def __init__(self, message: str, errors: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.errors = errors or {}


class ReauthenticationRequired(StaffError):
    """The acting staff member must enter their password and a code again first."""


def recently_authenticated(authenticated_at: datetime | None, *, now: datetime | None = None) -> bool:
    """Whether the password and a code were entered within STAFF_REAUTH_MINUTES."""
    if authenticated_at is None:
        return False
    window = timedelta(minutes=current_app.config["STAFF_REAUTH_MINUTES"])
    return (now or utcnow()) - authenticated_at <= window


def require_recent_authentication(
    actor: Actor, reauthenticated_at: datetime | None, *, now: datetime | None = None
) -> None:
    """Sensitive staff changes made by staff need a fresh password and code, so a session left
    open (or stolen) cannot grant roles. The CLI and jobs act as the system: they already hold
    the server."""
    if actor.kind == "staff" and not recently_authenticated(reauthenticated_at, now=now):
        raise ReauthenticationRequired(
            _("Enter your password and a code again to make this change."),
            {"reauthentication": ["required"]},
        )


def normalise_email(email: str) -> str:
    try:
        return identity.normalise_email(email)
    except identity.IdentityError as exc:
        raise StaffError(_("Not a valid email address."), {"email": [exc.code]}) from exc


def find_by_email(email: str) -> StaffUser | None:
    return db.session.execute(
        select(StaffUser).where(func.lower(StaffUser.email) == email.strip().lower())
    ).scalar_one_or_none()


def _snapshot(user: StaffUser) -> dict[str, object]:
    return {
        "email": user.email,
        "name": user.name,
        "role": str(user.role),
        "active": user.active,
        "language": user.language,
    }


def _audited_change(user: StaffUser, action: str, actor: Actor, change: Callable[[], None]) -> StaffUser:
    """Apply a change and record it with the user's state before and after (if anything changed)."""
    before = _snapshot(user)
    change()
    db.session.flush()
    if _snapshot(user) != before:
        audit.record(
            action,
            actor=actor,
            subject_type="staff",
            subject_id=user.id,
            before=before,
            after=_snapshot(user),
        )
    return user


def create_staff(email: str, name: str, role: Role | str, password: str, *, actor: Actor) -> StaffUser:
    email = normalise_email(email)
    name = name.strip()
    errors: dict[str, list[str]] = {}
    if not name:
        errors["name"] = ["required"]
    try:
        role = Role(role)
    except ValueError:
        errors["role"] = ["invalid"]
    problems = password_problems(password, email=email)
    if problems:
        errors["password"] = problems
    if find_by_email(email):
        errors["email"] = ["taken"]
    if errors:
        raise StaffError(_("The staff user could not be created."), errors)
    user = StaffUser(
        email=email, name=name, role=role, password_hash=hash_password(password), language=DEFAULT_LANGUAGE
    )
    db.session.add(user)
    db.session.flush()
    audit.record(
        "staff.created", actor=actor, subject_type="staff", subject_id=user.id, after=_snapshot(user)
    )
    return user


def update_staff(user: StaffUser, *, name: str, actor: Actor) -> StaffUser:
    def rename() -> None:
        user.name = name.strip() or user.name

    return _audited_change(user, "staff.updated", actor, rename)


def set_language(user: StaffUser, language: str, *, actor: Actor) -> StaffUser:
    """The language the back office speaks to this person (each chooses their own)."""
    if language not in LANGUAGES:
        raise StaffError(_("Choose Spanish or English."), {"language": ["invalid"]})

    def choose() -> None:
        user.language = language

    return _audited_change(user, "staff.updated", actor, choose)


def _refuse_self_lockout(user: StaffUser, actor: Actor, message: LazyString) -> None:
    """An admin who demotes or deactivates themselves can lock everyone out of staff management."""
    if actor.kind == "staff" and actor.id == str(user.id):
        raise StaffError(str(message), {"role": ["self_lockout"]})


def set_role(
    user: StaffUser, role: Role | str, *, actor: Actor, reauthenticated_at: datetime | None = None
) -> StaffUser:
    try:
        role = Role(role)
    except ValueError as exc:
        raise StaffError(_("Unknown role “%(role)s”.", role=role), {"role": ["invalid"]}) from exc
    if user.role == role:
        return user
    _refuse_self_lockout(user, actor, _l("You cannot change the role of yourself; ask another admin."))
    require_recent_authentication(actor, reauthenticated_at)
    return _audited_change(user, "staff.role_changed", actor, lambda: setattr(user, "role", role))


def deactivate(user: StaffUser, *, actor: Actor, reauthenticated_at: datetime | None = None) -> StaffUser:
    """Deactivation also ends every live session of the user at once."""
    if not user.active:
        return user
    _refuse_self_lockout(user, actor, _l("You cannot deactivate yourself; ask another admin."))
    require_recent_authentication(actor, reauthenticated_at)

    def switch_off() -> None:
        user.active = False
        revoke_sessions(user.id)

    return _audited_change(user, "staff.deactivated", actor, switch_off)


def reactivate(user: StaffUser, *, actor: Actor) -> StaffUser:
    return _audited_change(user, "staff.reactivated", actor, lambda: setattr(user, "active", True))


def set_password(user: StaffUser, password: str, *, actor: Actor) -> StaffUser:
    problems = password_problems(password, email=user.email)
    if problems:
        raise StaffError(_("The password does not meet the policy."), {"password": problems})
    user.password_hash = hash_password(password)
    revoke_sessions(user.id)
    db.session.flush()
    audit.record("staff.password_set", actor=actor, subject_type="staff", subject_id=user.id)
    return user


def revoke_sessions(staff_id: int) -> None:
    db.session.execute(
        update(StaffSession)
        .where(StaffSession.staff_id == staff_id, StaffSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SignIn:
    user: StaffUser
    session_token: str


def sign_in(email: str, password: str, *, ip: str | None, user_agent: str | None) -> SignIn | None:
    """Check credentials and open a server-side session. Unknown users cost one hash check
    too, and the caller shows one generic message either way."""
    user = find_by_email(email)
    if user is None:
        spend_a_verification(password)
    elif verify_password(user.password_hash, password) and user.active:
        if needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        token = secrets.token_urlsafe(32)
        db.session.add(
            StaffSession(
                token_hash=_token_hash(token),
                staff_id=user.id,
                ip=ip,
                user_agent=(user_agent or "")[:255] or None,
            )
        )
        user.last_sign_in_at = utcnow()
        db.session.flush()
        audit.record("staff.signed_in", actor=Actor.staff(user, ip), subject_type="staff", subject_id=user.id)
        return SignIn(user, token)
    audit.record(
        "staff.sign_in_failed",
        actor=Actor(kind="staff", id=str(user.id) if user else None, label=email[:255], ip=ip),
        subject_type="staff",
        subject_id=user.id if user else None,
    )
    return None


class SessionState(enum.StrEnum):
    NONE = "none"  # no session: never signed in, signed out, revoked or deactivated
    EXPIRED = "expired"  # it timed out just now (and is revoked)
    ENROL = "enrol"  # password accepted; the user has no second step set up yet
    VERIFY = "verify"  # password accepted; waiting for a code
    COMPLETE = "complete"


class Expiry(enum.StrEnum):
    IDLE = "idle"
    ABSOLUTE = "absolute"


@dataclass(frozen=True)
class SessionCheck:
    state: SessionState
    session: StaffSession | None = None
    expiry: Expiry | None = None


def _expiry(session: StaffSession, now: datetime) -> Expiry | None:
    config = current_app.config
    if now - session.created_at > timedelta(hours=config["STAFF_SESSION_HOURS"]):
        return Expiry.ABSOLUTE
    if now - session.last_seen_at > timedelta(minutes=config["STAFF_IDLE_MINUTES"]):
        return Expiry.IDLE
    return None


def check_session(token: str | None, *, now: datetime | None = None) -> SessionCheck:
    """What a browser's session token is worth right now. A session past its idle or absolute
    limit is revoked here (and audited), so the limits hold on the server whatever the cookie
    says; a live one has its last activity recorded (at most once a minute)."""
    if not token:
        return SessionCheck(SessionState.NONE)
    session = db.session.get(StaffSession, _token_hash(token))
    if session is None or session.revoked_at is not None or not session.user.active:
        return SessionCheck(SessionState.NONE)
    now = now or utcnow()
    expiry = _expiry(session, now)
    if expiry is not None:
        session.revoked_at = now
        db.session.flush()
        audit.record(
            "session.expired",
            actor=Actor.system("session-timeout"),
            subject_type="staff",
            subject_id=session.staff_id,
            after={
                "reason": str(expiry),
                "created_at": session.created_at,
                "last_seen_at": session.last_seen_at,
            },
        )
        return SessionCheck(SessionState.EXPIRED, session, expiry)
    if (now - session.last_seen_at).total_seconds() > SESSION_TOUCH_SECONDS:
        session.last_seen_at = now
    if session.mfa_verified_at is not None:
        return SessionCheck(SessionState.COMPLETE, session)
    if session.user.mfa_enrolled_at is None:
        return SessionCheck(SessionState.ENROL, session)
    return SessionCheck(SessionState.VERIFY, session)


def sign_out(token: str | None, *, actor: Actor) -> None:
    if not token:
        return
    session = db.session.get(StaffSession, _token_hash(token))
    if session is None or session.revoked_at is not None:
        return
    session.revoked_at = utcnow()
    db.session.flush()
    audit.record("staff.signed_out", actor=actor, subject_type="staff", subject_id=session.staff_id)

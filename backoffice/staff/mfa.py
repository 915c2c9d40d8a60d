"""Staff two-step sign-in: a TOTP authenticator app (RFC 6238) enrolled with a QR code, required
for every role, with single-use recovery codes for a lost phone, and an admin reset.

The TOTP secret is stored encrypted (Fernet, keyed from SECRET_KEY through HKDF): a copy of the
database alone does not give anyone the codes. Changing SECRET_KEY therefore means every staff
member enrols again (an admin resets them). Every accepted code moves the user's last used time
step forward, and no code of that step or an earlier one is accepted again, so an overheard
code cannot be replayed. Every change and every attempt is audited.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import delete, func, or_, select, update

from backoffice import audit
from backoffice.audit import Actor
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.passwords import verify_password
from backoffice.staff.models import RecoveryCode, StaffSession, StaffUser
from backoffice.staff.service import StaffError, require_recent_authentication, revoke_sessions

ISSUER = "Ventanilla"
VALID_WINDOW = 1  # one 30-second step either side, for clocks that drift a little
RECOVERY_CODE_COUNT = 10
# Lower-case letters and digits without look-alikes (no i, l, o, 0, 1): 31 symbols.
RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
RECOVERY_GROUPS = 3
RECOVERY_GROUP_LENGTH = 4  # 12 symbols, about 59 bits


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    LOCKED = "locked"  # too many wrong codes: the session is ended


class Method(enum.StrEnum):
    TOTP = "totp"
    RECOVERY_CODE = "recovery_code"


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    method: Method | None = None
    recovery_codes: tuple[str, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


def _fernet() -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"ventanilla staff totp secret").derive(
        current_app.config["SECRET_KEY"].encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def _encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def totp_secret(user: StaffUser) -> str | None:
    """The user's TOTP secret (pending or enrolled), or None if there is none or it cannot be
    read with the current SECRET_KEY."""
    if user.totp_secret_encrypted is None:
        return None
    try:
        return _fernet().decrypt(user.totp_secret_encrypted.encode()).decode()
    except InvalidToken:
        return None


def is_enrolled(user: StaffUser) -> bool:
    return user.mfa_enrolled_at is not None


def pending_secret(user: StaffUser, *, actor: Actor) -> str:
    """The secret to show while enrolling: made on first use and kept until confirmed, so a
    reload shows the same QR code. Once enrolled, it is never shown again."""
    if is_enrolled(user):
        raise StaffError(_("Two-step sign-in is already set up."), {"mfa": ["enrolled"]})
    secret = totp_secret(user)
    if secret is None:
        secret = pyotp.random_base32()
        user.totp_secret_encrypted = _encrypt(secret)
        db.session.flush()
        audit.record("mfa.enrolment_started", actor=actor, subject_type="staff", subject_id=user.id)
    return secret


def provisioning_uri(user: StaffUser, secret: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)


def qr_code_data_uri(uri: str) -> str:
    """The QR code as an SVG data URI for an <img>: drawn here, no script and no outside service."""
    return segno.make(uri, error="m").svg_data_uri(scale=5, border=2)


def normalise_code(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def _accept_totp(user: StaffUser, secret: str, code: str, now: datetime) -> bool:
    """A code of the current step or one either side, newer than the last accepted one. The
    conditional update makes two requests racing with one code accept it only once."""
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in range(current - VALID_WINDOW, current + VALID_WINDOW + 1):
        if user.totp_last_step is not None and step <= user.totp_last_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            moved = db.session.execute(
                update(StaffUser)
                .where(
                    StaffUser.id == user.id,
                    or_(StaffUser.totp_last_step.is_(None), StaffUser.totp_last_step < step),
                )
                .values(totp_last_step=step)
                .execution_options(synchronize_session=False)
            ).rowcount
            if moved:
                user.totp_last_step = step
            return bool(moved)
    return False


def _code_hash(code: str) -> str:
    return hashlib.sha256(normalise_code(code).encode()).hexdigest()


def _consume_recovery_code(user: StaffUser, code: str, now: datetime) -> bool:
    used = db.session.execute(
        update(RecoveryCode)
        .where(
            RecoveryCode.staff_id == user.id,
            RecoveryCode.code_hash == _code_hash(code),
            RecoveryCode.used_at.is_(None),
        )
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    return bool(used)


def remaining_recovery_codes(user: StaffUser) -> int:
    return db.session.execute(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.staff_id == user.id, RecoveryCode.used_at.is_(None))
    ).scalar_one()


def _new_recovery_codes(user: StaffUser) -> tuple[str, ...]:
    """Replace every earlier code with a new set, returned once in clear and stored hashed."""
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.staff_id == user.id))
    codes = tuple(
        "-".join(
            "".join(secrets.choice(RECOVERY_ALPHABET) for _ in range(RECOVERY_GROUP_LENGTH))
            for _ in range(RECOVERY_GROUPS)
        )
        for _ in range(RECOVERY_CODE_COUNT)
    )
    db.session.add_all(RecoveryCode(staff_id=user.id, code_hash=_code_hash(code)) for code in codes)
    db.session.flush()
    return codes


def _check_code(user: StaffUser, code: str, ip: str | None, now: datetime) -> Method | None:
    """Six digits are an authenticator code; anything else may be a recovery code (used up)."""
    code = normalise_code(code)
    secret = totp_secret(user)
    if code.isdigit() and len(code) == 6:
        return Method.TOTP if secret and _accept_totp(user, secret, code, now) else None
    if code and _consume_recovery_code(user, code, now):
        audit.record(
            "mfa.recovery_code_used",
            actor=Actor.staff(user, ip),
            subject_type="staff",
            subject_id=user.id,
            after={"remaining": remaining_recovery_codes(user)},
        )
        return Method.RECOVERY_CODE
    return None


def _refused(session: StaffSession, purpose: str, ip: str | None, now: datetime) -> Result:
    """Count a wrong code on this session; too many in a row end it."""
    session.mfa_failures += 1
    locked = session.mfa_failures >= current_app.config["STAFF_MFA_MAX_FAILURES"]
    if locked:
        session.revoked_at = now
    db.session.flush()
    audit.record(
        "mfa.failed",
        actor=Actor.staff(session.user, ip),
        subject_type="staff",
        subject_id=session.staff_id,
        after={"purpose": purpose, "failures": session.mfa_failures, "session_ended": locked},
    )
    return Result(Outcome.LOCKED if locked else Outcome.REFUSED)


def _verified(session: StaffSession, now: datetime) -> None:
    session.mfa_verified_at = now
    session.mfa_failures = 0


def complete_enrolment(
    session: StaffSession, code: str, *, ip: str | None, now: datetime | None = None
) -> Result:
    """The first code from the newly set-up app proves it works: the user is enrolled, this
    session is signed in, and the recovery codes are handed out (only now, only once)."""
    now = now or utcnow()
    user = session.user
    secret = totp_secret(user)
    code = normalise_code(code)
    if is_enrolled(user) or secret is None or not _accept_totp(user, secret, code, now):
        return _refused(session, "enrolment", ip, now)
    user.mfa_enrolled_at = now
    _verified(session, now)
    codes = _new_recovery_codes(user)
    audit.record("mfa.enrolled", actor=Actor.staff(user, ip), subject_type="staff", subject_id=user.id)
    return Result(Outcome.ACCEPTED, Method.TOTP, codes)


def verify(session: StaffSession, code: str, *, ip: str | None, now: datetime | None = None) -> Result:
    """The second step of signing in: an authenticator code or a recovery code."""
    now = now or utcnow()
    method = _check_code(session.user, code, ip, now) if is_enrolled(session.user) else None
    if method is None:
        return _refused(session, "sign_in", ip, now)
    _verified(session, now)
    audit.record(
        "mfa.verified",
        actor=Actor.staff(session.user, ip),
        subject_type="staff",
        subject_id=session.staff_id,
        after={"method": str(method)},
    )
    return Result(Outcome.ACCEPTED, method)


def reauthenticate(
    session: StaffSession, password: str, code: str, *, ip: str | None, now: datetime | None = None
) -> Result:
    """Password and a code again, before a sensitive change. The code is only checked (and
    spent) when the password is right."""
    now = now or utcnow()
    user = session.user
    method = _check_code(user, code, ip, now) if verify_password(user.password_hash, password) else None
    if method is None:
        return _refused(session, "reauthentication", ip, now)
    session.reauthenticated_at = now
    session.mfa_failures = 0
    audit.record(
        "staff.reauthenticated",
        actor=Actor.staff(user, ip),
        subject_type="staff",
        subject_id=user.id,
        after={"method": str(method)},
    )
    return Result(Outcome.ACCEPTED, method)


def regenerate_recovery_codes(
    user: StaffUser, *, actor: Actor, reauthenticated_at: datetime | None
) -> tuple[str, ...]:
    """A new set of recovery codes for oneself; every earlier one stops working."""
    require_recent_authentication(actor, reauthenticated_at)
    codes = _new_recovery_codes(user)
    audit.record("mfa.recovery_codes_regenerated", actor=actor, subject_type="staff", subject_id=user.id)
    return codes


def reset(user: StaffUser, *, actor: Actor, reauthenticated_at: datetime | None) -> StaffUser:
    """An admin removes someone's second step (a lost phone and no recovery codes): their
    sessions end, and they set up a new authenticator at their next sign-in."""
    if actor.kind == "staff" and actor.id == str(user.id):
        raise StaffError(
            _("You cannot reset your own two-step sign-in; ask another admin."), {"mfa": ["self_reset"]}
        )
    require_recent_authentication(actor, reauthenticated_at)
    before = {"enrolled_at": user.mfa_enrolled_at, "recovery_codes": remaining_recovery_codes(user)}
    user.totp_secret_encrypted = None
    user.mfa_enrolled_at = None
    user.totp_last_step = None
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.staff_id == user.id))
    revoke_sessions(user.id)
    db.session.flush()
    audit.record(
        "mfa.reset",
        actor=actor,
        subject_type="staff",
        subject_id=user.id,
        before=before,
        after={"enrolled_at": None, "recovery_codes": 0},
    )
    return user


def enrol_with_secret(user: StaffUser, secret: str, *, actor: Actor) -> tuple[str, ...]:
    """Enrol with a secret provided by the operator (the demo staff's published one), without
    the QR step. Returns the recovery codes."""
    user.totp_secret_encrypted = _encrypt(secret)
    user.mfa_enrolled_at = utcnow()
    user.totp_last_step = None
    codes = _new_recovery_codes(user)
    audit.record(
        "mfa.enrolled",
        actor=actor,
        subject_type="staff",
        subject_id=user.id,
        after={"provisioned": True},
    )
    return codes

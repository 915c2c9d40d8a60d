"""Idempotency keys for creating POSTs: the same key and body within 24 h returns the first
response and creates nothing new; the same key with another body is refused."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, String, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from backoffice.db import savepoint, utcnow
from backoffice.extensions import db

RETENTION = timedelta(hours=24)
MAX_KEY_LENGTH = 255


class IdempotencyRecord(db.Model):
    __tablename__ = "idempotency_records"

    scope_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None]
    body: Mapped[Any | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


def fingerprint(payload: Any) -> str:
    """Of the parsed request (fields and file hashes), never the raw bytes: a retried multipart
    request has a new boundary but is the same request."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def scope_hash(key: str, endpoint: str, principal: str) -> str:
    return hashlib.sha256(f"{endpoint}\0{principal}\0{key}".encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    """`replay` holds the first response when this is a retry; `conflict` names why not."""

    record: IdempotencyRecord | None = None
    replay: tuple[int, Any] | None = None
    conflict: str | None = None


def claim(key: str, endpoint: str, principal: str, payload: Any, *, now: datetime | None = None) -> Claim:
    """Reserve the key inside the caller's transaction; it commits with what the request creates."""
    now = now or utcnow()
    scope = scope_hash(key, endpoint, principal)
    expected = fingerprint(payload)
    existing = db.session.get(IdempotencyRecord, scope)
    if existing is not None and existing.expires_at <= now:
        db.session.delete(existing)
        db.session.flush()
        existing = None
    if existing is None:
        record = IdempotencyRecord(
            scope_hash=scope, fingerprint=expected, created_at=now, expires_at=now + RETENTION
        )
        try:
            with savepoint(db.session):
                db.session.add(record)
        except IntegrityError:
            existing = db.session.execute(
                select(IdempotencyRecord)
                .where(IdempotencyRecord.scope_hash == scope)
                .execution_options(populate_existing=True)
            ).scalar_one()
        else:
            return Claim(record=record)
    if existing.fingerprint != expected:
        return Claim(conflict="idempotency_key_mismatch")
    if existing.status_code is None:
        return Claim(conflict="idempotency_in_progress")
    return Claim(replay=(existing.status_code, _unsealed(existing.body)))


def _fernet() -> Any:
    import base64

    from cryptography.fernet import Fernet
    from flask import current_app

    key = hashlib.sha256(f"idempotency-replay:{current_app.config['SECRET_KEY']}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def remember(record: IdempotencyRecord, status_code: int, body: Any, *, sealed: bool = False) -> None:
    """`sealed` answers hold a secret shown once (an access key): kept encrypted, for 24 h only."""
    record.status_code = status_code
    record.body = (
        {"sealed": _fernet().encrypt(json.dumps(body, default=str).encode()).decode()} if sealed else body
    )
    db.session.flush()


def _unsealed(body: Any) -> Any:
    if isinstance(body, dict) and set(body) == {"sealed"}:
        return json.loads(_fernet().decrypt(body["sealed"].encode()))
    return body


def purge_expired(*, now: datetime | None = None) -> int:
    """Periodic clean-up of keys older than 24 h."""
    now = now or utcnow()
    result = db.session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now))
    return result.rowcount or 0

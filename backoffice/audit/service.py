"""Writing and verifying the audit log. Every service records through `record`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from backoffice.audit.models import GENESIS_HASH, AuditChainHead, AuditEvent
from backoffice.db import savepoint, utcnow
from backoffice.extensions import db

HEAD_ID = 1


@dataclass(frozen=True)
class Actor:
    """Who did something: a staff user, a customer, or the system itself (jobs, imports)."""

    kind: str
    id: str | None = None
    label: str | None = None
    ip: str | None = None

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(kind="system", label=label)

    @classmethod
    def staff(cls, user: Any, ip: str | None = None) -> Actor:
        return cls(kind="staff", id=str(user.id), label=user.email, ip=ip)

    @classmethod
    def customer(cls, customer_id: Any, label: str | None = None, ip: str | None = None) -> Actor:
        return cls(kind="customer", id=str(customer_id), label=label, ip=ip)


def _plain_json(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the database will give back, so the hash is computed on exactly the stored values."""
    if value is None:
        return None
    return json.loads(json.dumps(value, default=str))


def event_hash(event: AuditEvent) -> str:
    content = {
        "seq": event.seq,
        "occurred_at": event.occurred_at.isoformat(),
        "actor_kind": event.actor_kind,
        "actor_id": event.actor_id,
        "actor_label": event.actor_label,
        "action": event.action,
        "subject_type": event.subject_type,
        "subject_id": event.subject_id,
        "before": event.before,
        "after": event.after,
        "ip": event.ip,
        "prev_hash": event.prev_hash,
    }
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _locked_head() -> AuditChainHead:
    """Lock the chain head for the rest of the transaction, creating it on first use."""
    session = db.session
    locked = session.execute(
        update(AuditChainHead)
        .where(AuditChainHead.id == HEAD_ID)
        .values(last_seq=AuditChainHead.last_seq)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not locked:
        try:
            with savepoint(session):
                session.add(AuditChainHead(id=HEAD_ID, last_seq=0, last_hash=GENESIS_HASH))
        except IntegrityError:
            pass
        return _locked_head()
    return session.execute(
        select(AuditChainHead).where(AuditChainHead.id == HEAD_ID).execution_options(populate_existing=True)
    ).scalar_one()


def record(
    action: str,
    *,
    actor: Actor,
    subject_type: str | None = None,
    subject_id: Any = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction; it commits or rolls back with the change."""
    head = _locked_head()
    event = AuditEvent(
        seq=head.last_seq + 1,
        occurred_at=utcnow(),
        actor_kind=actor.kind,
        actor_id=actor.id,
        actor_label=actor.label,
        action=action,
        subject_type=subject_type,
        subject_id=None if subject_id is None else str(subject_id),
        before=_plain_json(before),
        after=_plain_json(after),
        ip=actor.ip,
        prev_hash=head.last_hash,
    )
    event.hash = event_hash(event)
    db.session.add(event)
    head.last_seq = event.seq
    head.last_hash = event.hash
    db.session.flush()
    return event


@dataclass(frozen=True)
class ChainReport:
    checked: int
    broken_at: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_chain(batch_size: int = 1000) -> ChainReport:
    """Walk the whole log and report the first link that does not hold."""
    result = db.session.execute(
        select(AuditEvent).order_by(AuditEvent.seq).execution_options(yield_per=batch_size)
    )
    try:
        return _walk(result.scalars())
    finally:
        result.close()


def _walk(events: Iterable[AuditEvent]) -> ChainReport:
    expected_seq, expected_prev = 1, GENESIS_HASH
    checked = 0
    for event in events:
        if event.seq != expected_seq:
            return ChainReport(checked, event.seq, f"events {expected_seq} to {event.seq - 1} are missing")
        if event.prev_hash != expected_prev:
            return ChainReport(checked, event.seq, "does not link to the event before it")
        if event_hash(event) != event.hash:
            return ChainReport(checked, event.seq, "its content was changed after it was written")
        checked += 1
        expected_seq, expected_prev = event.seq + 1, event.hash
    head = db.session.get(AuditChainHead, HEAD_ID)
    last_seq = head.last_seq if head else 0
    last_hash = head.last_hash if head else GENESIS_HASH
    if last_seq != expected_seq - 1 or last_hash != expected_prev:
        return ChainReport(
            checked,
            expected_seq,
            f"the log ends at event {expected_seq - 1} but the chain head records event {last_seq}",
        )
    return ChainReport(checked)

"""The audit log tables: events, and the heads of their hash chains."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Index, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from backoffice.db import utcnow
from backoffice.extensions import db

GENESIS_HASH = "0" * 64


def genesis_hash(chain: int) -> str:
    """What the first event of a chain links to. Chain 1 keeps the all-zero genesis it had when
    it was the only chain; every other chain has its own, so no two chains can share a hash."""
    if chain == 1:
        return GENESIS_HASH
    return hashlib.sha256(f"ventanilla audit chain {chain}".encode()).hexdigest()


class AuditEvent(db.Model):
    """One thing that happened. `seq` orders the whole log (numbers of rolled-back writes are
    skipped). The log is several hash chains written side by side, so concurrent transactions
    do not queue behind one lock: within its `chain`, `chain_seq` is contiguous and each event
    hashes its predecessor, so an edited, removed or inserted row breaks its chain there."""

    __tablename__ = "audit_events"
    __table_args__ = (
        CheckConstraint("actor_kind IN ('staff', 'customer', 'system')", name="actor_kind"),
        Index("ix_audit_events_subject", "subject_type", "subject_id"),
        Index("ix_audit_events_actor", "actor_kind", "actor_id"),
        Index("ux_audit_events_chain_seq", "chain", "chain_seq", unique=True),
    )

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(db.Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    chain: Mapped[int] = mapped_column(SmallInteger)
    chain_seq: Mapped[int] = mapped_column(BigInteger().with_variant(db.Integer, "sqlite"))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_kind: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    actor_label: Mapped[str | None] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject_type: Mapped[str | None] = mapped_column(String(64))
    subject_id: Mapped[str | None] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    ip: Mapped[str | None] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)

    def __repr__(self) -> str:
        return f"<AuditEvent {self.seq} {self.action} {self.subject_type}:{self.subject_id}>"


class AuditChainHead(db.Model):
    """One row per chain (`id` is the chain's number) holding its newest link. A writer locks
    one head for its whole transaction, which orders that chain on every database, and the
    heads let `audit verify` notice events cut from the end of a chain."""

    __tablename__ = "audit_chain_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    last_seq: Mapped[int] = mapped_column(BigInteger().with_variant(db.Integer, "sqlite"))
    last_hash: Mapped[str] = mapped_column(String(64))

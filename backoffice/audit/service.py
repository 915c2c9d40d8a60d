"""Writing and verifying the audit log. Every service records through `record`."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from flask import current_app
from sqlalchemy import URL, Engine, bindparam, create_engine, func, insert, select, text, update
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.pool import NullPool

from backoffice.audit.models import AuditChainHead, AuditEvent, genesis_hash
from backoffice.db import insert_ignoring_conflicts, utcnow
from backoffice.extensions import db

CHAIN_KEY = "audit_chain"

# Built once: the audit write runs in almost every transaction, and building and caching a
# statement per call cost more client time than its round trip.
_FREE_HEAD = (
    select(AuditChainHead.id, AuditChainHead.last_seq, AuditChainHead.last_hash)
    .where(AuditChainHead.id <= bindparam("chains"))
    .order_by(func.random())
    .limit(1)
    .with_for_update(skip_locked=True)
)
_LOCK_HEAD = (
    update(AuditChainHead)
    .where(AuditChainHead.id == bindparam("chain"))
    .values(last_seq=AuditChainHead.last_seq)
    .returning(AuditChainHead.last_seq, AuditChainHead.last_hash)
)
_ADVANCE_HEAD = (
    update(AuditChainHead)
    .where(AuditChainHead.id == bindparam("head_chain"))
    .values(last_seq=bindparam("head_seq"), last_hash=bindparam("head_hash"))
)
_EVENT_COLUMNS = tuple(column.key for column in AuditEvent.__table__.columns if column.key != "seq")
_INSERT_EVENT = insert(AuditEvent).returning(AuditEvent.seq)
# PostgreSQL: the head moves in the same statement as the insert (a data-modifying WITH always
# runs), one round trip instead of two.
_INSERT_EVENT_ADVANCING_HEAD = (
    insert(AuditEvent).add_cte(_ADVANCE_HEAD.cte("advanced_head")).returning(AuditEvent.seq)
)


# PostgreSQL, usually: choosing and locking a chain's head, inserting the event and advancing
# the head are one statement. The hash is computed by the database on the canonical content
# `event_hash` defines, which the client sends split around the two values only the head knows
# (`_hash_around_link`). No row comes back when the head it looks for is busy or missing; then
# the event is written step by step.
_LINKED_COLUMNS = ("chain", "chain_seq", "prev_hash", "hash")
_CONTENT_COLUMNS = tuple(column for column in _EVENT_COLUMNS if column not in _LINKED_COLUMNS)
_APPEND = """
WITH head AS (
    SELECT id, last_seq, last_hash FROM audit_chain_head WHERE {head}
    ORDER BY random() LIMIT 1 FOR UPDATE SKIP LOCKED
), appended AS (
    INSERT INTO audit_events ({linked}, {content})
    SELECT id, last_seq + 1, last_hash,
           encode(sha256(convert_to(
               CAST(:hash_prefix AS text) || last_hash || '","seq":' || (last_seq + 1)
               || CAST(:hash_suffix AS text), 'UTF8')), 'hex'),
           {values}
    FROM head
    RETURNING seq, chain, chain_seq, prev_hash, hash
), advanced AS (
    UPDATE audit_chain_head SET last_seq = appended.chain_seq, last_hash = appended.hash
    FROM appended WHERE audit_chain_head.id = appended.chain
)
SELECT seq, chain, chain_seq, prev_hash, hash FROM appended
"""


def _append_statement(head: str) -> Any:
    columns = AuditEvent.__table__.columns
    return text(
        _APPEND.format(
            head=head,
            linked=", ".join(_LINKED_COLUMNS),
            content=", ".join(_CONTENT_COLUMNS),
            values=", ".join(f":{column}" for column in _CONTENT_COLUMNS),
        )
    ).bindparams(*(bindparam(column, type_=columns[column].type) for column in _CONTENT_COLUMNS))


_APPEND_ON_FREE_CHAIN = _append_statement("id <= :chains")
_APPEND_ON_OWN_CHAIN = _append_statement("id = :chain")


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


def _content(event: AuditEvent) -> dict[str, Any]:
    return {
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
    }


def _canonical(content: dict[str, Any]) -> str:
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def event_hash(event: AuditEvent) -> str:
    """The chain's own position is hashed as "seq" (chain 1 was once the whole log, numbered
    the same way); the chain itself is bound by its genesis, which every later link inherits."""
    content = _content(event) | {"seq": event.chain_seq, "prev_hash": event.prev_hash}
    return hashlib.sha256(_canonical(content).encode()).hexdigest()


def _hash_around_link(event: AuditEvent) -> tuple[str, str]:
    """`event_hash`'s canonical text is `prefix + prev_hash + '","seq":' + seq + suffix`: the
    keys sort as (everything before "prev_hash"), "prev_hash", "seq", (subject_id, subject_type)."""
    content = _content(event)
    before_link = {key: value for key, value in content.items() if key < "prev_hash"}
    after_link = {key: value for key, value in content.items() if key > "seq"}
    return _canonical(before_link)[:-1] + ',"prev_hash":"', "," + _canonical(after_link)[1:]


def _locked_head() -> tuple[int, int, str]:
    """Lock the head of this transaction's chain for the rest of the transaction and read it:
    (chain, last_seq, last_hash). The chain is chosen at the transaction's first event and kept
    until it ends, so one transaction's events stay in order on one chain. It is locked again
    on every later event: a savepoint rolled back since the last one would have released it."""
    chain = db.session.info.get(CHAIN_KEY)
    if chain is None:
        chain, last_seq, last_hash = _free_head(current_app.config["AUDIT_CHAINS"])
        db.session.info[CHAIN_KEY] = chain
        return chain, last_seq, last_hash
    return (chain, *_lock_head(chain))


def _free_head(chains: int) -> tuple[int, int, str]:
    """Lock the head of a chain no other transaction is writing to. A new chain is opened only
    when every open one is busy, so the log has as many chains as writers ever overlapped. With
    `chains` open and all busy, wait for a random one. SQLite has a single writer and no row
    locks: it writes one chain, whose head is locked (with the whole database) by writing to it
    before reading it."""
    connection = db.session.connection()
    if connection.dialect.name != "postgresql":
        return (1, *_lock_head(1))
    while True:
        free = connection.execute(_FREE_HEAD, {"chains": chains}).one_or_none()
        if free is not None:
            return free.id, free.last_seq, free.last_hash
        unopened = set(range(1, chains + 1)) - set(connection.scalars(select(AuditChainHead.id)))
        if not unopened:
            chain = random.randint(1, chains)  # noqa: S311 (spreading waiters, not a secret)
            return (chain, *_lock_head(chain))
        _open_chain(min(unopened))


def _open_chain(chain: int) -> None:
    """Insert the chain's head (a no-op if it exists). On PostgreSQL in a transaction of its own,
    committed at once, so writers opening chains at the same moment do not wait for each other.
    That transaction runs on a connection outside the pool: the writer already holds a pooled
    connection and row locks, and with the pool spent it would wait for a connection whose
    holder may be waiting for those very locks."""
    statement = insert_ignoring_conflicts(db.session, AuditChainHead, [AuditChainHead.id]).values(
        id=chain, last_seq=0, last_hash=genesis_hash(chain)
    )
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        with _unpooled(db.engine.url).begin() as own_transaction:
            own_transaction.execute(statement)
    else:
        connection.execute(statement)


@cache
def _unpooled(url: URL) -> Engine:
    """Each use connects and disconnects; chains are opened a few times in a database's life."""
    return create_engine(url, poolclass=NullPool)


def _lock_head(chain: int) -> tuple[int, str]:
    """Lock one chain's head and read (last_seq, last_hash), opening the chain if it is missing."""
    head = db.session.connection().execute(_LOCK_HEAD, {"chain": chain}).one_or_none()
    if head is None:
        _open_chain(chain)
        return _lock_head(chain)
    return head.last_seq, head.last_hash


@sqlalchemy_event.listens_for(Session, "after_transaction_end")
def _forget_chain(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(CHAIN_KEY, None)


def record(
    action: str,
    *,
    actor: Actor,
    subject_type: str | None = None,
    subject_id: Any = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction; it commits or rolls back with the change.
    Written with plain SQL on the session's connection: it is the busiest write of the system
    and needs no unit of work. The event returned is not attached to the session."""
    event = AuditEvent(
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
    )
    connection = db.session.connection()
    if connection.dialect.name == "postgresql" and _append_in_one_statement(connection, event):
        return event
    chain, last_seq, last_hash = _locked_head()
    event.chain = chain
    event.chain_seq = last_seq + 1
    event.prev_hash = last_hash
    event.hash = event_hash(event)
    row = {column: getattr(event, column) for column in _EVENT_COLUMNS}
    head = {"head_chain": chain, "head_seq": event.chain_seq, "head_hash": event.hash}
    if connection.dialect.name == "postgresql":
        event.seq = connection.execute(_INSERT_EVENT_ADVANCING_HEAD, row | head).scalar_one()
    else:
        connection.execute(_ADVANCE_HEAD, head)
        event.seq = connection.execute(_INSERT_EVENT, row).scalar_one()
    return event


def _append_in_one_statement(connection: Any, event: AuditEvent) -> bool:
    """PostgreSQL: lock a free head (or this transaction's own), insert and link the event and
    advance the head in one round trip. False, with nothing written, when no such head is free."""
    chain = db.session.info.get(CHAIN_KEY)
    hash_prefix, hash_suffix = _hash_around_link(event)
    parameters = {column: getattr(event, column) for column in _CONTENT_COLUMNS}
    parameters |= {"hash_prefix": hash_prefix, "hash_suffix": hash_suffix}
    if chain is None:
        statement, parameters["chains"] = _APPEND_ON_FREE_CHAIN, current_app.config["AUDIT_CHAINS"]
    else:
        statement, parameters["chain"] = _APPEND_ON_OWN_CHAIN, chain
    appended = connection.execute(statement, parameters).one_or_none()
    if appended is None:
        return False
    event.seq, event.chain, event.chain_seq, event.prev_hash, event.hash = appended
    db.session.info[CHAIN_KEY] = event.chain
    return True


@dataclass(frozen=True)
class ChainReport:
    """`broken_at` is the `seq` of the first event that does not hold, or None when what is
    wrong is missing from a chain's end."""

    checked: int
    broken_at: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify_chain(batch_size: int = 1000) -> ChainReport:
    """Walk every chain and report the first link that does not hold."""
    heads = {head.id: (head.last_seq, head.last_hash) for head in db.session.scalars(select(AuditChainHead))}
    result = db.session.execute(
        select(AuditEvent)
        .order_by(AuditEvent.chain, AuditEvent.chain_seq)
        .execution_options(yield_per=batch_size)
    )
    try:
        return _walk(result.scalars(), heads)
    finally:
        result.close()


def _walk(events: Iterable[AuditEvent], heads: dict[int, tuple[int, str]]) -> ChainReport:
    checked = 0
    ends: dict[int, tuple[int, str]] = {}
    for event in events:
        last_seq, last_hash = ends.get(event.chain, (0, genesis_hash(event.chain)))
        if event.chain_seq != last_seq + 1:
            return ChainReport(
                checked,
                event.seq,
                f"chain {event.chain}: its events {last_seq + 1} to {event.chain_seq - 1} are missing",
            )
        if event.prev_hash != last_hash:
            return ChainReport(
                checked, event.seq, f"chain {event.chain}: does not link to the event before it"
            )
        if event_hash(event) != event.hash:
            return ChainReport(
                checked, event.seq, f"chain {event.chain}: its content was changed after it was written"
            )
        checked += 1
        ends[event.chain] = (event.chain_seq, event.hash)
    for chain in sorted(ends.keys() | heads.keys()):
        end_seq, end_hash = ends.get(chain, (0, genesis_hash(chain)))
        head_seq, head_hash = heads.get(chain, (0, genesis_hash(chain)))
        if (end_seq, end_hash) != (head_seq, head_hash):
            return ChainReport(
                checked,
                None,
                f"chain {chain} ends at its event {end_seq} but its head records event {head_seq}",
            )
    return ChainReport(checked)

"""Database kernel: the declarative base, UTC timestamps and the after-commit hook.

Every model in every package inherits from `Base`; every timestamp column is a `UTCDateTime`,
so SQLite and PostgreSQL both hand back timezone-aware UTC datetimes.
"""

from __future__ import annotations

import enum
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from flask_sqlalchemy.session import Session as FlaskSQLAlchemySession
from psycopg.rows import namedtuple_row
from sqlalchemy import DateTime, Enum, Insert, MetaData, Select, event, text
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, SessionTransaction, registry
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always returns aware UTC datetimes; refuses naive ones so no local time slips in."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def value_enum(kind: type[enum.Enum], length: int = 32) -> Enum:
    """Enums stored by their values as plain strings: portable, and readable in the database."""
    return Enum(
        kind, native_enum=False, length=length, values_callable=lambda members: [m.value for m in members]
    )


class Base(DeclarativeBase):
    registry = registry(
        metadata=MetaData(naming_convention=NAMING_CONVENTION),
        type_annotation_map={datetime: UTCDateTime},
    )


class AppSession(FlaskSQLAlchemySession):
    """A session that runs registered callbacks once its transaction has really committed.

    Jobs and message relays hook in here, so a worker never looks for a row that is not
    committed yet, and nothing is enqueued for a transaction that rolled back.
    """

    def after_commit(self, callback: Callable[[], None]) -> None:
        self.info.setdefault("after_commit", []).append(callback)

    def commit(self) -> None:
        super().commit()
        for callback in self.info.pop("after_commit", []):
            callback()

    def rollback(self) -> None:
        self.info.pop("after_commit", None)
        super().rollback()

    def close(self) -> None:
        self.info.pop("after_commit", None)
        super().close()


def insert_ignoring_conflicts(session: Session, model: type[Base], index_elements: list[Any]) -> Insert:
    """`INSERT ... ON CONFLICT (index_elements) DO NOTHING` for the session's database (PostgreSQL
    and SQLite share the syntax, but SQLAlchemy builds it per dialect)."""
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
    return insert(model).on_conflict_do_nothing(index_elements=index_elements)


@contextmanager
def savepoint(session: Session) -> Iterator[SessionTransaction]:
    """`begin_nested()` that also holds on SQLite. pysqlite only opens a transaction before DML,
    and a SAVEPOINT issued outside one commits when released, so a later rollback would keep it.
    A no-op DELETE first makes SQLite open the real transaction."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("DELETE FROM alembic_version WHERE 0"))
    with session.begin_nested() as nested:
        yield nested


def read_one_row(session: Session, statement: Select[Any], parameters: dict[str, Any]) -> Any | None:
    """The first row of a read that is the request's only database work, or None.

    On PostgreSQL the statement, compiled once, goes to the driver in autocommit on a pooled
    connection: one round trip (no BEGIN and COMMIT), and none of the session's and SQLAlchemy's
    result bookkeeping, which cost GET /me more CPU than the query itself (0.30 against 0.12 ms
    a read, in-process). The row is a named tuple of what the driver returns, without
    SQLAlchemy's type conversions: such a statement selects no timestamps (whether one is set
    instead) and no enums it needs as members. Elsewhere it is an ordinary read in the session.
    """
    engine = session.get_bind()
    if engine.dialect.name != "postgresql":
        return session.execute(statement, parameters).first()
    sql = _driver_sql(statement, engine.dialect)
    with engine.connect() as connection:
        driver = connection.connection.driver_connection
        try:
            driver.autocommit = True
            with driver.cursor(row_factory=namedtuple_row) as cursor:
                row = cursor.execute(sql, parameters).fetchone()
            driver.autocommit = False
        except engine.dialect.loaded_dbapi.Error:
            connection.invalidate()  # whatever state it is in, the pool does not get it back
            raise
    return row


@lru_cache(maxsize=32)
def _driver_sql(statement: Select[Any], dialect: Dialect) -> str:
    return str(statement.compile(dialect=dialect))


def plan_for_current_sizes(session: Session) -> None:
    """PostgreSQL: plan every statement of this transaction for its own values and the tables'
    sizes now. A prepared statement may otherwise keep a generic plan chosen while the tables it
    reads were nearly empty; for a job that fills them (an import, batch after batch) that plan
    is a sequential scan per look-up, and the job slows down as the tables grow."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))


def install_sqlite_pragmas(engine: Engine) -> None:
    """Foreign keys on and a busy timeout, so SQLite behaves like the real database in development."""
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()


# A pooled connection unused for longer than this is pinged before a request gets it.
IDLE_PING_SECONDS = 1.0


def ping_idle_connections(engine: Engine, idle_seconds: float = IDLE_PING_SECONDS) -> None:
    """`pool_pre_ping` without a round trip per request. Under load a connection is back in use
    within milliseconds; it is pinged only when the server has sent something while it sat in
    the pool (a restart or a terminated backend leaves its farewell and end of stream on the
    socket, seen without a round trip) or when it sat idle long enough to have been dropped
    silently (failover, firewall timeout). A failed ping makes the pool replace the connection."""
    if engine.dialect.name == "sqlite":
        return

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, connection_record: Any) -> None:
        connection_record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
        checked_in_at = connection_record.info.get("checked_in_at")
        if checked_in_at is None:
            return  # just connected
        server_spoke = select.select([dbapi_connection.fileno()], [], [], 0)[0]
        if not server_spoke and time.monotonic() - checked_in_at < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise DisconnectionError("pooled connection failed its ping") from error


def render_migration_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Autogenerated migrations spell our UTC column type as the plain SQL type it stores as."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False

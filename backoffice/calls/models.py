"""Call tasks, the attempts logged on them, and the agents' weekly shifts and absences."""

from __future__ import annotations

import enum
from datetime import datetime, time
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backoffice.db import utcnow, value_enum
from backoffice.extensions import db


class CallTaskStatus(enum.StrEnum):
    OPEN = "open"
    IN_CALL = "in_call"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class CallOutcome(enum.StrEnum):
    VALIDATED = "validated"
    NO_ANSWER = "no_answer"
    CALLBACK_REQUESTED = "callback_requested"
    DATA_MISMATCH = "data_mismatch"


class CallTask(db.Model):
    """Opened when legal approves an application; carries the application's SLA deadline.

    `assigned_agent_id`/`slot_start` are the scheduler's plan, or a personal callback when
    `callback_at` is set (then the planner leaves the task alone). `not_before` holds the next
    attempt back after a call nobody answered."""

    __tablename__ = "call_tasks"
    __table_args__ = (
        Index("ix_call_tasks_status_deadline", "status", "deadline"),
        # SLA attainment reads the tasks due in a recent window, whatever their status.
        Index("ix_call_tasks_deadline", "deadline"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("representative_applications.id"), index=True)
    status: Mapped[CallTaskStatus] = mapped_column(
        value_enum(CallTaskStatus, 16),
        default=CallTaskStatus.OPEN,
    )
    deadline: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    assigned_agent_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"), index=True)
    slot_start: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    source: Mapped[str] = mapped_column(String(32), default="legal_approval")
    failed_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    first_attempt_at: Mapped[datetime | None]
    not_before: Mapped[datetime | None]
    callback_at: Mapped[datetime | None]
    at_risk_capacity: Mapped[bool] = mapped_column(default=False, server_default=false())
    in_call_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    in_call_since: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(32))
    at_risk_alerted_at: Mapped[datetime | None]

    application = relationship("RepresentativeApplication")
    attempt_log: Mapped[list[CallAttempt]] = relationship(
        back_populates="task", order_by="CallAttempt.id", lazy="selectin"
    )


class CallAttempt(db.Model):
    """One call made: who, when, the outcome and, for `validated`, each field's check."""

    __tablename__ = "call_attempts"
    __table_args__ = (
        Index("ix_call_attempts_agent_started", "agent_id", "started_at"),
        # The SLA page's load per agent reads every agent's attempts of the last days.
        Index("ix_call_attempts_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("call_tasks.id"), index=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    started_at: Mapped[datetime]
    logged_at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[CallOutcome] = mapped_column(value_enum(CallOutcome))
    notes: Mapped[str] = mapped_column(Text, default="")
    callback_at: Mapped[datetime | None]
    field_checks: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    task: Mapped[CallTask] = relationship(back_populates="attempt_log")


class AgentShift(db.Model):
    """A weekly shift in business local time (Monday = 0)."""

    __tablename__ = "agent_shifts"

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"), index=True)
    weekday: Mapped[int]
    starts: Mapped[time]
    ends: Mapped[time]

    agent = relationship("StaffUser")


class AgentAbsence(db.Model):
    """Leave, sickness or a personal holiday: from `starts_at` (included) to `ends_at`."""

    __tablename__ = "agent_absences"

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"), index=True)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    agent = relationship("StaffUser")

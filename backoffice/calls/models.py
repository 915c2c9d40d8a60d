"""Call tasks: phoning an approved representative inside the promise made to them."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from backoffice.db import utcnow, value_enum
from backoffice.extensions import db


class CallTaskStatus(enum.StrEnum):
    OPEN = "open"
    DONE = "done"
    CANCELLED = "cancelled"


class CallTask(db.Model):
    """Opened when legal approves an application; carries the application's SLA deadline."""

    __tablename__ = "call_tasks"
    __table_args__ = (Index("ix_call_tasks_status_deadline", "status", "deadline"),)

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

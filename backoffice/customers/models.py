"""Policyholder records as imported from the core insurance system."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backoffice.db import utcnow
from backoffice.extensions import db


class HolderKind(enum.StrEnum):
    PERSON = "person"
    COMPANY = "company"


class Policyholder(db.Model):
    """One holder per tax ID; email lower-cased and phone in E.164, as the import normalises them."""

    __tablename__ = "policyholders"

    id: Mapped[int] = mapped_column(primary_key=True)
    tax_id: Mapped[str] = mapped_column(String(16), unique=True)
    kind: Mapped[HolderKind] = mapped_column(
        Enum(HolderKind, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])
    )
    name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255), index=True)
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    policies: Mapped[list[Policy]] = relationship(back_populates="holder", order_by="Policy.number")

    def __str__(self) -> str:
        return f"{self.name} ({self.tax_id})"


class Policy(db.Model):
    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(primary_key=True)
    policyholder_id: Mapped[int] = mapped_column(ForeignKey("policyholders.id"), index=True)
    number: Mapped[str] = mapped_column(String(64), unique=True)
    product: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32))
    coverage: Mapped[str | None] = mapped_column(Text)

    holder: Mapped[Policyholder] = relationship(back_populates="policies")

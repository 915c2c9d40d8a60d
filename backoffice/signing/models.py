"""The evidence record of a signed contract: what was signed, by whom, how and when."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from backoffice.db import utcnow
from backoffice.extensions import db


class SignedContract(db.Model):
    __tablename__ = "signed_contracts"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("customer_accounts.id"), index=True)
    policyholder_id: Mapped[int | None] = mapped_column(ForeignKey("policyholders.id"), index=True)
    contract_version: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(8))
    unsigned_sha256: Mapped[str] = mapped_column(String(64))
    signed_sha256: Mapped[str] = mapped_column(String(64))
    unsigned_key: Mapped[str] = mapped_column(String(255))
    signed_key: Mapped[str] = mapped_column(String(255))
    signer_name: Mapped[str] = mapped_column(String(255))
    signer_tax_id: Mapped[str] = mapped_column(String(16))
    masked_phone: Mapped[str] = mapped_column(String(32))
    challenge_id: Mapped[int] = mapped_column(ForeignKey("otp_challenges.id"))
    signed_at: Mapped[datetime] = mapped_column(default=utcnow)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))
    provider: Mapped[str] = mapped_column(String(64))
    timestamped: Mapped[bool] = mapped_column(default=False)

"""Policyholder records as imported from the core insurance system."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backoffice.db import utcnow, value_enum
from backoffice.extensions import db


class HolderKind(enum.StrEnum):
    PERSON = "person"
    COMPANY = "company"


class Policyholder(db.Model):
    """One holder per tax ID; email lower-cased and phone in E.164, as the import normalises them.

    `name_key`, `email_local` and `email_domain` are the matching engine's blocking keys (see
    `customers/matching.py`); on PostgreSQL the first two also carry pg_trgm indexes."""

    __tablename__ = "policyholders"
    __table_args__ = (
        Index("ix_policyholders_email_domain_local", "email_domain", "email_local"),
        Index("ix_policyholders_name_key", "name_key"),
        # GiST, not GIN: the name search is a nearest-neighbour query (`<->` with LIMIT), which
        # a GiST index answers in distance order without collecting and sorting every row that
        # shares a trigram with a common surname.
        Index(
            "ix_policyholders_name_key_trgm",
            "name_key",
            postgresql_using="gist",
            postgresql_ops={"name_key": "gist_trgm_ops"},
        ),
        Index(
            "ix_policyholders_email_local_trgm",
            "email_local",
            postgresql_using="gin",
            postgresql_ops={"email_local": "gin_trgm_ops"},
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tax_id: Mapped[str] = mapped_column(String(16), unique=True)
    kind: Mapped[HolderKind] = mapped_column(value_enum(HolderKind, 16))
    name: Mapped[str] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255), index=True)
    phone: Mapped[str | None] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    name_key: Mapped[str | None] = mapped_column(String(255))
    email_local: Mapped[str | None] = mapped_column(String(255))
    email_domain: Mapped[str | None] = mapped_column(String(255))

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


class AssociationStatus(enum.StrEnum):
    NONE = "none"
    PENDING = "pending"
    LINKED = "linked"


class CustomerAccount(db.Model):
    """A portal account. Individuals sign in with their email; e-Customers with their tax ID."""

    __tablename__ = "customer_accounts"
    __table_args__ = (
        # The linked-accounts list's order (customers/linked.py): newest link first, by pages.
        Index(
            "ix_customer_accounts_link_order",
            "association_status",
            text("coalesce(linked_at, created_at)"),
            "id",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    tax_id: Mapped[str | None] = mapped_column(String(16), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    language: Mapped[str] = mapped_column(String(8), default="es")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    terms_accepted_at: Mapped[datetime | None]
    email_verified_at: Mapped[datetime | None]
    last_sign_in_at: Mapped[datetime | None]
    phone: Mapped[str | None] = mapped_column(String(32))
    # Set when the customer typed an SMS code sent to `phone`; cleared when the phone changes.
    phone_verified_at: Mapped[datetime | None]
    address_line1: Mapped[str | None] = mapped_column(String(255))
    address_line2: Mapped[str | None] = mapped_column(String(255))
    postal_code: Mapped[str | None] = mapped_column(String(16))
    city: Mapped[str | None] = mapped_column(String(128))
    province: Mapped[str | None] = mapped_column(String(128))
    country: Mapped[str | None] = mapped_column(String(2))
    first_name: Mapped[str | None] = mapped_column(String(128))
    last_name: Mapped[str | None] = mapped_column(String(128))
    # A tax ID the customer typed in their profile: evidence for matching only, never a username.
    declared_tax_id: Mapped[str | None] = mapped_column(String(16), index=True)
    association_status: Mapped[AssociationStatus] = mapped_column(
        value_enum(AssociationStatus), default=AssociationStatus.NONE
    )
    policyholder_id: Mapped[int | None] = mapped_column(ForeignKey("policyholders.id"), index=True)
    linked_at: Mapped[datetime | None]

    policyholder: Mapped[Policyholder | None] = relationship()

    @property
    def username(self) -> str:
        return self.tax_id or self.email

    @property
    def policyholder_name(self) -> str | None:
        return self.policyholder.name if self.policyholder is not None else None

    @property
    def email_verified(self) -> bool:
        return self.email_verified_at is not None

    @property
    def phone_verified(self) -> bool:
        return self.phone_verified_at is not None

    def __str__(self) -> str:
        return self.username


class TokenPurpose(enum.StrEnum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"  # noqa: S105 (a token purpose, not a secret)


class AccountToken(db.Model):
    """A single-use emailed link. Only the SHA-256 of the token is kept."""

    __tablename__ = "account_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("customer_accounts.id"), index=True)
    purpose: Mapped[TokenPurpose] = mapped_column(value_enum(TokenPurpose))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

    account: Mapped[CustomerAccount] = relationship()


class CustomerSession(db.Model):
    """An API bearer token: opaque to the client, stored hashed, expiring and revocable."""

    __tablename__ = "customer_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("customer_accounts.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))

    account: Mapped[CustomerAccount] = relationship(lazy="joined")


class CaseStatus(enum.StrEnum):
    OPEN = "open"
    WAITING_CUSTOMER = "waiting_customer"
    LINKED = "linked"
    NO_MATCH = "no_match"


class AssociationCase(db.Model):
    """An account the automatic match could not link with certainty; a clerk decides."""

    __tablename__ = "association_cases"
    __table_args__ = (Index("ix_association_cases_status_opened", "status", "opened_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("customer_accounts.id"), index=True)
    status: Mapped[CaseStatus] = mapped_column(value_enum(CaseStatus), default=CaseStatus.OPEN)
    reason: Mapped[str] = mapped_column(String(64))
    candidate_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None]
    # The ranked candidates with the matching engine's evidence, as shown to the clerk.
    evidence: Mapped[list[Any]] = mapped_column(JSON, default=list, server_default="[]")
    claimed_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"), index=True)
    claimed_at: Mapped[datetime | None]
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    policyholder_id: Mapped[int | None] = mapped_column(ForeignKey("policyholders.id"))
    customer_asked_at: Mapped[datetime | None]

    account: Mapped[CustomerAccount] = relationship()


class ImportStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ImportRun(db.Model):
    """A policyholder CSV uploaded in the back office and imported by a job, with its progress
    and the report of rejected rows (a CSV kept in storage)."""

    __tablename__ = "import_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    storage_key: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger().with_variant(db.Integer, "sqlite"))
    status: Mapped[ImportStatus] = mapped_column(value_enum(ImportStatus, 16), default=ImportStatus.QUEUED)
    bytes_read: Mapped[int] = mapped_column(BigInteger().with_variant(db.Integer, "sqlite"), default=0)
    rows_read: Mapped[int] = mapped_column(default=0)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    rejected: Mapped[int] = mapped_column(default=0)
    report_key: Mapped[str | None] = mapped_column(String(255))
    rematched: Mapped[int] = mapped_column(default=0)
    # Why a failed run failed: a stable code and the details its message needs (line number,
    # columns, exception text), said in the reader's language when shown.
    error_code: Mapped[str | None] = mapped_column(String(32))
    error_details: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    # Runs that failed before codes were stored keep their (English) message here.
    error: Mapped[str | None] = mapped_column(Text)
    started_by_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class RegistrationStatus(enum.StrEnum):
    CODE_SENT = "code_sent"
    SIGNED = "signed"
    ACTIVE = "active"


class EcustomerRegistration(db.Model):
    """An e-Customer sign-up: matched to a person policyholder, proven by SMS, contract signed,
    then a password set. The id is the unguessable handle the customer's browser holds."""

    __tablename__ = "ecustomer_registrations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    policyholder_id: Mapped[int] = mapped_column(ForeignKey("policyholders.id"), index=True)
    tax_id: Mapped[str] = mapped_column(String(16), index=True)
    email: Mapped[str] = mapped_column(String(255))
    phone: Mapped[str] = mapped_column(String(32))
    language: Mapped[str] = mapped_column(String(8), default="es")
    status: Mapped[RegistrationStatus] = mapped_column(
        value_enum(RegistrationStatus), default=RegistrationStatus.CODE_SENT
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    expires_at: Mapped[datetime]
    contract_version: Mapped[str] = mapped_column(String(32))
    contract_key: Mapped[str] = mapped_column(String(255))
    contract_sha256: Mapped[str] = mapped_column(String(64))
    challenge_id: Mapped[int] = mapped_column(ForeignKey("otp_challenges.id"))
    signed_contract_id: Mapped[int | None] = mapped_column(ForeignKey("signed_contracts.id"))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("customer_accounts.id"))
    signed_at: Mapped[datetime | None]
    activated_at: Mapped[datetime | None]
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))

    policyholder: Mapped[Policyholder] = relationship()

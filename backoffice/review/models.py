"""Representative applications, their documents and the legal team's notes."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backoffice.db import utcnow, value_enum
from backoffice.extensions import db


class ApplicationStatus(enum.StrEnum):
    SUBMITTED = "submitted"
    IN_REVIEW = "in_review"
    NEEDS_DOCUMENTS = "needs_documents"
    APPROVED = "approved"
    CALL_SCHEDULED = "call_scheduled"
    VALIDATED = "validated"
    INVITED = "invited"
    COMPLETED = "completed"
    REJECTED = "rejected"
    CALL_FAILED = "call_failed"
    EXPIRED = "expired"


class DocumentKind(enum.StrEnum):
    PUBLIC_DEED = "public_deed"
    POWER_OF_ATTORNEY = "power_of_attorney"
    TAX_ID_DOCUMENT = "tax_id_document"


class DocumentStatus(enum.StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"


class RepresentativeApplication(db.Model):
    """A company representative's request for access. `call_deadline` is the 48-hour promise,
    counted on working days from the (re)submission."""

    __tablename__ = "representative_applications"
    __table_args__ = (
        Index("ix_representative_applications_status_deadline", "status", "call_deadline"),
        # The list's order (review/queue.py): a page is read from the index, whatever the size.
        Index("ix_representative_applications_deadline_id", "call_deadline", "id"),
        # claim_next's pick: the queue alone in deadline order, without the decided history.
        Index(
            "ix_representative_applications_queue",
            "call_deadline",
            "id",
            postgresql_where=text("status IN ('submitted', 'in_review')"),
            sqlite_where=text("status IN ('submitted', 'in_review')"),
        ),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    access_key_hash: Mapped[str] = mapped_column(String(64))
    company_tax_id: Mapped[str] = mapped_column(String(16), index=True)
    company_name: Mapped[str] = mapped_column(String(255))
    first_name: Mapped[str] = mapped_column(String(128))
    last_name: Mapped[str] = mapped_column(String(128))
    tax_id: Mapped[str] = mapped_column(String(16), index=True)
    email: Mapped[str] = mapped_column(String(255), index=True)
    phone: Mapped[str] = mapped_column(String(32))
    preferred_call_times: Mapped[list[Any]] = mapped_column(JSON, default=list)
    language: Mapped[str] = mapped_column(String(8), default="es")
    status: Mapped[ApplicationStatus] = mapped_column(
        value_enum(ApplicationStatus), default=ApplicationStatus.SUBMITTED
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    submitted_at: Mapped[datetime]
    call_deadline: Mapped[datetime]
    requested_documents: Mapped[list[Any]] = mapped_column(JSON, default=list)
    claimed_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"), index=True)
    claimed_at: Mapped[datetime | None]
    last_activity_at: Mapped[datetime | None]
    rejection_reason: Mapped[str | None] = mapped_column(Text)
    rejection_proposed_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    rejection_proposed_at: Mapped[datetime | None]
    decided_at: Mapped[datetime | None]

    documents: Mapped[list[ApplicationDocument]] = relationship(
        back_populates="application", order_by="ApplicationDocument.id"
    )

    @property
    def representative_name(self) -> str:
        return f"{self.first_name} {self.last_name}"

    def __str__(self) -> str:
        return f"{self.company_name} ({self.company_tax_id})"


class ApplicationDocument(db.Model):
    """One uploaded file. The user's file name is display text only; the storage key is ours."""

    __tablename__ = "application_documents"

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("representative_applications.id"), index=True)
    kind: Mapped[DocumentKind] = mapped_column(value_enum(DocumentKind))
    status: Mapped[DocumentStatus] = mapped_column(value_enum(DocumentStatus), default=DocumentStatus.PENDING)
    storage_key: Mapped[str | None] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger().with_variant(db.Integer, "sqlite"))
    sha256: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(255))
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)
    reason_code: Mapped[str | None] = mapped_column(String(32))
    reason_text: Mapped[str | None] = mapped_column(Text)
    reviewed_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    reviewed_at: Mapped[datetime | None]
    deleted_at: Mapped[datetime | None]

    application: Mapped[RepresentativeApplication] = relationship(back_populates="documents")


class ReviewNote(db.Model):
    """Internal notes of the legal team; never shown to the applicant."""

    __tablename__ = "review_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("representative_applications.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CompletionStatus(enum.StrEnum):
    INVITED = "invited"
    PIN_SENT = "pin_sent"
    SIGNED = "signed"
    ACTIVE = "active"
    SUPERSEDED = "superseded"


class RepresentativeCompletion(db.Model):
    """The emailed completion link of a validated application and what was done through it:
    details confirmed, provider terms accepted, PIN sent, contract signed, account created.
    Only the token's hash is stored; a newer link supersedes an older one."""

    __tablename__ = "representative_completions"

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[str] = mapped_column(ForeignKey("representative_applications.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[CompletionStatus] = mapped_column(
        value_enum(CompletionStatus), default=CompletionStatus.INVITED
    )
    language: Mapped[str] = mapped_column(String(8), default="es")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    confirm_failures: Mapped[int] = mapped_column(default=0)
    terms_version: Mapped[str | None] = mapped_column(String(32))
    terms_sha256: Mapped[str | None] = mapped_column(String(64))
    terms_accepted_at: Mapped[datetime | None]
    terms_accepted_ip: Mapped[str | None] = mapped_column(String(64))
    contract_version: Mapped[str | None] = mapped_column(String(32))
    contract_key: Mapped[str | None] = mapped_column(String(255))
    contract_sha256: Mapped[str | None] = mapped_column(String(64))
    challenge_id: Mapped[int | None] = mapped_column(ForeignKey("otp_challenges.id"))
    signed_contract_id: Mapped[int | None] = mapped_column(ForeignKey("signed_contracts.id"))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("customer_accounts.id"))
    signed_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    application: Mapped[RepresentativeApplication] = relationship()

"""Periodic jobs of the review: the retention of applicants' documents, the clean-up of files
that no document row points to, and the expiry of completion links nobody used."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from itertools import groupby

from flask import current_app
from sqlalchemy import func, select

from backoffice import audit
from backoffice.audit import Actor
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.review.models import (
    ApplicationDocument,
    ApplicationStatus,
    RepresentativeApplication,
    RepresentativeCompletion,
)
from backoffice.review.service import DOCUMENTS_PREFIX
from backoffice.review.states import transition
from backoffice.storage import StorageError

log = logging.getLogger(__name__)

PURGED_STATES = (ApplicationStatus.REJECTED, ApplicationStatus.EXPIRED)


def purge_expired_documents(*, now: datetime | None = None, batch: int = 1000) -> int:
    """Delete from storage the files of applications rejected or expired at least
    DOCUMENT_RETENTION_DAYS ago; the rows (kind, hash, size, the review) and the audit log
    stay, with `deleted_at` set and no storage key. Returns how many documents were purged.

    A file that cannot be deleted is logged and left for the next run; the others go on.
    Deleting is idempotent, so if this transaction is rolled back after some files went, the
    next run marks them again. One `documents.purged` event per application; at most `batch`
    applications per run (the rest the next day)."""
    now = now or utcnow()
    days = int(current_app.config["DOCUMENT_RETENTION_DAYS"])
    cutoff = now - timedelta(days=days)
    storage = current_app.extensions["storage"]
    application_ids = (
        db.session.execute(
            select(RepresentativeApplication.id)
            .where(
                RepresentativeApplication.status.in_(PURGED_STATES),
                RepresentativeApplication.decided_at <= cutoff,
                RepresentativeApplication.documents.any(ApplicationDocument.deleted_at.is_(None)),
            )
            .order_by(RepresentativeApplication.decided_at, RepresentativeApplication.id)
            .limit(batch)
        )
        .scalars()
        .all()
    )
    documents = (
        db.session.execute(
            select(ApplicationDocument)
            .where(
                ApplicationDocument.application_id.in_(application_ids),
                ApplicationDocument.deleted_at.is_(None),
            )
            .order_by(ApplicationDocument.application_id, ApplicationDocument.id)
        )
        .scalars()
        .all()
        if application_ids
        else []
    )
    purged_total = 0
    actor = Actor.system("document-retention")
    for application_id, group in groupby(documents, key=lambda document: document.application_id):
        purged: list[int] = []
        failed: list[int] = []
        for document in group:
            if document.storage_key is not None:
                try:
                    storage.delete(document.storage_key)
                except StorageError:
                    log.warning(
                        "retention: could not delete document %s of application %s; retrying next run",
                        document.id,
                        application_id,
                        exc_info=True,
                    )
                    failed.append(document.id)
                    continue
            document.storage_key = None
            document.deleted_at = now
            purged.append(document.id)
        if purged:
            audit.record(
                "documents.purged",
                actor=actor,
                subject_type="representative_application",
                subject_id=application_id,
                after={
                    "documents": purged,
                    "failed": failed,
                    "retention_days": days,
                },
            )
        purged_total += len(purged)
    db.session.flush()
    return purged_total


def purge_orphan_documents(*, now: datetime | None = None, batch: int = 1000) -> int:
    """Delete stored application files that no document row points to and that are older than
    ORPHAN_DOCUMENT_MINUTES. An upload whose request then failed (storage went down for the next
    file and for the immediate delete, or the database refused the row) leaves such a file; a
    younger one may belong to a request still running, so it waits for a later run. One
    `documents.orphans_deleted` event per run that found any; at most `batch` files per run.
    Returns how many files were deleted."""
    now = now or utcnow()
    minutes = int(current_app.config["ORPHAN_DOCUMENT_MINUTES"])
    cutoff = now - timedelta(minutes=minutes)
    storage = current_app.extensions["storage"]
    # One read of the (unindexed) keys, a few bytes per document, rather than a look-up per file.
    referenced = set(
        db.session.execute(
            select(ApplicationDocument.storage_key).where(ApplicationDocument.storage_key.is_not(None))
        ).scalars()
    )
    orphans: list[str] = []
    for key, written_at in storage.list_keys(DOCUMENTS_PREFIX):
        if written_at <= cutoff and key not in referenced:
            orphans.append(key)
            if len(orphans) == batch:
                break
    deleted: list[str] = []
    failed: list[str] = []
    for key in orphans:
        try:
            storage.delete(key)
        except StorageError:
            log.warning("orphan clean-up: could not delete %s; retrying next run", key, exc_info=True)
            failed.append(key)
            continue
        deleted.append(key)
    if deleted or failed:
        audit.record(
            "documents.orphans_deleted",
            actor=Actor.system("orphan-clean-up"),
            subject_type="document_storage",
            subject_id=DOCUMENTS_PREFIX,
            after={"deleted": deleted, "failed": failed, "older_than_minutes": minutes},
        )
    db.session.flush()
    return len(deleted)


def expire_stale_invitations(*, now: datetime | None = None, batch: int = 1000) -> int:
    """Invited applications whose newest completion link has expired unused become `expired`
    (a final state: a new application is needed). A representative who lost the link asks for a
    new one before it expires (`completion.reinvite`). Returns how many applications expired;
    at most `batch` per run, the rest the next run."""
    now = now or utcnow()
    newest = (
        select(
            RepresentativeCompletion.application_id,
            func.max(RepresentativeCompletion.id).label("completion_id"),
        )
        .group_by(RepresentativeCompletion.application_id)
        .subquery()
    )
    rows = db.session.execute(
        select(RepresentativeApplication, RepresentativeCompletion)
        .join(newest, newest.c.application_id == RepresentativeApplication.id)
        .join(RepresentativeCompletion, RepresentativeCompletion.id == newest.c.completion_id)
        .where(
            RepresentativeApplication.status == ApplicationStatus.INVITED,
            RepresentativeCompletion.expires_at <= now,
        )
        .order_by(RepresentativeCompletion.expires_at, RepresentativeApplication.id)
        .limit(batch)
    ).all()
    actor = Actor.system("completion-expiry")
    for application, completion in rows:
        transition(
            application,
            ApplicationStatus.EXPIRED,
            actor=actor,
            now=now,
            completion_id=completion.id,
            link_expired_at=completion.expires_at.isoformat(),
        )
    db.session.flush()
    return len(rows)

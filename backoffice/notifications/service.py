"""Writing messages to the outbox, delivering them, and recovering the ones that got stuck.

A message is rendered when it is written (in the recipient's language) and committed with
the change that caused it. Delivery is at-least-once with retries, and idempotent by outbox
id: a row that is no longer pending is never sent again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from flask import current_app, render_template
from jinja2 import TemplateNotFound
from sqlalchemy import and_, or_, select, update

from backoffice import audit
from backoffice.audit import Actor
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.jobs import enqueue_after_commit
from backoffice.notifications.adapters import DeliveryError
from backoffice.notifications.models import Channel, OutboxMessage, OutboxStatus

log = logging.getLogger(__name__)

LANGUAGES = ("es", "en")
DEFAULT_LANGUAGE = "es"
MAX_BACKOFF = timedelta(hours=1)


def pick_language(language: str | None) -> str:
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


def _render(kind: str, template: str, part: str, language: str, context: Mapping[str, Any]) -> str:
    return render_template(f"{kind}/{language}/{template}.{part}", **context).strip()


def _render_optional(
    kind: str, template: str, part: str, language: str, context: Mapping[str, Any]
) -> str | None:
    try:
        return _render(kind, template, part, language, context)
    except TemplateNotFound:
        return None


def queue_email(
    to: str, template: str, context: Mapping[str, Any], *, language: str | None = None
) -> OutboxMessage:
    """Render `templates/email/<lang>/<template>.{subject.txt,txt,html}` into an outbox row."""
    language = pick_language(language)
    message = OutboxMessage(
        channel=Channel.EMAIL,
        recipient=to,
        template=template,
        language=language,
        subject=_render("email", template, "subject.txt", language, context),
        body_text=_render("email", template, "txt", language, context),
        body_html=_render_optional("email", template, "html", language, context),
    )
    return _queue(message)


def queue_sms(
    to: str, template: str, context: Mapping[str, Any], *, language: str | None = None
) -> OutboxMessage:
    """Render `templates/sms/<lang>/<template>.txt` into an outbox row."""
    language = pick_language(language)
    message = OutboxMessage(
        channel=Channel.SMS,
        recipient=to,
        template=template,
        language=language,
        body_text=_render("sms", template, "txt", language, context),
    )
    return _queue(message)


def _queue(message: OutboxMessage) -> OutboxMessage:
    message.enqueued_at = utcnow()
    db.session.add(message)
    db.session.flush()
    _relay_after_commit(message.id, fresh=True)
    return message


def job_id_for(message_id: int) -> str:
    return f"outbox-{message_id}"


def _relay_after_commit(message_id: int, *, fresh: bool = False) -> None:
    from backoffice.notifications.jobs import deliver_message

    enqueue_after_commit(
        deliver_message,
        message_id,
        job_id=job_id_for(message_id),
        on_failure=lambda: _forget_enqueue(message_id),
        fresh=fresh,
    )


def _forget_enqueue(message_id: int) -> None:
    """The queue was unreachable: mark the row as not queued so the next sweep picks it up.

    Its own short transaction, not a session commit: this runs while the caller's commit is
    still relaying, and a session commit here would relay the next message one level deeper,
    until a big enough transaction ends in RecursionError."""
    with db.engine.begin() as connection:
        connection.execute(
            update(OutboxMessage).where(OutboxMessage.id == message_id).values(enqueued_at=None)
        )


def backoff(attempts: int) -> timedelta:
    return min(timedelta(seconds=30 * 2 ** max(attempts - 1, 0)), MAX_BACKOFF)


def _locked_pending(message_id: int) -> OutboxMessage | None:
    """The row, locked against a concurrent delivery of the same message (PostgreSQL)."""
    return db.session.execute(
        select(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.status == OutboxStatus.PENDING)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def deliver(message_id: int, *, now: datetime | None = None) -> OutboxStatus | None:
    """Try to hand one message over. Sent or failed rows are left alone (idempotent)."""
    now = now or utcnow()
    message = _locked_pending(message_id)
    if message is None:
        return None
    if message.next_attempt_at is not None and message.next_attempt_at > now:
        message.enqueued_at = None
        return message.status
    sender = current_app.extensions["mailer" if message.channel == Channel.EMAIL else "sms_sender"]
    message.attempts += 1
    try:
        if message.channel == Channel.EMAIL:
            sender.send(
                to=message.recipient,
                subject=message.subject or "",
                text=message.body_text,
                html=message.body_html,
                message_key=delivery_key(message),
            )
        else:
            sender.send(to=message.recipient, text=message.body_text, message_key=delivery_key(message))
    except DeliveryError as exc:
        _record_failure(message, str(exc), permanent=exc.permanent, now=now)
        return message.status
    except Exception as exc:
        # A bug or an unexpected adapter error must not leave the row retried for ever.
        log.exception("delivering outbox message %s failed unexpectedly", message.id)
        _record_failure(message, f"{type(exc).__name__}: {exc}", permanent=True, now=now)
        return message.status
    message.status = OutboxStatus.SENT
    message.sent_at = now
    message.delivered_via = sender.name
    message.next_attempt_at = None
    if message.redact_after_delivery and sender.name != "dev_outbox":
        _redact(message)
    return message.status


REDACTED_TEXT = "[redacted after delivery]"


def _redact(message: OutboxMessage) -> None:
    """Blank a secret-bearing message (a one-time code) once a real provider has accepted it.

    The whole body goes, not only the digits: the flag does not say where the secret is.
    The dev outbox keeps the text, so developers can read codes at /admin/dev-mailbox.
    Pending rows keep it because it is still to be sent; given-up (failed) rows keep it too,
    so an admin's "Send again" has something to send. Such a code stays readable, to admins
    only (the outbox view), until it expires (minutes) or a resend supersedes it; after that
    it opens nothing."""
    message.body_text = REDACTED_TEXT
    message.body_html = None


def delivery_key(message: OutboxMessage) -> str:
    """Stable for every attempt at one row, and unique even across database resets."""
    return f"outbox-{message.id}-{message.created_at:%Y%m%d%H%M%S%f}"


def _record_failure(message: OutboxMessage, error: str, *, permanent: bool, now: datetime) -> None:
    message.last_error = error[:2000]
    message.enqueued_at = None
    if permanent or message.attempts >= current_app.config["OUTBOX_MAX_ATTEMPTS"]:
        message.status = OutboxStatus.FAILED
        message.next_attempt_at = None
        audit.record(
            "outbox.gave_up",
            actor=Actor.system("outbox"),
            subject_type="outbox_message",
            subject_id=message.id,
            after={"attempts": message.attempts, "last_error": message.last_error, "permanent": permanent},
        )
    else:
        message.next_attempt_at = now + backoff(message.attempts)


def sweep(*, now: datetime | None = None, limit: int = 500) -> int:
    """Re-enqueue pending rows that are due and not in a queue, or whose job went missing
    (a worker killed mid-delivery leaves its job abandoned, and rq does not retry those)."""
    now = now or utcnow()
    stale_before = now - timedelta(seconds=current_app.config["OUTBOX_STALE_SECONDS"])
    due = or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= now)
    rows = (
        db.session.execute(
            select(OutboxMessage.id)
            .where(
                OutboxMessage.status == OutboxStatus.PENDING,
                or_(
                    and_(OutboxMessage.enqueued_at.is_(None), due),
                    OutboxMessage.enqueued_at < stale_before,
                ),
            )
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
        .scalars()
        .all()
    )
    if rows:
        db.session.execute(update(OutboxMessage).where(OutboxMessage.id.in_(rows)).values(enqueued_at=now))
        for message_id in rows:
            _relay_after_commit(message_id)
    return len(rows)


def retry(message_ids: Iterable[int], *, actor: Actor) -> int:
    """An admin sends given-up messages again; their attempt count starts over."""
    count = 0
    for message in db.session.execute(
        select(OutboxMessage).where(
            OutboxMessage.id.in_(list(message_ids)), OutboxMessage.status == OutboxStatus.FAILED
        )
    ).scalars():
        message.status = OutboxStatus.PENDING
        message.attempts = 0
        message.next_attempt_at = None
        message.enqueued_at = utcnow()
        audit.record("outbox.retried", actor=actor, subject_type="outbox_message", subject_id=message.id)
        _relay_after_commit(message.id)
        count += 1
    db.session.flush()
    return count

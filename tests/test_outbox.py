"""The transactional outbox with the dev outbox adapter and inline jobs: rows are written with
the change that causes them, rendered in the recipient's language, and delivered after commit."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from jinja2 import TemplateNotFound
from sqlalchemy import func, select

from backoffice import audit
from backoffice.audit.models import AuditEvent
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.notifications import service
from backoffice.notifications.models import Channel, OutboxMessage, OutboxStatus
from tests.factories import TEST_ACTOR

ES_SUBJECT = "Ventanilla: mensaje de prueba"
EN_SUBJECT = "Ventanilla: test message"
ES_SMS = "Ventanilla: mensaje de prueba. Si lo recibe, el envío de SMS funciona."
EN_SMS = "Ventanilla: test message. If you received it, SMS delivery works."


@pytest.fixture
def inline_app(make_app):
    """Dev outbox (no SMTP, no SMS gateway) and inline jobs, whichever backend the suite runs on."""
    app = make_app(REDIS_URL=None)
    with app.app_context():
        yield app


def outbox_rows() -> list[OutboxMessage]:
    return list(db.session.execute(select(OutboxMessage).order_by(OutboxMessage.id)).scalars())


def audit_actions() -> list[str]:
    return list(db.session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())


def add_pending_row(**fields) -> OutboxMessage:
    """A pending row as a crash or an earlier failure leaves it: written, but not relayed."""
    values = {
        "channel": Channel.EMAIL,
        "recipient": "ana@example.com",
        "template": "test_message",
        "language": "es",
        "subject": ES_SUBJECT,
        "body_text": "Hola",
        "status": OutboxStatus.PENDING,
        "attempts": 0,
    } | fields
    message = OutboxMessage(**values)
    db.session.add(message)
    db.session.commit()
    return message


# Written in the caller's transaction


def test_queued_email_is_a_row_in_the_open_transaction_and_not_delivered_before_commit(inline_app):
    message = service.queue_email("ana@example.com", "test_message", {})

    assert message.id is not None
    assert db.session.scalar(select(func.count()).select_from(OutboxMessage)) == 1
    assert message.status == OutboxStatus.PENDING
    assert message.attempts == 0
    assert message.sent_at is None


def test_rollback_discards_the_row_and_its_delivery(inline_app):
    service.queue_email("ana@example.com", "test_message", {})
    db.session.rollback()
    db.session.commit()  # a later commit must not run the discarded relay

    assert outbox_rows() == []
    assert not db.session().info.get("after_commit")


def test_rollback_discards_the_message_together_with_the_change_that_caused_it(inline_app):
    audit.record("customer.updated", actor=TEST_ACTOR, subject_type="customer", subject_id=1)
    service.queue_email("ana@example.com", "test_message", {})
    db.session.rollback()

    assert outbox_rows() == []
    assert "customer.updated" not in audit_actions()


def test_commit_keeps_the_message_together_with_the_change_that_caused_it(inline_app):
    audit.record("customer.updated", actor=TEST_ACTOR, subject_type="customer", subject_id=1)
    service.queue_email("ana@example.com", "test_message", {})
    db.session.commit()

    assert len(outbox_rows()) == 1
    assert "customer.updated" in audit_actions()


# Delivery through the dev outbox after commit


def test_commit_delivers_an_email_through_the_dev_outbox(inline_app):
    before = utcnow()
    message_id = service.queue_email("ana@example.com", "test_message", {}).id
    db.session.commit()

    [row] = outbox_rows()
    assert row.id == message_id
    assert row.status == OutboxStatus.SENT
    assert row.delivered_via == "dev_outbox"
    assert row.attempts == 1
    assert row.sent_at is not None and row.sent_at >= before
    assert row.last_error is None
    assert row.next_attempt_at is None


def test_commit_delivers_an_sms_through_the_dev_outbox(inline_app):
    service.queue_sms("+34612345678", "test_message", {})
    db.session.commit()

    [row] = outbox_rows()
    assert row.channel == Channel.SMS
    assert row.recipient == "+34612345678"
    assert row.status == OutboxStatus.SENT
    assert row.delivered_via == "dev_outbox"
    assert row.attempts == 1


def test_a_transaction_with_many_messages_delivers_every_one_inline(inline_app):
    # Each inline delivery commits; those commits must not nest one inside the other.
    for number in range(300):
        service.queue_email(f"client{number}@example.com", "test_message", {})
    db.session.commit()

    assert {row.status for row in outbox_rows()} == {OutboxStatus.SENT}
    assert len(outbox_rows()) == 300


def test_a_sweep_of_many_rows_delivers_every_one_inline(inline_app):
    db.session.add_all(
        OutboxMessage(
            channel=Channel.EMAIL,
            recipient=f"client{number}@example.com",
            template="test_message",
            language="es",
            subject=ES_SUBJECT,
            body_text="Hola",
            status=OutboxStatus.PENDING,
            attempts=0,
        )
        for number in range(300)
    )
    db.session.commit()

    assert service.sweep() == 300
    db.session.commit()

    assert {row.status for row in outbox_rows()} == {OutboxStatus.SENT}


# Rendering in the recipient's language


def test_spanish_is_the_default_language(inline_app):
    message = service.queue_email("ana@example.com", "test_message", {})

    assert message.language == "es"
    assert message.subject == ES_SUBJECT
    assert message.body_text.startswith("Hola:")
    assert "Este es un mensaje de prueba de Ventanilla." in message.body_text


def test_english_renders_when_asked(inline_app):
    message = service.queue_email("ana@example.com", "test_message", {}, language="en")

    assert message.language == "en"
    assert message.subject == EN_SUBJECT
    assert message.body_text.startswith("Hello,")
    assert "This is a test message from Ventanilla." in message.body_text


def test_an_unsupported_language_falls_back_to_spanish(inline_app):
    message = service.queue_email("ana@example.com", "test_message", {}, language="fr")

    assert message.language == "es"
    assert message.subject == ES_SUBJECT


def test_the_html_part_is_rendered_in_the_same_language(inline_app):
    spanish = service.queue_email("ana@example.com", "test_message", {})
    english = service.queue_email("ana@example.com", "test_message", {}, language="en")

    assert spanish.body_html.startswith("<p>Hola:</p>")
    assert "<p>Este es un mensaje de prueba de Ventanilla." in spanish.body_html
    assert english.body_html.startswith("<p>Hello,</p>")


def test_rendered_parts_are_stripped_of_surrounding_whitespace(inline_app):
    message = service.queue_email("ana@example.com", "test_message", {})

    assert message.subject == message.subject.strip()
    assert "\n" not in message.subject
    assert message.body_text == message.body_text.strip()


def test_sms_is_rendered_as_plain_text_without_subject_or_html(inline_app):
    spanish = service.queue_sms("+34612345678", "test_message", {})
    english = service.queue_sms("+34612345678", "test_message", {}, language="en")

    assert spanish.body_text == ES_SMS
    assert english.body_text == EN_SMS
    assert spanish.subject is None
    assert spanish.body_html is None


def test_an_unknown_template_is_refused_when_queued(inline_app):
    with pytest.raises(TemplateNotFound):
        service.queue_email("ana@example.com", "no_such_template", {})

    db.session.rollback()
    assert outbox_rows() == []


# Idempotent delivery


def test_delivering_a_sent_row_again_does_nothing(inline_app):
    message_id = service.queue_email("ana@example.com", "test_message", {}).id
    db.session.commit()

    assert service.deliver(message_id) is None
    db.session.commit()
    [row] = outbox_rows()
    assert row.attempts == 1


def test_delivering_an_unknown_id_does_nothing(inline_app):
    assert service.deliver(987654) is None


def test_a_row_whose_retry_is_not_due_yet_is_left_for_later(inline_app):
    now = utcnow()
    message = add_pending_row(attempts=1, next_attempt_at=now + timedelta(minutes=5), enqueued_at=now)

    assert service.deliver(message.id, now=now) == OutboxStatus.PENDING
    db.session.commit()

    [row] = outbox_rows()
    assert row.status == OutboxStatus.PENDING
    assert row.attempts == 1
    assert row.enqueued_at is None  # no longer queued: the sweeper will pick it up when due


def test_a_row_whose_retry_is_due_is_delivered(inline_app):
    now = utcnow()
    message = add_pending_row(attempts=1, next_attempt_at=now - timedelta(seconds=1))

    assert service.deliver(message.id, now=now) == OutboxStatus.SENT


# Backoff


@pytest.mark.parametrize(
    ("attempts", "expected"),
    [
        (1, timedelta(seconds=30)),
        (2, timedelta(seconds=60)),
        (3, timedelta(seconds=120)),
        (7, timedelta(seconds=1920)),
        (8, timedelta(hours=1)),
        (30, timedelta(hours=1)),
    ],
)
def test_backoff_doubles_from_thirty_seconds_up_to_an_hour(attempts, expected):
    assert service.backoff(attempts) == expected


# The sweeper


def test_sweep_relays_a_pending_row_that_was_never_queued(inline_app):
    add_pending_row(enqueued_at=None)

    assert service.sweep() == 1
    db.session.commit()

    [row] = outbox_rows()
    assert row.status == OutboxStatus.SENT
    assert row.attempts == 1


def test_sweep_leaves_a_freshly_queued_row_alone(inline_app):
    now = utcnow()
    add_pending_row(enqueued_at=now)

    assert service.sweep(now=now + timedelta(seconds=30)) == 0


def test_sweep_takes_back_a_row_queued_longer_ago_than_the_stale_limit(inline_app):
    now = utcnow()
    add_pending_row(enqueued_at=now - timedelta(seconds=inline_app.config["OUTBOX_STALE_SECONDS"] + 1))

    assert service.sweep(now=now) == 1
    db.session.commit()

    [row] = outbox_rows()
    assert row.status == OutboxStatus.SENT


def test_sweep_waits_for_the_retry_time(inline_app):
    now = utcnow()
    add_pending_row(attempts=1, next_attempt_at=now + timedelta(seconds=30))

    assert service.sweep(now=now) == 0
    [row] = outbox_rows()
    assert row.attempts == 1


def test_sweep_relays_a_row_once_its_retry_time_has_come(inline_app):
    now = utcnow()
    add_pending_row(attempts=1, next_attempt_at=now + timedelta(seconds=30))

    with time_machine.travel(now + timedelta(seconds=31)):
        assert service.sweep() == 1
        db.session.commit()

    [row] = outbox_rows()
    assert row.status == OutboxStatus.SENT
    assert row.attempts == 2


@pytest.mark.parametrize("status", [OutboxStatus.SENT, OutboxStatus.FAILED])
def test_sweep_never_touches_sent_or_failed_rows(inline_app, status):
    add_pending_row(status=status, attempts=1, enqueued_at=None)

    assert service.sweep(now=utcnow() + timedelta(days=1)) == 0
    [row] = outbox_rows()
    assert row.status == status
    assert row.attempts == 1


def test_sweep_marks_the_rows_it_relays_as_queued_now(inline_app):
    now = utcnow()
    message = add_pending_row(enqueued_at=None)

    service.sweep(now=now)  # not committed yet, so the relay has not run
    db.session.refresh(message)

    assert message.enqueued_at == now


def test_sweep_relays_at_most_limit_rows_oldest_first(inline_app):
    first, second, third = (add_pending_row(enqueued_at=None) for _ in range(3))

    assert service.sweep(limit=2) == 2
    db.session.commit()

    statuses = {row.id: row.status for row in outbox_rows()}
    assert statuses == {
        first.id: OutboxStatus.SENT,
        second.id: OutboxStatus.SENT,
        third.id: OutboxStatus.PENDING,
    }


# Retry by an admin


def test_retry_sends_a_given_up_message_again_and_audits_it(inline_app):
    message = add_pending_row(status=OutboxStatus.FAILED, attempts=8, last_error="SMTP down")

    assert service.retry([message.id], actor=TEST_ACTOR) == 1
    db.session.commit()

    [row] = outbox_rows()
    assert row.status == OutboxStatus.SENT
    assert row.attempts == 1  # the count starts over
    retried = db.session.execute(select(AuditEvent).where(AuditEvent.action == "outbox.retried")).scalar_one()
    assert retried.subject_type == "outbox_message"
    assert retried.subject_id == str(message.id)
    assert retried.actor_label == TEST_ACTOR.label


def test_retry_ignores_messages_that_have_not_given_up(inline_app):
    sent = add_pending_row(status=OutboxStatus.SENT, attempts=1)
    pending = add_pending_row(attempts=3, enqueued_at=utcnow())

    assert service.retry([sent.id, pending.id], actor=TEST_ACTOR) == 0
    db.session.commit()

    assert {row.id: (row.status, row.attempts) for row in outbox_rows()} == {
        sent.id: (OutboxStatus.SENT, 1),
        pending.id: (OutboxStatus.PENDING, 3),
    }
    assert "outbox.retried" not in audit_actions()


def test_retry_rolled_back_neither_sends_nor_audits(inline_app):
    message = add_pending_row(status=OutboxStatus.FAILED, attempts=8)

    service.retry([message.id], actor=TEST_ACTOR)
    db.session.rollback()
    db.session.commit()

    [row] = outbox_rows()
    assert row.status == OutboxStatus.FAILED
    assert "outbox.retried" not in audit_actions()


# Operator commands


def test_run_periodic_runs_the_outbox_sweeper_inline_and_prints_its_result(inline_app):
    add_pending_row(enqueued_at=None)
    add_pending_row(enqueued_at=None)

    result = inline_app.test_cli_runner().invoke(args=["jobs", "run-periodic"])

    assert result.exit_code == 0, result.output
    assert "outbox-sweeper: 2" in result.output.splitlines()
    assert [row.status for row in outbox_rows()] == [OutboxStatus.SENT, OutboxStatus.SENT]


def test_run_periodic_with_nothing_to_do_prints_zero(inline_app):
    result = inline_app.test_cli_runner().invoke(args=["jobs", "run-periodic"])

    assert result.exit_code == 0, result.output
    assert "outbox-sweeper: 0" in result.output.splitlines()


def test_send_test_command_writes_and_delivers_a_test_message(inline_app):
    result = inline_app.test_cli_runner().invoke(
        args=["notifications", "send-test", "--to", "ops@example.com", "--language", "en"]
    )

    assert result.exit_code == 0, result.output
    [row] = outbox_rows()
    assert f"Test message {row.id} written to the outbox." in result.output
    assert row.recipient == "ops@example.com"
    assert row.subject == EN_SUBJECT
    assert row.status == OutboxStatus.SENT

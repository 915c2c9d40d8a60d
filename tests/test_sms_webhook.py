"""SMS delivery through the gateway webhook, against a real HTTP server on loopback."""

from __future__ import annotations

import json
import socket

import pytest
from sqlalchemy import select

from backoffice.extensions import db
from backoffice.notifications import service
from backoffice.notifications.adapters import DeliveryError, WebhookSmsSender
from backoffice.notifications.models import OutboxMessage, OutboxStatus
from tests.faults import SmsGateway

PHONE = "+34612345678"
ES_SMS = "Ventanilla: mensaje de prueba. Si lo recibe, el envío de SMS funciona."
EN_SMS = "Ventanilla: test message. If you received it, SMS delivery works."


@pytest.fixture
def start_gateway():
    gateways: list[SmsGateway] = []

    def start(**options) -> SmsGateway:
        gateway = SmsGateway(**options)
        gateways.append(gateway)
        return gateway

    yield start
    for gateway in gateways:
        gateway.close()


@pytest.fixture
def gateway(start_gateway) -> SmsGateway:
    return start_gateway()


def sms_app(make_app, url: str, **overrides):
    return make_app(SMS_WEBHOOK_URL=url, REDIS_URL=None, **overrides)


def the_row() -> OutboxMessage:
    return db.session.execute(select(OutboxMessage)).scalar_one()


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Delivered


def test_committed_sms_is_posted_once_as_json_to_the_gateway(make_app, gateway):
    with sms_app(make_app, gateway.url).app_context():
        service.queue_sms(PHONE, "test_message", {})
        db.session.commit()

    [request] = gateway.requests
    assert request["path"] == "/sms"
    assert json.loads(request["body"]) == {"to": PHONE, "text": ES_SMS}


def test_the_post_is_declared_as_json(make_app, gateway):
    with sms_app(make_app, gateway.url).app_context():
        service.queue_sms(PHONE, "test_message", {})
        db.session.commit()

    [request] = gateway.requests
    assert request["headers"]["Content-Type"] == "application/json"


def test_the_post_carries_the_outbox_id_as_idempotency_key(make_app, gateway):
    with sms_app(make_app, gateway.url).app_context():
        message_id = service.queue_sms(PHONE, "test_message", {}).id
        db.session.commit()

    [request] = gateway.requests
    assert request["headers"]["Idempotency-Key"].startswith(f"outbox-{message_id}-")


def test_english_sms_text_is_posted_in_english(make_app, gateway):
    with sms_app(make_app, gateway.url).app_context():
        service.queue_sms(PHONE, "test_message", {}, language="en")
        db.session.commit()

    assert json.loads(gateway.requests[0]["body"])["text"] == EN_SMS


def test_accepted_sms_row_is_sent_via_the_webhook(make_app, gateway):
    with sms_app(make_app, gateway.url).app_context():
        service.queue_sms(PHONE, "test_message", {})
        db.session.commit()

        row = the_row()
        assert row.status == OutboxStatus.SENT
        assert row.delivered_via == "sms_webhook"
        assert row.attempts == 1


def test_rolled_back_sms_is_never_posted(make_app, gateway):
    with sms_app(make_app, gateway.url).app_context():
        service.queue_sms(PHONE, "test_message", {})
        db.session.rollback()
        db.session.commit()

    assert gateway.requests == []


def test_a_sent_sms_is_not_posted_again(make_app, gateway):
    with sms_app(make_app, gateway.url).app_context():
        message_id = service.queue_sms(PHONE, "test_message", {}).id
        db.session.commit()

        assert service.deliver(message_id) is None
        db.session.commit()
    assert len(gateway.requests) == 1


def test_emails_do_not_go_to_the_sms_gateway(make_app, gateway):
    with sms_app(make_app, gateway.url).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()

        assert the_row().delivered_via == "dev_outbox"
    assert gateway.requests == []


# Refused or unreachable


def test_a_server_error_leaves_the_row_pending_with_the_status_in_last_error(make_app, start_gateway):
    gateway = start_gateway(status=500)
    with sms_app(make_app, gateway.url).app_context():
        service.queue_sms(PHONE, "test_message", {})
        db.session.commit()

        row = the_row()
        assert row.status == OutboxStatus.PENDING
        assert row.attempts == 1
        assert "500" in row.last_error
        assert row.next_attempt_at is not None
    assert len(gateway.requests) == 1


def test_a_client_error_answer_is_given_up_not_retried(make_app, start_gateway):
    gateway = start_gateway(status=422)
    with sms_app(make_app, gateway.url).app_context():
        service.queue_sms(PHONE, "test_message", {})
        db.session.commit()

        row = the_row()
        assert row.status == OutboxStatus.FAILED
        assert "SMS gateway answered 422" in row.last_error
        assert "gateway exploded" in row.last_error


def test_an_unreachable_gateway_leaves_the_row_pending(make_app):
    with sms_app(make_app, f"http://127.0.0.1:{closed_port()}/sms").app_context():
        service.queue_sms(PHONE, "test_message", {})
        db.session.commit()  # must not raise

        row = the_row()
        assert row.status == OutboxStatus.PENDING
        assert "SMS gateway unreachable" in row.last_error


def test_sender_raises_delivery_error_when_the_gateway_does_not_answer_in_time(start_gateway):
    gateway = start_gateway(hold=True)
    sender = WebhookSmsSender(gateway.url, timeout=(0.5, 0.5))

    with pytest.raises(DeliveryError, match="SMS gateway unreachable"):
        sender.send(to=PHONE, text="Hola", message_key="outbox-1")
    assert len(gateway.requests) == 1


def test_a_gateway_that_does_not_answer_leaves_the_row_pending(make_app, start_gateway):
    gateway = start_gateway(hold=True)
    app = sms_app(make_app, gateway.url)
    app.extensions["sms_sender"] = WebhookSmsSender(gateway.url, timeout=(0.5, 0.5))
    with app.app_context():
        service.queue_sms(PHONE, "test_message", {})
        db.session.commit()

        row = the_row()
        assert row.status == OutboxStatus.PENDING
        assert row.attempts == 1
        assert "timed out" in row.last_error.lower()


def test_sender_raises_delivery_error_on_a_server_error(start_gateway):
    gateway = start_gateway(status=503)
    sender = WebhookSmsSender(gateway.url, timeout=(2, 2))

    with pytest.raises(DeliveryError, match="503"):
        sender.send(to=PHONE, text="Hola", message_key="outbox-1")


def test_a_retried_sms_is_posted_with_the_same_idempotency_key(make_app, start_gateway):
    gateway = start_gateway(status=500)
    with sms_app(make_app, gateway.url).app_context():
        message_id = service.queue_sms(PHONE, "test_message", {}).id
        db.session.commit()
        gateway.status = 200

        assert service.deliver(message_id, now=the_row().next_attempt_at) == OutboxStatus.SENT
        db.session.commit()

    keys = [request["headers"]["Idempotency-Key"] for request in gateway.requests]
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert keys[0].startswith(f"outbox-{message_id}-")


@pytest.mark.parametrize("status", [408, 429])
def test_busy_or_timed_out_answers_are_retried(make_app, start_gateway, status):
    gateway = start_gateway(status=status)
    with sms_app(make_app, gateway.url).app_context():
        service.queue_sms(PHONE, "test_message", {})
        db.session.commit()

        assert the_row().status == OutboxStatus.PENDING

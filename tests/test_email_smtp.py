"""Email delivery through SMTP, against a real SMTP server (aiosmtpd) on loopback: what arrives,
what happens while the server is down, retries, giving up, and SMTP AUTH."""

from __future__ import annotations

import ipaddress
import socket
import ssl
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import parseaddr

import pytest
import time_machine
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy import select

from backoffice.audit.models import AuditEvent
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.notifications import service
from backoffice.notifications.adapters import DeliveryError, SmtpMailer
from backoffice.notifications.models import OutboxMessage, OutboxStatus
from tests.factories import TEST_ACTOR

MAIL_FROM = "Ventanilla <no-reply@ventanilla.invalid>"
SMTP_USER = "mailer"
SMTP_PASSWORD = "s3cret@pass"  # "@" must arrive URL-decoded
SMTP_PASSWORD_IN_URL = "s3cret%40pass"


class RefusingHandler:
    """A server that refuses every recipient for good (550), as for a mailbox that does not exist."""

    def __init__(self) -> None:
        self.envelopes = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "550 5.1.1 No such user"


class RecordingHandler:
    """Accepts every message and keeps its envelope, and who had logged in to send it."""

    def __init__(self) -> None:
        self.envelopes = []
        self.logins = []
        self.over_tls = []

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        self.logins.append(session.auth_data.login if session.authenticated else None)
        self.over_tls.append(server.transport.get_extra_info("ssl_object") is not None)
        return "250 OK"

    def messages(self) -> list[EmailMessage]:
        return [message_from_bytes(envelope.content, policy=policy.default) for envelope in self.envelopes]


def free_port() -> int:
    """A loopback port with nothing listening on it (closed right after the OS hands it out)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def only_user_with_password(server, session, envelope, mechanism, auth_data):
    if (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == SMTP_USER.encode()
        and auth_data.password == SMTP_PASSWORD.encode()
    ):
        return AuthResult(success=True, auth_data=auth_data)
    return AuthResult(success=False, handled=False)


@pytest.fixture
def smtp_server():
    """Start a recording SMTP server on a given loopback port: `start(port=None, **smtp_options)`."""
    controllers = []

    def start(port: int | None = None, **smtp_options) -> RecordingHandler:
        handler = RecordingHandler()
        controller = Controller(
            handler,
            hostname="127.0.0.1",
            port=port or free_port(),
            server_hostname="smtp.test",
            **smtp_options,
        )
        controller.start()
        controllers.append(controller)
        handler.port = controller.port
        return handler

    yield start
    for controller in controllers:
        controller.stop()


@pytest.fixture
def smtp(smtp_server) -> RecordingHandler:
    return smtp_server()


def smtp_app(make_app, port: int, url: str | None = None, **overrides):
    return make_app(
        SMTP_URL=url or f"smtp://127.0.0.1:{port}", MAIL_FROM=MAIL_FROM, REDIS_URL=None, **overrides
    )


def the_row() -> OutboxMessage:
    return db.session.execute(select(OutboxMessage)).scalar_one()


def audit_events(action: str) -> list[AuditEvent]:
    return list(db.session.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars())


# Delivery with the server up


def test_committed_email_arrives_once_with_its_envelope(make_app, smtp):
    with smtp_app(make_app, smtp.port).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()

    [envelope] = smtp.envelopes
    assert envelope.mail_from == "no-reply@ventanilla.invalid"
    assert envelope.rcpt_tos == ["ana@example.com"]


def test_committed_email_has_from_to_subject_and_date_headers(make_app, smtp):
    with smtp_app(make_app, smtp.port).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()

    [message] = smtp.messages()
    assert parseaddr(message["From"]) == ("Ventanilla", "no-reply@ventanilla.invalid")
    assert message["To"] == "ana@example.com"
    assert message["Subject"] == "Ventanilla: mensaje de prueba"
    assert message["Date"]


def test_committed_email_carries_text_and_html_alternatives(make_app, smtp):
    with smtp_app(make_app, smtp.port).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()

    [message] = smtp.messages()
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "Este es un mensaje de prueba de Ventanilla. Si lo recibe, el envío de correo" in text
    assert "<p>Hola:</p>" in html


def test_english_email_arrives_in_english(make_app, smtp):
    with smtp_app(make_app, smtp.port).app_context():
        service.queue_email("ana@example.com", "test_message", {}, language="en")
        db.session.commit()

    [message] = smtp.messages()
    assert message["Subject"] == "Ventanilla: test message"
    assert (
        "This is a test message from Ventanilla." in message.get_body(preferencelist=("plain",)).get_content()
    )


def test_message_id_names_the_outbox_row(make_app, smtp):
    with smtp_app(make_app, smtp.port).app_context():
        message_id = service.queue_email("ana@example.com", "test_message", {}).id
        db.session.commit()

    [message] = smtp.messages()
    assert message["Message-ID"].startswith(f"<outbox-{message_id}-")
    assert message["Message-ID"].endswith("@ventanilla.invalid>")
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith(">")


def test_sent_row_records_smtp_as_the_channel_used(make_app, smtp):
    with smtp_app(make_app, smtp.port).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()

        row = the_row()
        assert row.status == OutboxStatus.SENT
        assert row.delivered_via == "smtp"
        assert row.attempts == 1


def test_rolled_back_email_is_never_sent(make_app, smtp):
    with smtp_app(make_app, smtp.port).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.rollback()
        db.session.commit()

        assert db.session.execute(select(OutboxMessage)).first() is None
    assert smtp.envelopes == []


def test_email_is_not_sent_before_commit(make_app, smtp):
    with smtp_app(make_app, smtp.port).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.flush()

        assert smtp.envelopes == []
        db.session.commit()
    assert len(smtp.envelopes) == 1


def test_two_emails_in_one_transaction_each_arrive_once(make_app, smtp):
    with smtp_app(make_app, smtp.port).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        service.queue_email("luis@example.com", "test_message", {}, language="en")
        db.session.commit()

    assert sorted(envelope.rcpt_tos[0] for envelope in smtp.envelopes) == [
        "ana@example.com",
        "luis@example.com",
    ]


# The server is down


def test_server_down_leaves_the_row_pending_with_a_backoff_and_raises_nothing(make_app):
    port = free_port()
    with smtp_app(make_app, port).app_context():
        before = utcnow()
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()  # must not raise
        after = utcnow()

        row = the_row()
        assert row.status == OutboxStatus.PENDING
        assert row.attempts == 1
        assert f"SMTP 127.0.0.1:{port}" in row.last_error
        assert before + timedelta(seconds=30) <= row.next_attempt_at <= after + timedelta(seconds=30)
        assert row.enqueued_at is None
        assert row.sent_at is None


def test_sweep_delivers_once_the_server_is_back_and_the_retry_is_due(make_app, smtp_server):
    port = free_port()
    with smtp_app(make_app, port).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()
        retry_at = the_row().next_attempt_at
        smtp = smtp_server(port)

        with time_machine.travel(retry_at + timedelta(seconds=1)):
            assert service.sweep() == 1
            db.session.commit()

        row = the_row()
        assert row.status == OutboxStatus.SENT
        assert row.attempts == 2
    assert len(smtp.envelopes) == 1


def test_sweep_before_the_retry_is_due_sends_nothing(make_app, smtp_server):
    port = free_port()
    with smtp_app(make_app, port).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()
        retry_at = the_row().next_attempt_at
        smtp = smtp_server(port)

        assert service.sweep(now=retry_at - timedelta(seconds=1)) == 0
        db.session.commit()

        assert the_row().status == OutboxStatus.PENDING
    assert smtp.envelopes == []


def test_a_delivered_row_is_not_sent_again_by_later_sweeps_or_deliveries(make_app, smtp_server):
    port = free_port()
    with smtp_app(make_app, port).app_context():
        message_id = service.queue_email("ana@example.com", "test_message", {}).id
        db.session.commit()
        retry_at = the_row().next_attempt_at
        smtp = smtp_server(port)
        with time_machine.travel(retry_at + timedelta(seconds=1)):
            service.sweep()
            db.session.commit()

        later = retry_at + timedelta(days=1)
        with time_machine.travel(later):
            assert service.sweep() == 0
            db.session.commit()
            assert service.deliver(message_id) is None
            db.session.commit()

        assert the_row().attempts == 2
    assert len(smtp.envelopes) == 1


def test_each_failed_attempt_doubles_the_wait(make_app):
    with smtp_app(make_app, free_port()).app_context():
        message_id = service.queue_email("ana@example.com", "test_message", {}).id
        db.session.commit()
        second_try = the_row().next_attempt_at + timedelta(seconds=1)

        assert service.deliver(message_id, now=second_try) == OutboxStatus.PENDING
        db.session.commit()

        row = the_row()
        assert row.attempts == 2
        assert row.next_attempt_at == second_try + timedelta(seconds=60)


# Giving up, and an admin's retry


def test_after_the_last_attempt_the_row_fails_and_the_give_up_is_audited(make_app):
    with smtp_app(make_app, free_port(), OUTBOX_MAX_ATTEMPTS=2).app_context():
        message_id = service.queue_email("ana@example.com", "test_message", {}).id
        db.session.commit()
        assert service.deliver(message_id, now=the_row().next_attempt_at + timedelta(seconds=1)) == (
            OutboxStatus.FAILED
        )
        db.session.commit()

        row = the_row()
        assert row.status == OutboxStatus.FAILED
        assert row.attempts == 2
        assert row.next_attempt_at is None
        [gave_up] = audit_events("outbox.gave_up")
        assert gave_up.subject_type == "outbox_message"
        assert gave_up.subject_id == str(message_id)
        assert gave_up.actor_kind == "system"
        assert gave_up.after["attempts"] == 2
        assert "SMTP 127.0.0.1" in gave_up.after["last_error"]


def test_a_given_up_row_is_no_longer_swept(make_app):
    with smtp_app(make_app, free_port(), OUTBOX_MAX_ATTEMPTS=1).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()
        assert the_row().status == OutboxStatus.FAILED

        assert service.sweep(now=utcnow() + timedelta(days=1)) == 0


def test_retry_after_giving_up_delivers_once_the_server_is_up(make_app, smtp_server):
    port = free_port()
    with smtp_app(make_app, port, OUTBOX_MAX_ATTEMPTS=2).app_context():
        message_id = service.queue_email("ana@example.com", "test_message", {}).id
        db.session.commit()
        service.deliver(message_id, now=the_row().next_attempt_at + timedelta(seconds=1))
        db.session.commit()
        assert the_row().status == OutboxStatus.FAILED
        smtp = smtp_server(port)

        assert service.retry([message_id], actor=TEST_ACTOR) == 1
        db.session.commit()

        row = the_row()
        assert row.status == OutboxStatus.SENT
        assert row.attempts == 1
        assert row.delivered_via == "smtp"
        assert len(audit_events("outbox.retried")) == 1
    assert len(smtp.envelopes) == 1


def test_retry_while_the_server_is_still_down_starts_a_fresh_round_of_attempts(make_app):
    with smtp_app(make_app, free_port(), OUTBOX_MAX_ATTEMPTS=1).app_context():
        message_id = service.queue_email("ana@example.com", "test_message", {}).id
        db.session.commit()
        assert the_row().status == OutboxStatus.FAILED

        service.retry([message_id], actor=TEST_ACTOR)
        db.session.commit()

        assert the_row().status == OutboxStatus.FAILED
        assert the_row().attempts == 1
        assert len(audit_events("outbox.gave_up")) == 2


# SMTP AUTH


def test_credentials_in_the_url_log_in_before_sending(make_app, smtp_server):
    smtp = smtp_server(authenticator=only_user_with_password, auth_require_tls=False)
    url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD_IN_URL}@127.0.0.1:{smtp.port}"
    with smtp_app(make_app, smtp.port, url).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()

        assert the_row().status == OutboxStatus.SENT
    assert smtp.logins == [SMTP_USER.encode()]


def test_wrong_password_leaves_the_row_pending_with_the_servers_refusal(make_app, smtp_server):
    smtp = smtp_server(authenticator=only_user_with_password, auth_require_tls=False)
    url = f"smtp://{SMTP_USER}:wrong@127.0.0.1:{smtp.port}"
    with smtp_app(make_app, smtp.port, url).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()

        row = the_row()
        assert row.status == OutboxStatus.PENDING
        assert "535" in row.last_error
    assert smtp.envelopes == []


def test_without_credentials_no_login_is_attempted(make_app, smtp):
    with smtp_app(make_app, smtp.port).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()

    assert smtp.logins == [None]


# TLS


@pytest.fixture(scope="module")
def loopback_certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (certificate and key PEM paths)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Ventanilla test SMTP")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    certificate_path, key_path = directory / "smtp.pem", directory / "smtp.key"
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(certificate_path), str(key_path)


@pytest.fixture
def server_tls(loopback_certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*loopback_certificate)
    return context


@pytest.fixture
def trust_loopback_certificate(loopback_certificate, monkeypatch) -> None:
    """Make OpenSSL's default trust store (what the mailer uses) this test certificate."""
    monkeypatch.setenv("SSL_CERT_FILE", loopback_certificate[0])
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


def test_a_server_without_starttls_gets_the_message_unencrypted(make_app, smtp):
    with smtp_app(make_app, smtp.port).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()

    assert smtp.over_tls == [False]


def test_starttls_with_an_untrusted_certificate_sends_nothing(make_app, smtp_server, server_tls):
    smtp = smtp_server(tls_context=server_tls)
    with smtp_app(make_app, smtp.port).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()

        row = the_row()
        assert row.status == OutboxStatus.PENDING
        assert "CERTIFICATE_VERIFY_FAILED" in row.last_error
    assert smtp.envelopes == []


def test_starttls_is_used_when_the_server_offers_it(
    make_app, smtp_server, server_tls, trust_loopback_certificate
):
    smtp = smtp_server(tls_context=server_tls, require_starttls=True)
    with smtp_app(make_app, smtp.port).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()

        assert the_row().status == OutboxStatus.SENT
    assert smtp.over_tls == [True]


def test_credentials_go_over_starttls_to_a_server_that_requires_it(
    make_app, smtp_server, server_tls, trust_loopback_certificate
):
    smtp = smtp_server(tls_context=server_tls, authenticator=only_user_with_password)  # auth_require_tls
    url = f"smtp://{SMTP_USER}:{SMTP_PASSWORD_IN_URL}@127.0.0.1:{smtp.port}"
    with smtp_app(make_app, smtp.port, url).app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()

        assert the_row().status == OutboxStatus.SENT
    assert smtp.logins == [SMTP_USER.encode()]
    assert smtp.over_tls == [True]


def test_smtps_delivers_over_implicit_tls(make_app, smtp_server, server_tls, trust_loopback_certificate):
    smtp = smtp_server(ssl_context=server_tls)
    with smtp_app(make_app, smtp.port, f"smtps://127.0.0.1:{smtp.port}").app_context():
        service.queue_email("ana@example.com", "test_message", {})
        db.session.commit()

        assert the_row().status == OutboxStatus.SENT
    assert smtp.over_tls == [True]


# The adapter on its own


def test_smtp_url_sets_host_port_and_decoded_credentials():
    mailer = SmtpMailer(f"smtp://{SMTP_USER}:{SMTP_PASSWORD_IN_URL}@mail.example.com:2525", MAIL_FROM)

    assert (mailer.host, mailer.port, mailer.use_ssl) == ("mail.example.com", 2525, False)
    assert (mailer.username, mailer.password) == (SMTP_USER, SMTP_PASSWORD)


@pytest.mark.parametrize(
    ("url", "port", "use_ssl"),
    [("smtp://mail.example.com", 587, False), ("smtps://mail.example.com", 465, True)],
)
def test_smtp_url_default_ports(url, port, use_ssl):
    mailer = SmtpMailer(url, MAIL_FROM)

    assert (mailer.port, mailer.use_ssl) == (port, use_ssl)


@pytest.mark.parametrize("url", ["http://mail.example.com", "smtp://", "mail.example.com:25"])
def test_smtp_url_must_name_an_smtp_host(url):
    with pytest.raises(ValueError, match="SMTP_URL"):
        SmtpMailer(url, MAIL_FROM)


def test_mailer_raises_delivery_error_when_the_server_is_unreachable():
    mailer = SmtpMailer(f"smtp://127.0.0.1:{free_port()}", MAIL_FROM, timeout=2)

    with pytest.raises(DeliveryError, match="SMTP 127.0.0.1"):
        mailer.send(to="ana@example.com", subject="Hola", text="Hola", html=None, message_key="outbox-1")


def test_mailer_sends_a_text_only_message_when_there_is_no_html(smtp):
    mailer = SmtpMailer(f"smtp://127.0.0.1:{smtp.port}", MAIL_FROM, timeout=5)

    mailer.send(to="ana@example.com", subject="Hola", text="Solo texto", html=None, message_key="outbox-7")

    [message] = smtp.messages()
    assert message.get_content_type() == "text/plain"
    assert message.get_content().strip() == "Solo texto"


# Failures that will not go away


def test_a_refused_recipient_is_given_up_at_once(make_app):
    controller = Controller(RefusingHandler(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        with smtp_app(make_app, controller.port).app_context():
            service.queue_email("nobody@example.com", "test_message", {})
            db.session.commit()

            row = the_row()
            assert (row.status, row.attempts) == (OutboxStatus.FAILED, 1)
            assert "550" in row.last_error
            assert audit_events("outbox.gave_up")[0].after["permanent"] is True
    finally:
        controller.stop()


def test_a_recipient_with_a_line_break_is_given_up_not_retried(make_app, smtp):
    with smtp_app(make_app, smtp.port).app_context():
        service.queue_email("ana@example.com\r\nBcc: victim@example.com", "test_message", {})
        db.session.commit()

        row = the_row()
        assert row.status == OutboxStatus.FAILED
    assert smtp.envelopes == []


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("192.0.2.10", False), ("mail.example", False)],
)
def test_only_a_relay_on_this_machine_may_get_credentials_without_tls(host, local):
    from backoffice.notifications.adapters import _is_loopback

    assert _is_loopback(host) is local

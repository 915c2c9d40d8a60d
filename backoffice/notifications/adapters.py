"""Delivery adapters: SMTP and an SMS webhook for real, the dev outbox by default."""

from __future__ import annotations

import smtplib
import ssl
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from ipaddress import ip_address
from typing import Protocol
from urllib.parse import unquote, urlsplit

import requests


class DeliveryError(Exception):
    """The message could not be handed over. Temporary failures are tried again later;
    `permanent` ones (a refused recipient, a malformed message) never will succeed."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


class Mailer(Protocol):
    name: str

    def send(self, *, to: str, subject: str, text: str, html: str | None, message_key: str) -> None: ...


class SmsSender(Protocol):
    name: str

    def send(self, *, to: str, text: str, message_key: str) -> None: ...


class DevOutbox:
    """Development default: nothing leaves the machine; the message stays readable at
    /admin/dev-mailbox."""

    name = "dev_outbox"

    def send(self, **message: object) -> None:
        return None


class SmtpMailer:
    """`smtp://user:pass@host:port` (STARTTLS when the server offers it) or `smtps://` (TLS).
    Credentials are never sent in clear to a server off this machine."""

    name = "smtp"

    def __init__(self, url: str, mail_from: str, timeout: float = 15):
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://user:pass@host:port or smtps://...")
        self.use_ssl = parts.scheme == "smtps"
        self.host = parts.hostname
        self.port = parts.port or (465 if self.use_ssl else 587)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.mail_from = mail_from
        self.domain = parseaddr(mail_from)[1].rpartition("@")[2] or "ventanilla.invalid"
        self.timeout = timeout

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self.use_ssl:
            return smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        client.ehlo()
        if client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
        elif self.username and not _is_loopback(self.host):
            client.close()
            raise DeliveryError(
                f"SMTP {self.host}:{self.port} offers no STARTTLS; credentials not sent in clear"
            )
        return client

    def send(self, *, to: str, subject: str, text: str, html: str | None, message_key: str) -> None:
        try:
            message = EmailMessage()
            message["From"] = self.mail_from
            message["To"] = Address(addr_spec=to)
            message["Subject"] = subject
            message["Date"] = formatdate(localtime=False)
            # The same Message-ID on every attempt lets receiving systems drop a duplicate delivery.
            message["Message-ID"] = f"<{message_key}@{self.domain}>"
            message.set_content(text)
            if html:
                message.add_alternative(html, subtype="html")
        except ValueError as exc:
            raise DeliveryError(f"message cannot be built: {exc}", permanent=True) from exc
        try:
            with self._connect() as client:
                if self.username:
                    client.login(self.username, self.password or "")
                client.send_message(message)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"SMTP {self.host}:{self.port}: {exc}", permanent=_refused_for_good(exc)
            ) from exc


class WebhookSmsSender:
    """POSTs `{"to": "+34...", "text": "..."}` as JSON to the gateway, with a timeout."""

    name = "sms_webhook"

    def __init__(self, url: str, timeout: tuple[float, float] = (3, 10)):
        self.url = url
        self.timeout = timeout
        self.http = requests.Session()

    def send(self, *, to: str, text: str, message_key: str) -> None:
        try:
            response = self.http.post(
                self.url,
                json={"to": to, "text": text},
                headers={"Idempotency-Key": message_key},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise DeliveryError(f"SMS gateway unreachable: {exc}") from exc
        if response.status_code >= 300:
            refused = 400 <= response.status_code < 500 and response.status_code not in (408, 429)
            raise DeliveryError(
                f"SMS gateway answered {response.status_code}: {response.text[:200]}", permanent=refused
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _refused_for_good(error: Exception) -> bool:
    """A refused recipient or a message rejected with a 5xx will be refused again; anything else
    (connection, authentication, 4xx) may work later."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return True
    return isinstance(error, smtplib.SMTPDataError) and error.smtp_code >= 500


def build_mailer(config: dict[str, object]) -> Mailer:
    if config.get("SMTP_URL"):
        return SmtpMailer(str(config["SMTP_URL"]), str(config["MAIL_FROM"]))
    return DevOutbox()


def build_sms_sender(config: dict[str, object]) -> SmsSender:
    if config.get("SMS_WEBHOOK_URL"):
        return WebhookSmsSender(str(config["SMS_WEBHOOK_URL"]))
    return DevOutbox()

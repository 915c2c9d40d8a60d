"""Logs: one JSON object per line, a request id on every line, personal data masked.

Every line written while a request is handled carries that request's id (taken from a sane
incoming `X-Request-ID`, else generated, and echoed in the response), so one request can be
followed across the web process and the rq jobs it enqueued. Emails, phone numbers and
Spanish tax IDs are masked before a line is formatted: logs are shipped to places with
wider access than the database.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, has_app_context, request
from flask.logging import default_handler
from rq.job import get_current_job

from backoffice.identity import IdentityError, mask_phone, normalise_phone

REQUEST_ID_HEADER = "X-Request-ID"
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
ACCESS_LOGGER = "backoffice.access"
_access_log = logging.getLogger(ACCESS_LOGGER)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

EMAIL = re.compile(r"(?<![\w.%+-])([\w.%+-]+)@((?:[A-Za-z0-9-]+\.)+[A-Za-z0-9-]+)")
# DNI (8 digits + letter), NIF K/L/M and NIE X/Y/Z (letter + 7 digits + letter), CIF (letter +
# 7 digits + check digit or letter); a dash before the check character is common in typed text.
TAX_ID = re.compile(
    r"\b(?:\d{8}-?[A-Z]|[KLMXYZ]-?\d{7}-?[A-Z]|[ABCDEFGHJNPQRSUVW]-?\d{7}-?[0-9A-J])\b", re.IGNORECASE
)
# International (+34..., 0034...) and Spanish national numbers (9 digits from 6-9), with the
# spaces or dashes people type between groups.
PHONE = re.compile(r"(?<![\w+*])(?:(?:\+|00)[1-9](?:[ -]?\d){6,14}|[6-9](?:[ -]?\d){8})(?![\w*])")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "request_id",
}


def _mask_email(match: re.Match[str]) -> str:
    return f"{match.group(1)[0]}***@{match.group(2)}"


def _mask_tax_id(match: re.Match[str]) -> str:
    compact = match.group(0).replace("-", "")
    return "*" * (len(compact) - 3) + compact[-3:]


def _mask_phone(match: re.Match[str]) -> str:
    text = match.group(0)
    try:
        return mask_phone(normalise_phone(text))
    except IdentityError:
        digits = sum(character.isdigit() for character in text)
        masked, seen = [], 0
        for character in text:
            if character.isdigit():
                seen += 1
                character = character if seen > digits - 2 else "*"
            masked.append(character)
        return "".join(masked)


def mask_personal_data(text: str) -> str:
    """Emails keep their first letter and domain, tax IDs their last 3 characters, phones their
    last 2 digits: enough to tell records apart when investigating, not enough to identify."""
    text = EMAIL.sub(_mask_email, text)
    text = TAX_ID.sub(_mask_tax_id, text)
    return PHONE.sub(_mask_phone, text)


def current_request_id() -> str | None:
    """The id of the request being handled, else of the request that enqueued the running rq
    job, else that job's own id; None outside both."""
    if has_app_context() and g.get("request_id"):
        return g.request_id
    job = get_current_job()
    if job is not None:
        return job.meta.get("request_id") or job.id
    return None


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


class MaskingFilter(logging.Filter):
    """Masks the rendered message (so `%s` arguments too) and string `extra=` values in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a broken format string: keep both parts, masked
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = mask_personal_data(message), None
        for name, value in list(record.__dict__.items()):
            if name not in _STANDARD_ATTRIBUTES and isinstance(value, str):
                setattr(record, name, mask_personal_data(value))
        if record.exc_text:  # a traceback another handler already formatted and cached
            record.exc_text = mask_personal_data(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD_ATTRIBUTES:
                line.setdefault(name, value)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)

    def formatException(self, ei: Any) -> str:
        return mask_personal_data(super().formatException(ei))


class TextFormatter(logging.Formatter):
    """For developers (`LOG_FORMAT=text`): readable lines, in UTC and masked all the same."""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "request_id", None) is None:
            record.request_id = "-"
        return super().format(record)

    def formatException(self, ei: Any) -> str:
        return mask_personal_data(super().formatException(ei))


class AppLogHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is now (gunicorn and pytest both swap it)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)
        self.addFilter(RequestIdFilter())
        self.addFilter(MaskingFilter())

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr


def configure_logging(app: Flask) -> None:
    """Install the one root handler (replacing its formatter when called again, as tests build
    many apps) and the request hooks that give every request its id and access-log line."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, AppLogHandler)), None)
    if handler is None:
        handler = AppLogHandler()
        root.addHandler(handler)
    handler.setFormatter(TextFormatter() if app.config["LOG_FORMAT"] == "text" else JsonFormatter())
    root.setLevel(logging.INFO)
    # Flask's own handler would print every app.logger line a second time, unformatted.
    logging.getLogger(app.name).removeHandler(default_handler)
    app.before_request(_start_request)
    app.after_request(_finish_request)


def _start_request() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _finish_request(response: Response) -> Response:
    """Registered first, so it runs after every other after-request hook and logs the final status."""
    request_id = g.get("request_id")
    if request_id is None:  # the request failed before _start_request ran
        request_id = g.request_id = uuid.uuid4().hex
    response.headers[REQUEST_ID_HEADER] = request_id
    started = g.get("request_started")
    duration_ms = round((time.perf_counter() - started) * 1000, 1) if started is not None else None
    method, path, status = request.method, request.path, response.status_code
    _access_log.info(
        "%s %s %s",
        method,
        path,
        status,
        extra={"method": method, "path": path, "status": status, "duration_ms": duration_ms},
    )
    return response

"""Helpers the web layer shares: who is acting, where it is safe to send a browser back to,
times and days as the reader reads them, and the server's half of "confirm before anything
irreversible"."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_datetime, get_day_names
from flask import abort, current_app, request
from flask_babel import get_locale
from flask_login import current_user
from flask_wtf import FlaskForm

from backoffice.audit import Actor
from backoffice.extensions import db
from backoffice.i18n import DEFAULT_LANGUAGE
from backoffice.storage import StorageError, content_disposition


def client_ip() -> str | None:
    return request.remote_addr


def staff_actor() -> Actor:
    return Actor.staff(current_user, client_ip())


def safe_next(target: str | None, default: str) -> str:
    """Only same-site relative paths: `?next=` is not an open redirect."""
    if not target or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return default
    return target


def reader_locale() -> Locale:
    """The language the page is written in (the staff member's, in the back office)."""
    return get_locale() or Locale.parse(DEFAULT_LANGUAGE)


def local(moment: datetime | None) -> str:
    """A UTC instant as staff read it: in the business time zone, day and month in their language
    ("Mon 03 Mar 2025 10:00", "lun 03 mar 2025 10:00")."""
    if moment is None:
        return ""
    zone = ZoneInfo(current_app.config["BUSINESS_TZ"])
    return format_datetime(moment, "EEE dd MMM yyyy HH:mm", tzinfo=zone, locale=reader_locale())


def short_day(day: date) -> str:
    """A business day as a column heading: "Mon 03", "lun 03"."""
    return format_date(day, "EEE dd", locale=reader_locale())


def weekday_name(weekday: int) -> str:
    """Monday is 0, as in `date.weekday()`: "Mon", "lun"."""
    return get_day_names("abbreviated", locale=reader_locale())[weekday]


def confirmed() -> bool:
    """An irreversible action goes ahead only with `confirmed=1` in its form: confirm.js adds it
    once the user agrees, and the confirmation page below sends it."""
    return request.form.get("confirmed") == "1"


def confirmation_page(view: Any, message: str, *, cancel_url: str) -> str:
    """Asked instead of acting when `confirmed` is missing (no JavaScript, or a hand-made
    request): the question, and one button that re-sends what was submitted, confirmed."""
    fields = [
        (name, value)
        for name, value in request.form.items(multi=True)
        if name not in ("csrf_token", "confirmed")
    ]
    return view.render(
        "admin/confirm.html",
        message=message,
        action=request.path,
        fields=fields,
        cancel_url=cancel_url,
        form=FlaskForm(),
    )


def evidence_download(build: Callable[[], Any]) -> Any:
    """Send an evidence bundle as a ZIP attachment. `build` audits the download in the request's
    transaction: committed with the download, rolled back (503) when storage cannot be read."""
    try:
        bundle = build()
    except StorageError:
        db.session.rollback()
        abort(503)
    db.session.commit()
    response = current_app.response_class(bundle.data, mimetype="application/zip")
    response.headers["Content-Disposition"] = content_disposition(bundle.filename, inline=False)
    response.headers["Cache-Control"] = "private, no-store"
    return response

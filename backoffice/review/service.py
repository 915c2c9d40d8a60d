"""Representative applications: submission, reading with the access key, and resubmission of
requested documents. The 48-hour promise starts at every complete (re)submission."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any

from babel.dates import get_day_names
from flask import current_app
from flask_babel import force_locale, format_datetime

from backoffice import audit
from backoffice.audit import Actor
from backoffice.calls.calendar import BusinessCalendar
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.identity import IdentityError, normalise_email, normalise_phone, normalise_tax_id
from backoffice.notifications.service import pick_language, queue_email
from backoffice.review.documents import InspectedFile
from backoffice.review.models import (
    ApplicationDocument,
    ApplicationStatus,
    DocumentKind,
    DocumentStatus,
    RepresentativeApplication,
)
from backoffice.review.states import transition
from backoffice.storage import StorageError

REQUIRED_DOCUMENTS = tuple(DocumentKind)
NAME_LIMITS = {"company_name": 255, "first_name": 128, "last_name": 128}
DOCUMENTS_PREFIX = "applications"  # where applicants' files are stored


class ApplicationError(Exception):
    """The application cannot be accepted as sent: `status` and `code` for the API, `errors`
    per field (stable codes)."""

    def __init__(self, status: int, code: str, errors: dict[str, list[str]] | None = None):
        super().__init__(code)
        self.status = status
        self.code = code
        self.errors = errors or {}


def calendar() -> BusinessCalendar:
    return BusinessCalendar.from_config(current_app.config)


def _hash_key(access_key: str) -> str:
    return hashlib.sha256(access_key.encode()).hexdigest()


def _preferred_call_times(raw: str | None, business: BusinessCalendar) -> list[dict[str, Any]]:
    """A JSON list of {"weekday": 0-4, "from": "HH:MM", "to": "HH:MM"}, inside the call window."""
    if raw in (None, ""):
        return []
    try:
        slots = json.loads(raw)
    except ValueError as exc:
        raise ValueError("invalid") from exc
    if not isinstance(slots, list) or len(slots) > 20:
        raise ValueError("invalid")
    cleaned = []
    for slot in slots:
        if not isinstance(slot, dict) or set(slot) != {"weekday", "from", "to"}:
            raise ValueError("invalid")
        weekday, start, end = slot["weekday"], slot["from"], slot["to"]
        if (
            not isinstance(weekday, int)
            or isinstance(weekday, bool)
            or not isinstance(start, str)
            or not isinstance(end, str)
        ):
            raise ValueError("invalid")
        try:
            start_time, end_time = time.fromisoformat(start), time.fromisoformat(end)
        except ValueError as exc:
            raise ValueError("invalid") from exc
        if (
            weekday not in business.open_weekdays
            or not business.opens <= start_time < end_time <= business.closes
            or len(start) != 5
            or len(end) != 5
        ):
            raise ValueError("outside_window")
        cleaned.append({"weekday": weekday, "from": start, "to": end})
    return cleaned


@dataclass(frozen=True)
class Submission:
    application: RepresentativeApplication
    access_key: str


def field_errors(fields: Mapping[str, str | None]) -> dict[str, list[str]]:
    """The form's problems alone, to report them together with the files' problems."""
    return _validated_fields(fields, calendar())[1]


def normalised_details(fields: Mapping[str, str | None]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Company and representative details as an application stores them (tax IDs in their
    canonical form), with any problems; used for corrections made on the validation call."""
    values, errors = _validated_fields({**fields, "preferred_call_times": None}, calendar())
    values.pop("preferred_call_times", None)
    for name in ("company_tax_id", "tax_id"):
        if name in values and not isinstance(values[name], str):
            values[name] = values[name].value
    return values, errors


def _validated_fields(
    fields: Mapping[str, str | None], business: BusinessCalendar
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    errors: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    for name, limit in NAME_LIMITS.items():
        value = " ".join((fields.get(name) or "").split())
        if not value:
            errors[name] = ["required"]
        elif len(value) > limit:
            errors[name] = ["too_long"]
        values[name] = value
    for name, rule in (
        ("company_tax_id", lambda v: normalise_tax_id(v)),
        ("tax_id", lambda v: normalise_tax_id(v)),
        ("email", normalise_email),
        ("phone", normalise_phone),
    ):
        try:
            values[name] = rule(fields.get(name) or "")
        except IdentityError as exc:
            errors[name] = [exc.code]
    if "company_tax_id" in values and values["company_tax_id"].is_person:
        errors["company_tax_id"] = ["invalid"]
    if "tax_id" in values and not values["tax_id"].is_person:
        errors["tax_id"] = ["invalid"]
    try:
        values["preferred_call_times"] = _preferred_call_times(fields.get("preferred_call_times"), business)
    except ValueError as exc:
        errors["preferred_call_times"] = [str(exc)]
    return values, errors


def _store_documents(
    application: RepresentativeApplication, files: Mapping[str, InspectedFile], now: datetime
) -> list[ApplicationDocument]:
    """Stream each file to storage; if one fails, remove the ones already stored (no orphans)."""
    storage = current_app.extensions["storage"]
    stored: list[ApplicationDocument] = []
    try:
        for kind, upload in files.items():
            key = storage.put(upload.data, prefix=DOCUMENTS_PREFIX, content_type=upload.content_type)
            stored.append(
                ApplicationDocument(
                    kind=DocumentKind(kind),
                    storage_key=key,
                    content_type=upload.content_type,
                    size=upload.size,
                    sha256=upload.sha256,
                    display_name=upload.display_name,
                    uploaded_at=now,
                )
            )
    except StorageError:
        for document in stored:
            try:
                storage.delete(document.storage_key)
            except StorageError:
                current_app.logger.warning("orphan document %s left for the clean-up", document.storage_key)
        raise
    return stored


def window_text(business: BusinessCalendar, language: str) -> str:
    """The call window in words, from the configuration: "de lunes a viernes de 8:00 a 22:00"."""
    days = get_day_names("wide", locale=language)
    weekdays = list(business.open_weekdays)
    contiguous = weekdays == list(range(weekdays[0], weekdays[-1] + 1))
    opens, closes = business.opens.strftime("%H:%M"), business.closes.strftime("%H:%M")
    if language == "es":
        span = (
            f"de {days[weekdays[0]]} a {days[weekdays[-1]]}"
            if contiguous and len(weekdays) > 1
            else ("los " + ", ".join(days[d] for d in weekdays))
        )
        return f"{span} de {opens.lstrip('0')} a {closes}"
    span = (
        f"{days[weekdays[0]]} to {days[weekdays[-1]]}"
        if contiguous and len(weekdays) > 1
        else (", ".join(days[d] for d in weekdays))
    )
    return f"{span} from {opens} to {closes}"


def _acknowledge(application: RepresentativeApplication, *, template: str) -> None:
    business = calendar()
    with force_locale(application.language):
        deadline = format_datetime(
            application.call_deadline.astimezone(business.tz), "EEEE d MMMM y, HH:mm", rebase=False
        )
    queue_email(
        application.email,
        template,
        {
            "name": application.first_name,
            "company": application.company_name,
            "deadline": deadline,
            "window": window_text(business, application.language),
            "application_id": application.id,
        },
        language=application.language,
    )


def submit(
    fields: Mapping[str, str | None],
    files: Mapping[str, InspectedFile],
    *,
    language: str | None,
    ip: str | None,
    now: datetime | None = None,
) -> Submission:
    """Validate everything first, then store the files, then write the application: a refused
    request leaves nothing behind."""
    now = now or utcnow()
    business = calendar()
    values, errors = _validated_fields(fields, business)
    for kind in REQUIRED_DOCUMENTS:
        if kind.value not in files:
            errors[kind.value] = ["required"]
    if errors:
        raise ApplicationError(422, "validation_error", errors)

    access_key = secrets.token_urlsafe(24)
    application = RepresentativeApplication(
        id=secrets.token_hex(16),
        access_key_hash=_hash_key(access_key),
        company_tax_id=values["company_tax_id"].value,
        company_name=values["company_name"],
        first_name=values["first_name"],
        last_name=values["last_name"],
        tax_id=values["tax_id"].value,
        email=values["email"],
        phone=values["phone"],
        preferred_call_times=values["preferred_call_times"],
        language=pick_language(language),
        status=ApplicationStatus.SUBMITTED,
        created_at=now,
        submitted_at=now,
        call_deadline=business.sla_deadline(now),
        requested_documents=[],
    )
    documents = _store_documents(
        application, {kind.value: files[kind.value] for kind in REQUIRED_DOCUMENTS}, now
    )
    application.documents = documents
    db.session.add(application)
    db.session.flush()
    audit.record(
        "application.submitted",
        actor=Actor(kind="customer", label=f"representative {application.tax_id}", ip=ip),
        subject_type="representative_application",
        subject_id=application.id,
        after={
            "company_tax_id": application.company_tax_id,
            "call_deadline": application.call_deadline.isoformat(),
            "documents": {document.kind.value: document.sha256 for document in documents},
        },
    )
    _acknowledge(application, template="application_received")
    return Submission(application, access_key)


def find_with_key(application_id: str, access_key: str | None) -> RepresentativeApplication:
    """Unknown id and wrong key answer the same, in the same time."""
    application = (
        db.session.get(RepresentativeApplication, application_id) if len(application_id) <= 32 else None
    )
    expected = application.access_key_hash if application is not None else _hash_key("no application")
    if not hmac.compare_digest(expected, _hash_key(access_key or "")) or application is None:
        raise ApplicationError(404, "not_found")
    return application


def public_view(application: RepresentativeApplication) -> dict[str, Any]:
    """What the applicant may see: status, deadline, and each current document's review."""
    current = [d for d in application.documents if d.status != DocumentStatus.SUPERSEDED]
    return {
        "id": application.id,
        "status": str(application.status),
        "call_deadline": application.call_deadline,
        "documents": [
            {"kind": str(d.kind), "status": str(d.status), "reason": d.reason_code} for d in current
        ],
        "requested_documents": list(application.requested_documents or []),
    }


def resubmit_documents(
    application: RepresentativeApplication,
    files: Mapping[str, InspectedFile],
    *,
    ip: str | None,
    now: datetime | None = None,
) -> RepresentativeApplication:
    """The applicant uploads the requested documents: back to the queue with a new promise, and
    only the new documents to review."""
    now = now or utcnow()
    requested = list(application.requested_documents or [])
    if application.status != ApplicationStatus.NEEDS_DOCUMENTS or not requested:
        raise ApplicationError(409, "no_documents_requested")
    errors = {kind: ["required"] for kind in requested if kind not in files}
    errors.update({kind: ["not_requested"] for kind in files if kind not in requested})
    if errors:
        raise ApplicationError(422, "validation_error", errors)
    documents = _store_documents(application, {kind: files[kind] for kind in requested}, now)
    for old in application.documents:
        if old.kind.value in requested and old.status != DocumentStatus.SUPERSEDED:
            old.status = DocumentStatus.SUPERSEDED
    application.documents.extend(documents)
    application.requested_documents = []
    application.submitted_at = now
    application.call_deadline = calendar().sla_deadline(now)
    application.claimed_by_id = None
    application.claimed_at = None
    transition(
        application,
        ApplicationStatus.SUBMITTED,
        actor=Actor(kind="customer", label=f"representative {application.tax_id}", ip=ip),
        now=now,
        resubmitted=requested,
        call_deadline=application.call_deadline.isoformat(),
    )
    db.session.flush()
    _acknowledge(application, template="application_resubmitted")
    return application

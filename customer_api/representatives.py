"""Representative applications (API.md "Representative applications"): multipart submission,
reading with the access key, and uploading requested documents."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from flask import abort, request
from flask_smorest import Blueprint

from backoffice.extensions import limiter
from backoffice.i18n import request_language
from backoffice.review import service
from backoffice.review.documents import DocumentProblem, InspectedFile, inspect_upload
from backoffice.review.models import DocumentKind
from backoffice.storage import StorageError
from customer_api.core import (
    IDEMPOTENCY_KEY,
    client_ip,
    configured_limit,
    documented_errors,
    run_idempotently,
)
from customer_api.problems import problem
from customer_api.schemas import (
    ApplicationCreatedSchema,
    ApplicationFilesSchema,
    ApplicationFormSchema,
    ApplicationSubmissionSchema,
    ApplicationViewSchema,
)

blp = Blueprint(
    "representatives", __name__, url_prefix="/api/v1", description="Company representative applications"
)
ACCESS_KEY = {"in": "header", "name": "X-Access-Key", "required": True, "schema": {"type": "string"}}
FILE_KINDS = tuple(kind.value for kind in DocumentKind)


def _multipart(schema: type) -> dict[str, Any]:
    """Documented by hand: the service validates the fields and the files' content itself."""
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


@blp.before_request
def require_multipart() -> None:
    if request.method == "POST" and request.mimetype != "multipart/form-data":
        abort(415)


def _inspected_files(stack: ExitStack) -> tuple[dict[str, InspectedFile], dict[str, list[str]]]:
    """Each uploaded file, checked by content; problems reported per file field."""
    files: dict[str, InspectedFile] = {}
    errors: dict[str, list[str]] = {}
    for kind in FILE_KINDS:
        upload = request.files.get(kind)
        if upload is None:
            continue
        try:
            inspected = inspect_upload(upload.stream, upload.filename)
        except DocumentProblem as exc:
            errors[kind] = [exc.code]
            continue
        stack.callback(inspected.data.close)
        files[kind] = inspected
    return files, errors


def _fingerprint(fields: dict[str, Any], files: dict[str, InspectedFile]) -> dict[str, Any]:
    return {"fields": fields, "files": {kind: upload.sha256 for kind, upload in files.items()}}


def _refused(error: service.ApplicationError):
    return problem(error.status, error.code, errors=error.errors or None)


@blp.route("/representative-applications", methods=["POST"])
@limiter.limit(configured_limit("REPRESENTATIVE_APPLICATION_LIMIT_IP"), scope="representative-ip")
@blp.doc(parameters=[IDEMPOTENCY_KEY], requestBody=_multipart(ApplicationSubmissionSchema))
@blp.response(201, ApplicationCreatedSchema)
@documented_errors(blp, 409, 413, 422, 429, 503)
def submit():
    """Apply with your details and the three documents; we phone you within the 48-hour promise.

    `access_key` is shown only here: keep it to read or update the application."""
    with ExitStack() as stack:
        files, file_errors = _inspected_files(stack)
        fields = {name: request.form.get(name) for name in ApplicationFormSchema().fields}

        def create():
            if file_errors:
                missing = {
                    kind: ["required"] for kind in FILE_KINDS if kind not in files and kind not in file_errors
                }
                errors = {**service.field_errors(fields), **missing, **file_errors}
                return problem(422, "validation_error", errors=errors)
            try:
                submission = service.submit(fields, files, language=request_language(), ip=client_ip())
            except service.ApplicationError as exc:
                exc.errors.update(file_errors)
                return _refused(exc)
            except StorageError:
                return problem(503)
            application = submission.application
            return {
                "id": application.id,
                "status": str(application.status),
                "access_key": submission.access_key,
                "call_deadline": application.call_deadline.isoformat(),
            }, 201

        return run_idempotently(_fingerprint(fields, files), create, sealed=True)


@blp.route("/representative-applications/<application_id>", methods=["GET"])
@blp.doc(parameters=[ACCESS_KEY])
@blp.response(200, ApplicationViewSchema)
@documented_errors(blp, 404, json_body=False)
def read(application_id: str):
    """Status, promised call deadline, and the review of each document."""
    try:
        application = service.find_with_key(application_id, request.headers.get("X-Access-Key"))
    except service.ApplicationError as exc:
        return _refused(exc)
    return service.public_view(application)


@blp.route("/representative-applications/<application_id>/documents", methods=["POST"])
@blp.doc(parameters=[ACCESS_KEY], requestBody=_multipart(ApplicationFilesSchema))
@blp.response(200, ApplicationViewSchema)
@documented_errors(blp, 404, 409, 413, 422, 503)
def upload_documents(application_id: str):
    """Upload the documents the legal team asked for; the application goes back to the queue
    with a new call deadline."""
    try:
        application = service.find_with_key(application_id, request.headers.get("X-Access-Key"))
    except service.ApplicationError as exc:
        return _refused(exc)
    with ExitStack() as stack:
        files, file_errors = _inspected_files(stack)
        if file_errors:
            return problem(422, "validation_error", errors=file_errors)
        try:
            service.resubmit_documents(application, files, ip=client_ip())
        except service.ApplicationError as exc:
            return _refused(exc)
        except StorageError:
            return problem(503)
        return service.public_view(application)

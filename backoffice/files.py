"""Short-lived signed download URLs for the local document store (S3 presigns its own).

A download is never a page: an allow-listed type or opaque bytes, nosniff, and a sandbox policy
of its own, so a polyglot upload cannot run script even when shown inline."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, abort, current_app, send_file
from itsdangerous import BadSignature, URLSafeSerializer

from backoffice.security import DOCUMENT_POLICY
from backoffice.storage import InvalidKey, StorageError, document_headers

files = Blueprint("files", __name__)


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="local-document-url")


def sign_url(claims: dict[str, Any], expires_in: int) -> str:
    """A relative URL, built without a request so jobs and the CLI can hand out links too."""
    token = _serializer().dumps({**claims, "exp": int(time.time()) + expires_in})
    adapter = current_app.url_map.bind("", script_name=current_app.config["APPLICATION_ROOT"])
    return adapter.build("files.download", {"token": token})


@files.get("/files/<token>")
def download(token: str):
    try:
        claims = _serializer().loads(token)
    except BadSignature:
        abort(404)
    if claims.get("exp", 0) < time.time():
        abort(410)
    storage = current_app.extensions["storage"]
    try:
        stream = storage.open(claims["key"])
    except (InvalidKey, StorageError):
        abort(404)
    content_type, disposition = document_headers(
        claims.get("filename") or "document", claims.get("content_type"), bool(claims.get("inline"))
    )
    response = send_file(stream, mimetype=content_type, max_age=0)
    response.headers["Content-Disposition"] = disposition
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = DOCUMENT_POLICY
    return response

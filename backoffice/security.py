"""Security headers on every response: pages get a Content-Security-Policy that runs only our own
script files, files get a sandbox, and nothing may be framed, sniffed or cached by accident.

Pages: `script-src 'self'` with no 'unsafe-inline', so injected markup cannot run script; the
templates carry no inline scripts or on* handlers (behaviour lives in backoffice/static/js/).
Style attributes alone are allowed (`style-src-attr 'unsafe-inline'`): Flask-Admin's form.js
builds its date-range filters with a `style="..."` attribute, and a few of our templates use them;
a style attribute cannot run script, and `<style>` elements and foreign style sheets stay refused.

Everything that is not a page (files, the API's JSON, scripts and styles): `default-src 'none';
sandbox` and no framing, so even an upload that is an HTML or SVG polyglot cannot run script if a
browser ever renders it, and a JSON answer opened in a tab loads nothing. Files (any response with
a Content-Disposition) are downloaded unless their type is allow-listed for showing inline.
"""

from __future__ import annotations

from flask import Flask, Response, current_app

from backoffice.storage import SERVABLE_TYPES

PAGE_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "style-src-attr 'unsafe-inline'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
DOCUMENT_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"
# Types a browser renders as a document that can run script.
PAGE_TYPES = {"text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml"}
HSTS = "max-age=31536000; includeSubDomains"


def init_security(app: Flask) -> None:
    app.after_request(security_headers)


def security_headers(response: Response) -> Response:
    headers = response.headers
    if "Content-Disposition" in headers:
        _confine_file(response)
        headers["Content-Security-Policy"] = DOCUMENT_POLICY
    else:
        policy = PAGE_POLICY if response.mimetype in PAGE_TYPES else DOCUMENT_POLICY
        headers.setdefault("Content-Security-Policy", policy)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "same-origin"
    if current_app.config["APP_ENV"] == "production":
        headers["Strict-Transport-Security"] = HSTS
    # Static files choose their own caching; everything else may hold personal data (the back
    # office, the API), and a shared or back-button cache must not keep it.
    headers.setdefault("Cache-Control", "no-store")
    return response


def _confine_file(response: Response) -> None:
    """Only allow-listed document types may open in the browser; anything else is downloaded,
    and never labelled as a type a browser would render as a page."""
    if response.mimetype in SERVABLE_TYPES:
        return
    disposition = response.headers["Content-Disposition"]
    if disposition.lower().startswith("inline"):
        response.headers["Content-Disposition"] = "attachment" + disposition[len("inline") :]
    if response.mimetype in PAGE_TYPES:
        response.mimetype = "application/octet-stream"

"""Helpers the web layer shares: who is acting, where it is safe to send a browser back to, and
the server's half of "confirm before anything irreversible"."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import request
from flask_login import current_user
from flask_wtf import FlaskForm

from backoffice.audit import Actor


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

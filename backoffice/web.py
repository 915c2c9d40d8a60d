"""Helpers the web layer shares: who is acting, and where it is safe to send a browser back to."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import request
from flask_login import current_user

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

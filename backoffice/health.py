"""`/healthz`: the process answers. `/readyz`: it can reach what it needs to do real work."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from backoffice.extensions import db, limiter
from backoffice.storage import StorageError

health = Blueprint("health", __name__)


@health.get("/healthz")
@limiter.exempt
def healthz():
    return jsonify(status="ok")


def _check_database() -> str | None:
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        db.session.rollback()
        return type(exc).__name__
    return None


def _check_redis() -> str | None:
    url = current_app.config.get("REDIS_URL")
    if not url:
        return None
    try:
        with Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            client.ping()
    except (RedisError, OSError) as exc:
        return type(exc).__name__
    return None


def _check_signer() -> str | None:
    from backoffice.signing.providers import SigningError

    try:
        current_app.extensions["signer"].check()
    except SigningError as exc:
        return str(exc)[:200]
    return None


def _check_storage() -> str | None:
    try:
        current_app.extensions["storage"].check()
    except StorageError as exc:
        return str(exc)[:200]
    return None


@health.get("/readyz")
@limiter.exempt
def readyz():
    checks = {"database": _check_database(), "storage": _check_storage(), "signing": _check_signer()}
    if current_app.config.get("REDIS_URL"):
        checks["redis"] = _check_redis()
    ready = all(problem is None for problem in checks.values())
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": {name: "ok" if problem is None else f"down: {problem}" for name, problem in checks.items()},
    }
    return jsonify(body), 200 if ready else 503

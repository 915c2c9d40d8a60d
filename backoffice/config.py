"""Configuration from environment variables, each with an embedded default.

A fresh checkout runs with nothing set; production names every missing setting at once
instead of failing on the first one it happens to touch.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ENVIRONMENTS = ("development", "testing", "production")
LOG_FORMATS = ("json", "text")

DEFAULTS: dict[str, Any] = {
    "APP_ENV": "development",
    "LOG_FORMAT": "json",
    "DATABASE_URL": None,
    # Server-side prepared statements (PostgreSQL): off only behind a pooler that cannot keep
    # them, such as PgBouncer before 1.21 in transaction mode.
    "DATABASE_PREPARED_STATEMENTS": True,
    "REDIS_URL": None,
    "SECRET_KEY": None,
    "STORAGE_URL": None,
    "S3_ENDPOINT_URL": None,
    "SMTP_URL": None,
    "MAIL_FROM": "Ventanilla <no-reply@ventanilla.invalid>",
    "SMS_WEBHOOK_URL": None,
    "SIGNING_CERT_PATH": None,
    "SIGNING_CERT_PASSWORD": None,
    "SIGNING_TSA_URL": None,
    "CUSTOMER_PORTAL_URL": "http://localhost:5000/portal",
    "BUSINESS_TZ": "Europe/Madrid",
    "CALL_WINDOW": "Mon-Fri 08:00-22:00",
    "HOLIDAYS_COUNTRY": "ES",
    "HOLIDAYS_SUBDIV": None,
    "SLA_HOURS": 48,
    "TRUSTED_PROXY_COUNT": 0,
    "OUTBOX_MAX_ATTEMPTS": 8,
    "OUTBOX_STALE_SECONDS": 300,
    "AUDIT_CHAINS": 32,  # at most this many hash chains written side by side (backoffice/audit)
    "STAFF_LOGIN_LIMIT_ACCOUNT": "5 per 15 minutes",
    "STAFF_LOGIN_LIMIT_IP": "30 per 15 minutes",
    # Two-step sign-in and staff sessions (backoffice/staff/mfa.py, backoffice/staff/service.py).
    "STAFF_MFA_LIMIT_ACCOUNT": "10 per hour",
    "STAFF_MFA_LIMIT_IP": "30 per 15 minutes",
    "STAFF_MFA_MAX_FAILURES": 5,
    "STAFF_IDLE_MINUTES": 30,
    "STAFF_SESSION_HOURS": 12,
    "STAFF_REAUTH_MINUTES": 5,
    "STORAGE_URL_TTL_SECONDS": 300,
    "VERIFY_TOKEN_HOURS": 48,
    "RESET_TOKEN_HOURS": 2,
    "CUSTOMER_SESSION_HOURS": 8,
    "ECUSTOMER_REGISTRATION_HOURS": 24,
    "OTP_LIFETIME_MINUTES": 10,
    "OTP_MAX_WRONG_ATTEMPTS": 5,
    "OTP_RESEND_INTERVAL_SECONDS": 60,
    "OTP_MAX_RESENDS_PER_HOUR": 3,
    "PHONE_VERIFICATION_NUMBERS_PER_HOUR": 3,
    "PHONE_VERIFICATION_STARTS_PER_NUMBER_PER_HOUR": 5,
    "CUSTOMER_CONTACT_PHONE": "917 83 83 83",
    "ECUSTOMER_REGISTRATION_LIMIT_IP": "20 per hour",
    "ECUSTOMER_REGISTRATION_LIMIT_TAX_ID": "5 per hour",
    "REPRESENTATIVE_APPLICATION_LIMIT_IP": "10 per hour",
    "REVIEW_CLAIM_IDLE_MINUTES": 30,
    "REVIEW_AT_RISK_HOURS": 12,
    "REVIEW_REJECTION_NEEDS_CONFIRMATION": True,
    "DOCUMENT_RETENTION_DAYS": 90,
    "ORPHAN_DOCUMENT_MINUTES": 60,
    "CALL_SLOT_MINUTES": 20,
    "CALL_PLAN_HORIZON_DAYS": 7,
    "CALL_AT_RISK_HOURS": 4,
    "CALL_MAX_ATTEMPTS": 3,
    "CALL_RETRY_WINDOW_HOURS": 2,
    "CALL_CALLBACK_GRACE_MINUTES": 15,
    "CALL_ABANDONED_MINUTES": 60,
    "COMPLETION_LINK_DAYS": 7,
    "COMPLETION_CONFIRM_LIMIT": "10 per hour",
    "CUSTOMER_SIGN_IN_LIMIT_USERNAME": "10 per 15 minutes",
    "CUSTOMER_SIGN_IN_LIMIT_IP": "100 per 15 minutes",
    "REGISTRATION_LIMIT_IP": "20 per hour",
    "REGISTRATION_LIMIT_EMAIL": "5 per hour",
    "PASSWORD_RESET_LIMIT_IP": "20 per hour",
    "PASSWORD_RESET_LIMIT_EMAIL": "5 per hour",
    "MATCH_AUTO_LINK_SCORE": 95,  # percent; see backoffice/customers/matching.py
    "MATCH_MARGIN": 50,
    "MATCH_TRGM_LIMIT": 45,
    "MATCH_LINK_WITHOUT_EMAIL": True,
    "MATCH_LINK_WITH_PROVEN_PHONE": True,
    "ASSOCIATION_CLAIM_IDLE_MINUTES": 30,
}

INTEGER_SETTINGS = (
    "SLA_HOURS",
    "TRUSTED_PROXY_COUNT",
    "OUTBOX_MAX_ATTEMPTS",
    "OUTBOX_STALE_SECONDS",
    "AUDIT_CHAINS",
    "STAFF_MFA_MAX_FAILURES",
    "STAFF_IDLE_MINUTES",
    "STAFF_SESSION_HOURS",
    "STAFF_REAUTH_MINUTES",
    "STORAGE_URL_TTL_SECONDS",
    "VERIFY_TOKEN_HOURS",
    "RESET_TOKEN_HOURS",
    "CUSTOMER_SESSION_HOURS",
    "ECUSTOMER_REGISTRATION_HOURS",
    "OTP_LIFETIME_MINUTES",
    "OTP_MAX_WRONG_ATTEMPTS",
    "OTP_RESEND_INTERVAL_SECONDS",
    "OTP_MAX_RESENDS_PER_HOUR",
    "PHONE_VERIFICATION_NUMBERS_PER_HOUR",
    "PHONE_VERIFICATION_STARTS_PER_NUMBER_PER_HOUR",
    "REVIEW_CLAIM_IDLE_MINUTES",
    "REVIEW_AT_RISK_HOURS",
    "DOCUMENT_RETENTION_DAYS",
    "ORPHAN_DOCUMENT_MINUTES",
    "CALL_SLOT_MINUTES",
    "CALL_PLAN_HORIZON_DAYS",
    "CALL_AT_RISK_HOURS",
    "CALL_MAX_ATTEMPTS",
    "CALL_RETRY_WINDOW_HOURS",
    "CALL_CALLBACK_GRACE_MINUTES",
    "CALL_ABANDONED_MINUTES",
    "COMPLETION_LINK_DAYS",
    "MATCH_AUTO_LINK_SCORE",
    "MATCH_MARGIN",
    "MATCH_TRGM_LIMIT",
    "ASSOCIATION_CLAIM_IDLE_MINUTES",
)
BOOLEAN_SETTINGS = (
    "DATABASE_PREPARED_STATEMENTS",
    "REVIEW_REJECTION_NEEDS_CONFIRMATION",
    "MATCH_LINK_WITHOUT_EMAIL",
    "MATCH_LINK_WITH_PROVEN_PHONE",
)
MAX_AUDIT_CHAINS = 1000
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


class ConfigError(RuntimeError):
    """The configuration cannot run this environment; the message lists every problem."""


def normalise_database_url(url: str) -> str:
    """psycopg 3 is the PostgreSQL driver; plain `postgres://` URLs from hosting panels work too."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_config(
    environ: Mapping[str, str], instance_path: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Build the Flask config: defaults, then the environment, then explicit overrides."""
    config: dict[str, Any] = dict(DEFAULTS)
    for name in DEFAULTS:
        value = environ.get(name)
        if value not in (None, ""):
            config[name] = value
    config.update(overrides or {})

    problems = []
    if config["APP_ENV"] not in ENVIRONMENTS:
        problems.append(f"APP_ENV (must be one of {', '.join(ENVIRONMENTS)})")
    if config["LOG_FORMAT"] not in LOG_FORMATS:
        problems.append(f"LOG_FORMAT (must be one of {', '.join(LOG_FORMATS)})")
    for name in INTEGER_SETTINGS:
        try:
            config[name] = int(config[name])
        except (TypeError, ValueError):
            problems.append(f"{name} (must be a whole number)")
    if isinstance(config["AUDIT_CHAINS"], int) and not 1 <= config["AUDIT_CHAINS"] <= MAX_AUDIT_CHAINS:
        problems.append(f"AUDIT_CHAINS (must be between 1 and {MAX_AUDIT_CHAINS})")
    for name in BOOLEAN_SETTINGS:
        value = config[name]
        if isinstance(value, str):
            if value.strip().lower() not in TRUE_WORDS | FALSE_WORDS:
                problems.append(f"{name} (must be true or false)")
            config[name] = value.strip().lower() in TRUE_WORDS
    if config["APP_ENV"] == "production":
        problems += _production_problems(config)
    if problems:
        raise ConfigError(
            f"Cannot start in {config['APP_ENV']}: missing or invalid settings: " + "; ".join(problems)
        )

    instance = Path(instance_path)
    if not config["DATABASE_URL"]:
        config["DATABASE_URL"] = f"sqlite:///{instance / 'ventanilla.db'}"
    if not config["STORAGE_URL"]:
        config["STORAGE_URL"] = (instance / "documents").as_uri()
    if not config["SECRET_KEY"]:
        config["SECRET_KEY"] = _instance_secret_key(instance)

    config["SQLALCHEMY_DATABASE_URI"] = normalise_database_url(config["DATABASE_URL"])
    engine_options: dict[str, Any] = {}  # idle connections are pinged: db.ping_idle_connections
    if (
        config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql")
        and not config["DATABASE_PREPARED_STATEMENTS"]
    ):
        # psycopg otherwise prepares a statement from its fifth run on that connection: the
        # server then neither parses nor, with a generic plan, plans it again.
        engine_options["connect_args"] = {"prepare_threshold": None}
    config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", engine_options)
    config["RATELIMIT_STORAGE_URI"] = config["REDIS_URL"] or "memory://"
    # Redis down or hung: count in this process instead (each process still enforces every
    # limit) rather than refuse sign-ups or drop the limits; a hung Redis costs a request one
    # short timeout, not the client library's default of several seconds per call.
    config["RATELIMIT_STORAGE_OPTIONS"] = {"socket_timeout": 1, "socket_connect_timeout": 1}
    config["RATELIMIT_SWALLOW_ERRORS"] = True
    config["RATELIMIT_IN_MEMORY_FALLBACK_ENABLED"] = True
    # No X-RateLimit-* counts on every answer: they would tell a guesser exactly how many sign-in
    # or code attempts are left, and reading them cost a Redis round trip per limited request.
    # A refused request still says when to come back (Retry-After, API.md).
    config["RATELIMIT_HEADERS_ENABLED"] = False
    config["TESTING"] = config["APP_ENV"] == "testing"
    production = config["APP_ENV"] == "production"
    config["SESSION_COOKIE_HTTPONLY"] = True
    config["SESSION_COOKIE_SAMESITE"] = "Lax"
    config["SESSION_COOKIE_SECURE"] = production
    config["SESSION_COOKIE_NAME"] = "__Host-ventanilla" if production else "ventanilla"
    config["REMEMBER_COOKIE_DURATION"] = 0
    config["WTF_CSRF_TIME_LIMIT"] = None
    config["WTF_CSRF_SSL_STRICT"] = production
    return config


def _production_problems(config: Mapping[str, Any]) -> list[str]:
    problems = []
    if not config["SECRET_KEY"]:
        problems.append("SECRET_KEY (required)")
    database_url = config["DATABASE_URL"] or ""
    if not database_url:
        problems.append("DATABASE_URL (required)")
    elif database_url.startswith("sqlite"):
        problems.append("DATABASE_URL (must be PostgreSQL, not SQLite)")
    if not config["REDIS_URL"]:
        problems.append("REDIS_URL (required)")
    storage_url = config["STORAGE_URL"] or ""
    if not storage_url:
        problems.append("STORAGE_URL (required)")
    elif not storage_url.startswith("s3://"):
        problems.append("STORAGE_URL (must be an s3:// URL)")
    if not config["SMTP_URL"]:
        problems.append("SMTP_URL (required)")
    if not config["SMS_WEBHOOK_URL"]:
        problems.append("SMS_WEBHOOK_URL (required)")
    cert_path = config["SIGNING_CERT_PATH"]
    if not cert_path:
        problems.append("SIGNING_CERT_PATH (required)")
    elif not os.path.isfile(cert_path):
        problems.append(f"SIGNING_CERT_PATH (no file at {cert_path})")
    return problems


def _instance_secret_key(instance: Path) -> str:
    """Development and tests: a random key generated once and kept in `instance/`."""
    instance.mkdir(parents=True, exist_ok=True)
    key_file = instance / "secret_key"
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return key_file.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return key_file.read_text().strip()

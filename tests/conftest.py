"""Test set-up: a real database (SQLite by default, PostgreSQL when DATABASE_URL is set), the
schema built by the real migrations once per run, and a clean database for every test.

SQLite: each test gets a copy of the migrated template file. PostgreSQL: each test's rows are
truncated afterwards (with triggers off for that one statement, since the audit log refuses it).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from sqlalchemy import create_engine, text

from backoffice import create_app
from backoffice.config import normalise_database_url
from backoffice.extensions import db
from backoffice.jobs import RqJobQueue

POSTGRES_URL = os.environ.get("DATABASE_URL") or None
REDIS_URL = os.environ.get("REDIS_URL") or None
TEST_SECRET_KEY = "test-secret-key-not-for-production"
ADAPTER_REDIS_URL = REDIS_URL or "redis://127.0.0.1:6379/15"
TEN_YEARS_IN_MINUTES = 10 * 365 * 24 * 60


def base_overrides(database_url: str, tmp_path: Path) -> dict[str, object]:
    """Everything a test app needs, so nothing leaks in from the developer's environment."""
    return {
        "APP_ENV": "testing",
        "SECRET_KEY": TEST_SECRET_KEY,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "STORAGE_URL": (tmp_path / "documents").as_uri(),
        "S3_ENDPOINT_URL": None,
        "SMTP_URL": None,
        "SMS_WEBHOOK_URL": None,
        "SIGNING_CERT_PATH": None,
        "TRUSTED_PROXY_COUNT": 0,
        # Many tests sign in at the real time and then travel days to a fixed business moment;
        # their sessions would time out on the way. tests/test_staff_sessions.py sets real limits.
        "STAFF_IDLE_MINUTES": TEN_YEARS_IN_MINUTES,
        "STAFF_SESSION_HOURS": TEN_YEARS_IN_MINUTES // 60,
    }


def _reset_postgres(url: str) -> None:
    engine = create_engine(normalise_database_url(url))
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The schema, built once per run by the migrations themselves."""
    from flask_migrate import upgrade

    if POSTGRES_URL:
        _reset_postgres(POSTGRES_URL)
        url = POSTGRES_URL
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('template') / 'template.db'}"
    app = create_app(base_overrides(url, tmp_path_factory.mktemp("storage")))
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return url


def _truncate_postgres() -> None:
    tables = [table.name for table in db.metadata.sorted_tables]
    with db.engine.begin() as connection:
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


def _flush_redis(url: str) -> None:
    with Redis.from_url(url) as client:
        client.flushdb()


class IsolatedClient(FlaskClient):
    """Each request gets its own app context, as in a real server, even while the test holds one:
    otherwise `g` (the signed-in user) and the database session would leak between requests."""

    def open(self, *args, **kwargs):
        with self.application.app_context():
            return super().open(*args, **kwargs)


@pytest.fixture
def make_app(migrated_database: str, tmp_path: Path) -> Iterator:
    """Build an app on a clean database; extra overrides per test (at most one database per test)."""
    if POSTGRES_URL:
        database_url = migrated_database
    else:
        database_path = tmp_path / "test.db"
        shutil.copyfile(migrated_database.removeprefix("sqlite:///"), database_path)
        database_url = f"sqlite:///{database_path}"
    if REDIS_URL:
        _flush_redis(REDIS_URL)
    apps: list[Flask] = []

    def factory(**overrides: object) -> Flask:
        app = create_app({**base_overrides(database_url, tmp_path), **overrides})
        app.test_client_class = IsolatedClient
        apps.append(app)
        return app

    yield factory
    for app in apps:
        queue = app.extensions["job_queue"]
        if isinstance(queue, RqJobQueue):
            queue.connection.close()
        with app.app_context():
            db.session.remove()
            if POSTGRES_URL and app is apps[0]:
                _truncate_postgres()
            db.engine.dispose()


@pytest.fixture
def app(make_app) -> Iterator[Flask]:
    app = make_app()
    with app.app_context():
        yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def redis_url() -> str:
    """A real Redis for adapter tests: the configured one, else a spare database on this machine."""
    _flush_redis(ADAPTER_REDIS_URL)
    return ADAPTER_REDIS_URL


requires_postgres = pytest.mark.skipif(
    not POSTGRES_URL, reason="PostgreSQL-only behaviour; runs in the PostgreSQL pass of the suite"
)


CSRF_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token_from(client: FlaskClient, url: str) -> str:
    """The CSRF token a real browser would submit, read from the page's form."""
    page = client.get(url).get_data(as_text=True)
    match = CSRF_FIELD.search(page)
    assert match, f"no CSRF token on {url}"
    return match.group(1)


# S3: moto's server over HTTP, as the storage and reliability tests use it.
AWS_REGION = "eu-west-1"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_credentials(monkeypatch, tmp_path) -> None:
    """Dummy credentials, and nothing read from the developer's own AWS set-up."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3_client(moto_endpoint, aws_credentials):
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name=AWS_REGION)
    yield client
    client.close()


@pytest.fixture
def bucket(s3_client) -> str:
    name = f"ventanilla-{uuid.uuid4().hex[:16]}"
    s3_client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": AWS_REGION})
    return name


# The day before the fixed business dates the call tests travel to (Monday 2026-11-23 onwards).
BEFORE_THE_FIXED_DATES = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock_before_the_fixed_dates():
    """Tests that mix the real clock with fixed dates must not depend on the day the suite runs.
    Once the real clock passes those dates, a session cookie signed now is from the future
    there, and the replan that logging an outcome enqueues (run inline, at the real time) finds
    the test's callback already late and releases it."""
    with time_machine.travel(BEFORE_THE_FIXED_DATES, tick=True):
        yield

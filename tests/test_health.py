"""`/healthz` answers whenever the process does; `/readyz` names each dependency that is down."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from flask import Flask
from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.conftest import REDIS_URL

REDIS_START_SECONDS = 10


def free_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def readyz(app: Flask):
    response = app.test_client().get("/readyz")
    return response.status_code, response.get_json()


@dataclass
class RedisProcess:
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=REDIS_START_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait_until_redis_answers(server: RedisProcess) -> None:
    """Poll PING on the connection until it answers, the process dies, or the deadline passes."""
    deadline = time.monotonic() + REDIS_START_SECONDS
    while True:
        try:
            with Redis(
                host="127.0.0.1", port=server.port, socket_connect_timeout=0.5, socket_timeout=0.5
            ) as client:
                if client.ping():
                    return
        except RedisConnectionError:
            pass
        if server.process.poll() is not None:
            pytest.fail(f"redis-server exited with {server.process.returncode} before answering PING")
        if time.monotonic() > deadline:
            pytest.fail(f"redis-server on port {server.port} did not answer PING in {REDIS_START_SECONDS}s")


@pytest.fixture
def own_redis(tmp_path) -> Iterator[RedisProcess]:
    """A redis-server of this test's own, on a free loopback port, so it can be shut down."""
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisProcess(port, process)
    try:
        _wait_until_redis_answers(server)
        yield server
    finally:
        server.stop()


# --- /healthz -----------------------------------------------------------------------------------


def test_healthz_answers_ok(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_healthz_answers_json(client):
    assert client.get("/healthz").mimetype == "application/json"


def test_healthz_answers_even_when_dependencies_are_down(make_app, tmp_path):
    app = make_app(
        STORAGE_URL="s3://ventanilla/p",
        S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}",
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )

    response = app.test_client().get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


# --- /readyz ------------------------------------------------------------------------------------


def test_readyz_is_ready_on_the_defaults(app):
    status, body = readyz(app)

    assert status == 200
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["storage"] == "ok"


def test_readyz_checks_redis_only_when_it_is_configured(app):
    _, body = readyz(app)

    assert ("redis" in body["checks"]) is bool(REDIS_URL)
    assert set(body["checks"].values()) == {"ok"}


def test_readyz_is_unavailable_when_the_s3_endpoint_is_down(make_app):
    app = make_app(STORAGE_URL="s3://ventanilla/p", S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")

    status, body = readyz(app)

    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["storage"].startswith("down: ")
    assert body["checks"]["database"] == "ok"


def test_readyz_reports_a_storage_problem_in_a_bounded_message(make_app):
    app = make_app(STORAGE_URL="s3://ventanilla/p", S3_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}")

    _, body = readyz(app)

    assert "head_bucket" in body["checks"]["storage"]
    assert len(body["checks"]["storage"]) <= len("down: ") + 200


def test_readyz_is_unavailable_when_the_local_storage_folder_is_gone(app):
    app.extensions["storage"].root.rmdir()

    status, body = readyz(app)

    assert status == 503
    assert body["checks"]["storage"].startswith("down: ")


def test_readyz_is_unavailable_when_the_database_cannot_be_opened(app, make_app, tmp_path):
    # `app` first: the fixture's clean-up resets the database of the first app it built.
    broken = make_app(DATABASE_URL=f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}")

    status, body = readyz(broken)

    assert status == 503
    assert body["checks"]["database"] == "down: OperationalError"
    assert body["checks"]["storage"] == "ok"


def test_readyz_reports_a_running_redis_as_ok(make_app, own_redis):
    app = make_app(REDIS_URL=own_redis.url)

    status, body = readyz(app)

    assert status == 200
    assert body["checks"]["redis"] == "ok"


def test_readyz_reports_a_stopped_redis_as_down(make_app, own_redis):
    app = make_app(REDIS_URL=own_redis.url)
    assert readyz(app)[0] == 200

    own_redis.stop()
    status, body = readyz(app)

    assert own_redis.process.returncode is not None
    assert status == 503
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"].startswith("down: ")
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["storage"] == "ok"

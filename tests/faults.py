"""Real services that a test can take down and bring back: a private redis-server, an SMTP
sink, an SMS gateway, an S3 endpoint in front of moto's server, and a private PostgreSQL.

Each one stops and starts on the same port, so the application keeps its configuration across
the outage, as it would in production."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aiosmtpd.controller import Controller
from redis import Redis
from redis.exceptions import RedisError

WAIT_SECONDS = 30


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    """Poll a real condition until it holds; fail the test if it never does."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def kill_with_children(pid: int) -> list[int]:
    """SIGKILL a process and its children at once, as when its machine or container dies (an
    rq worker forks its work horse into a session of its own, out of reach of killpg)."""
    targets = [
        pid,
        *(int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat") if _ppid(stat) == pid),
    ]
    for target in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
    return targets


def is_running(pid: int) -> bool:
    """Alive, and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _ppid(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


class RedisServer:
    """A redis-server of the test's own: killing or freezing it touches no other test."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.answers, f"redis-server on port {self.port}")

    def answers(self) -> bool:
        client = Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """Down hard, as after a crash: the port refuses connections."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT_SECONDS)

    def freeze(self) -> None:
        """Hung, not down: connections are accepted but nothing ever answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


class SmtpSink:
    """An SMTP server on loopback (aiosmtpd) that keeps every message it is handed.

    With `hold` set to "RCPT" or "DATA", the first session stops at that command without
    answering (and sets `reached`) until the test sets `released`: a delivery caught midway."""

    def __init__(self, hold: str | None = None) -> None:
        self.port = free_port()
        self.messages: list[EmailMessage] = []
        self.hold = hold
        self.reached = threading.Event()
        self.released = threading.Event()
        self.controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def message_ids(self) -> list[str]:
        return [message["Message-ID"] for message in self.messages]

    async def _pause(self, command: str) -> None:
        if self.hold == command and not self.reached.is_set():
            self.reached.set()
            while not self.released.is_set():
                await asyncio.sleep(0.01)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        await self._pause("RCPT")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        await self._pause("DATA")  # held: the whole message is here, only our "250" is missing
        return "250 OK"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, server_hostname="smtp.test")
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.released.set()
            self.controller.stop()
            self.controller = None


class SmsGateway:
    """A local SMS gateway: records every POST and answers with `status` (or, with `hold`,
    does not answer until the test releases it)."""

    def __init__(self, status: int = 200, hold: bool = False) -> None:
        self.status = status
        self.hold = hold
        self.release = threading.Event()
        self.requests: list[dict] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                gateway.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": self.rfile.read(length)}
                )
                if gateway.hold:
                    gateway.release.wait()
                    return  # the client has long given up; close without an answer
                body = b'{"error": "gateway exploded"}' if gateway.status >= 300 else b'{"id": "sms-1"}'
                self.send_response(gateway.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/sms"

    def keys(self) -> list[str | None]:
        """The Idempotency-Key of each request, in order."""
        return [request["headers"].get("Idempotency-Key") for request in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class S3Endpoint:
    """The S3 endpoint the application is configured with, forwarding to moto's server.

    It goes down (the port refuses connections) when told to, or by itself right after it has
    passed `fail_after_puts` object uploads: an outage in the middle of a request."""

    def __init__(self, backend: str) -> None:
        host, _, port = backend.removeprefix("http://").partition(":")
        self.backend = (host, int(port))
        self.port = free_port()
        self.fail_after_puts: int | None = None
        self.puts = 0
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        endpoint = self

        class Forwarder(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and "Expect: 100-continue", as boto uses them

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                backend = http.client.HTTPConnection(*endpoint.backend, timeout=WAIT_SECONDS)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
                backend.request(self.command, self.path, body=body, headers=headers)
                answer = backend.getresponse()
                content = answer.read()
                backend.close()
                going_down = endpoint._count(self.command, self.path, answer.status)
                if going_down:
                    endpoint._refuse_connections()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in (
                        "content-length",
                        "connection",
                        "transfer-encoding",
                        "date",
                        "server",
                    ):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                if going_down:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

            def log_message(self, format, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Forwarder)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def _count(self, method: str, path: str, status: int) -> bool:
        """True when this upload is the last one to pass before the outage."""
        is_upload = method == "PUT" and path.count("/") >= 2 and status == 200
        if is_upload:
            self.puts += 1
        return is_upload and self.fail_after_puts is not None and self.puts >= self.fail_after_puts

    def _refuse_connections(self) -> None:
        """Close the listening socket before answering, so the very next request is refused."""
        assert self.server is not None
        self.server.socket.shutdown(socket.SHUT_RDWR)
        threading.Thread(target=self.stop, daemon=True).start()

    def stop(self) -> None:
        server, thread = self.server, self.thread
        if server is None or thread is None:
            return
        self.server = self.thread = None
        server.shutdown()
        server.server_close()
        thread.join()


def _newest_postgres_bin() -> Path:
    versions = sorted(
        (path for path in Path("/usr/lib/postgresql").glob("*/bin") if path.parent.name.isdigit()),
        key=lambda path: int(path.parent.name),
    )
    return versions[-1] if versions else Path("/usr/lib/postgresql/bin")


PG_BIN = _newest_postgres_bin()


class PostgresServer:
    """A PostgreSQL cluster of the test's own, in a temporary folder, on its own port.

    initdb refuses to run as root, so as root every server command runs as `postgres`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ventanilla-pg-"))
        self.data = self.root / "data"
        self.as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_owner = ["runuser", "-u", "postgres", "--"]

    @classmethod
    def missing(cls) -> str | None:
        """Why this machine cannot run one, or None."""
        for program in ("initdb", "pg_ctl", "postgres", "createdb"):
            if not (PG_BIN / program).is_file():
                return f"no {PG_BIN / program}"
        if os.geteuid() == 0 and shutil.which("runuser") is None:
            return "running as root without runuser, and initdb refuses root"
        return None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self.as_owner, *command], capture_output=True, text=True, timeout=WAIT_SECONDS * 2
        )
        if result.returncode:
            raise AssertionError(f"{command[0]} failed: {result.stdout}{result.stderr}")

    def _pg_ctl(self, action: str, *options: str) -> None:
        self._run(
            str(PG_BIN / "pg_ctl"), action, "-D", str(self.data), "-w", "-t", str(WAIT_SECONDS), *options
        )

    def _server_options(self) -> list[str]:
        """The log goes to a file: a server writing to our pipes would keep pg_ctl from returning."""
        settings = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        return ["-l", str(self.root / "server.log"), "-o", settings]

    def start(self) -> None:
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"
        )
        self._pg_ctl("start", *self._server_options())

    def restart(self) -> None:
        """`-m fast`: every open connection is cut, as in a failover or a maintenance restart."""
        self._pg_ctl("restart", "-m", "fast", *self._server_options())

    def create_database(self, name: str) -> None:
        self._run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", "immediate")
        shutil.rmtree(self.root, ignore_errors=True)

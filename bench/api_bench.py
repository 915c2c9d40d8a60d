"""Benchmark the public account API under gunicorn against a bare Flask app doing the same work.

    python bench/api_bench.py [--database-url postgresql://postgres@127.0.0.1:5432/bench_api]
                              [--redis-url redis://127.0.0.1:6379/7] [--concurrency 4]
                              [--seconds 8] [--rounds 2] [--existing-accounts 100000]

The database (created when missing) is PRIVATE: its public schema is dropped and rebuilt by
the migrations. Redis database 7 is flushed before and after: the app runs as in production,
with rate-limit counters and the rq job queue in Redis (the verification email is pushed to
rq after commit; no worker runs here, so the web process never delivers mail itself). The
registration limits are raised through the environment (`REGISTRATION_LIMIT_IP`,
`REGISTRATION_LIMIT_EMAIL`) so the limiter still counts every request but never refuses one.

Two servers, each `gunicorn --workers 2` (sync workers) on a free loopback port, against the
same database:

* A, ours: `wsgi:app`, `POST /api/v1/accounts` and `GET /api/v1/me` with a bearer token.
* B, bare: a plain Flask app (`bare_app` below, psycopg and argon2-cffi only). POST hashes the
  password once with argon2id at the OWASP parameters (m=19 MiB, t=2, p=1) and inserts the
  account row in `customer_accounts`; GET reads the session joined to its account (and
  policyholder) by the token's SHA-256, and answers the same fields. That is the least any
  implementation must do; ours also validates the password policy, writes the verification
  token, the outbox email and the audit event, and counts the rate limits in Redis.

`--existing-accounts` verified accounts are loaded first (COPY), so look-ups run against a
table of realistic size rather than an empty one; 200 of them get a live session for GET.

A load process (threads, one `requests.Session` each) on loopback drives one server at a
time with the same concurrency, in rounds A, B, A, B... so that noise from other work on the
machine falls on both. Per endpoint and server: requests/s (completed 2xx / wall time of the
rounds) and p50/p95 latency over every request; ratio = ours / bare requests/s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from argon2 import PasswordHasher
from flask import Flask, jsonify, request

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_api"
PASSWORD = "Bench-Pass-2027!x"  # noqa: S105 (the synthetic customers' password)
SESSIONS = 200
TARGET = 0.8
OWASP = {"m": 19 * 1024, "t": 2, "p": 1}

# The bare app ---------------------------------------------------------------------------------

_bare_hasher = PasswordHasher(time_cost=OWASP["t"], memory_cost=OWASP["m"], parallelism=OWASP["p"])
_bare_connection = []

BARE_ME = """
SELECT a.id, a.email, a.tax_id, a.email_verified_at, a.address_line1, a.address_line2,
       a.postal_code, a.city, a.province, a.country, a.phone, a.first_name, a.last_name,
       a.declared_tax_id, a.association_status, p.name
FROM customer_sessions s
JOIN customer_accounts a ON a.id = s.account_id
LEFT JOIN policyholders p ON p.id = a.policyholder_id
WHERE s.token_hash = %s AND s.revoked_at IS NULL AND s.expires_at > %s
"""


def _bare_db():
    """One connection per worker process, opened after gunicorn forks."""
    import psycopg

    if not _bare_connection:
        _bare_connection.append(psycopg.connect(os.environ["BARE_DATABASE_URL"]))
    return _bare_connection[0]


def bare_app() -> Flask:
    """The least a registration and a profile read can do: no framework beyond Flask."""
    app = Flask("bare")

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.post("/api/v1/accounts")
    def register():
        body = request.get_json()
        password_hash = _bare_hasher.hash(body["password"])
        now = datetime.now(UTC)
        connection = _bare_db()
        with connection.transaction():
            connection.execute(
                "INSERT INTO customer_accounts (email, password_hash, language, created_at, "
                "terms_accepted_at, association_status) VALUES (%s, %s, 'es', %s, %s, 'none')",
                (body["email"].strip().lower(), password_hash, now, now),
            )
        return {"status": "verification_pending"}, 202

    @app.get("/api/v1/me")
    def me():
        _, _, token = request.headers.get("Authorization", "").partition(" ")
        token_hash = hashlib.sha256(token.strip().encode()).hexdigest()
        connection = _bare_db()
        with connection.transaction():
            row = connection.execute(BARE_ME, (token_hash, datetime.now(UTC))).fetchone()
        if row is None:
            return {"status": 401}, 401
        return jsonify(
            id=row[0],
            email=row[1],
            username=row[2] or row[1],
            email_verified=row[3] is not None,
            profile={
                "address": dict(
                    zip(
                        ("line1", "line2", "postal_code", "city", "province", "country"),
                        row[4:10],
                        strict=True,
                    )
                ),
                "phone": row[10],
                "first_name": row[11],
                "last_name": row[12],
                "tax_id": row[13],
            },
            association={"status": row[14], "policyholder_name": row[15]},
        )

    return app


# The load process -----------------------------------------------------------------------------


def drive(url: str, kind: str, seconds: float, concurrency: int, tag: str, tokens: list[str]):
    """Runs in its own process: `concurrency` threads send requests back to back for `seconds`.
    Returns (wall seconds, [(latency seconds, status), ...])."""
    import requests

    stop = time.perf_counter() + seconds

    def worker(number: int) -> list[tuple[float, int]]:
        session = requests.Session()
        samples = []
        sent = 0
        while time.perf_counter() < stop:
            started = time.perf_counter()
            if kind == "register":
                email = f"{tag}-{number}-{sent}@bench.example"
                response = session.post(
                    url, json={"email": email, "password": PASSWORD, "accept_terms": True}, timeout=60
                )
            else:
                token = tokens[(number + sent * concurrency) % len(tokens)]
                response = session.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            samples.append((time.perf_counter() - started, response.status_code))
            sent += 1
        return samples

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(worker, range(concurrency)))
    return time.perf_counter() - started, [sample for samples in results for sample in samples]


# Set-up ---------------------------------------------------------------------------------------


def ensure_database(url: str) -> None:
    """CREATE DATABASE when it does not exist (connecting to the `postgres` database)."""
    import psycopg
    from psycopg import sql

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def app_config(url: str, redis_url: str | None, instance: Path) -> dict[str, str]:
    return {
        "APP_ENV": "development",
        "DATABASE_URL": url,
        "SECRET_KEY": "bench",
        "STORAGE_URL": (instance / "documents").as_uri(),
        "REGISTRATION_LIMIT_IP": "10000000 per hour",
        "REGISTRATION_LIMIT_EMAIL": "10000000 per hour",
        **({"REDIS_URL": redis_url} if redis_url else {}),
    }


def build_database(url: str, config: dict[str, str], existing: int) -> list[str]:
    """Schema from the migrations, `existing` verified accounts, and SESSIONS live sessions;
    returns the bearer tokens."""
    from flask_migrate import upgrade
    from sqlalchemy import text

    from backoffice import create_app
    from backoffice.extensions import db
    from backoffice.passwords import hash_password

    app = create_app(dict(config))
    with app.app_context():
        with db.engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        upgrade()
        now = datetime.now(UTC)
        password_hash = hash_password(PASSWORD)
        raw = db.session.connection().connection.driver_connection
        columns = "email, password_hash, language, created_at, terms_accepted_at, email_verified_at, association_status"
        with raw.cursor() as cursor, cursor.copy(f"COPY customer_accounts ({columns}) FROM STDIN") as copy:
            for number in range(existing):
                copy.write_row(
                    (f"existing{number}@bench.example", password_hash, "es", now, now, now, "none")
                )
        tokens = [secrets.token_urlsafe(32) for _ in range(SESSIONS)]
        with (
            raw.cursor() as cursor,
            cursor.copy(
                "COPY customer_sessions (token_hash, account_id, created_at, expires_at) FROM STDIN"
            ) as copy,
        ):
            for number, token in enumerate(tokens, start=1):
                copy.write_row(
                    (hashlib.sha256(token.encode()).hexdigest(), number, now, now + timedelta(days=1))
                )
        db.session.commit()
        db.session.execute(text("ANALYZE"))
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return tokens


def our_argon2_parameters() -> dict[str, int]:
    from backoffice.passwords import hash_password

    params = hash_password("x").split("$")[3]  # $argon2id$v=19$m=19456,t=2,p=1$salt$hash
    return {key: int(value) for key, value in (item.split("=") for item in params.split(","))}


def start_server(name: str, app_spec: str, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        str(ROOT / ".venv" / "bin" / "gunicorn"),
        "--workers",
        "2",
        "--bind",
        f"127.0.0.1:{port}",
        "--pythonpath",
        f"{ROOT},{ROOT / 'bench'}",
        app_spec,
    ]
    handle = log.open("w")
    process = subprocess.Popen(  # noqa: S603 (our own gunicorn, fixed arguments)
        command, cwd=ROOT, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    import requests

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} server exited; see {log}")
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                return process, base
        except requests.RequestException:  # still booting
            pass
        time.sleep(0.2)
    stop_server(process)
    raise SystemExit(f"{name} server did not answer within 60 s; see {log}")


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Tally:
    def __init__(self) -> None:
        self.seconds = 0.0
        self.latencies: list[float] = []
        self.errors: dict[int, int] = {}

    def add(self, seconds: float, samples: list[tuple[float, int]]) -> None:
        self.seconds += seconds
        for latency, status in samples:
            if 200 <= status < 300:
                self.latencies.append(latency)
            else:
                self.errors[status] = self.errors.get(status, 0) + 1

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def line(self, label: str) -> str:
        ms = [1000 * latency for latency in self.latencies] or [0.0]
        errors = f"  errors {self.errors}" if self.errors else ""
        return (
            f"  {label:<5} {self.rate:8.1f} req/s   p50 {statistics.median(ms):7.1f} ms   "
            f"p95 {percentile(ms, 0.95):7.1f} ms   ({len(self.latencies)} requests){errors}"
        )


def main(argv: list[str] | None = None) -> int:
    import multiprocessing

    from redis import Redis

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default=DEFAULT_URL, help="a PRIVATE database: its schema is rebuilt"
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/7", help="flushed; '' for no Redis")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per server and endpoint")
    parser.add_argument("--existing-accounts", type=int, default=100_000)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    ours = our_argon2_parameters()
    print(f"argon2id parameters: ours {ours}, bare {OWASP} (OWASP: m=19 MiB, t=2, p=1)")
    if ours != OWASP:
        print("FAIL  our argon2id parameters are not the OWASP ones")
        return 1

    started = time.perf_counter()
    ensure_database(args.database_url)
    instance = Path(tempfile.mkdtemp(prefix="api-bench-"))
    config = app_config(args.database_url, args.redis_url or None, instance)
    if args.redis_url:
        Redis.from_url(args.redis_url).flushdb()
    tokens = build_database(args.database_url, config, args.existing_accounts)
    print(
        f"database {args.database_url.rpartition('@')[2]}: schema migrated, {args.existing_accounts} "
        f"accounts, {SESSIONS} sessions in {time.perf_counter() - started:.1f} s; "
        f"Redis {args.redis_url or 'none (limits in memory, jobs inline)'}"
    )

    env = {**config, "INSTANCE_PATH": str(instance), "BARE_DATABASE_URL": args.database_url}
    endpoints = (("register", "POST /accounts", "/api/v1/accounts"), ("me", "GET /me", "/api/v1/me"))
    results: dict[tuple[str, str], Tally] = {}
    checks = []
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        servers["ours"] = start_server("ours", "wsgi:app", env, instance / "ours.log")
        servers["bare"] = start_server("bare", "api_bench:bare_app()", env, instance / "bare.log")
        print(
            f"gunicorn --workers 2: ours {servers['ours'][1]}, bare {servers['bare'][1]} "
            f"(logs in {instance}); load: {args.concurrency} threads in another process, "
            f"{args.rounds} x {args.seconds:.0f} s rounds per server, interleaved"
        )
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            for kind, label, path in endpoints:
                for name, (_, base) in servers.items():  # warm-up, not counted
                    pool.apply(drive, (base + path, kind, 1.0, args.concurrency, f"warm-{name}", tokens))
                for round_number in range(args.rounds):
                    for name, (_, base) in servers.items():
                        seconds, samples = pool.apply(
                            drive,
                            (
                                base + path,
                                kind,
                                args.seconds,
                                args.concurrency,
                                f"{name}{round_number}",
                                tokens,
                            ),
                        )
                        results.setdefault((kind, name), Tally()).add(seconds, samples)
                mine, bare = results[(kind, "ours")], results[(kind, "bare")]
                ratio = mine.rate / bare.rate if bare.rate else 0.0
                print(label)
                print(mine.line("ours"))
                print(bare.line("bare"))
                print(f"  ratio ours / bare requests/s: {ratio:.2f}")
                checks.append((f"{label} ratio {ratio:.2f} >= {TARGET}", ratio >= TARGET))
                checks.append((f"{label} no failed requests", not mine.errors and not bare.errors))
    finally:
        for process, _ in servers.values():
            stop_server(process)
        if args.redis_url:
            Redis.from_url(args.redis_url).flushdb()
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())

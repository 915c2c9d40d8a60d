"""Benchmark the back office's list pages on big tables against the same pages on small ones.

    python bench/list_pages_bench.py [--database-url postgresql://postgres@127.0.0.1:5432/bench_lists]
                                     [--applications 1000000] [--audit-events 5000000]
                                     [--small 1000] [--requests 50] [--rebuild]

Two PRIVATE databases (created when missing; their public schema is dropped and rebuilt by
the migrations): `<name>` with `--applications` representative applications and
`--audit-events` audit events, and `<name>_small` with `--small` of each. They are built once
and reused by later runs with the same sizes (`--rebuild` forces it; a reused database gets
any newer migrations). Rows are generated in SQL (`INSERT ... SELECT generate_series`) into the
big tables with their secondary indexes dropped, which are then rebuilt from their own
definitions; then VACUUM ANALYZE. Each phase prints its time.

Both databases hold the same current workload, so the pages have the same work to show and
only the history differs:

* the review queue: 200 submitted applications and 100 in review (claimed), deadlines in the
  next two days, 20 waiting for documents;
* calls: 200 applications with an open call task each (deadlines in the next two days): 20
  planned today for the signed-in agent, 130 for other agents, 50 unassigned;
* history, filling the table to its size: decided applications with deadlines spread over
  the last four years (completed, rejected, expired, call failed); every completed or failed
  one has its closed call task and one call attempt;
* the audit log: events spread over the same four years.

Pages, through the Flask test client signed in with the role that uses them: the review
queue's default page (legal reviewer), the agent's call agenda (call agent), the call SLA
lists (supervisor) and the audit log's default page (admin). Each page is requested
`--requests` times on each database, alternating big and small so that noise from other work
on the machine falls on both, after 3 warm-up requests each. Printed: p50 and p95 page time
per database, the ratio of the p95s (target <= 1.5x: a page's cost must not grow with the
table), the SQL statements one page view runs and whether any of them counts rows.
"""

from __future__ import annotations

import argparse
import html
import logging
import re
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import event, select, text  # noqa: E402

from backoffice import create_app  # noqa: E402
from backoffice.extensions import db  # noqa: E402

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_lists"
TARGET = 1.5
PASSWORD = "Bench-Staff-2027!x"  # noqa: S105 (the synthetic staff's password)
QUEUE_SUBMITTED, QUEUE_IN_REVIEW, NEEDS_DOCUMENTS = 200, 100, 20
CALLS_MINE, CALLS_OTHERS, CALLS_UNASSIGNED = 20, 130, 50
CURRENT = QUEUE_SUBMITTED + QUEUE_IN_REVIEW + NEEDS_DOCUMENTS + CALLS_MINE + CALLS_OTHERS + CALLS_UNASSIGNED
OTHER_AGENTS = 15
REVIEWERS = 10
COUNTING = re.compile(r"\bcount\(", re.IGNORECASE)

HISTORY = """
INSERT INTO representative_applications (id, access_key_hash, company_tax_id, company_name, first_name, last_name, tax_id,
    email, phone, preferred_call_times, language, status, created_at, submitted_at, call_deadline,
    requested_documents, claimed_by_id, claimed_at, last_activity_at, decided_at)
SELECT md5(:prefix || g), repeat('0', 64), 'B' || lpad(g::text, 8, '0'),
    'Empresa ' || g || ' S.L.', 'Lucía', 'Pérez ' || g, lpad(g::text, 8, '0') || 'Z',
    'rep' || g || '@bench.example', '+34611222333', '[]', 'es',
    (ARRAY['completed', 'completed', 'completed', 'rejected', 'expired', 'call_failed'])[1 + g % 6],
    deadline - interval '3 days', deadline - interval '3 days', deadline, '[]', NULL, NULL, NULL,
    deadline - interval '1 day'
FROM (SELECT g, now() - interval '3 days' - (g::float / :count) * interval '1460 days' AS deadline
      FROM generate_series(1, :count) AS g) AS history
"""
HISTORY_TASKS = """
INSERT INTO call_tasks (application_id, status, deadline, created_at, assigned_agent_id, slot_start,
    attempts, source, failed_attempts, first_attempt_at, at_risk_capacity, closed_at, outcome)
SELECT id, CASE WHEN status = 'completed' THEN 'done' ELSE 'failed' END, call_deadline,
    call_deadline - interval '40 hours', (:agents)[1 + abs(hashtext(id)) % cardinality(:agents)],
    call_deadline - interval '20 hours', 1, 'legal_approval', 0, call_deadline - interval '20 hours',
    false, call_deadline - interval '20 hours', CASE WHEN status = 'completed' THEN 'validated' ELSE 'no_answer' END
FROM representative_applications WHERE status IN ('completed', 'call_failed')
"""
HISTORY_ATTEMPTS = """
INSERT INTO call_attempts (task_id, agent_id, started_at, logged_at, outcome, notes, field_checks)
SELECT id, assigned_agent_id, first_attempt_at, first_attempt_at, outcome, '', '{}'
FROM call_tasks WHERE status IN ('done', 'failed')
"""
CURRENT_QUEUE = """
INSERT INTO representative_applications (id, access_key_hash, company_tax_id, company_name, first_name, last_name, tax_id,
    email, phone, preferred_call_times, language, status, created_at, submitted_at, call_deadline,
    requested_documents, claimed_by_id, claimed_at, last_activity_at, decided_at)
SELECT md5(:prefix || g), repeat('0', 64), 'B' || lpad(g::text, 8, '0'),
    'Empresa ' || g || ' S.L.', 'Lucía', 'Pérez ' || g, lpad(g::text, 8, '0') || 'Z',
    'rep' || g || '@bench.example', '+34611222333', '[]', 'es', status, now() - interval '1 day', now() - interval '1 day',
    now() + (g % 48) * interval '1 hour' + interval '30 minutes', '[]', reviewer, claimed, claimed, NULL
FROM (SELECT g,
             CASE WHEN g <= :submitted THEN 'submitted'
                  WHEN g <= :submitted + :in_review THEN 'in_review' ELSE 'needs_documents' END AS status,
             CASE WHEN g > :submitted AND g <= :submitted + :in_review
                  THEN (:reviewers)[1 + g % cardinality(:reviewers)] END AS reviewer,
             CASE WHEN g > :submitted AND g <= :submitted + :in_review THEN now() END AS claimed
      FROM generate_series(1, :count) AS g) AS current
"""
CURRENT_CALLS = """
INSERT INTO representative_applications (id, access_key_hash, company_tax_id, company_name, first_name, last_name, tax_id,
    email, phone, preferred_call_times, language, status, created_at, submitted_at, call_deadline,
    requested_documents, claimed_by_id, claimed_at, last_activity_at, decided_at)
SELECT md5(:prefix || g), repeat('0', 64), 'B' || lpad(g::text, 8, '0'),
    'Empresa ' || g || ' S.L.', 'Lucía', 'Pérez ' || g, lpad(g::text, 8, '0') || 'Z',
    'rep' || g || '@bench.example', '+34611222333', '[]', 'es', 'call_scheduled', now() - interval '1 day', now() - interval '1 day',
    now() + (g % 48) * interval '1 hour' + interval '45 minutes', '[]', NULL, NULL, NULL, now() - interval '2 hours'
FROM generate_series(1, :count) AS g;
INSERT INTO call_tasks (application_id, status, deadline, created_at, assigned_agent_id, slot_start,
    attempts, source, failed_attempts, at_risk_capacity)
SELECT id, 'open', call_deadline, now() - interval '2 hours',
    CASE WHEN n <= :mine THEN :agent
         WHEN n <= :mine + :others THEN (:agents)[1 + n % cardinality(:agents)] END,
    CASE WHEN n <= :mine THEN date_trunc('day', now()) + interval '23 hours' - n * interval '20 minutes'
         WHEN n <= :mine + :others THEN now() + n * interval '10 minutes' END,
    0, 'legal_approval', 0, false
FROM (SELECT id, call_deadline, row_number() OVER (ORDER BY id) AS n
      FROM representative_applications WHERE status = 'call_scheduled') AS calls
"""
AUDIT = """
INSERT INTO audit_events (chain, chain_seq, occurred_at, actor_kind, actor_id, actor_label, action,
    subject_type, subject_id, before, after, ip, prev_hash, hash)
SELECT 1, :offset + g, now() - interval '1 day' - ((:count - g)::float / :count) * interval '1460 days',
    (ARRAY['staff', 'customer', 'system'])[1 + g % 3], (g % 5000)::text, 'actor' || (g % 5000) || '@bench.example',
    (ARRAY['application.submitted', 'application.in_review', 'application.approved', 'document.viewed',
           'customer.registered', 'customer.signed_in', 'call.logged', 'staff.signed_in'])[1 + g % 8],
    'representative_application', md5('history' || (g % 1000000)), '{"status": "submitted"}',
    '{"status": "in_review"}', '10.0.' || (g % 250) || '.' || (g % 200),
    md5('a' || (g - 1)) || md5('b' || (g - 1)), md5('a' || g) || md5('b' || g)
FROM generate_series(1, :count) AS g;
UPDATE audit_chain_head SET last_seq = :offset + :count, last_hash = md5('a' || :count) || md5('b' || :count)
WHERE id = 1
"""


def ensure_database(url: str) -> None:
    """CREATE DATABASE when it does not exist (connecting to the `postgres` database)."""
    import psycopg
    from psycopg import sql

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as connection:
        if connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def make_app(url: str):
    return create_app(
        {
            "APP_ENV": "development",
            "DATABASE_URL": url,
            "SECRET_KEY": "bench",
            "REDIS_URL": None,
            "STORAGE_URL": Path(tempfile.mkdtemp(prefix="list-bench-")).as_uri(),
            "STAFF_LOGIN_LIMIT_ACCOUNT": "1000 per minute",
            "STAFF_LOGIN_LIMIT_IP": "1000 per minute",
        }
    )


def sizes(url: str) -> tuple[int, int] | None:
    import psycopg

    try:
        with psycopg.connect(url) as connection:
            return connection.execute(
                "SELECT (SELECT count(*) FROM representative_applications),"
                " (SELECT count(*) FROM audit_events WHERE actor_label LIKE 'actor%')"
            ).fetchone()
    except psycopg.Error:
        return None


def build(url: str, applications: int, audit_events: int) -> None:
    """Schema by the migrations, staff through the staff service, the rest in SQL."""
    from flask_migrate import upgrade

    from backoffice.audit import Actor
    from backoffice.staff import service as staff_service
    from backoffice.staff.models import Role

    app = make_app(url)
    with app.app_context():
        with db.engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        upgrade()
        actor = Actor.system("bench")
        for role, count in (
            (Role.LEGAL_REVIEWER, REVIEWERS),
            (Role.CALL_AGENT, OTHER_AGENTS + 1),
            (Role.SUPERVISOR, 1),
            (Role.ADMIN, 1),
        ):
            for number in range(count):
                staff_service.create_staff(
                    f"{role.value}{number}@bench.example",
                    f"{role.value} {number}",
                    role,
                    PASSWORD,
                    actor=actor,
                )
        db.session.commit()
        staff = staff_ids()
        agents, reviewers = staff["call_agent"], staff["legal_reviewer"]
        with db.engine.begin() as connection, secondary_indexes_dropped(connection):
            started = time.perf_counter()
            offset = connection.execute(
                text("SELECT last_seq FROM audit_chain_head WHERE id = 1")
            ).scalar_one()
            for statement in AUDIT.split(";"):
                connection.execute(text(statement), {"count": audit_events, "offset": offset})
            print(f"  {audit_events} audit events in {time.perf_counter() - started:.1f} s")
            started = time.perf_counter()
            history = applications - CURRENT
            connection.execute(text(HISTORY), {"prefix": "history", "count": history})
            connection.execute(text(HISTORY_TASKS), {"agents": agents})
            connection.execute(text(HISTORY_ATTEMPTS))
            connection.execute(
                text(CURRENT_QUEUE),
                {
                    "prefix": "queue",
                    "count": QUEUE_SUBMITTED + QUEUE_IN_REVIEW + NEEDS_DOCUMENTS,
                    "submitted": QUEUE_SUBMITTED,
                    "in_review": QUEUE_IN_REVIEW,
                    "reviewers": reviewers,
                },
            )
            for statement in CURRENT_CALLS.split(";"):
                connection.execute(
                    text(statement),
                    {
                        "prefix": "calls",
                        "count": CALLS_MINE + CALLS_OTHERS + CALLS_UNASSIGNED,
                        "mine": CALLS_MINE,
                        "others": CALLS_OTHERS,
                        "agent": agents[0],
                        "agents": agents[1:],
                    },
                )
            print(
                f"  {applications} applications, call tasks and attempts in {time.perf_counter() - started:.1f} s"
            )
            started = time.perf_counter()
        print(f"  indexes built in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
        print(f"  VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")
        db.session.remove()
        db.engine.dispose()


BULK_TABLES = ("audit_events", "representative_applications", "call_tasks", "call_attempts")
SECONDARY = """
SELECT 'DROP INDEX ' || quote_ident(i.relname), pg_get_indexdef(i.oid)
FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relname = ANY(:tables) AND t.relnamespace = 'public'::regnamespace
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid)
UNION ALL
SELECT 'ALTER TABLE ' || quote_ident(t.relname) || ' DROP CONSTRAINT ' || quote_ident(c.conname),
       'ALTER TABLE ' || quote_ident(t.relname) || ' ADD CONSTRAINT ' || quote_ident(c.conname) || ' '
       || pg_get_constraintdef(c.oid)
FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
WHERE t.relname = ANY(:tables) AND t.relnamespace = 'public'::regnamespace AND c.contype = 'u'
"""


@contextmanager
def secondary_indexes_dropped(connection):
    """Bulk loads run far faster into bare tables: drop the secondary indexes and unique
    constraints the migrations made (primary and foreign keys stay), load, then build them
    again from their own definitions, sorting once each."""
    found = connection.execute(text(SECONDARY), {"tables": list(BULK_TABLES)}).all()
    for drop, _ in found:
        connection.execute(text(drop))
    yield
    connection.execute(text("SET maintenance_work_mem = '512MB'"))
    for _, create in found:
        connection.execute(text(create))


def upgrade_schema(url: str) -> None:
    """Reused databases get the migrations added since they were built."""
    from flask_migrate import upgrade

    app = make_app(url)
    with app.app_context():
        upgrade()
        db.engine.dispose()


def staff_ids() -> dict[str, list[int]]:
    from backoffice.staff.models import StaffUser

    found: dict[str, list[int]] = {}
    for user_id, role in db.session.execute(select(StaffUser.id, StaffUser.role).order_by(StaffUser.id)):
        found.setdefault(str(role.value), []).append(user_id)
    return found


def statements_of(app, client, url: str) -> list[str]:
    """The SQL statements one view of the page runs."""
    with app.app_context():
        engine = db.engine
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        assert client.get(url).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


CSRF_FIELD = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')
ENROL_KEY = re.compile(r'data-testid="totp-secret">([^<]+)<')
CODES_SAVED_FORM = re.compile(r'<form method="post" action="([^"]+)" data-testid="codes-saved-form">')


def _csrf(client, url: str) -> str:
    return CSRF_FIELD.search(client.get(url).get_data(as_text=True)).group(1)


def signed_in(app, email: str):
    """A client signed in through the real forms: the password, then the second step when the
    back office asks for one (enrolling at the first sign-in, a current code afterwards)."""
    client = app.test_client()
    response = client.post(
        "/login", data={"email": email, "password": PASSWORD, "csrf_token": _csrf(client, "/login")}
    )
    location = response.headers.get("Location", "")
    step = urlsplit(location).path
    if step in ("/mfa", "/mfa/enrol"):
        import pyotp

        if step == "/mfa/enrol":
            secret = ENROL_KEY.search(client.get(location).get_data(as_text=True)).group(1).replace(" ", "")
        else:
            secret = _totp_secret(app, email)
        response = client.post(
            location, data={"code": pyotp.TOTP(secret).now(), "csrf_token": _csrf(client, location)}
        )
        page = response.get_data(as_text=True)
        saved = CODES_SAVED_FORM.search(page)
        if saved:
            token = CSRF_FIELD.search(page).group(1)
            response = client.post(html.unescape(saved.group(1)), data={"csrf_token": token})
    if response.status_code != 302 or urlsplit(response.headers["Location"]).path.startswith(
        ("/login", "/mfa")
    ):
        raise SystemExit(
            f"could not sign in as {email}: {response.status_code} {response.headers.get('Location')}"
        )
    return client


def _totp_secret(app, email: str) -> str:
    """The enrolled secret, as the person's authenticator app holds it; the last used step is
    forgotten so that a second run within the same 30 seconds can sign in again."""
    from sqlalchemy import update

    from backoffice.staff import mfa
    from backoffice.staff.models import StaffUser

    with app.app_context():
        db.session.execute(update(StaffUser).where(StaffUser.email == email).values(totp_last_step=None))
        db.session.commit()
        return mfa.totp_secret(
            db.session.execute(select(StaffUser).where(StaffUser.email == email)).scalar_one()
        )


PAGES = (
    ("review queue", "legal_reviewer0@bench.example", "/admin/review/"),
    ("call agenda", "call_agent0@bench.example", "/admin/calls/"),
    ("call SLA", "supervisor0@bench.example", "/admin/call-sla/"),
    ("audit log", "admin0@bench.example", "/admin/audit/"),
)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default=DEFAULT_URL, help="PRIVATE: this and <name>_small are rebuilt"
    )
    parser.add_argument("--applications", type=int, default=1_000_000)
    parser.add_argument("--audit-events", type=int, default=5_000_000)
    parser.add_argument("--small", type=int, default=1_000, help="applications and audit events when small")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per page and database")
    parser.add_argument("--rebuild", action="store_true", help="rebuild even if the sizes match")
    args = parser.parse_args(argv)
    if args.small < CURRENT:
        parser.error(f"--small must be at least {CURRENT}: the current workload alone")

    databases = {
        "big": (args.database_url, args.applications, args.audit_events),
        "small": (f"{args.database_url}_small", args.small, args.small),
    }
    for name, (url, applications, audit_events) in databases.items():
        ensure_database(url)
        if args.rebuild or sizes(url) != (applications, audit_events):
            print(f"building {name}: {url.rpartition('/')[2]}")
            started = time.perf_counter()
            build(url, applications, audit_events)
            print(f"  built in {time.perf_counter() - started:.1f} s")
        else:
            upgrade_schema(url)
            print(
                f"reusing {name}: {url.rpartition('/')[2]} ({applications} applications, {audit_events} events)"
            )

    apps = {name: make_app(url) for name, (url, _, _) in databases.items()}
    logging.getLogger().setLevel(logging.WARNING)  # no access-log line per timed request
    checks = []
    print(
        f"{args.requests} requests per page and database, alternating; "
        f"big {args.applications} applications / {args.audit_events} audit events, small {args.small} / {args.small}"
    )
    for label, email, url in PAGES:
        clients = {name: signed_in(app, email) for name, app in apps.items()}
        times: dict[str, list[float]] = {name: [] for name in apps}
        statements = {}
        for name, client in clients.items():
            for _ in range(3):
                assert client.get(url).status_code == 200
            statements[name] = statements_of(apps[name], client, url)
        for _ in range(args.requests):
            for name, client in clients.items():
                started = time.perf_counter()
                response = client.get(url)
                times[name].append(time.perf_counter() - started)
                if response.status_code != 200:
                    raise SystemExit(f"{label} on {name}: {response.status_code}")
        p95 = {name: 1000 * percentile(values, 0.95) for name, values in times.items()}
        ratio = p95["big"] / p95["small"]
        print(f"{label} ({url})")
        for name in apps:
            print(
                f"  {name:<6} p50 {1000 * statistics.median(times[name]):7.1f} ms   p95 {p95[name]:7.1f} ms   "
                f"{len(statements[name])} SQL statements per view, "
                f"{sum(1 for sql in statements[name] if COUNTING.search(sql))} counting rows"
            )
        print(f"  ratio big / small p95: {ratio:.2f}x")
        checks.append((f"{label} p95 ratio {ratio:.2f}x <= {TARGET}x", ratio <= TARGET))
    for app in apps.values():
        with app.app_context():
            db.engine.dispose()
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())

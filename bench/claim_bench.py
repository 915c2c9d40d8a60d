"""Benchmark the review queue's claim-next on PostgreSQL against the raw SKIP LOCKED statement.

    python bench/claim_bench.py [--database-url postgresql://postgres@127.0.0.1:5432/bench_claim]
                                [--applications 1000000] [--workers 16] [--seconds 30]
                                [--reviewers 60000] [--rebuild]

The database (created when missing) is PRIVATE: its public schema is dropped and rebuilt by
the migrations, then it holds the backlog: `--applications` submitted applications (deadlines
spread over 30 days, random order) and `--reviewers` active legal reviewers, loaded with
`INSERT ... SELECT generate_series` and VACUUM ANALYZEd. It is built once and reused by later
runs with the same sizes (`--rebuild` forces it; a reused one gets any newer migrations). It is
never claimed from itself: each contender works on `<name>_run`, a fresh `CREATE DATABASE ...
TEMPLATE` copy (dropped at the end), so both start from an identical backlog.

* ours: `--workers` processes, each with its own app and database session, call the real
  `backoffice.review.queue.claim_next(reviewer, actor=...)` and commit, back to back for
  `--seconds`. A reviewer holds one application at a time (a second call hands the held one
  back), so every claim is made by a reviewer who holds nothing yet: worker i uses reviewers
  i, i + workers, ... Everything the service does is included: the reviewer's row lock, the
  held-claim check, the SKIP LOCKED pick, the `submitted -> in_review` transition and its
  audit event (the hash chain), the commit. Latency: claim_next + commit, per claim.
* raw: `pgbench -n -c <workers> -j 2 -T <seconds> -l` running one statement per transaction,
  `UPDATE ... SET status = 'in_review', claimed_by_id, claimed_at, last_activity_at WHERE id =
  (SELECT id ... <the same claimable condition> ORDER BY call_deadline, id FOR UPDATE SKIP
  LOCKED LIMIT 1) RETURNING id`; latency per transaction from pgbench's log.

Nobody decides what they claimed, so claims stay live: as a run goes on, both contenders' scans
step over the claims made so far at the head of the queue index (the same for both; far more
than the handful of live claims of real use, so latencies grow during a run).

claims/s = claims / wall time; ratio = ours / raw (target >= 0.6). Duplicates: every claim
must be a different application: ours compares the ids the workers got (and the audit events)
with the claimed rows in the table; raw compares pgbench's transaction count with the claimed
rows (a row claimed twice would be counted once).
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_claim"
TARGET = 0.6
IDLE_MINUTES = 30  # REVIEW_CLAIM_IDLE_MINUTES, the app's default

# The same claimable condition and order as queue.claim_next, with the default idle limit.
RAW_CLAIM = """UPDATE representative_applications
SET status = 'in_review', claimed_by_id = :client_id + 1, claimed_at = now(), last_activity_at = now()
WHERE id = (
    SELECT id FROM representative_applications
    WHERE status IN ('submitted', 'in_review')
      AND (claimed_by_id IS NULL OR last_activity_at IS NULL
           OR last_activity_at < now() - interval '30 minutes')
    ORDER BY call_deadline, id
    FOR UPDATE SKIP LOCKED
    LIMIT 1
)
RETURNING id;
"""

LOAD_REVIEWERS = """
INSERT INTO staff_users (email, name, role, password_hash, active, language, created_at)
SELECT 'reviewer' || g || '@bench.example', 'Reviewer ' || g, 'legal_reviewer', 'x', true, 'en', now()
FROM generate_series(1, :count) AS g
"""
LOAD_BACKLOG = """
INSERT INTO representative_applications (
    id, access_key_hash, company_tax_id, company_name, first_name, last_name, tax_id, email, phone,
    preferred_call_times, language, status, created_at, submitted_at, call_deadline, requested_documents)
SELECT md5('application' || g), repeat('0', 64), 'B' || lpad(g::text, 8, '0'), 'Empresa ' || g || ' S.L.',
       'Lucía', 'Pérez ' || g, lpad(g::text, 8, '0') || 'Z', 'rep' || g || '@bench.example', '+34611222333',
       '[]', 'es', 'submitted', deadline - interval '3 days', deadline - interval '3 days', deadline, '[]'
FROM (SELECT g, now() + random() * interval '30 days' AS deadline
      FROM generate_series(1, :count) AS g) AS backlog
"""


def config(url: str) -> dict[str, object]:
    return {
        "APP_ENV": "testing",
        "DATABASE_URL": url,
        "SECRET_KEY": "bench",
        "REDIS_URL": None,
        "STORAGE_URL": Path(tempfile.gettempdir(), "claim-bench-documents").as_uri(),
        "REVIEW_CLAIM_IDLE_MINUTES": IDLE_MINUTES,
    }


def admin_connection(url: str):
    import psycopg

    return psycopg.connect(f"{url.rpartition('/')[0]}/postgres", autocommit=True)


def database_exists(url: str) -> bool:
    with admin_connection(url) as connection:
        name = url.rpartition("/")[2]
        return (
            connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
        )


def ensure_database(url: str) -> None:
    """CREATE DATABASE when it does not exist (connecting to the `postgres` database)."""
    from psycopg import sql

    if not database_exists(url):
        with admin_connection(url) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.rpartition("/")[2])))


def backlog_sizes(url: str) -> tuple[int, int] | None:
    import psycopg

    try:
        with psycopg.connect(url) as connection:
            row = connection.execute(
                "SELECT (SELECT count(*) FROM representative_applications WHERE status = 'submitted'"
                " AND claimed_by_id IS NULL), (SELECT count(*) FROM staff_users)"
            ).fetchone()
    except psycopg.Error:
        return None
    return row[0], row[1]


def build_backlog(url: str, applications: int, reviewers: int) -> None:
    from flask_migrate import upgrade
    from sqlalchemy import text

    from backoffice import create_app
    from backoffice.extensions import db

    app = create_app(config(url))
    with app.app_context():
        with db.engine.begin() as connection:
            connection.execute(text("DROP SCHEMA public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
        upgrade()
        with db.engine.begin() as connection:
            connection.execute(text("SELECT setseed(0.42)"))
            connection.execute(text(LOAD_REVIEWERS), {"count": reviewers})
            connection.execute(text(LOAD_BACKLOG), {"count": applications})
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
        db.engine.dispose()


def upgrade_schema(url: str) -> None:
    """A reused backlog gets the migrations added since it was built."""
    from flask_migrate import upgrade

    from backoffice import create_app
    from backoffice.extensions import db

    app = create_app(config(url))
    with app.app_context():
        upgrade()
        db.engine.dispose()


def drop_copy(template_url: str) -> str:
    """Drop the run copy of the backlog; returns its name."""
    from psycopg import sql

    run = f"{template_url.rpartition('/')[2]}_run"
    with admin_connection(template_url) as connection:
        connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(run)))
    return run


def fresh_copy(template_url: str) -> str:
    """A new database cloned from the backlog, so each contender starts from the same state."""
    from psycopg import sql

    template = template_url.rpartition("/")[2]
    run = drop_copy(template_url)
    with admin_connection(template_url) as connection:
        connection.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(run), sql.Identifier(template))
        )
    return f"{template_url.rpartition('/')[0]}/{run}"


# Ours -----------------------------------------------------------------------------------------


def claim_worker(url: str, reviewer_ids: list[int], seconds: float, barrier, results) -> None:
    """One process: its own app and session, claiming with fresh reviewers until time is up."""
    from sqlalchemy import text

    from backoffice import create_app
    from backoffice.audit import Actor
    from backoffice.extensions import db
    from backoffice.review.queue import claim_next
    from backoffice.staff.models import StaffUser

    app = create_app(config(url))
    claimed: list[str] = []
    latencies: list[float] = []
    with app.app_context():
        db.session.execute(text("SELECT 1"))
        db.session.commit()
        barrier.wait()
        started = time.monotonic()
        stop = started + seconds
        for reviewer_id in reviewer_ids:
            if time.monotonic() >= stop:
                break
            reviewer = db.session.get(StaffUser, reviewer_id)
            begin = time.perf_counter()
            application = claim_next(reviewer, actor=Actor.staff(reviewer))
            db.session.commit()
            latencies.append(time.perf_counter() - begin)
            if application is not None:
                claimed.append(application.id)
            db.session.expunge_all()
        ended = time.monotonic()
        db.session.remove()
        db.engine.dispose()
    results.put((started, ended, claimed, latencies, len(reviewer_ids)))


def run_ours(url: str, workers: int, seconds: float, reviewers: int) -> dict[str, object]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(workers)
    results = context.Queue()
    processes = [
        context.Process(
            target=claim_worker,
            args=(url, list(range(number + 1, reviewers + 1, workers)), seconds, barrier, results),
        )
        for number in range(workers)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get() for _ in processes]
    for process in processes:
        process.join()
    started = min(outcome[0] for outcome in outcomes)
    ended = max(outcome[1] for outcome in outcomes)
    ids = [application_id for outcome in outcomes for application_id in outcome[2]]
    latencies = [latency for outcome in outcomes for latency in outcome[3]]
    exhausted = sum(1 for outcome in outcomes if len(outcome[3]) == outcome[4])
    return {"seconds": ended - started, "ids": ids, "latencies": latencies, "exhausted": exhausted}


# Raw ------------------------------------------------------------------------------------------


def run_raw(url: str, workers: int, seconds: float) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="claim-bench-"))
    script = work / "claim.sql"
    script.write_text(RAW_CLAIM)
    command = [
        shutil.which("pgbench") or "pgbench",
        "-n",
        "-c",
        str(workers),
        "-j",
        "2",
        "-T",
        str(int(seconds)),
        "-r",
        "-l",
        "--log-prefix",
        str(work / "log"),
        "-f",
        str(script),
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout  # noqa: S603
    latencies = []
    for log in work.glob("log.*"):
        for line in log.read_text().splitlines():
            latencies.append(int(line.split()[2]) / 1e6)  # client_id transaction_no time_us ...
    processed = int(re.search(r"number of transactions actually processed: (\d+)", output).group(1))
    duration = float(re.search(r"duration: ([\d.]+) s", output).group(1))
    summary = [
        line.strip()
        for line in output.splitlines()
        if line.startswith(("latency", "tps", "initial connection")) or "UPDATE" in line
    ]
    shutil.rmtree(work)
    return {"seconds": duration, "processed": processed, "latencies": latencies, "summary": summary}


# Checks ---------------------------------------------------------------------------------------


def table_state(url: str) -> tuple[int, int, int]:
    """(claimed rows, distinct claimed rows, in_review audit events)."""
    import psycopg

    with psycopg.connect(url) as connection:
        return connection.execute(
            "SELECT count(*), count(DISTINCT id), (SELECT count(*) FROM audit_events"
            " WHERE action = 'application.in_review') FROM representative_applications"
            " WHERE claimed_by_id IS NOT NULL"
        ).fetchone()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def describe(latencies: list[float]) -> str:
    ms = [1000 * latency for latency in latencies] or [0.0]
    return (
        f"p50 {statistics.median(ms):6.2f} ms  p95 {percentile(ms, 0.95):6.2f} ms  "
        f"mean {statistics.fmean(ms):6.2f} ms  stddev {statistics.pstdev(ms):6.2f} ms"
    )


def explain_raw(url: str) -> list[str]:
    import psycopg

    statement = RAW_CLAIM.replace(":client_id", "0").rstrip().rstrip(";")
    with psycopg.connect(url) as connection:
        plan = [row[0] for row in connection.execute("EXPLAIN " + statement)]
        connection.rollback()
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url", default=DEFAULT_URL, help="a PRIVATE database: its schema is rebuilt"
    )
    parser.add_argument("--applications", type=int, default=1_000_000)
    parser.add_argument("--reviewers", type=int, default=60_000, help="at least the claims ours can make")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rebuild", action="store_true", help="rebuild the backlog even if it is there")
    args = parser.parse_args(argv)
    if shutil.which("pgbench") is None:
        parser.error("pgbench not found (Debian: apt-get install postgresql-client)")

    ensure_database(args.database_url)
    started = time.perf_counter()
    if args.rebuild or backlog_sizes(args.database_url) != (args.applications, args.reviewers):
        build_backlog(args.database_url, args.applications, args.reviewers)
        print(
            f"backlog built: {args.applications} submitted applications, {args.reviewers} reviewers "
            f"in {time.perf_counter() - started:.1f} s"
        )
    else:
        upgrade_schema(args.database_url)
        print(f"backlog reused: {args.applications} submitted applications, {args.reviewers} reviewers")

    print(f"{args.workers} workers, {args.seconds:.0f} s each; raw statement plan:")
    started = time.perf_counter()
    run_url = fresh_copy(args.database_url)
    print("  " + "\n  ".join(explain_raw(run_url)))
    print(f"fresh copy in {time.perf_counter() - started:.1f} s")
    ours = run_ours(run_url, args.workers, args.seconds, args.reviewers)
    ours_rows, ours_distinct, ours_events = table_state(run_url)
    ours_claims = len(ours["ids"])
    ours_rate = ours_claims / ours["seconds"]
    print(
        f"ours  {ours_rate:8.1f} claims/s  ({ours_claims} claims in {ours['seconds']:.1f} s)  "
        + describe(ours["latencies"])
    )
    if ours["exhausted"]:
        print(f"  note: {ours['exhausted']} workers ran out of reviewers; raise --reviewers")

    started = time.perf_counter()
    run_url = fresh_copy(args.database_url)
    print(f"fresh copy in {time.perf_counter() - started:.1f} s")
    raw = run_raw(run_url, args.workers, args.seconds)
    raw_rows, raw_distinct, _ = table_state(run_url)
    raw_rate = raw["processed"] / raw["seconds"]
    print(
        f"raw   {raw_rate:8.1f} claims/s  ({raw['processed']} claims in {raw['seconds']:.1f} s)  "
        + describe(raw["latencies"])
    )
    print("  pgbench: " + "\n  pgbench: ".join(raw["summary"]))

    drop_copy(args.database_url)
    ratio = ours_rate / raw_rate if raw_rate else 0.0
    print(f"ratio ours / raw claims/s: {ratio:.2f}")
    checks = [
        (f"claims/s ratio {ratio:.2f} >= {TARGET}", ratio >= TARGET),
        (
            f"ours: no duplicates ({ours_claims} claims, {len(set(ours['ids']))} distinct ids, "
            f"{ours_rows} claimed rows, {ours_events} in_review audit events)",
            ours_claims == len(set(ours["ids"])) == ours_rows == ours_distinct == ours_events,
        ),
        (
            f"raw: no duplicates ({raw['processed']} claims, {raw_rows} claimed rows)",
            raw["processed"] == raw_rows == raw_distinct,
        ),
    ]
    for label, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {label}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Policyholder imports in the back office: upload → run → job → progress, report, re-matching."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from flask_babel import force_locale
from rq import Queue, SimpleWorker
from sqlalchemy import func, select

from backoffice.audit.models import AuditEvent
from backoffice.customers import import_runs
from backoffice.customers.models import (
    AssociationStatus,
    ImportRun,
    ImportStatus,
    Policy,
    Policyholder,
)
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.jobs import RqJobQueue, job_path, run_in_transaction
from backoffice.staff.models import Role
from tests.conftest import csrf_token_from
from tests.factories import make_customer, make_staff, sign_in, signed_in_client
from tests.test_health import free_port

URL = "/admin/imports/"
HEADER = "tax_id,kind,name,email,phone,policy_number,product,policy_status,coverage"
MARIA = (
    "12345678Z,person,María García López,maria.garcia@correo.example,612345612,AUT-1,auto,active,Todo riesgo"
)
JOHN = "X1234567L,person,John Smith,john@mail.example,+34 622 000 111,VID-1,life,active,"
BAD_TAX_ID = "12345678A,person,Nadie,nadie@mail.example,,HOG-1,home,active,"
DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
CLERK_ROLES = [Role.ASSOCIATION_CLERK, Role.SUPERVISOR, Role.ADMIN]


def csv_bytes(*rows: str, header: str = HEADER) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def person_rows(count: int) -> list[str]:
    """`count` valid holders with one policy each and distinct DNIs."""
    rows = []
    for n in range(count):
        number = 10_000_000 + n
        rows.append(
            f"{number}{DNI_LETTERS[number % 23]},person,Persona {n},p{n}@mail.example,,POL-{n},auto,active,"
        )
    return rows


def upload(client, content: bytes | None, filename: str = "holders.csv", **kwargs):
    data = {"csrf_token": csrf_token_from(client, URL)}
    if content is not None:
        data["file"] = (io.BytesIO(content), filename)
    return client.post(URL, data=data, content_type="multipart/form-data", **kwargs)


def run_queued_jobs(app) -> None:
    """With rq (the PostgreSQL + Redis pass) the upload only queued the job: run it here, in
    this process, as a worker would. Inline, it has already run after the upload's commit."""
    queue = app.extensions["job_queue"]
    if isinstance(queue, RqJobQueue):
        SimpleWorker([queue.queue], connection=queue.connection).work(burst=True)


def runs() -> list[ImportRun]:
    db.session.expire_all()
    return list(db.session.execute(select(ImportRun).order_by(ImportRun.id)).scalars())


def the_run() -> ImportRun:
    (run,) = runs()
    return run


def count(model) -> int:
    return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def actions() -> list[str]:
    return list(db.session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())


def import_file(app, client, content: bytes, filename: str = "holders.csv") -> ImportRun:
    response = upload(client, content, filename)
    assert response.status_code == 302, response.get_data(as_text=True)
    run_queued_jobs(app)
    run = runs()[-1]
    assert response.headers["Location"] == f"/admin/imports/{run.id}/"
    return run


def clerk_reading(app, language: str):
    """A signed-in clerk who reads the back office in `language`."""
    user = make_staff(Role.ASSOCIATION_CLERK, language=language)
    client = app.test_client()
    assert sign_in(client, user.email).status_code == 302
    return client


@pytest.fixture
def clerk(app):
    client, user = signed_in_client(app, Role.ASSOCIATION_CLERK)
    return client


@pytest.fixture
def pending_matching(monkeypatch):
    """Until the matching engine answers, count calls; once it does, the real one runs."""
    calls = []
    try:
        from backoffice.customers import matching

        if hasattr(matching, "rematch_pending"):
            return None
    except ImportError:
        pass
    monkeypatch.setattr(import_runs, "_rematch_pending", lambda: calls.append(1) or 0)
    return calls


# --- who may ----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", CLERK_ROLES, ids=lambda role: role.value)
def test_clerks_supervisors_and_admins_see_the_upload_page(app, role):
    client, _ = signed_in_client(app, role)

    page = client.get(URL)

    assert page.status_code == 200
    assert 'enctype="multipart/form-data"' in page.get_data(as_text=True)


@pytest.mark.parametrize("role", [Role.CALL_AGENT, Role.LEGAL_REVIEWER], ids=lambda role: role.value)
def test_other_roles_can_neither_upload_nor_follow_nor_download(app, role, pending_matching):
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)
    run = import_file(app, clerk, csv_bytes(MARIA, BAD_TAX_ID))
    client, _ = signed_in_client(app, role)

    token = csrf_token_from(client, "/admin/")  # a valid token: refused for the role, not the form
    data = {"file": (io.BytesIO(csv_bytes(JOHN)), "x.csv"), "csrf_token": token}
    assert client.post(URL, data=data, content_type="multipart/form-data").status_code == 403
    for path in ("", "progress", "report"):
        assert client.get(f"{URL}{run.id}/{path}").status_code == 403
    assert len(runs()) == 1


def test_anonymous_progress_requests_are_sent_to_sign_in(app, client):
    assert client.get(f"{URL}1/progress").status_code == 302


# --- a good upload ------------------------------------------------------------------------------


def test_upload_stores_the_file_runs_the_job_and_reports_the_counts(app, clerk, pending_matching):
    content = csv_bytes(MARIA, JOHN, BAD_TAX_ID)

    run = import_file(app, clerk, content)

    assert run.status is ImportStatus.DONE
    assert (run.filename, run.size, run.bytes_read, run.rows_read) == (
        "holders.csv",
        len(content),
        len(content),
        3,
    )
    assert run.counts == {
        "rows_read": 3,
        "holders_created": 2,
        "holders_updated": 0,
        "holders_unchanged": 0,
        "policies_created": 2,
        "policies_updated": 0,
        "policies_unchanged": 0,
        "rejected": 1,
    }
    assert run.rejected == 1
    assert run.started_at is not None and run.finished_at >= run.started_at
    assert run.error is None
    assert (count(Policyholder), count(Policy)) == (2, 2)
    storage = app.extensions["storage"]
    with storage.open(run.storage_key) as stored:
        assert stored.read() == content
    logged = [a for a in actions() if a.startswith(("import_run.", "policyholders."))]
    assert logged == ["import_run.created", "policyholders.imported", "import_run.done"]
    created = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "import_run.created")
    ).scalar_one()
    assert created.subject_id == str(run.id)
    assert created.after["filename"] == "holders.csv" and len(created.after["sha256"]) == 64


def test_run_page_shows_the_numbers_and_the_report_link(app, clerk, pending_matching):
    run = import_file(app, clerk, csv_bytes(MARIA, BAD_TAX_ID))

    page = clerk.get(f"{URL}{run.id}/").get_data(as_text=True)

    assert f"Import #{run.id}: holders.csv" in page
    assert 'value="100"' in page
    assert "Policyholders created" in page
    assert f"{URL}{run.id}/report" in page
    assert "js/import-progress.js" in page
    assert "<script>" not in page.split("</nav>", 1)[-1]  # no inline script: the CSP forbids it


def test_list_shows_runs_newest_first(app, clerk, pending_matching):
    first = import_file(app, clerk, csv_bytes(MARIA), "first.csv")
    second = import_file(app, clerk, csv_bytes(JOHN), "second.csv")

    page = clerk.get(URL).get_data(as_text=True)

    assert page.index("second.csv") < page.index("first.csv")
    assert f"{URL}{first.id}/" in page and f"{URL}{second.id}/" in page


def test_importing_the_same_file_again_changes_nothing(app, clerk, pending_matching):
    content = csv_bytes(MARIA, JOHN)
    import_file(app, clerk, content)

    again = import_file(app, clerk, content)

    assert again.status is ImportStatus.DONE
    assert (again.counts["holders_unchanged"], again.counts["policies_unchanged"]) == (2, 2)
    assert (count(Policyholder), count(Policy)) == (2, 2)


def test_progress_is_committed_per_batch(app, clerk, pending_matching, monkeypatch):
    monkeypatch.setattr(import_runs, "BATCH_SIZE", 2)
    seen = []
    original = import_runs.import_policyholders

    def watching(lines, **kwargs):
        progress = kwargs["progress"]

        def spy(rows_done):
            progress(rows_done)
            with db.engine.connect() as other:  # what another connection (the page) sees
                rows, status = other.execute(select(ImportRun.rows_read, ImportRun.status)).one()
                holders = other.execute(select(func.count()).select_from(Policyholder)).scalar_one()
                seen.append((rows, status, holders))

        return original(lines, **{**kwargs, "progress": spy})

    monkeypatch.setattr(import_runs, "import_policyholders", watching)

    run = import_file(app, clerk, csv_bytes(*person_rows(5)))

    assert [(rows, status, holders) for rows, status, holders in seen] == [
        (2, "running", 2),
        (4, "running", 4),
        (5, "running", 5),
    ]
    assert (run.status, run.rows_read) == (ImportStatus.DONE, 5)


# --- the report ----------------------------------------------------------------------------------


def test_report_lists_rejected_rows_with_the_raw_row_and_download_is_audited(app, clerk, pending_matching):
    duplicate = "X1234567L,person,John Smith,john@mail.example,+34 622 000 111,VID-1,life,active,"
    run = import_file(app, clerk, csv_bytes(MARIA, BAD_TAX_ID, JOHN, duplicate))

    response = clerk.get(f"{URL}{run.id}/report")
    body = response.get_data(as_text=True)
    response.close()

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith(
        'attachment; filename="holders-rejected-rows.csv"'
    )
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == ["line", "code", "message", *HEADER.split(",")]
    assert [row[:2] for row in rows[1:]] == [["3", "tax_id_invalid"], ["5", "policy_duplicate"]]
    assert rows[1][3:] == BAD_TAX_ID.split(",")
    assert rows[2][3:] == duplicate.split(",")
    downloaded = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "import_run.report_downloaded")
    ).scalar_one()
    assert downloaded.subject_id == str(run.id) and downloaded.actor_kind == "staff"


def test_report_in_spanish_has_spanish_reasons_and_keeps_the_codes(app, clerk, pending_matching):
    run = import_file(app, clerk, csv_bytes(MARIA, BAD_TAX_ID))

    response = clerk_reading(app, "es").get(f"{URL}{run.id}/report")
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    response.close()

    assert rows[0][:3] == ["line", "code", "message"]
    assert rows[1][:3] == ["3", "tax_id_invalid", "«12345678A» no es un NIF, NIE ni CIF válido"]


def test_report_stored_before_reasons_were_neutral_keeps_its_messages(app, clerk):
    stored = csv_bytes(
        "3,tax_id_invalid,tax ID '12345678A' is not a valid NIF,12345678A", header="line,code,message,tax_id"
    )
    run = _stored_run(app, ImportStatus.DONE)
    run.report_key = app.extensions["storage"].put(io.BytesIO(stored), prefix="test", content_type="text/csv")
    db.session.commit()

    response = clerk_reading(app, "es").get(f"{URL}{run.id}/report")
    body = response.get_data()
    response.close()

    assert body.replace(b"\r\n", b"\n") == stored


def test_a_run_without_rejections_has_no_report(app, clerk, pending_matching):
    run = import_file(app, clerk, csv_bytes(MARIA))

    assert run.report_key is None
    assert clerk.get(f"{URL}{run.id}/report").status_code == 404
    assert "No rows were rejected" in clerk.get(f"{URL}{run.id}/").get_data(as_text=True)


# --- files that cannot be imported ---------------------------------------------------------------


def test_a_bad_header_fails_the_run_with_its_code_and_details(app, clerk, pending_matching):
    run = import_file(app, clerk, csv_bytes(MARIA, header="nif,kind,name"))

    assert run.status is ImportStatus.FAILED
    assert (run.error_code, run.error_details["unexpected"]) == ("bad_header", ["nif"])
    assert count(Policyholder) == 0
    failed = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "import_run.failed")
    ).scalar_one()
    assert (failed.after["error_code"], failed.after["error_details"]) == ("bad_header", run.error_details)


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("en", f"Line 1 must be the header {HEADER} (missing: tax_id,"),
        ("es", f"La línea 1 debe ser la cabecera {HEADER} (faltan: tax_id,"),
    ],
)
def test_a_bad_header_is_reported_in_the_viewers_language(app, clerk, pending_matching, language, message):
    run = import_file(app, clerk, csv_bytes(MARIA, header="nif,kind,name"))

    page = clerk_reading(app, language).get(f"{URL}{run.id}/").get_data(as_text=True)

    assert message in page


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("en", "The job queue could not be reached, so the import never started."),
        (
            "es",
            "No se ha podido contactar con la cola de trabajos, así que la importación no llegó a empezar.",
        ),
    ],
)
def test_a_failed_runs_page_speaks_the_viewers_language(app, language, message):
    client = clerk_reading(app, language)
    run = _stored_run(app, ImportStatus.FAILED)
    run.error_code, run.error_details = "not_queued", {}
    db.session.commit()

    page = client.get(f"{URL}{run.id}/").get_data(as_text=True)

    assert message in page


def test_the_progress_json_says_the_failure_in_the_viewers_language(app):
    client = clerk_reading(app, "es")
    run = _stored_run(app, ImportStatus.FAILED)
    run.error_code, run.error_details = "stopped", {"error": "disk full"}
    db.session.commit()

    body = client.get(f"{URL}{run.id}/progress").get_json()

    assert body["error"] == "La importación se detuvo: disk full"


def test_the_progress_json_gives_the_failure_code_for_scripts(app):
    client = clerk_reading(app, "es")
    run = _stored_run(app, ImportStatus.FAILED)
    run.error_code, run.error_details = "stopped", {"error": "disk full"}
    db.session.commit()

    body = client.get(f"{URL}{run.id}/progress").get_json()

    assert body["error_code"] == "stopped"


def test_a_run_that_failed_before_codes_shows_its_text_as_it_is(app):
    client = clerk_reading(app, "es")
    run = _stored_run(app, ImportStatus.FAILED)
    run.error = "The import stopped: connection reset"
    db.session.commit()

    page = client.get(f"{URL}{run.id}/").get_data(as_text=True)

    assert "The import stopped: connection reset" in page


def test_a_file_that_is_not_utf8_fails_the_run(app, clerk, pending_matching):
    run = import_file(app, clerk, csv_bytes(MARIA).replace("í".encode(), "í".encode("latin-1")))

    assert run.status is ImportStatus.FAILED
    assert run.error_code == "not_utf8"
    assert count(Policyholder) == 0


def test_a_failure_halfway_keeps_whole_batches_and_marks_the_run_failed(
    app, clerk, pending_matching, monkeypatch
):
    monkeypatch.setattr(import_runs, "BATCH_SIZE", 50)
    good = csv_bytes(*person_rows(300))  # well past the text decoder's first chunk
    content = good + "99999999R,person,Bad Ñame,,,POL-X,auto,active,\n".encode("latin-1")

    run = import_file(app, clerk, content)

    assert run.status is ImportStatus.FAILED
    assert run.error_code == "not_utf8"
    holders = count(Policyholder)
    assert 0 < holders <= 300 and holders % 50 == 0
    assert count(Policy) == holders
    assert run.rows_read == holders
    assert 0 < run.bytes_read <= run.size

    fixed = import_file(app, clerk, good)
    assert fixed.status is ImportStatus.DONE
    assert fixed.counts["holders_unchanged"] == holders
    assert count(Policyholder) == 300


def test_no_file_is_a_form_error_and_creates_nothing(app, clerk):
    response = upload(clerk, None)

    assert response.status_code == 400
    assert "Choose the CSV file to import." in response.get_data(as_text=True)
    assert runs() == []


@pytest.mark.parametrize(
    ("content", "filename", "message"),
    [
        (b"tax_id\n", "holders.xlsx", "Choose a .csv file"),
        (b"PK\x03\x04rest of a zip", "holders.csv", "Excel workbook"),
    ],
)
def test_a_file_of_the_wrong_type_is_a_form_error(app, clerk, content, filename, message):
    response = upload(clerk, content, filename)

    assert response.status_code == 400
    assert message in response.get_data(as_text=True)
    assert runs() == []
    assert "import_run.created" not in actions()


def test_a_file_over_the_limit_is_a_form_error(make_app):
    app = make_app(IMPORT_MAX_BYTES=1024)
    with app.app_context():
        client, _ = signed_in_client(app, Role.ADMIN)

        response = upload(client, csv_bytes(*person_rows(40)))

        assert response.status_code == 413
        assert "larger than the 1 KB" in response.get_data(as_text=True)
        assert runs() == []


def test_a_request_over_the_app_limit_gets_the_page_with_a_message(make_app):
    app = make_app()
    app.config["MAX_CONTENT_LENGTH"] = 2048  # what the CSRF check's form parsing enforces
    with app.app_context():
        client, _ = signed_in_client(app, Role.ADMIN)

        response = upload(client, csv_bytes(*person_rows(80)))

        assert response.status_code == 413
        assert "larger than the 2 KB" in response.get_data(as_text=True)
        assert runs() == []


def test_a_stream_over_the_limit_is_not_kept(app, clerk):
    from backoffice.staff.models import StaffUser

    user = db.session.execute(select(StaffUser)).scalars().first()
    storage = app.extensions["storage"]

    # Outside a request the service speaks Spanish: read its message in English.
    with pytest.raises(import_runs.ImportRefused, match="larger than"), force_locale("en"):
        import_runs.start_import(
            io.BytesIO(csv_bytes(*person_rows(40))),
            filename="big.csv",
            started_by=user,
            actor=import_runs.Actor.staff(user),
            storage=storage,
            max_size=1024,
        )

    assert not any(path.is_file() for path in storage.root.rglob("*"))


# --- one run at a time -----------------------------------------------------------------------------


def _stored_run(app, status: ImportStatus, *, age: timedelta = timedelta(0)) -> ImportRun:
    from backoffice.staff.models import StaffUser

    staff = db.session.execute(select(StaffUser).limit(1)).scalar_one()
    when = utcnow() - age
    run = ImportRun(
        filename="earlier.csv",
        storage_key="policyholder-imports/2026/01/earlier",
        size=1000,
        status=status,
        bytes_read=250,
        rows_read=10,
        started_by_id=staff.id,
        created_at=when,
        started_at=when if status is ImportStatus.RUNNING else None,
    )
    db.session.add(run)
    db.session.commit()
    return run


def test_a_second_run_is_refused_while_one_is_running(app, clerk):
    running = _stored_run(app, ImportStatus.RUNNING)

    response = upload(clerk, csv_bytes(MARIA))

    assert response.status_code == 409
    assert f"Import #{running.id} (earlier.csv) is still running" in response.get_data(as_text=True)
    assert [run.id for run in runs()] == [running.id]
    assert count(Policyholder) == 0


def test_an_abandoned_run_does_not_block_imports_for_ever(app, clerk, pending_matching):
    stuck = _stored_run(app, ImportStatus.RUNNING, age=timedelta(hours=2))

    response = upload(clerk, csv_bytes(MARIA))
    run_queued_jobs(app)

    assert response.status_code == 302
    old, new = runs()
    assert (old.id, old.status) == (stuck.id, ImportStatus.FAILED)
    assert old.error_code == "abandoned"
    assert new.status is ImportStatus.DONE


def test_a_job_delivered_twice_imports_once(app, clerk, pending_matching):
    run = import_file(app, clerk, csv_bytes(MARIA))
    events = len(actions())

    run_in_transaction(job_path(import_runs.run_import), run.id)

    assert len(actions()) == events
    assert the_run().status is ImportStatus.DONE


# --- progress JSON ---------------------------------------------------------------------------------


def test_progress_json_of_a_finished_run(app, clerk, pending_matching):
    run = import_file(app, clerk, csv_bytes(MARIA, BAD_TAX_ID))

    response = clerk.get(f"{URL}{run.id}/progress")

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json() == {
        "id": run.id,
        "status": "done",
        "size": run.size,
        "bytes_read": run.size,
        "rows_read": 2,
        "percent": 100,
        "rejected": 1,
        "rematched": run.rematched,
        "error": None,
        "error_code": None,
        "finished": True,
    }


def test_progress_json_of_a_running_run(app, clerk):
    running = _stored_run(app, ImportStatus.RUNNING)

    body = clerk.get(f"{URL}{running.id}/progress").get_json()

    assert (body["status"], body["percent"], body["rows_read"], body["finished"]) == (
        "running",
        25,
        10,
        False,
    )
    assert clerk.get(f"{URL}{running.id + 1}/progress").status_code == 404


# --- the job queue ---------------------------------------------------------------------------------


def test_with_rq_the_upload_only_queues_the_job_and_a_worker_runs_it(make_app, redis_url, pending_matching):
    app = make_app(REDIS_URL=redis_url)
    with app.app_context():
        client, _ = signed_in_client(app, Role.SUPERVISOR)

        response = upload(client, csv_bytes(MARIA))

        assert response.status_code == 302
        assert the_run().status is ImportStatus.QUEUED
        queue = Queue("default", connection=app.extensions["job_queue"].connection)
        assert queue.count == 1
        assert "queued" in client.get(f"{URL}{the_run().id}/").get_data(as_text=True)

        SimpleWorker([queue], connection=queue.connection).work(burst=True)

        assert the_run().status is ImportStatus.DONE
        assert count(Policyholder) == 1


def test_when_the_queue_is_unreachable_the_run_says_so(make_app, pending_matching):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    with app.app_context():
        client, _ = signed_in_client(app, Role.ADMIN)

        response = upload(client, csv_bytes(MARIA))

        assert response.status_code == 302
        run = the_run()
        assert run.status is ImportStatus.FAILED
        assert run.error_code == "not_queued"


# --- re-matching ----------------------------------------------------------------------------------


def test_rematching_runs_after_the_import(app, clerk, monkeypatch):
    calls = []
    monkeypatch.setattr(import_runs, "_rematch_pending", lambda: calls.append(count(Policyholder)) or 7)

    run = import_file(app, clerk, csv_bytes(MARIA, JOHN))

    assert calls == [2]  # after the holders were committed
    assert run.rematched == 7
    done = db.session.execute(select(AuditEvent).where(AuditEvent.action == "import_run.done")).scalar_one()
    assert done.after["rematched"] == 7


def test_a_pending_account_is_linked_after_the_import(app, clerk):
    account = make_customer("maria.garcia@correo.example")
    assert account.association_status is AssociationStatus.PENDING

    run = import_file(app, clerk, csv_bytes(MARIA))

    db.session.refresh(account)
    assert account.association_status is AssociationStatus.LINKED
    assert account.policyholder.tax_id == "12345678Z"
    assert run.rematched >= 1

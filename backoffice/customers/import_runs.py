"""Policyholder imports started from the back office: upload → `ImportRun` → job → report.

The upload is streamed into the storage port (never held in memory whole) and a run row is
written in the same transaction as its audit event; the job is queued after commit. The job
streams the file back from storage through `import_policyholders`, and commits once per
importer batch together with the run's progress (`bytes_read`, `rows_read`): a failure halfway
leaves a consistent prefix of whole batches and the run marked failed with the error, and
running the same file again is harmless because the importer upserts. At the end the rejected
rows are written to storage as a CSV report (line, code, details, then the row as it was in
the file), pending portal accounts are re-matched against the new records, and the run is
marked done with its counts.

Failures and rejection reasons are stored language-neutral (a code and its details as JSON) and
said in the reader's language when shown: `error_message` for the run page, `open_report` for
the report, whose details column becomes a message in the downloader's language.

Only one run may be queued or running at a time; a run that has shown no sign of life for
`ABANDONED_AFTER` (its worker was killed, its job was lost) is marked failed instead of
blocking imports for ever.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, Any

from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import select, update

from backoffice import audit
from backoffice.audit import Actor
from backoffice.customers import importing, matching
from backoffice.customers.importing import ImportFileError, ImportReport, import_policyholders
from backoffice.customers.models import ImportRun, ImportStatus
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.jobs import enqueue_after_commit
from backoffice.staff.models import StaffUser
from backoffice.storage import CHUNK_SIZE, DocumentStorage

log = logging.getLogger(__name__)

UPLOAD_PREFIX = "policyholder-imports"
REPORT_PREFIX = "policyholder-import-reports"
CSV_TYPE = "text/csv"
ACTIVE_STATUSES = (ImportStatus.QUEUED, ImportStatus.RUNNING)
ABANDONED_AFTER = timedelta(hours=1)
IMPORT_JOB_TIMEOUT = 2 * 3600  # seconds: files of millions of rows outlast the default job timeout
# Rows per importer batch: one commit (with the run's progress) per batch.
BATCH_SIZE = importing.BATCH_SIZE
REPORT_COLUMNS = ("line", "code", "message")
# The stored report has the reason's details (JSON) where the download has its message; reports
# stored before reasons were kept neutral have the English message already and are sent as they are.
STORED_REPORT_COLUMNS = ("line", "code", "details")
# Bytes pulled from storage at a time while importing: small enough for the progress to move.
READ_BUFFER = 64 * 1024
# First bytes of files people upload instead of CSV: a workbook is not a CSV with another name.
_NOT_CSV = {
    b"PK\x03\x04": _l(
        "That file is an Excel workbook (.xlsx) or another zip file, not CSV. "
        "Save it as “CSV UTF-8” and upload that."
    ),
    b"\xd0\xcf\x11\xe0": _l(
        "That file is an old Excel workbook (.xls), not CSV. Save it as “CSV UTF-8” and upload that."
    ),
    b"%PDF": _l("That file is a PDF, not CSV. Save it as “CSV UTF-8” and upload that."),
}
# Why a run failed, besides the file's own errors (`importing.file_error_message`).
_FAILURES = {
    "abandoned": _l(
        "Abandoned: the job stopped without finishing (its worker stopped or the job was lost). "
        "Upload the file again; importing it twice is harmless."
    ),
    "not_queued": _l(
        "The job queue could not be reached, so the import never started. Upload the file again."
    ),
    "stopped": _l("The import stopped: %(error)s"),
    "not_finished": _l("Imported, but the run could not be finished: %(error)s"),
}


class ImportRefused(ValueError):
    """The upload cannot start a run (wrong file type, another run in progress); nothing was kept."""


class ImportBusy(ImportRefused):
    """Another run is queued or running: one import at a time."""


@dataclass(frozen=True)
class Progress:
    """What the run page and its JSON endpoint show."""

    id: int
    status: str
    size: int
    bytes_read: int
    rows_read: int
    percent: int
    rejected: int
    rematched: int
    error: str | None
    error_code: str | None  # stable, for scripts; `error` is said in the reader's language
    finished: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "size": self.size,
            "bytes_read": self.bytes_read,
            "rows_read": self.rows_read,
            "percent": self.percent,
            "rejected": self.rejected,
            "rematched": self.rematched,
            "error": self.error,
            "error_code": self.error_code,
            "finished": self.finished,
        }


# --- starting a run (the upload) ------------------------------------------------------------------


def start_import(
    stream: IO[bytes],
    *,
    filename: str,
    started_by: StaffUser,
    actor: Actor,
    storage: DocumentStorage,
    max_size: int | None = None,
) -> ImportRun:
    """Store the uploaded CSV, write the run and its audit event, and queue the job after commit.

    Refuses (`ImportRefused`) a file that is plainly not CSV or larger than `max_size`, and any
    upload while another run is queued or running (`ImportBusy`). The caller commits (which
    queues the job) or rolls back; a refused upload's stored file is deleted here."""
    name = display_name(filename)
    if not name.lower().endswith(".csv"):
        raise ImportRefused(_("Choose a .csv file (CSV, UTF-8, with the header row)."))
    head = _peek(stream, 4)
    for magic, message in _NOT_CSV.items():
        if head.startswith(magic):
            raise ImportRefused(str(message))
    _fail_abandoned(actor)
    _refuse_if_busy()

    hashing = _CountingReader(stream, sha256=True)
    with io.BufferedReader(hashing, CHUNK_SIZE) as buffered:
        key = storage.put(buffered, prefix=UPLOAD_PREFIX, content_type=CSV_TYPE)
    if max_size is not None and hashing.count > max_size:
        storage.delete(key)
        raise ImportRefused(too_large_message(max_size))
    run = ImportRun(
        filename=name,
        storage_key=key,
        size=hashing.count,
        status=ImportStatus.QUEUED,
        started_by_id=started_by.id,
    )
    db.session.add(run)
    db.session.flush()
    # The audit chain head is locked from here to commit, so two uploads cannot both pass the
    # check below: the second one waits, then sees the first run (PostgreSQL, read committed).
    audit.record(
        "import_run.created",
        actor=actor,
        subject_type="import_run",
        subject_id=run.id,
        after={"filename": name, "size": run.size, "sha256": hashing.hexdigest()},
    )
    try:
        _refuse_if_busy(but=run.id)
    except ImportRefused:
        storage.delete(key)
        raise
    run_id = run.id
    # A million-row file takes longer than the default five minutes.
    enqueue_after_commit(
        run_import, run_id, on_failure=lambda: _not_queued(run_id), timeout=IMPORT_JOB_TIMEOUT
    )
    return run


def too_large_message(max_size: int) -> str:
    limit = f"{max_size / (1024 * 1024):.0f} MB" if max_size >= 1024 * 1024 else f"{max_size / 1024:.0f} KB"
    return _(
        "The file is larger than the %(limit)s an upload may have. "
        "Split it, or import it on the server with “flask policyholders import”.",
        limit=limit,
    )


def display_name(filename: str) -> str:
    """The name the browser sent, without any folder part; shown to staff and used for downloads."""
    return filename.replace("\\", "/").rsplit("/", 1)[-1].strip()[:255]


def active_run() -> ImportRun | None:
    """The run that is queued or running now, if any."""
    return db.session.execute(
        select(ImportRun).where(ImportRun.status.in_(ACTIVE_STATUSES)).order_by(ImportRun.id).limit(1)
    ).scalar_one_or_none()


def _refuse_if_busy(but: int | None = None) -> None:
    query = select(ImportRun).where(ImportRun.status.in_(ACTIVE_STATUSES))
    if but is not None:
        query = query.where(ImportRun.id != but)
    busy = db.session.execute(query.order_by(ImportRun.id).limit(1)).scalar_one_or_none()
    if busy is None:
        return
    if busy.status is ImportStatus.QUEUED:
        message = _(
            "Import #%(id)s (%(filename)s) is still queued. Wait until it finishes, then upload the next file.",
            id=busy.id,
            filename=busy.filename,
        )
    else:
        message = _(
            "Import #%(id)s (%(filename)s) is still running. Wait until it finishes, then upload the next file.",
            id=busy.id,
            filename=busy.filename,
        )
    raise ImportBusy(message)


def _fail_abandoned(actor: Actor) -> None:
    """Queued or running runs with no sign of life for `ABANDONED_AFTER` are failed, not waited for."""
    cutoff = utcnow() - ABANDONED_AFTER
    stale = db.session.execute(
        select(ImportRun).where(
            ImportRun.status.in_(ACTIVE_STATUSES),
            db.func.coalesce(ImportRun.started_at, ImportRun.created_at) < cutoff,
        )
    ).scalars()
    for run in stale:
        _mark_failed(run, "abandoned", {}, actor)


def _not_queued(run_id: int) -> None:
    """The job queue was unreachable after commit: say so on the run instead of leaving it queued.

    Its own short transaction, as the outbox does: this runs while the caller's commit relays."""
    with db.engine.begin() as connection:
        connection.execute(
            update(ImportRun)
            .where(ImportRun.id == run_id, ImportRun.status == ImportStatus.QUEUED)
            .values(
                status=ImportStatus.FAILED,
                error_code="not_queued",
                error_details={},
                finished_at=utcnow(),
            )
        )


# --- the job --------------------------------------------------------------------------------------


def run_import(run_id: int) -> None:
    """Job: import a queued run's file, committing per batch; then the report, re-matching, done.

    A run that is not queued any more (already started by another delivery, finished, failed)
    is left alone, so a job delivered twice imports once."""
    run = db.session.execute(
        select(ImportRun)
        .where(ImportRun.id == run_id, ImportRun.status == ImportStatus.QUEUED)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if run is None:
        return
    staff = db.session.get(StaffUser, run.started_by_id)
    actor = Actor.staff(staff) if staff is not None else Actor.system("policyholders-import")
    run.status, run.started_at = ImportStatus.RUNNING, utcnow()
    db.session.commit()

    storage: DocumentStorage = current_app.extensions["storage"]
    try:
        report = _import_file(run_id, storage, actor)
    except ImportFileError as exc:
        _fail(run_id, exc.code, exc.details, actor)
        return
    except Exception as exc:
        _fail(run_id, "stopped", {"error": str(exc)}, actor)
        raise

    try:
        run = db.session.get(ImportRun, run_id)
        run.report_key = _write_report(run, report, storage)
        run.rows_read, run.bytes_read = report.rows_read, run.size
        run.counts, run.rejected = report.counts(), len(report.rejected)
        db.session.commit()  # the last batch, the importer's audit event and the counts
        run.rematched = _rematch_pending()
        run.status, run.finished_at = ImportStatus.DONE, utcnow()
        audit.record(
            "import_run.done",
            actor=actor,
            subject_type="import_run",
            subject_id=run.id,
            after={**run.counts, "rematched": run.rematched},
        )
        db.session.commit()
    except Exception as exc:
        _fail(run_id, "not_finished", {"error": str(exc)}, actor)
        raise


def _import_file(run_id: int, storage: DocumentStorage, actor: Actor) -> ImportReport:
    run = db.session.get(ImportRun, run_id)
    filename, key = run.filename, run.storage_key

    with _text(storage.open(key)) as (text, counter):

        def progress(rows_done: int) -> None:
            # The importer calls this after flushing each batch: commit the batch with the numbers.
            db.session.execute(
                update(ImportRun)
                .where(ImportRun.id == run_id)
                .values(rows_read=rows_done, bytes_read=counter.count)
            )
            db.session.commit()

        return import_policyholders(
            text, actor=actor, progress=progress, source=filename, batch_size=BATCH_SIZE
        )


def _fail(run_id: int, code: str, details: dict[str, Any], actor: Actor) -> None:
    """Throw away the unfinished batch, keep the committed prefix, and mark the run failed."""
    db.session.rollback()
    run = db.session.get(ImportRun, run_id)
    if run is None:
        return
    _mark_failed(run, code, details, actor)
    db.session.commit()


def _mark_failed(run: ImportRun, code: str, details: dict[str, Any], actor: Actor) -> None:
    run.status, run.finished_at = ImportStatus.FAILED, utcnow()
    run.error_code, run.error_details = code, details
    audit.record(
        "import_run.failed",
        actor=actor,
        subject_type="import_run",
        subject_id=run.id,
        after={
            "error_code": code,
            "error_details": details,
            "rows_read": run.rows_read,
            "bytes_read": run.bytes_read,
        },
    )


def error_message(run: ImportRun) -> str | None:
    """Why the run failed, in the current locale; runs failed before codes were stored keep their text."""
    if run.error_code is None:
        return run.error
    details = run.error_details or {}
    template = _FAILURES.get(run.error_code)
    if template is None:
        return importing.file_error_message(run.error_code, details)
    return str(template) % details


def _rematch_pending() -> int:
    """New and corrected records may now match accounts that were waiting for a clerk."""
    return matching.rematch_pending(now=utcnow())


# --- the report of rejected rows -----------------------------------------------------------------


def _write_report(run: ImportRun, report: ImportReport, storage: DocumentStorage) -> str | None:
    """`line,code,details` and then the rejected row as it was in the file (its own columns)."""
    if not report.rejected:
        return None
    by_line: dict[int, list] = {}
    for rejection in report.rejected:
        by_line.setdefault(rejection.line, []).append(rejection)
    with tempfile.TemporaryFile() as spool:
        with _csv_writer(spool) as writer, _text(storage.open(run.storage_key)) as (text, _counter):
            for line, cells in _records(text):
                if line == 1:
                    writer.writerow([*STORED_REPORT_COLUMNS, *(cell.strip() for cell in cells)])
                for rejection in by_line.pop(line, ()):
                    writer.writerow([rejection.line, rejection.code, _json(rejection.details), *cells])
            for rejections in by_line.values():  # not expected: every rejection names a line of the file
                writer.writerows([r.line, r.code, _json(r.details)] for r in rejections)
        spool.seek(0)
        return storage.put(spool, prefix=REPORT_PREFIX, content_type=CSV_TYPE)


@contextmanager
def _csv_writer(spool: IO[bytes]) -> Iterator[Any]:
    """A UTF-8 CSV writer on a binary spool, detached at the end so the spool stays open."""
    text = io.TextIOWrapper(spool, encoding="utf-8", newline="", write_through=True)
    yield csv.writer(text)
    text.flush()
    text.detach()


def _json(details: dict[str, Any]) -> str:
    return json.dumps(details, ensure_ascii=False, sort_keys=True)


def _localised_report(stored: IO[bytes]) -> IO[bytes]:
    """The stored report with each reason's details replaced by its message in the current locale."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 (returned open; the response closes it)
    try:
        with _csv_writer(spool) as writer, _text(stored) as (text, _counter):
            records = csv.reader(text)
            header = next(records, [])
            if tuple(header[:3]) != STORED_REPORT_COLUMNS:  # stored before reasons were kept neutral
                writer.writerow(header)
                writer.writerows(records)
            else:
                writer.writerow([*REPORT_COLUMNS, *header[3:]])
                for line, code, details, *cells in records:
                    message = importing.rejection_message(code, json.loads(details))
                    writer.writerow([line, code, message, *cells])
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def report_filename(run: ImportRun) -> str:
    stem = run.filename[:-4] if run.filename.lower().endswith(".csv") else run.filename
    return f"{stem or 'import'}-rejected-rows.csv"


def _records(text: IO[str]) -> Iterator[tuple[int, list[str]]]:
    """The file's records numbered as the importer numbers them (header = line 1)."""

    def without_bom() -> Iterator[str]:
        for number, piece in enumerate(text):
            yield piece.removeprefix("\ufeff") if number == 0 else piece

    yield from enumerate(csv.reader(without_bom()), start=1)


# --- what the pages show ---------------------------------------------------------------------------


def progress_of(run: ImportRun) -> Progress:
    finished = run.status in (ImportStatus.DONE, ImportStatus.FAILED)
    if run.status is ImportStatus.DONE:
        percent = 100
    elif run.size:
        percent = min(int(run.bytes_read * 100 / run.size), 100 if finished else 99)
    else:
        percent = 0
    return Progress(
        id=run.id,
        status=run.status.value,
        size=run.size,
        bytes_read=run.bytes_read,
        rows_read=run.rows_read,
        percent=percent,
        rejected=run.rejected,
        rematched=run.rematched,
        error=error_message(run),
        error_code=run.error_code,
        finished=finished,
    )


def recent_runs(limit: int = 100) -> list[ImportRun]:
    return list(
        db.session.execute(
            select(ImportRun).order_by(ImportRun.created_at.desc(), ImportRun.id.desc()).limit(limit)
        ).scalars()
    )


def open_report(run: ImportRun, *, actor: Actor, storage: DocumentStorage) -> IO[bytes]:
    """The rejected-rows CSV, for download, with its reasons in the current locale (the
    downloader's); viewing it is audited (it holds customers' details)."""
    if not run.report_key:
        raise LookupError("This import has no report of rejected rows.")
    stream = _localised_report(storage.open(run.report_key))
    audit.record("import_run.report_downloaded", actor=actor, subject_type="import_run", subject_id=run.id)
    return stream


# --- streams -------------------------------------------------------------------------------------


class _CountingReader(io.RawIOBase):
    """Reads from any `.read(n)` stream (a file, an S3 body) and counts (and maybe hashes) bytes."""

    def __init__(self, raw: IO[bytes], *, sha256: bool = False) -> None:
        self._raw = raw
        self.count = 0
        self._hash = hashlib.sha256() if sha256 else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self.count += size
        if self._hash is not None:
            self._hash.update(data)
        return size

    def hexdigest(self) -> str:
        return self._hash.hexdigest() if self._hash is not None else ""

    def close(self) -> None:
        # The upload's stream belongs to the request; storage streams are closed by `_text`.
        super().close()


class _text:  # noqa: N801 (used as a context manager, like open())
    """A stored file as UTF-8 text (strict: a bad byte is an `ImportFileError` in the importer),
    with a counter of the bytes read so far for progress."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.counter = _CountingReader(raw)
        self.text = io.TextIOWrapper(
            io.BufferedReader(self.counter, CHUNK_SIZE), encoding="utf-8", newline=""
        )

    def __enter__(self) -> tuple[IO[str], _CountingReader]:
        return self.text, self.counter

    def __exit__(self, *exc: object) -> None:
        try:
            self.text.close()
        finally:
            self._raw.close()


def _peek(stream: IO[bytes], size: int) -> bytes:
    """The first bytes of an upload, leaving the stream where it was (uploads are seekable)."""
    try:
        position = stream.tell()
        head = stream.read(size)
        stream.seek(position)
    except (OSError, AttributeError, io.UnsupportedOperation):
        return b""
    return head

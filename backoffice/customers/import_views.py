"""Policyholder imports in the back office: upload a CSV, follow its run, download its report.

Views parse and render; the rules (file checks, one run at a time, the job) live in
`customers/import_runs.py`."""

from __future__ import annotations

from flask import abort, current_app, flash, jsonify, redirect, request, send_file, url_for
from flask_admin import expose
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from sqlalchemy import select
from werkzeug.exceptions import RequestEntityTooLarge

from backoffice.admin import RoleBaseView
from backoffice.customers import import_runs
from backoffice.customers.models import ImportRun
from backoffice.extensions import db
from backoffice.staff.models import Role, StaffUser
from backoffice.storage import StorageError, content_disposition
from backoffice.web import local, staff_actor

STATUS_STYLES = {"queued": "secondary", "running": "info", "done": "success", "failed": "danger"}
STATUS_LABELS = {
    "queued": _l("queued"),
    "running": _l("running"),
    "done": _l("done"),
    "failed": _l("failed"),
}
COUNT_LABELS = {
    "rows_read": _l("Rows read"),
    "holders_created": _l("Policyholders created"),
    "holders_updated": _l("Policyholders updated"),
    "holders_unchanged": _l("Policyholders unchanged"),
    "policies_created": _l("Policies created"),
    "policies_updated": _l("Policies updated"),
    "policies_unchanged": _l("Policies unchanged"),
    "rejected": _l("Rows rejected"),
}


DEFAULT_LIMIT = 35 * 1024 * 1024


class ImportUploadForm(FlaskForm):
    file = FileField(_l("CSV file"), validators=[FileRequired(_l("Choose the CSV file to import."))])


def upload_limit() -> int:
    """Largest upload accepted: `IMPORT_MAX_BYTES` if set, capped by the app's `MAX_CONTENT_LENGTH`
    (the whole request is refused above that before any view runs)."""
    config = current_app.config
    limits = [
        int(value) for value in (config.get("IMPORT_MAX_BYTES"), config.get("MAX_CONTENT_LENGTH")) if value
    ]
    return min(limits, default=DEFAULT_LIMIT)


def _size(size: int) -> str:
    return f"{size / (1024 * 1024):.0f} MB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KB"


class ImportView(RoleBaseView):
    """Association clerks, supervisors and admins import the core system's policyholder file."""

    allowed_roles = (Role.ASSOCIATION_CLERK, Role.SUPERVISOR, Role.ADMIN)

    def _run(self, run_id: int) -> ImportRun:
        run = db.session.get(ImportRun, run_id)
        if run is None:
            abort(404)
        return run

    def _index(self, form: ImportUploadForm, error: str | None = None, status: int = 200):
        runs = import_runs.recent_runs()
        ids = {run.started_by_id for run in runs}
        staff = (
            {
                user.id: user
                for user in db.session.execute(select(StaffUser).where(StaffUser.id.in_(ids))).scalars()
            }
            if ids
            else {}
        )
        page = self.render(
            "admin/imports/index.html",
            form=form,
            error=error,
            runs=runs,
            staff=staff,
            active=import_runs.active_run(),
            limit=_size(upload_limit()),
            styles=STATUS_STYLES,
            status_labels=STATUS_LABELS,
            progress_of=import_runs.progress_of,
            local=local,
        )
        return page, status

    def create_blueprint(self, admin):
        """A request over the app's size limit is refused while the CSRF check reads the form,
        before this view runs: answer it with the upload page and a clear message, not a bare 413."""
        blueprint = super().create_blueprint(admin)
        blueprint.register_error_handler(RequestEntityTooLarge, self._too_large)
        return blueprint

    def _too_large(self, _error: RequestEntityTooLarge):
        return self._index(
            ImportUploadForm(formdata=None), import_runs.too_large_message(upload_limit()), 413
        )

    @expose("/", methods=("GET", "POST"))
    def index(self):
        if request.method == "GET":
            return self._index(ImportUploadForm(formdata=None))
        if request.content_length and request.content_length > upload_limit():
            return self._too_large(RequestEntityTooLarge())
        form = ImportUploadForm()
        if not form.validate_on_submit():
            return self._index(form, status=400)
        upload = form.file.data
        try:
            run = import_runs.start_import(
                upload.stream,
                filename=upload.filename or "",
                started_by=current_user,
                actor=staff_actor(),
                storage=current_app.extensions["storage"],
                max_size=upload_limit(),
            )
            db.session.commit()
        except import_runs.ImportRefused as exc:
            db.session.rollback()
            return self._index(form, str(exc), 409 if isinstance(exc, import_runs.ImportBusy) else 400)
        except StorageError:
            db.session.rollback()
            return self._index(form, _("The file could not be stored just now; try again in a minute."), 503)
        flash(_("Import #%(id)s of %(filename)s has started.", id=run.id, filename=run.filename), "success")
        return redirect(url_for(".run", run_id=run.id))

    @expose("/<int:run_id>/")
    def run(self, run_id: int):
        run = self._run(run_id)
        return self.render(
            "admin/imports/run.html",
            run=run,
            progress=import_runs.progress_of(run),
            started_by=db.session.get(StaffUser, run.started_by_id),
            styles=STATUS_STYLES,
            status_labels=STATUS_LABELS,
            count_labels=COUNT_LABELS,
            local=local,
        )

    @expose("/<int:run_id>/progress")
    def progress(self, run_id: int):
        response = jsonify(import_runs.progress_of(self._run(run_id)).as_json())
        response.headers["Cache-Control"] = "no-store"
        return response

    @expose("/<int:run_id>/report")
    def report(self, run_id: int):
        run = self._run(run_id)
        try:
            stream = import_runs.open_report(
                run, actor=staff_actor(), storage=current_app.extensions["storage"]
            )
        except LookupError:
            abort(404)
        except StorageError:
            db.session.rollback()
            abort(503)
        db.session.commit()
        response = send_file(stream, mimetype=import_runs.CSV_TYPE, max_age=0)
        response.headers["Content-Disposition"] = content_disposition(
            import_runs.report_filename(run), inline=False
        )
        response.headers["Cache-Control"] = "private, no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

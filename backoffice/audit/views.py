"""The audit log in the back office: read-only, filterable, with a chain check."""

from flask import flash, redirect, url_for
from flask_admin import expose

from backoffice.admin import RoleView, time_filters
from backoffice.audit.models import AuditEvent
from backoffice.audit.service import verify_chain
from backoffice.staff.models import Role


class AuditEventView(RoleView):
    allowed_roles = (Role.ADMIN, Role.SUPERVISOR)
    can_create = False
    can_edit = False
    can_delete = False
    can_view_details = True
    list_template = "admin/audit_list.html"
    column_list = (
        "seq",
        "occurred_at",
        "actor_kind",
        "actor_label",
        "action",
        "subject_type",
        "subject_id",
        "ip",
    )
    column_default_sort = ("seq", True)
    column_searchable_list = ("action", "actor_label", "subject_id")
    column_filters = (
        "actor_kind",
        "actor_id",
        "actor_label",
        "action",
        "subject_type",
        "subject_id",
        *time_filters(AuditEvent.occurred_at, "When"),
    )
    column_labels = {
        "seq": "#",
        "occurred_at": "When (UTC)",
        "actor_label": "Actor",
        "actor_kind": "Actor kind",
        "ip": "IP",
    }
    column_details_list = (
        "seq",
        "occurred_at",
        "actor_kind",
        "actor_id",
        "actor_label",
        "action",
        "subject_type",
        "subject_id",
        "before",
        "after",
        "ip",
        "prev_hash",
        "hash",
    )

    def __init__(self, database, **kwargs):
        super().__init__(AuditEvent, database, **kwargs)

    @expose("/verify/", methods=("POST",))
    def verify(self):
        report = verify_chain()
        if report.ok:
            flash(f"Audit log intact: {report.checked} events verified.", "success")
        else:
            flash(f"Audit log broken at event {report.broken_at}: {report.problem}.", "error")
        return redirect(url_for(".index_view"))

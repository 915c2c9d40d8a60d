"""The audit log in the back office: read-only, filterable, with a chain check."""

from flask import flash, redirect, url_for
from flask_admin import expose
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from markupsafe import Markup

from backoffice.admin import RoleView, time_filters
from backoffice.audit.models import AuditEvent
from backoffice.audit.service import verify_chain
from backoffice.staff.models import Role


def _subject_with_evidence(view, context, model: AuditEvent, name: str) -> Markup | str:
    """An application's events lead to its evidence bundle: the audit log is the one page where
    admins, who may take the bundle but not open the review queue, find applications."""
    if model.subject_type != "representative_application" or not model.subject_id:
        return model.subject_id or ""
    link = url_for("review.evidence_bundle", application_id=model.subject_id)
    return Markup('{id} <a class="small ml-1" href="{link}" data-testid="evidence-link">{label}</a>').format(
        id=model.subject_id, link=link, label=_("evidence bundle (ZIP)")
    )


class AuditEventView(RoleView):
    allowed_roles = (Role.ADMIN, Role.SUPERVISOR)
    can_create = False
    can_edit = False
    can_delete = False
    can_view_details = True
    list_template = "admin/audit_list.html"
    # Millions of events: no count(*) per page view, only previous/next; the default order
    # (seq, newest first) is the primary key, so a page is read straight from the index.
    simple_list_pager = True
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
        *time_filters(AuditEvent.occurred_at, _l("When")),
    )
    column_formatters = {"subject_id": _subject_with_evidence}
    column_labels = {
        "seq": "#",
        "occurred_at": _l("When (UTC)"),
        "actor_kind": _l("Actor kind"),
        "actor_id": _l("Actor ID"),
        "actor_label": _l("Actor"),
        "action": _l("Action"),
        "subject_type": _l("Subject type"),
        "subject_id": _l("Subject ID"),
        "before": _l("Before"),
        "after": _l("After"),
        "ip": _l("IP"),
        "chain": _l("Chain"),
        "chain_seq": _l("Position in chain"),
        "prev_hash": _l("Previous hash"),
        "hash": _l("Hash"),
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
        "chain",
        "chain_seq",
        "prev_hash",
        "hash",
    )

    def __init__(self, database, **kwargs):
        super().__init__(AuditEvent, database, **kwargs)

    @expose("/verify/", methods=("POST",))
    def verify(self):
        report = verify_chain()
        if report.ok:
            flash(
                ngettext(
                    "Audit log intact: %(num)d event verified.",
                    "Audit log intact: %(num)d events verified.",
                    report.checked,
                ),
                "success",
            )
        elif report.broken_at is None:
            flash(_("Audit log broken: %(problem)s.", problem=report.problem), "error")
        else:
            flash(
                _(
                    "Audit log broken at event %(seq)s: %(problem)s.",
                    seq=report.broken_at,
                    problem=report.problem,
                ),
                "error",
            )
        return redirect(url_for(".index_view"))

"""The legal review queue and the review page. Views parse, call the queue and decision
services, and render; every write is refused unless the reviewer holds the claim."""

from __future__ import annotations

from datetime import date

from flask import abort, current_app, flash, redirect, request, url_for
from flask_admin import expose
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select

from backoffice import audit
from backoffice.admin import RoleBaseView
from backoffice.extensions import db
from backoffice.review import decisions, evidence, queue
from backoffice.review.models import (
    ApplicationDocument,
    ApplicationStatus,
    DocumentKind,
    DocumentStatus,
    RepresentativeApplication,
    ReviewNote,
)
from backoffice.review.states import STATUS_LABELS, IllegalTransition
from backoffice.staff.models import Role, StaffUser
from backoffice.storage import StorageError
from backoffice.web import (
    confirmation_page,
    confirmed,
    evidence_download,
    local,
    reader_locale,
    staff_actor,
    weekday_name,
)

SLA_LABELS = {
    "on_track": _l("On track"),
    "at_risk": _l("At risk"),
    "breached": _l("Breached"),
    "paused": _l("Paused"),
    "done": _l("Done"),
}
SLA_STYLES = {
    "on_track": "success",
    "at_risk": "warning",
    "breached": "danger",
    "paused": "secondary",
    "done": "light",
}
DOCUMENT_STATUS_LABELS = {
    DocumentStatus.PENDING: _l("Pending"),
    DocumentStatus.ACCEPTED: _l("Accepted"),
    DocumentStatus.REJECTED: _l("Rejected"),
}
FAILURES = (queue.QueueError, decisions.ReviewError, IllegalTransition)


def _questions() -> dict[str, str]:
    """What is asked before the decisions that cannot be taken back: by confirm.js on the page,
    and by the server when a request arrives without the confirmation."""
    return {
        "approve": _("Approve this application and open its call task?"),
        "request_documents": _("Email the applicant asking for these documents?"),
        "confirm_rejection": _("Confirm the rejection? The applicant will be emailed."),
    }


def _date(value: str | None) -> date | None:
    """A day typed in the filter; the queue reads it as that whole day in business time."""
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _labels(by_language: dict[str, dict[str, str]]) -> dict[str, str]:
    """The review's own label tables (reasons, documents), in the reader's language."""
    return by_language.get(reader_locale().language, by_language["en"])


def _reviewers() -> list[StaffUser]:
    return list(
        db.session.execute(
            select(StaffUser)
            .where(StaffUser.role == Role.LEGAL_REVIEWER, StaffUser.active.is_(True))
            .order_by(StaffUser.name)
        ).scalars()
    )


class ReviewQueueView(RoleBaseView):
    """Legal reviewers work the queue; supervisors see all of it and reassign."""

    allowed_roles = (Role.LEGAL_REVIEWER, Role.SUPERVISOR)
    evidence_roles = (Role.LEGAL_REVIEWER, Role.SUPERVISOR, Role.ADMIN)

    def is_accessible(self) -> bool:
        """Admins may also take an application's evidence bundle, and open nothing else here."""
        if request.endpoint == f"{self.endpoint}.evidence_bundle":
            return bool(
                current_user.is_authenticated
                and current_user.active
                and current_user.role in self.evidence_roles
            )
        return super().is_accessible()

    def _is_reviewer(self) -> bool:
        return current_user.role == Role.LEGAL_REVIEWER

    def _application(self, application_id: str) -> RepresentativeApplication:
        application = db.session.get(RepresentativeApplication, application_id)
        if application is None:
            abort(404)
        return application

    def _require_reviewer_form(self) -> None:
        if not self._is_reviewer():
            abort(403)
        if not FlaskForm().validate_on_submit():
            abort(400)

    def _back(self, application: RepresentativeApplication):
        return redirect(url_for(".application", application_id=application.id))

    def _claim_next(self):
        application = queue.claim_next(current_user, actor=staff_actor())
        db.session.commit()
        if application is None:
            flash(_("The queue is empty: nothing is waiting for review."), "info")
            return redirect(url_for(".index"))
        return self._back(application)

    def _act(
        self,
        application: RepresentativeApplication,
        action,
        success: str,
        *,
        confirm: str | None = None,
        holder_only: bool = True,
    ):
        """Run one decision (by the claim holder unless `holder_only` is off), commit it, and say
        what happened. A decision that cannot be taken back (`confirm` is its question) needs the
        form's confirmation; after it, `then=next` goes straight on to the next application."""
        self._require_reviewer_form()
        if confirm and not confirmed():
            return confirmation_page(
                self, confirm, cancel_url=url_for(".application", application_id=application.id)
            )
        try:
            if holder_only:
                queue.touch(application, current_user)
            action()
            db.session.commit()
        except FAILURES as exc:
            db.session.rollback()
            flash(_("Not done: %(error)s", error=exc), "error")
            return self._back(application)
        flash(success, "success")
        if request.form.get("then") == "next":
            return self._claim_next()
        return self._back(application)

    @expose("/")
    def index(self):
        args = request.args
        reviewer = args.get("reviewer", "")
        try:
            page = queue.queue_page(
                after=args.get("after") or None,
                statuses=[ApplicationStatus(s) for s in args.getlist("status") if s in set(ApplicationStatus)]
                or None,
                sla_states=[state for state in args.getlist("sla") if state in queue.SLA_STATES] or None,
                mine_of=current_user.id if reviewer == "mine" else None,
                unassigned=reviewer == "unassigned",
                reviewer_id=int(reviewer) if reviewer.isdigit() else None,
                submitted_from=_date(args.get("from")),
                submitted_to=_date(args.get("to")),
                search=args.get("q") or None,
            )
        except queue.QueueError as exc:
            flash(_("Filter not applied: %(error)s", error=exc), "error")
            page = queue.queue_page()
        rows = [
            {"application": a, "sla": queue.sla_state(a), "hours_left": queue.countdown(a)}
            for a in page.applications
        ]
        kept = {name: values for name, values in args.to_dict(flat=False).items() if name != "after"}
        return self.render(
            "admin/review_queue.html",
            rows=rows,
            first_url=url_for(".index", **kept) if "after" in args else None,
            next_url=url_for(".index", **kept, after=page.next_after) if page.next_after else None,
            reviewers=_reviewers(),
            statuses=list(ApplicationStatus),
            status_labels=STATUS_LABELS,
            sla_labels=SLA_LABELS,
            sla_styles=SLA_STYLES,
            is_reviewer=self._is_reviewer(),
            form=FlaskForm(),
            local=local,
        )

    @expose("/claim-next", methods=("POST",))
    def claim_next(self):
        self._require_reviewer_form()
        return self._claim_next()

    @expose("/reassign", methods=("POST",))
    def reassign(self):
        if current_user.role != Role.SUPERVISOR or not FlaskForm().validate_on_submit():
            abort(403)
        ids = request.form.getlist("application_id")
        target_id = request.form.get("reviewer_id", "")
        target = db.session.get(StaffUser, int(target_id)) if target_id.isdigit() else None
        if target_id and target is None:
            flash(_("Not reassigned: that reviewer does not exist."), "error")
            return redirect(url_for(".index"))
        applications = [
            a for a in (db.session.get(RepresentativeApplication, i) for i in ids) if a is not None
        ]
        try:
            moved = queue.reassign(applications, target, actor=staff_actor())
            db.session.commit()
        except FAILURES as exc:
            db.session.rollback()
            flash(_("Not reassigned: %(error)s", error=exc), "error")
            return redirect(request.referrer or url_for(".index"))
        if target is not None:
            message = ngettext(
                "%(num)d application reassigned to %(name)s.",
                "%(num)d applications reassigned to %(name)s.",
                moved,
                name=target.name,
            )
        else:
            message = ngettext(
                "%(num)d application unassigned: back in the queue.",
                "%(num)d applications unassigned: back in the queue.",
                moved,
            )
        flash(message, "success")
        return redirect(request.referrer or url_for(".index"))

    @expose("/<application_id>")
    def application(self, application_id: str):
        application = self._application(application_id)
        holder = db.session.get(StaffUser, application.claimed_by_id) if application.claimed_by_id else None
        notes = db.session.execute(
            select(ReviewNote)
            .where(ReviewNote.application_id == application.id)
            .order_by(ReviewNote.created_at)
        ).scalars()
        current = [d for d in application.documents if d.status != DocumentStatus.SUPERSEDED]
        rejected = [d.kind.value for d in current if d.status == DocumentStatus.REJECTED]
        accepted = {d.kind.value for d in current if d.status == DocumentStatus.ACCEPTED}
        return self.render(
            "admin/review_application.html",
            application=application,
            holder=holder,
            holds_claim=holder is not None and holder.id == current_user.id,
            documents=current,
            notes=list(notes),
            authors={u.id: u for u in db.session.execute(select(StaffUser)).scalars()},
            timeline=decisions.timeline(application),
            sla=queue.sla_state(application),
            hours_left=queue.countdown(application),
            sla_labels=SLA_LABELS,
            sla_styles=SLA_STYLES,
            status_labels=STATUS_LABELS,
            document_status_labels=DOCUMENT_STATUS_LABELS,
            document_labels=_labels(decisions.DOCUMENT_LABELS),
            weekday_name=weekday_name,
            reasons=decisions.REJECTION_REASONS,
            reason_labels=_labels(decisions.REASON_LABELS),
            kinds=[k.value for k in DocumentKind],
            rejected_kinds=rejected,
            request_message=decisions.compose_documents_request(application, rejected) if rejected else "",
            reviewers=_reviewers(),
            is_reviewer=self._is_reviewer(),
            is_supervisor=current_user.role == Role.SUPERVISOR,
            pending=any(d.status == DocumentStatus.PENDING for d in current),
            all_accepted=accepted >= set(decisions.DOCUMENT_KINDS),
            questions=_questions(),
            form=FlaskForm(),
            local=local,
        )

    @expose("/<application_id>/evidence")
    def evidence_bundle(self, application_id: str):
        """Everything the application's sign-up left, as one ZIP; taking it is audited."""
        application = self._application(application_id)
        return evidence_download(lambda: evidence.application_bundle(application, actor=staff_actor()))

    @expose("/<application_id>/documents/<int:document_id>/view")
    def view_document(self, application_id: str, document_id: int):
        """Viewing a document is audited; the link it opens works for a few minutes only."""
        document = db.session.get(ApplicationDocument, document_id)
        if document is None or document.application_id != application_id or document.storage_key is None:
            abort(404)
        try:
            url = current_app.extensions["storage"].url(
                document.storage_key,
                filename=document.display_name,
                content_type=document.content_type,
                inline=True,
                expires_in=120,
            )
        except StorageError:
            abort(503)
        audit.record(
            "document.viewed",
            actor=staff_actor(),
            subject_type="application_document",
            subject_id=document.id,
        )
        db.session.commit()
        return redirect(url)

    @expose("/<application_id>/documents/<int:document_id>/review", methods=("POST",))
    def review_document(self, application_id: str, document_id: int):
        application = self._application(application_id)
        document = db.session.get(ApplicationDocument, document_id)
        if document is None or document.application_id != application.id:
            abort(404)
        accepted = request.form.get("decision") == "accept"
        return self._act(
            application,
            lambda: decisions.review_document(
                document,
                accepted=accepted,
                reason_code=request.form.get("reason") or None,
                reason_text=request.form.get("reason_text") or None,
                reviewer=current_user,
                actor=staff_actor(),
            ),
            _("Document accepted.") if accepted else _("Document rejected."),
        )

    @expose("/<application_id>/accept-pending", methods=("POST",))
    def accept_pending(self, application_id: str):
        application = self._application(application_id)
        return self._act(
            application,
            lambda: decisions.accept_pending_documents(
                application, reviewer=current_user, actor=staff_actor()
            ),
            _("Every document that was waiting for a decision is accepted."),
        )

    @expose("/<application_id>/notes", methods=("POST",))
    def add_note(self, application_id: str):
        application = self._application(application_id)
        return self._act(
            application,
            lambda: decisions.add_note(
                application, author=current_user, text=request.form.get("text", ""), actor=staff_actor()
            ),
            _("Note added."),
        )

    @expose("/<application_id>/approve", methods=("POST",))
    def approve(self, application_id: str):
        application = self._application(application_id)
        return self._act(
            application,
            lambda: decisions.approve(application, reviewer=current_user, actor=staff_actor()),
            _("Approved: a call task is open with the application's deadline."),
            confirm=_questions()["approve"],
        )

    @expose("/<application_id>/request-documents", methods=("POST",))
    def request_documents(self, application_id: str):
        application = self._application(application_id)
        return self._act(
            application,
            lambda: decisions.request_documents(
                application,
                request.form.getlist("kinds"),
                request.form.get("message", ""),
                reviewer=current_user,
                actor=staff_actor(),
            ),
            _("Documents requested: the applicant has been emailed and the deadline is paused."),
            confirm=_questions()["request_documents"],
        )

    @expose("/<application_id>/reject", methods=("POST",))
    def propose_rejection(self, application_id: str):
        application = self._application(application_id)
        return self._act(
            application,
            lambda: decisions.propose_rejection(
                application, request.form.get("reason", ""), reviewer=current_user, actor=staff_actor()
            ),
            _("Rejection recorded."),
        )

    @expose("/<application_id>/confirm-rejection", methods=("POST",))
    def confirm_rejection(self, application_id: str):
        """The second reviewer does not need the claim: confirming is their whole job here."""
        application = self._application(application_id)
        return self._act(
            application,
            lambda: decisions.confirm_rejection(application, confirmer=current_user, actor=staff_actor()),
            _("Rejection confirmed; the applicant has been emailed."),
            confirm=_questions()["confirm_rejection"],
            holder_only=False,
        )

    @expose("/<application_id>/withdraw-rejection", methods=("POST",))
    def withdraw_rejection(self, application_id: str):
        application = self._application(application_id)
        return self._act(
            application,
            lambda: decisions.withdraw_rejection(application, reviewer=current_user, actor=staff_actor()),
            _("Rejection proposal withdrawn."),
        )

    @expose("/<application_id>/release", methods=("POST",))
    def release(self, application_id: str):
        application = self._application(application_id)
        self._require_reviewer_form()
        try:
            queue.touch(application, current_user)
            queue.release(application, actor=staff_actor())
            db.session.commit()
        except FAILURES as exc:
            db.session.rollback()
            flash(_("Not done: %(error)s", error=exc), "error")
            return self._back(application)
        flash(_("Released back to the queue."), "info")
        return redirect(url_for(".index"))

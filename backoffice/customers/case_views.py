"""The association clerk console: the case queue and the case page. Views parse, call
`customers.cases` and render; the rules (who may act, what each decision changes) live there."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from flask import abort, current_app, flash, redirect, request, url_for
from flask_admin import expose
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select

from backoffice.admin import RoleBaseView
from backoffice.customers import cases
from backoffice.customers.models import (
    AssociationCase,
    AssociationStatus,
    CaseStatus,
    HolderKind,
    Policyholder,
)
from backoffice.extensions import db
from backoffice.staff.models import Role, StaffUser
from backoffice.web import confirmation_page, confirmed, local, staff_actor

STATUS_LABELS = {
    CaseStatus.OPEN: _l("Open"),
    CaseStatus.WAITING_CUSTOMER: _l("Waiting for customer"),
    CaseStatus.LINKED: _l("Linked"),
    CaseStatus.NO_MATCH: _l("No match"),
}
# Why a case was opened (the matching engine's and the flows' stable reasons); an unknown one
# is shown as stored.
REASON_LABELS = {
    "no_match": _l("No candidate"),
    "several_matches": _l("Several matches"),
    "not_sure": _l("Not sure"),
    "unlinked": _l("Unlinked by a supervisor"),
    "representative_company_not_found": _l("Representative: company not found"),
}
ASSOCIATION_LABELS = {
    AssociationStatus.NONE: _l("none"),
    AssociationStatus.PENDING: _l("pending"),
    AssociationStatus.LINKED: _l("linked"),
}
HOLDER_KIND_LABELS = {HolderKind.PERSON: _l("person"), HolderKind.COMPANY: _l("company")}
FIELD_LABELS = {"tax_id": _l("Tax ID"), "email": _l("Email"), "phone": _l("Phone"), "name": _l("Name")}
VERDICTS = {
    "agrees": ("✓", _l("agrees"), "success"),
    "differs": ("✗", _l("differs"), "danger"),
    "missing": ("—", _l("missing"), "secondary"),
}


def _questions() -> dict[str, str]:
    """What is asked before the decisions that cannot be taken back: by confirm.js on the page,
    and by the server when a request arrives without the confirmation. Linking names the
    policyholder, so its question is built per candidate (`link_question`)."""
    return {
        "no_match": _("Close this case as no match? The account will stay without policies."),
        "ask_customer": _("Email the customer asking them to check these details?"),
        "unlink": _("Unlink this account? It goes back to pending with a new case."),
    }


def link_question(holder: Policyholder) -> str:
    return _(
        "Link this account to %(name)s (%(tax_id)s)? The customer will be emailed.",
        name=holder.name,
        tax_id=holder.tax_id,
    )


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


class CaseQueueView(RoleBaseView):
    """Association clerks claim and decide cases; supervisors see all, reassign and unlink."""

    allowed_roles = (Role.ASSOCIATION_CLERK, Role.SUPERVISOR)

    def _is_clerk(self) -> bool:
        return current_user.role == Role.ASSOCIATION_CLERK

    def _is_supervisor(self) -> bool:
        return current_user.role == Role.SUPERVISOR

    def _case(self, case_id: int) -> AssociationCase:
        case = db.session.get(AssociationCase, case_id)
        if case is None:
            abort(404)
        return case

    def _require_form(self, *roles: Role) -> None:
        if current_user.role not in roles:
            abort(403)
        if not FlaskForm().validate_on_submit():
            abort(400)

    def _back(self, case: AssociationCase):
        return redirect(url_for(".case", case_id=case.id))

    def _claim_next(self):
        case = cases.claim_next(current_user, actor=staff_actor())
        db.session.commit()
        if case is None:
            flash(_("The queue is empty: no open case is waiting."), "info")
            return redirect(url_for(".index"))
        return self._back(case)

    def _act(
        self,
        case: AssociationCase,
        action: Callable[[], Any],
        success: str,
        *,
        role: Role,
        confirm: str | None = None,
    ):
        """Run one service call, commit it, and say what happened. A refusal shows the case page
        again with the error and what was typed (nothing is lost), answering 400. A decision that
        cannot be taken back (`confirm` is its question) needs the form's confirmation; after a
        decision, `then=next` goes straight on to the clerk's next case."""
        self._require_form(role)
        if confirm and not confirmed():
            return confirmation_page(self, confirm, cancel_url=url_for(".case", case_id=case.id))
        try:
            result = action()
            db.session.commit()
        except cases.CaseError as exc:
            db.session.rollback()
            return self._case_page(self._case(case.id), error=str(exc), typed=request.form), 400
        flash(success, "success")
        if request.form.get("then") == "next" and self._is_clerk():
            return self._claim_next()
        return self._back(result if isinstance(result, AssociationCase) else case)

    @expose("/")
    def index(self):
        args = request.args
        status = args.get("status", "")
        claimed = args.get("claimed", "")
        if status == "all":
            statuses = None
        elif status in set(CaseStatus):
            statuses = [CaseStatus(status)]
        else:
            statuses = list(cases.ACTIVE)
        reason = args.get("reason", "")
        rows = cases.queue(
            statuses=statuses,
            reasons=[reason] if reason else None,
            opened_from=_date(args.get("from")),
            opened_to=_date(args.get("to")),
            claimed_by=current_user.id
            if claimed == "mine"
            else (int(claimed) if claimed.isdigit() and self._is_supervisor() else None),
            unclaimed=claimed == "unclaimed",
            search=args.get("q") or None,
        )
        return self.render(
            "admin/association/queue.html",
            rows=rows,
            holder_of=cases.holder_of,
            staff={u.id: u for u in db.session.execute(select(StaffUser)).scalars()},
            clerks=cases.clerks(),
            reasons=cases.reasons_in_use(),
            reason_labels=REASON_LABELS,
            status_labels=STATUS_LABELS,
            is_clerk=self._is_clerk(),
            is_supervisor=self._is_supervisor(),
            form=FlaskForm(),
            local=local,
        )

    @expose("/claim-next", methods=("POST",))
    def claim_next(self):
        self._require_form(Role.ASSOCIATION_CLERK)
        return self._claim_next()

    def _case_page(self, case: AssociationCase, *, error: str | None = None, typed: Any = None):
        typed = typed or {}
        lookup = request.args.get("tax_id", "") or typed.get("tax_id", "")
        found: cases.CandidateView | None = None
        candidates = cases.ranked_candidates(case)
        if lookup:
            holder = cases.find_policyholder(lookup)
            if holder is not None and holder.id not in {c.policyholder_id for c in candidates}:
                found = cases.explain_holder(case.account, holder)
            elif holder is None:
                error = error or _("No policyholder has the tax ID %(tax_id)s.", tax_id=lookup)
        holder_id = cases.holder_of(case)
        linked_holder = (
            db.session.get(Policyholder, case.account.policyholder_id)
            if case.account.policyholder_id
            else None
        )
        return self.render(
            "admin/association/case.html",
            case=case,
            account=case.account,
            profile=cases.profile_values(case.account),
            candidates=candidates,
            found=found,
            lookup=lookup,
            linked_holder=linked_holder,
            holder=db.session.get(StaffUser, holder_id) if holder_id else None,
            holds_claim=holder_id is not None and holder_id == current_user.id,
            expired_claim_is_mine=case.claimed_by_id == current_user.id and holder_id is None,
            is_clerk=self._is_clerk(),
            is_supervisor=self._is_supervisor(),
            active=case.status in cases.ACTIVE,
            clerks=cases.clerks(),
            decided_by=db.session.get(StaffUser, case.decided_by_id) if case.decided_by_id else None,
            message=typed.get("message") or cases.compose_customer_message(case),
            typed=typed,
            error=error,
            status_labels=STATUS_LABELS,
            reason_labels=REASON_LABELS,
            association_labels=ASSOCIATION_LABELS,
            holder_kind_labels=HOLDER_KIND_LABELS,
            field_labels=FIELD_LABELS,
            verdicts=VERDICTS,
            questions=_questions(),
            link_question=link_question,
            form=FlaskForm(),
            local=local,
        )

    @expose("/<int:case_id>")
    def case(self, case_id: int):
        return self._case_page(self._case(case_id))

    @expose("/<int:case_id>/claim", methods=("POST",))
    def claim(self, case_id: int):
        case = self._case(case_id)
        return self._act(
            case,
            lambda: cases.claim(case, current_user, actor=staff_actor()),
            _(
                "Case claimed: it stays yours while you work on it (a claim idle for %(minutes)d "
                "minutes expires).",
                minutes=int(current_app.config["ASSOCIATION_CLAIM_IDLE_MINUTES"]),
            ),
            role=Role.ASSOCIATION_CLERK,
        )

    @expose("/<int:case_id>/release", methods=("POST",))
    def release(self, case_id: int):
        case = self._case(case_id)
        if current_user.role not in (Role.ASSOCIATION_CLERK, Role.SUPERVISOR):
            abort(403)
        if not FlaskForm().validate_on_submit():
            abort(400)
        try:
            cases.release(case, actor=staff_actor())
            db.session.commit()
        except cases.CaseError as exc:
            db.session.rollback()
            flash(_("Not done: %(error)s", error=exc), "error")
            return self._back(case)
        flash(_("Released back to the queue."), "info")
        return redirect(url_for(".index"))

    @expose("/<int:case_id>/reassign", methods=("POST",))
    def reassign(self, case_id: int):
        case = self._case(case_id)
        self._require_form(Role.SUPERVISOR)
        target_id = request.form.get("clerk_id", "")
        target = db.session.get(StaffUser, int(target_id)) if target_id.isdigit() else None
        if target_id and target is None:
            return self._case_page(case, error=_("That clerk does not exist.")), 400
        return self._act(
            case,
            lambda: cases.reassign(case, target, actor=staff_actor()),
            _("Case reassigned to %(name)s.", name=target.name)
            if target
            else _("Case unassigned: back in the queue."),
            role=Role.SUPERVISOR,
        )

    @expose("/<int:case_id>/link", methods=("POST",))
    def link(self, case_id: int):
        case = self._case(case_id)
        self._require_form(Role.ASSOCIATION_CLERK)
        chosen = request.form.get("policyholder_id", "")
        holder = db.session.get(Policyholder, int(chosen)) if chosen.isdigit() else None
        if holder is None:
            return self._case_page(case, error=_("Choose the policyholder to link."), typed=request.form), 400
        return self._act(
            case,
            lambda: cases.link_case(case, holder, actor=staff_actor()),
            _(
                "Linked to %(name)s (%(tax_id)s); the customer has been emailed.",
                name=holder.name,
                tax_id=holder.tax_id,
            ),
            role=Role.ASSOCIATION_CLERK,
            confirm=link_question(holder),
        )

    @expose("/<int:case_id>/no-match", methods=("POST",))
    def no_match(self, case_id: int):
        case = self._case(case_id)
        return self._act(
            case,
            lambda: cases.no_match(case, request.form.get("reason", ""), actor=staff_actor()),
            _("Closed as no match."),
            role=Role.ASSOCIATION_CLERK,
            confirm=_questions()["no_match"],
        )

    @expose("/<int:case_id>/ask-customer", methods=("POST",))
    def ask_customer(self, case_id: int):
        case = self._case(case_id)
        return self._act(
            case,
            lambda: cases.ask_customer(case, request.form.get("message", ""), actor=staff_actor()),
            _("The customer has been emailed; the case waits for them."),
            role=Role.ASSOCIATION_CLERK,
        )

    @expose("/<int:case_id>/unlink", methods=("POST",))
    def unlink(self, case_id: int):
        case = self._case(case_id)
        return self._act(
            case,
            lambda: cases.unlink(case.account, request.form.get("reason", ""), actor=staff_actor()),
            _("Unlinked: the account is pending again, with a new open case."),
            role=Role.SUPERVISOR,
            confirm=_questions()["unlink"],
        )

"""Linked accounts, for supervisors and admins: every portal account linked to a policyholder,
however the link was made (the matching engine, a clerk, the customer's sign-up), with the
evidence, and the supervisor's "unlink with a reason". Views parse, call `customers.linked`
and `customers.cases`, and render."""

from __future__ import annotations

from typing import Any

from flask import abort, flash, redirect, request, url_for
from flask_admin import expose
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from markupsafe import Markup

from backoffice.admin import RoleBaseView
from backoffice.customers import cases, linked
from backoffice.customers.case_views import ASSOCIATION_LABELS, FIELD_LABELS, HOLDER_KIND_LABELS, VERDICTS
from backoffice.customers.linked import Cursor, LinkMethod
from backoffice.customers.models import CustomerAccount, Policyholder
from backoffice.extensions import db
from backoffice.staff.models import Role, StaffUser
from backoffice.web import confirmation_page, confirmed, local, staff_actor

METHOD_LABELS = {
    LinkMethod.AUTOMATIC: _l("Automatically (matching engine)"),
    LinkMethod.CLERK: _l("By an association clerk"),
    LinkMethod.SIGN_UP: _l("At the customer's sign-up"),
    LinkMethod.UNKNOWN: _l("Not recorded"),
}


def unlink_question(account: CustomerAccount, holder: Policyholder | None) -> str:
    """Asked by confirm.js on the page, and by the server when the confirmation is missing."""
    if holder is None:
        return _("Unlink this account? It goes back to pending with a new case.")
    return _(
        "Unlink %(account)s from %(name)s (%(tax_id)s)? The account goes back to pending and a new "
        "case opens for the association clerks.",
        account=account.email,
        name=holder.name,
        tax_id=holder.tax_id,
    )


class LinkedAccountsView(RoleBaseView):
    """Supervisors and admins read; only supervisors unlink (the service checks it too)."""

    allowed_roles = (Role.SUPERVISOR, Role.ADMIN)

    def _can_unlink(self) -> bool:
        return current_user.role == Role.SUPERVISOR

    def _account(self, account_id: int) -> CustomerAccount:
        account = db.session.get(CustomerAccount, account_id)
        if account is None:
            abort(404)
        return account

    @expose("/")
    def index(self):
        args = request.args
        method = args.get("how", "")
        if method not in set(LinkMethod):
            method = ""
        page = linked.linked_accounts(
            search=args.get("q") or None,
            method=method or None,
            older_than=Cursor.decode(args.get("older")),
            newer_than=Cursor.decode(args.get("newer")),
        )
        return self.render(
            "admin/association/linked_accounts.html",
            page=page,
            search=args.get("q", ""),
            method=method,
            method_labels=METHOD_LABELS,
            account_name=_account_name,
            local=local,
        )

    def _account_page(self, account: CustomerAccount, *, error: str | None = None, typed: Any = None):
        detail = linked.link_detail(account)
        linked_by = None
        if (
            detail.event is not None
            and detail.event.actor_kind == "staff"
            and (detail.event.actor_id or "").isdigit()
        ):
            linked_by = db.session.get(StaffUser, int(detail.event.actor_id))
        return self.render(
            "admin/association/linked_account.html",
            detail=detail,
            account=account,
            profile=cases.profile_values(account),
            linked_by=linked_by,
            can_unlink=self._can_unlink(),
            question=unlink_question(account, detail.holder),
            typed=typed or {},
            error=error,
            method_labels=METHOD_LABELS,
            association_labels=ASSOCIATION_LABELS,
            holder_kind_labels=HOLDER_KIND_LABELS,
            field_labels=FIELD_LABELS,
            verdicts=VERDICTS,
            form=FlaskForm(),
            local=local,
        )

    @expose("/<int:account_id>")
    def account(self, account_id: int):
        return self._account_page(self._account(account_id))

    @expose("/<int:account_id>/unlink", methods=("POST",))
    def unlink(self, account_id: int):
        """Unlink with a reason: refused without `confirmed=1` (the confirmation page is shown
        instead); a refusal from the service shows the account page again with the error."""
        if not self._can_unlink():
            abort(403)
        if not FlaskForm().validate_on_submit():
            abort(400)
        account = self._account(account_id)
        if not confirmed():
            return confirmation_page(
                self,
                unlink_question(account, account.policyholder),
                cancel_url=url_for(".account", account_id=account.id),
            )
        try:
            case = cases.unlink(account, request.form.get("reason", ""), actor=staff_actor())
            db.session.commit()
        except cases.CaseError as exc:
            db.session.rollback()
            return self._account_page(self._account(account_id), error=str(exc), typed=request.form), 400
        flash(
            Markup('{done} <a href="{url}" data-testid="new-case">{link}</a>').format(
                done=_("Unlinked %(account)s: the account is pending again.", account=account.email),
                url=url_for("association.case", case_id=case.id),
                link=_("Open case %(id)s", id=case.id),
            ),
            "success",
        )
        return redirect(url_for(".index"))


def _account_name(account: CustomerAccount) -> str:
    return " ".join(part for part in (account.first_name, account.last_name) if part)

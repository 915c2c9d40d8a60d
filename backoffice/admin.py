"""The back office shell: Flask-Admin with server-side role checks on every view."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Flask, abort, redirect, request, url_for
from flask_admin import Admin, AdminIndexView, BaseView, expose
from flask_admin.contrib.sqla import ModelView, filters
from flask_admin.model import typefmt
from flask_admin.theme import Bootstrap4Theme
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm

from backoffice.staff.models import Role

ALL_ROLES: tuple[Role, ...] = tuple(Role)


class RoleRequired:
    """Mixin for every back-office view: the role is checked on the server for every request;
    the menu only hides what a role cannot open."""

    allowed_roles: tuple[Role, ...] = ()

    def is_accessible(self) -> bool:
        return bool(
            current_user.is_authenticated and current_user.active and current_user.role in self.allowed_roles
        )

    def inaccessible_callback(self, name: str, **kwargs: Any):
        if not current_user.is_authenticated:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        abort(403)


class _UTCFilter:
    """Filter values typed in the back office are UTC, like the column they compare with."""

    def clean(self, value: str) -> Any:
        cleaned = super().clean(value)  # type: ignore[misc]
        if isinstance(cleaned, list):
            return [moment.replace(tzinfo=UTC) for moment in cleaned]
        return cleaned.replace(tzinfo=UTC)


class UTCBetweenFilter(_UTCFilter, filters.DateTimeBetweenFilter):
    pass


class UTCAfterFilter(_UTCFilter, filters.DateTimeGreaterFilter):
    pass


class UTCBeforeFilter(_UTCFilter, filters.DateTimeSmallerFilter):
    pass


def time_filters(column: Any, label: str) -> tuple[Any, ...]:
    """Date-range filters for a UTC timestamp column (Flask-Admin cannot infer them for our type)."""
    return (
        UTCBetweenFilter(column, label),
        UTCAfterFilter(column, label),
        UTCBeforeFilter(column, label),
    )


def utc_formatter(view: Any, value: datetime, name: str) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class RoleView(RoleRequired, ModelView):
    form_base_class = FlaskForm
    column_type_formatters = {**typefmt.BASE_FORMATTERS, datetime: utc_formatter}
    column_type_formatters_detail = {**typefmt.DETAIL_FORMATTERS, datetime: utc_formatter}
    page_size = 50
    can_set_page_size = True


class RoleBaseView(RoleRequired, BaseView):
    pass


class HomeView(RoleRequired, AdminIndexView):
    allowed_roles = ALL_ROLES

    @expose("/")
    def index(self):
        return self.render("admin/home.html")


def build_admin(app: Flask) -> Admin:
    """A new Admin per app: Flask-Admin views are bound to one application."""
    from backoffice.audit.views import AuditEventView
    from backoffice.calls.staffing_views import StaffingView
    from backoffice.calls.views import CallConsoleView, CallSlaView
    from backoffice.customers.case_views import CaseQueueView
    from backoffice.customers.import_views import ImportView
    from backoffice.customers.linked_views import LinkedAccountsView
    from backoffice.customers.views import EcustomerRegistrationView
    from backoffice.dashboard.views import DashboardView
    from backoffice.extensions import db
    from backoffice.job_views import OperationsView
    from backoffice.notifications.views import DevMailboxView, OutboxView
    from backoffice.review.views import ReviewQueueView
    from backoffice.staff.models import StaffUser
    from backoffice.staff.views import StaffView

    admin = Admin(
        name="Ventanilla",
        theme=Bootstrap4Theme(base_template="staff_base.html", fluid=True),
        index_view=HomeView(name=_l("Home"), url="/admin"),
    )
    admin.init_app(app)
    admin.add_view(DashboardView(name=_l("Dashboard"), endpoint="dashboard", url="/admin/dashboard"))
    admin.add_view(ReviewQueueView(name=_l("Legal review"), endpoint="review", url="/admin/review"))
    admin.add_view(
        CallConsoleView(name=_l("My calls"), endpoint="calls", url="/admin/calls", category=_l("Calls"))
    )
    admin.add_view(
        CallSlaView(name=_l("Call SLA"), endpoint="call_sla", url="/admin/call-sla", category=_l("Calls"))
    )
    admin.add_view(
        StaffingView(
            name=_l("Agent shifts"), endpoint="staffing", url="/admin/staffing", category=_l("Calls")
        )
    )
    admin.add_view(
        EcustomerRegistrationView(
            db,
            name=_l("e-Customer registrations"),
            endpoint="ecustomer_registrations",
            url="/admin/ecustomer",
        )
    )
    admin.add_view(
        ImportView(
            name=_l("Policyholder imports"),
            endpoint="imports",
            url="/admin/imports",
            category=_l("Customers"),
        )
    )
    admin.add_view(CaseQueueView(name=_l("Association"), endpoint="association", url="/admin/association"))
    admin.add_view(
        LinkedAccountsView(
            name=_l("Linked accounts"), endpoint="linked_accounts", url="/admin/linked-accounts"
        )
    )
    admin.add_view(
        StaffView(StaffUser, db, name=_l("Staff"), endpoint="staff", category=_l("Administration"))
    )
    admin.add_view(AuditEventView(db, name=_l("Audit log"), endpoint="audit", category=_l("Administration")))
    admin.add_view(OutboxView(db, name=_l("Outbox"), endpoint="outbox", category=_l("Administration")))
    admin.add_view(
        OperationsView(
            name=_l("Operations"),
            endpoint="operations",
            url="/admin/operations",
            category=_l("Administration"),
        )
    )
    if app.config["APP_ENV"] != "production":
        admin.add_view(
            DevMailboxView(name=_l("Dev mailbox"), endpoint="dev_mailbox", url="/admin/dev-mailbox")
        )
    return admin

"""Sign-in and sign-out pages, and the staff management view for admins."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_limiter import RateLimitExceeded
from flask_login import current_user, login_required, login_user, logout_user

from backoffice.admin import RoleView
from backoffice.extensions import db, limiter, login_manager
from backoffice.staff import service
from backoffice.staff.forms import (
    LanguageForm,
    LoginForm,
    LogoutForm,
    StaffCreateForm,
    StaffEditForm,
    role_label,
)
from backoffice.staff.models import Role, StaffUser
from backoffice.web import client_ip, safe_next, staff_actor

auth = Blueprint("auth", __name__)

SESSION_TOKEN_KEY = "staff_session"  # noqa: S105 (a session key name, not a secret)
BAD_CREDENTIALS = _l("Email or password is not correct, or the account is not active.")
TOO_MANY_ATTEMPTS = _l("Too many sign-in attempts. Wait a few minutes and try again.")


@login_manager.user_loader
def load_user(user_id: str) -> StaffUser | None:
    user = service.session_user(session.get(SESSION_TOKEN_KEY))
    return user if user is not None and user.get_id() == user_id else None


def _login_account_key() -> str:
    return "staff-login:" + request.form.get("email", "").strip().lower()[:255]


def _login_failed(response) -> bool:
    return bool(g.get("login_failed"))


@auth.route("/login", methods=["GET", "POST"])
@limiter.limit(
    lambda: current_app.config["STAFF_LOGIN_LIMIT_IP"],
    methods=["POST"],
    deduct_when=_login_failed,
    scope="staff-login-ip",
)
@limiter.limit(
    lambda: current_app.config["STAFF_LOGIN_LIMIT_ACCOUNT"],
    methods=["POST"],
    deduct_when=_login_failed,
    key_func=_login_account_key,
    scope="staff-login-account",
)
def login():
    destination = safe_next(request.args.get("next"), url_for("admin.index"))
    if current_user.is_authenticated:
        return redirect(destination)
    form = LoginForm()
    if form.validate_on_submit():
        result = service.sign_in(
            form.email.data, form.password.data, ip=client_ip(), user_agent=request.user_agent.string
        )
        if result is not None:
            session.clear()
            login_user(result.user)
            session[SESSION_TOKEN_KEY] = result.session_token
            return redirect(destination)
        g.login_failed = True
        flash(str(BAD_CREDENTIALS), "error")
    return _login_page(form)


def _login_page(form: LoginForm) -> str:
    """Nobody is signed in yet, so the page speaks the browser's language (Spanish by default)."""
    return render_template("auth/login.html", form=form, language=str(get_locale()))


@auth.errorhandler(RateLimitExceeded)
def too_many_attempts(error: RateLimitExceeded):
    db.session.rollback()
    flash(str(TOO_MANY_ATTEMPTS), "error")
    response = current_app.make_response((_login_page(LoginForm()), 429))
    response.headers["Retry-After"] = str(error.retry_after if hasattr(error, "retry_after") else 900)
    return response


@auth.post("/language")
@login_required
def choose_language():
    """The language switch in the back office's top bar: saved on the staff member."""
    form = LanguageForm()
    destination = safe_next(request.form.get("next"), url_for("admin.index"))
    if form.validate_on_submit():
        try:
            service.set_language(current_user, form.language.data, actor=staff_actor())
        except service.StaffError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            return redirect(destination)
        db.session.commit()
    return redirect(destination)


@auth.post("/logout")
def logout():
    form = LogoutForm()
    if form.validate_on_submit() and current_user.is_authenticated:
        service.sign_out(session.get(SESSION_TOKEN_KEY), actor=staff_actor())
    logout_user()
    session.clear()
    flash(_("You have signed out."), "info")
    return redirect(url_for("auth.login"))


class StaffView(RoleView):
    """Admins create staff, change roles and deactivate; all through the staff service."""

    allowed_roles = (Role.ADMIN,)
    can_delete = False
    can_view_details = True
    column_list = ("email", "name", "role", "active", "last_sign_in_at", "created_at")
    column_searchable_list = ("email", "name")
    column_filters = ("role", "active")
    column_default_sort = "email"
    column_labels = {
        "email": _l("Email"),
        "name": _l("Name"),
        "role": _l("Role"),
        "active": _l("Active"),
        "language": _l("Language"),
        "last_sign_in_at": _l("Last sign-in"),
        "created_at": _l("Created"),
    }
    column_formatters = {"role": lambda view, context, model, name: role_label(model.role)}
    column_details_exclude_list = ("password_hash",)

    def get_create_form(self):
        return StaffCreateForm

    def get_edit_form(self):
        return StaffEditForm

    def create_model(self, form):
        try:
            user = service.create_staff(
                form.email.data, form.name.data, form.role.data, form.password.data, actor=staff_actor()
            )
            db.session.commit()
        except service.StaffError as exc:
            db.session.rollback()
            _flash_errors(exc)
            return False
        return user

    def update_model(self, form, model: StaffUser):
        actor = staff_actor()
        try:
            service.update_staff(model, name=form.name.data, actor=actor)
            service.set_language(model, form.language.data, actor=actor)
            service.set_role(model, form.role.data, actor=actor)
            if form.active.data:
                service.reactivate(model, actor=actor)
            else:
                service.deactivate(model, actor=actor)
            db.session.commit()
        except service.StaffError as exc:
            db.session.rollback()
            _flash_errors(exc)
            return False
        return True


def _flash_errors(error: service.StaffError) -> None:
    details = "; ".join(f"{field}: {', '.join(codes)}" for field, codes in error.errors.items())
    flash(f"{error} {details}".strip(), "error")

"""Sign-in (password, then a code from an authenticator app), re-authentication, sign-out, and
the staff management view for admins.

One gate in front of every back-office request (`require_a_complete_session`) sends a browser
whose session timed out back to sign in, and one that is only half signed in (password, no code
yet) to the second step; Flask-Login only ever sees a user once both steps are done, so every
role check treats a half-signed-in browser as signed out as well.
"""

from __future__ import annotations

from datetime import datetime

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_admin import expose
from flask_admin.model.template import EndpointLinkRowAction
from flask_babel import force_locale, get_locale, ngettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_limiter import RateLimitExceeded
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm

from backoffice.admin import RoleView
from backoffice.audit import Actor
from backoffice.extensions import db, limiter, login_manager
from backoffice.staff import mfa, service
from backoffice.staff.forms import (
    CodeForm,
    LanguageForm,
    LoginForm,
    LogoutForm,
    ReauthenticateForm,
    StaffCreateForm,
    StaffEditForm,
    role_label,
)
from backoffice.staff.models import Role, StaffSession, StaffUser
from backoffice.staff.service import Expiry, SessionState
from backoffice.web import client_ip, confirmation_page, confirmed, local, safe_next, staff_actor

auth = Blueprint("auth", __name__)

SESSION_TOKEN_KEY = "staff_session"  # noqa: S105 (a session key name, not a secret)
BAD_CREDENTIALS = _l("Email or password is not correct, or the account is not active.")
TOO_MANY_ATTEMPTS = _l("Too many sign-in attempts. Wait a few minutes and try again.")
TOO_MANY_CODES = _l("Too many codes tried. Wait a while and try again.")
WRONG_CODE = _l("That code is not valid. Codes can be used only once; wait for the next one.")
WRONG_PASSWORD_OR_CODE = _l("The password or the code is not correct.")
LOCKED_OUT = _l("Too many wrong codes. Sign in again with your password.")
PENDING = (SessionState.ENROL, SessionState.VERIFY)
# Where a half-signed-in browser may go: the steps themselves, and away.
SECOND_STEP_ENDPOINTS = frozenset({"auth.login", "auth.logout", "auth.mfa_verify", "auth.mfa_enrol"})
# Not the back office: the public API, the development portal, health checks.
OUTSIDE_BACK_OFFICE = frozenset({"health", "dev_portal"})


def _session_check() -> service.SessionCheck:
    """This request's staff session, looked up (and timed out if due) once per request."""
    if "staff_session_check" not in g:
        g.staff_session_check = service.check_session(session.get(SESSION_TOKEN_KEY))
    return g.staff_session_check


def current_staff_session() -> StaffSession | None:
    """The signed-in (both steps) session of this request, if any."""
    check = _session_check()
    return check.session if check.state is SessionState.COMPLETE else None


def _authenticated_at() -> datetime | None:
    staff_session = current_staff_session()
    return staff_session.authenticated_at if staff_session else None


@login_manager.user_loader
def load_user(user_id: str) -> StaffUser | None:
    staff_session = current_staff_session()
    if staff_session is None or staff_session.user.get_id() != user_id:
        return None
    return staff_session.user


def _outside_back_office() -> bool:
    endpoint = request.endpoint or ""
    return (
        not endpoint
        or endpoint == "static"
        or endpoint.endswith(".static")
        or request.blueprint in OUTSIDE_BACK_OFFICE
        or request.path.startswith("/api/")
    )


def _return_path() -> str | None:
    """Where to come back to after signing in: the page asked for, if it was a plain page."""
    if request.method not in ("GET", "HEAD") or request.endpoint in SECOND_STEP_ENDPOINTS:
        return None
    return request.full_path.rstrip("?")


def _expired_message(expiry: Expiry | None) -> str:
    config = current_app.config
    if expiry is Expiry.ABSOLUTE:
        hours = config["STAFF_SESSION_HOURS"]
        return ngettext(
            "You have been signed in for %(num)s hour, the longest a session lasts. Sign in again.",
            "You have been signed in for %(num)s hours, the longest a session lasts. Sign in again.",
            hours,
        )
    minutes = config["STAFF_IDLE_MINUTES"]
    return ngettext(
        "You were signed out after %(num)s minute without activity. Sign in again.",
        "You were signed out after %(num)s minutes without activity. Sign in again.",
        minutes,
    )


def _second_step_url(state: SessionState, destination: str | None) -> str:
    endpoint = "auth.mfa_enrol" if state is SessionState.ENROL else "auth.mfa_verify"
    return url_for(endpoint, next=destination)


@auth.before_app_request
def require_a_complete_session():
    """The back office's gate, before any view or role check runs."""
    if _outside_back_office():
        return None
    check = _session_check()
    if check.state is SessionState.EXPIRED:
        session.clear()
        flash(_expired_message(check.expiry), "info")
        return redirect(url_for("auth.login", next=_return_path()))
    if check.state in PENDING and request.endpoint not in SECOND_STEP_ENDPOINTS:
        return redirect(_second_step_url(check.state, _return_path()))
    return None


def _login_account_key() -> str:
    return "staff-login:" + request.form.get("email", "").strip().lower()[:255]


def _login_failed(response) -> bool:
    return bool(g.get("login_failed"))


def _code_account_key() -> str:
    staff_session = _session_check().session
    return f"staff-mfa:{staff_session.staff_id if staff_session else request.remote_addr}"


def _code_failed(response) -> bool:
    return bool(g.get("code_failed"))


def limit_codes(view):
    """Wrong codes count per address and per staff member (right ones do not)."""
    view = limiter.limit(
        lambda: current_app.config["STAFF_MFA_LIMIT_ACCOUNT"],
        methods=["POST"],
        deduct_when=_code_failed,
        key_func=_code_account_key,
        scope="staff-mfa-account",
    )(view)
    return limiter.limit(
        lambda: current_app.config["STAFF_MFA_LIMIT_IP"],
        methods=["POST"],
        deduct_when=_code_failed,
        scope="staff-mfa-ip",
    )(view)


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
    check = _session_check()
    if check.state is SessionState.COMPLETE:
        return redirect(destination)
    if check.state in PENDING:
        return redirect(_second_step_url(check.state, destination))
    form = LoginForm()
    if form.validate_on_submit():
        result = service.sign_in(
            form.email.data, form.password.data, ip=client_ip(), user_agent=request.user_agent.string
        )
        if result is not None:
            session.clear()
            session[SESSION_TOKEN_KEY] = result.session_token
            state = SessionState.VERIFY if mfa.is_enrolled(result.user) else SessionState.ENROL
            return redirect(_second_step_url(state, destination))
        g.login_failed = True
        flash(str(BAD_CREDENTIALS), "error")
    return _login_page(form)


def _login_page(form: LoginForm) -> str:
    """Nobody is signed in yet, so the page speaks the browser's language (Spanish by default)."""
    return render_template("auth/login.html", form=form, language=str(get_locale()))


@auth.errorhandler(RateLimitExceeded)
def too_many_attempts(error: RateLimitExceeded):
    db.session.rollback()
    if request.endpoint == "auth.login":
        flash(str(TOO_MANY_ATTEMPTS), "error")
        page = _login_page(LoginForm())
    else:
        staff_session = _session_check().session
        language = staff_session.user.language if staff_session else str(get_locale())
        with force_locale(language):
            page = render_template(
                "auth/too_many_codes.html",
                message=str(TOO_MANY_CODES),
                back=request.full_path.rstrip("?"),
                language=language,
            )
    response = current_app.make_response((page, 429))
    response.headers["Retry-After"] = str(limiter.retry_after())
    return response


def _locked_out():
    """Too many wrong codes ended the session: back to the password."""
    logout_user()
    session.clear()
    flash(str(LOCKED_OUT), "error")
    return redirect(url_for("auth.login"))


def _refused(result: mfa.Result, message) -> None:
    g.code_failed = True
    if result.outcome is not mfa.Outcome.LOCKED:
        flash(str(message), "error")


def _second_step_page(template: str, user: StaffUser, **context) -> str:
    """Half signed in, the pages speak the language the staff member chose."""
    return render_template(template, user=user, language=user.language, **context)


@auth.route("/mfa", methods=["GET", "POST"])
@limit_codes
def mfa_verify():
    """The second step of signing in: a code from the authenticator app, or a recovery code."""
    destination = safe_next(request.args.get("next"), url_for("admin.index"))
    check = _session_check()
    if check.state is not SessionState.VERIFY:
        return _elsewhere(check.state, destination)
    user = check.session.user
    form = CodeForm()
    with force_locale(user.language):
        if form.validate_on_submit():
            result = mfa.verify(check.session, form.code.data, ip=client_ip())
            if result.accepted:
                login_user(user)
                if result.method is mfa.Method.RECOVERY_CODE:
                    _warn_about_recovery_codes(user)
                return redirect(destination)
            _refused(result, WRONG_CODE)
            if result.outcome is mfa.Outcome.LOCKED:
                return _locked_out()
        return _second_step_page("auth/mfa_verify.html", user, form=form)


def _elsewhere(state: SessionState, destination: str):
    """A second-step page opened in the wrong state: send the browser where it belongs."""
    if state is SessionState.COMPLETE:
        return redirect(destination)
    if state in PENDING:
        return redirect(_second_step_url(state, destination))
    return redirect(url_for("auth.login"))


def _warn_about_recovery_codes(user: StaffUser) -> None:
    remaining = mfa.remaining_recovery_codes(user)
    flash(
        ngettext(
            "You signed in with a recovery code; %(num)s is left. Make new ones from “Two-step sign-in”.",
            "You signed in with a recovery code; %(num)s are left. Make new ones from “Two-step sign-in”.",
            remaining,
        ),
        "warning",
    )


@auth.route("/mfa/enrol", methods=["GET", "POST"])
@limit_codes
def mfa_enrol():
    """First sign-in (or after an admin reset): scan the QR code, type the first code to prove
    the app works, then save the recovery codes shown once."""
    destination = safe_next(request.args.get("next"), url_for("admin.index"))
    check = _session_check()
    if check.state is not SessionState.ENROL:
        return _elsewhere(check.state, destination)
    user = check.session.user
    form = CodeForm()
    with force_locale(user.language):
        secret = mfa.pending_secret(user, actor=Actor.staff(user, client_ip()))
        if form.validate_on_submit():
            result = mfa.complete_enrolment(check.session, form.code.data, ip=client_ip())
            if result.accepted:
                login_user(user)
                return _recovery_codes_page(result.recovery_codes, destination, language=user.language)
            _refused(result, WRONG_CODE)
            if result.outcome is mfa.Outcome.LOCKED:
                return _locked_out()
        return _second_step_page(
            "auth/mfa_enrol.html",
            user,
            form=form,
            qr_code=mfa.qr_code_data_uri(mfa.provisioning_uri(user, secret)),
            secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        )


def _recovery_codes_page(codes: tuple[str, ...], destination: str, *, language: str) -> str:
    """Shown once, straight in the response that made them (pages are never cached)."""
    return render_template(
        "auth/mfa_recovery_codes.html", codes=codes, destination=destination, language=language
    )


@auth.post("/mfa/recovery-codes/saved")
@login_required
def recovery_codes_saved():
    """“I have saved them”: on to the page the staff member was going to."""
    return redirect(safe_next(request.args.get("next"), url_for("admin.index")))


@auth.route("/reauthenticate", methods=["GET", "POST"])
@limit_codes
@login_required
def reauthenticate():
    """Password and a code again, before changes that ask for it (roles, MFA resets, new
    recovery codes); good for STAFF_REAUTH_MINUTES."""
    destination = safe_next(request.args.get("next"), url_for("admin.index"))
    form = ReauthenticateForm()
    if form.validate_on_submit():
        result = mfa.reauthenticate(
            current_staff_session(), form.password.data, form.code.data, ip=client_ip()
        )
        if result.accepted:
            return redirect(destination)
        _refused(result, WRONG_PASSWORD_OR_CODE)
        if result.outcome is mfa.Outcome.LOCKED:
            return _locked_out()
    return render_template(
        "auth/reauthenticate.html",
        form=form,
        minutes=current_app.config["STAFF_REAUTH_MINUTES"],
        language=str(get_locale()),
    )


def _reauthenticate_first(next_url: str):
    flash(_("Enter your password and a code again to continue."), "info")
    return redirect(url_for("auth.reauthenticate", next=next_url))


@auth.route("/mfa/recovery-codes", methods=["GET", "POST"])
@login_required
def recovery_codes():
    """A staff member's own two-step sign-in: how many recovery codes are left, and a new set
    (after entering the password and a code again)."""
    here = url_for("auth.recovery_codes")
    form = FlaskForm()
    if form.validate_on_submit():
        try:
            codes = mfa.regenerate_recovery_codes(
                current_user, actor=staff_actor(), reauthenticated_at=_authenticated_at()
            )
        except service.ReauthenticationRequired:
            db.session.rollback()
            return _reauthenticate_first(here)
        return _recovery_codes_page(codes, url_for("admin.index"), language=str(get_locale()))
    return render_template(
        "auth/mfa_manage.html",
        form=form,
        remaining=mfa.remaining_recovery_codes(current_user),
        enrolled_at=current_user.mfa_enrolled_at,
        local=local,
        language=str(get_locale()),
    )


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
    """Ends the session on the server, whether it was fully or only half signed in."""
    form = LogoutForm()
    check = _session_check()
    if form.validate_on_submit() and check.state in (SessionState.COMPLETE, *PENDING):
        service.sign_out(session.get(SESSION_TOKEN_KEY), actor=Actor.staff(check.session.user, client_ip()))
    logout_user()
    session.clear()
    flash(_("You have signed out."), "info")
    return redirect(url_for("auth.login"))


class StaffView(RoleView):
    """Admins create staff, change roles, deactivate and reset two-step sign-in; all through the
    staff services. Editing (role, active) and resets need the admin's password and a code
    entered within STAFF_REAUTH_MINUTES: the page asks first, and the service checks again."""

    allowed_roles = (Role.ADMIN,)
    can_delete = False
    can_view_details = True
    column_list = ("email", "name", "role", "active", "mfa_enrolled_at", "last_sign_in_at", "created_at")
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
        "mfa_enrolled_at": _l("Two-step sign-in since"),
    }
    column_formatters = {"role": lambda view, context, model, name: role_label(model.role)}
    column_details_exclude_list = ("password_hash", "totp_secret_encrypted", "totp_last_step")
    column_extra_row_actions = [
        EndpointLinkRowAction("fa fa-key", ".reset_mfa_view", title=_l("Reset two-step sign-in"))
    ]
    REAUTHENTICATED_VIEWS = frozenset({"edit_view", "reset_mfa_view"})

    def _handle_view(self, name, **kwargs):
        refused = super()._handle_view(name, **kwargs)
        if refused is not None:
            return refused
        if name in self.REAUTHENTICATED_VIEWS and not service.recently_authenticated(_authenticated_at()):
            return _reauthenticate_first(request.full_path.rstrip("?"))
        return None

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
            service.set_role(model, form.role.data, actor=actor, reauthenticated_at=_authenticated_at())
            if form.active.data:
                service.reactivate(model, actor=actor)
            else:
                service.deactivate(model, actor=actor, reauthenticated_at=_authenticated_at())
            db.session.commit()
        except service.StaffError as exc:
            db.session.rollback()
            _flash_errors(exc)
            return False
        return True

    @expose("/reset-mfa/", methods=("GET", "POST"))
    def reset_mfa_view(self):
        """Someone lost their phone and their recovery codes: remove their second step, end
        their sessions; they set up a new one at their next sign-in."""
        user = db.session.get(StaffUser, request.values.get("id", type=int) or 0)
        if user is None:
            abort(404)
        back = url_for(".index_view")
        question = _(
            "Reset two-step sign-in for %(name)s? They will be signed out everywhere.", name=user.name
        )
        form = FlaskForm()
        if form.validate_on_submit():
            if not confirmed():
                return confirmation_page(self, question, cancel_url=back)
            try:
                mfa.reset(user, actor=staff_actor(), reauthenticated_at=_authenticated_at())
            except service.StaffError as exc:
                db.session.rollback()
                _flash_errors(exc)
                return redirect(back)
            db.session.commit()
            flash(_("Two-step sign-in was reset for %(name)s.", name=user.name), "success")
            return redirect(back)
        return self.render(
            "auth/staff_mfa_reset.html", user=user, form=form, question=question, back=back, local=local
        )


def _flash_errors(error: service.StaffError) -> None:
    details = "; ".join(f"{field}: {', '.join(codes)}" for field, codes in error.errors.items())
    flash(f"{error} {details}".strip(), "error")

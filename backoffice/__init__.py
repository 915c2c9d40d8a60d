"""Ventanilla: the back office behind the insurer's customer portal sign-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, redirect, url_for

ROOT = Path(__file__).resolve().parent.parent


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Build the application from the environment, with `overrides` taking precedence."""
    from werkzeug.middleware.proxy_fix import ProxyFix

    from backoffice.config import load_config
    from backoffice.db import install_sqlite_pragmas, ping_idle_connections, render_migration_item
    from backoffice.extensions import csrf, db, limiter, login_manager, migrate
    from backoffice.i18n import init_i18n
    from backoffice.logs import configure_logging

    app = Flask(
        __name__,
        instance_path=os.environ.get("INSTANCE_PATH") or str(ROOT / "instance"),
        template_folder=str(ROOT / "templates"),
    )
    app.config.update(load_config(os.environ, app.instance_path, overrides))
    configure_logging(app)

    if app.config["TRUSTED_PROXY_COUNT"]:
        count = app.config["TRUSTED_PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count)

    db.init_app(app)
    migrate.init_app(
        app,
        db,
        directory=str(ROOT / "migrations"),
        compare_type=True,
        render_as_batch=True,
        render_item=render_migration_item,
    )
    csrf.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Sign in to open that page."
    login_manager.session_protection = "basic"
    init_i18n(app, str(ROOT / "translations"))
    with app.app_context():
        install_sqlite_pragmas(db.engine)
        ping_idle_connections(db.engine)

    _init_ports(app)
    _register_models()
    _register_web(app)
    _register_cli(app)
    return app


def _init_ports(app: Flask) -> None:
    from backoffice.files import sign_url
    from backoffice.jobs import build_job_queue
    from backoffice.notifications.adapters import build_mailer, build_sms_sender
    from backoffice.signing.providers import build_signer
    from backoffice.storage import build_storage

    app.extensions["job_queue"] = build_job_queue(app.config)
    app.extensions["mailer"] = build_mailer(app.config)
    app.extensions["sms_sender"] = build_sms_sender(app.config)
    app.extensions["storage"] = build_storage(app.config, sign_url)
    app.extensions["signer"] = build_signer(app.config, app.instance_path)


def _register_models() -> None:
    """Import every package's models so metadata (and Alembic) sees all tables."""
    import backoffice.audit.models  # noqa: F401
    import backoffice.calls.models  # noqa: F401
    import backoffice.customers.models  # noqa: F401
    import backoffice.idempotency  # noqa: F401
    import backoffice.notifications.models  # noqa: F401
    import backoffice.otp  # noqa: F401
    import backoffice.review.models  # noqa: F401
    import backoffice.signing.models  # noqa: F401
    import backoffice.staff.models  # noqa: F401


def _register_web(app: Flask) -> None:
    from backoffice.admin import build_admin
    from backoffice.extensions import db
    from backoffice.files import files
    from backoffice.health import health
    from backoffice.security import init_security
    from backoffice.staff.forms import role_label
    from backoffice.staff.views import auth
    from customer_api import init_customer_api

    app.register_blueprint(auth)
    app.add_template_global(role_label)
    app.register_blueprint(health)
    app.register_blueprint(files)
    init_security(app)
    init_customer_api(app)
    if app.config["APP_ENV"] != "production":
        from backoffice.dev_portal import dev_portal

        app.register_blueprint(dev_portal)
    build_admin(app)

    @app.get("/")
    def root():
        return redirect(url_for("admin.index"))

    @app.after_request
    def finish_transaction(response):
        """The request is the unit of work: success commits, any error status rolls back, so a
        rejected request never leaves a half-written record. A request that opened no
        transaction (GET /me reads outside the session) has none to end."""
        session = db.session()
        if not session.in_transaction() and not session.info.get("after_commit"):
            return response
        if response.status_code < 400:
            db.session.commit()
        else:
            db.session.rollback()
        return response


def _register_cli(app: Flask) -> None:
    from backoffice.audit.cli import audit_cli
    from backoffice.cli import jobs_cli, notifications_cli
    from backoffice.customers.cli import policyholders_cli
    from backoffice.demo import demo_cli
    from backoffice.staff.cli import staff_cli

    for group in (staff_cli, audit_cli, jobs_cli, notifications_cli, demo_cli, policyholders_cli):
        app.cli.add_command(group)

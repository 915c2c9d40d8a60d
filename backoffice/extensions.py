"""Unbound extensions; `create_app` binds them to the application."""

import math
import time

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect

from backoffice.db import AppSession, Base

db = SQLAlchemy(model_class=Base, session_options={"class_": AppSession})
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()


class ViewLimiter(Limiter):
    """Every limit in this app is a decorator on its view, checked by that decorator. Before
    every request Flask-Limiter also looks for default and application-wide limits, which this
    app never sets: that pass found nothing and cost each request about 0.07 ms, a tenth of
    GET /me's time."""

    WIDE_LIMITS = ("RATELIMIT_DEFAULT", "RATELIMIT_APPLICATION", "RATELIMIT_META")

    def init_app(self, app: Flask) -> None:
        wide = [name for name in self.WIDE_LIMITS if app.config.get(name)]
        if wide:
            raise ValueError(f"{', '.join(wide)}: limits go on their views as decorators here")
        super().init_app(app)

    def _check_request_limit(self, callable_name: str | None = None, in_middleware: bool = True) -> None:
        if not in_middleware:
            super()._check_request_limit(callable_name, in_middleware)

    def retry_after(self) -> int:
        """Seconds until the window of the limit this request exceeded ends, for the Retry-After
        of a refused request (the only limit header sent: see config's RATELIMIT_HEADERS_ENABLED)."""
        exceeded = self.current_limit
        if exceeded is None:
            return 60
        return max(1, math.ceil(exceeded.window.reset_time - time.time()))


limiter = ViewLimiter(key_func=get_remote_address)

"""Languages: Spanish by default, English on request. The public API follows Accept-Language;
the back office speaks each signed-in staff member's chosen language."""

from __future__ import annotations

from flask import Flask, has_request_context, request
from flask_babel import Babel

LANGUAGES = ("es", "en")
DEFAULT_LANGUAGE = "es"

babel = Babel()


def request_language() -> str:
    """The signed-in staff member's language in the back office; otherwise the caller's preferred
    supported language (Accept-Language), Spanish when none matches."""
    if not has_request_context():
        return DEFAULT_LANGUAGE
    if not request.path.startswith("/api/"):
        from flask_login import current_user

        chosen = getattr(current_user, "language", None)
        if current_user.is_authenticated and chosen in LANGUAGES:
            return chosen
    return request.accept_languages.best_match(LANGUAGES) or DEFAULT_LANGUAGE


def init_i18n(app: Flask, translations_dir: str) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LANGUAGE)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = translations_dir
    babel.init_app(app, locale_selector=request_language)

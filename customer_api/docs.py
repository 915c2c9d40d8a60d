"""The API docs page, with Swagger UI served from the installed package (no CDN)."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path

docs = Blueprint("api_docs", __name__, url_prefix="/api/v1/docs")

ASSETS = {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png"}


@docs.get("")
def page():
    return render_template("api/docs.html")


@docs.get("/assets/<name>")
def asset(name: str):
    if name not in ASSETS:
        abort(404)
    return send_from_directory(swagger_ui_path, name, max_age=86400)

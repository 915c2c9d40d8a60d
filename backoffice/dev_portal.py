"""A stand-in for the customer portal, for development only: the links in emails shown in the
dev mailbox (verify email, reset password) land here and call the real public API, so the whole
sign-up can be tried on one machine. Production serves the real portal elsewhere."""

from __future__ import annotations

from flask import Blueprint, render_template, request

dev_portal = Blueprint("dev_portal", __name__, url_prefix="/portal")


@dev_portal.get("/")
def index():
    return render_template("dev_portal/index.html")


@dev_portal.get("/verify-email")
def verify_email():
    return render_template("dev_portal/verify_email.html", token=request.args.get("token", ""))


@dev_portal.get("/reset-password")
def reset_password():
    return render_template("dev_portal/reset_password.html", token=request.args.get("token", ""))

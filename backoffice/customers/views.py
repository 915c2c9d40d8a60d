"""e-Customer registrations for supervisors: read-only, with each signed contract's evidence."""

from __future__ import annotations

from flask import abort, current_app
from flask_admin import expose
from flask_babel import lazy_gettext as _l
from markupsafe import Markup
from sqlalchemy import func, select

from backoffice import audit
from backoffice.admin import RoleView, time_filters
from backoffice.customers import evidence
from backoffice.customers.models import EcustomerRegistration
from backoffice.extensions import db
from backoffice.otp import OtpChallenge, OtpCode
from backoffice.signing.models import SignedContract
from backoffice.staff.models import Role
from backoffice.storage import StorageError, content_disposition
from backoffice.web import evidence_download, staff_actor


def _challenge_summary(registration: EcustomerRegistration) -> dict[str, int]:
    challenge = db.session.get(OtpChallenge, registration.challenge_id)
    codes_sent = db.session.execute(
        select(func.count(OtpCode.id)).where(OtpCode.challenge_id == registration.challenge_id)
    ).scalar_one()
    return {"codes_sent": codes_sent, "wrong_attempts": challenge.wrong_attempts if challenge else 0}


class EcustomerRegistrationView(RoleView):
    allowed_roles = (Role.SUPERVISOR, Role.ADMIN)
    can_create = False
    can_edit = False
    can_delete = False
    can_view_details = True
    details_template = "admin/ecustomer_details.html"
    column_list = ("created_at", "tax_id", "status", "codes", "signed_at", "activated_at", "expires_at")
    column_default_sort = ("created_at", True)
    column_searchable_list = ("tax_id", "email")
    column_filters = ("status", *time_filters(EcustomerRegistration.created_at, _l("Started")))
    column_labels = {
        "created_at": _l("Started"),
        "tax_id": _l("Tax ID"),
        "email": _l("Email"),
        "phone": _l("Phone"),
        "language": _l("Language"),
        "status": _l("Status"),
        "codes": _l("Codes sent / wrong tries"),
        "signed_at": _l("Signed"),
        "activated_at": _l("Activated"),
        "expires_at": _l("Expires"),
        "contract_version": _l("Contract version"),
        "contract_sha256": _l("Contract SHA-256"),
        "challenge_id": _l("Code challenge"),
        "signed_contract_id": _l("Signed contract"),
        "account_id": _l("Account"),
        "policyholder": _l("Policyholder"),
        "ip": _l("IP"),
        "user_agent": _l("User agent"),
    }
    column_formatters = {
        "codes": lambda view, context, model, name: Markup("{codes_sent} / {wrong_attempts}").format(
            **_challenge_summary(model)
        )
    }
    column_details_exclude_list = ("contract_key",)

    def __init__(self, database, **kwargs):
        super().__init__(EcustomerRegistration, database, **kwargs)

    def render(self, template, **kwargs):
        model = kwargs.get("model")
        if template == self.details_template and model is not None:
            kwargs["attempts"] = _challenge_summary(model)
            kwargs["evidence"] = (
                db.session.get(SignedContract, model.signed_contract_id) if model.signed_contract_id else None
            )
        return super().render(template, **kwargs)

    @expose("/registration/<registration_id>/evidence")
    def evidence_bundle(self, registration_id: str):
        """Everything the registration left, as one ZIP; taking it is audited."""
        registration = db.session.get(EcustomerRegistration, registration_id)
        if registration is None:
            abort(404)
        return evidence_download(lambda: evidence.registration_bundle(registration, actor=staff_actor()))

    @expose("/contract/<int:contract_id>/download")
    def download(self, contract_id: int):
        """Downloading a signed contract is an audited action."""
        contract = db.session.get(SignedContract, contract_id)
        if contract is None:
            abort(404)
        try:
            with current_app.extensions["storage"].open(contract.signed_key) as stream:
                data = stream.read()
        except StorageError:
            abort(503)
        audit.record(
            "contract.downloaded",
            actor=staff_actor(),
            subject_type="signed_contract",
            subject_id=contract.id,
        )
        db.session.commit()
        response = current_app.response_class(data, mimetype="application/pdf")
        response.headers["Content-Disposition"] = content_disposition(
            f"contract-{contract.id}.pdf", inline=False
        )
        response.headers["Cache-Control"] = "private, no-store"
        return response

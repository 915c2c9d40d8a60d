"""e-Customer registration and signed contracts (API.md "e-Customer registration" and
"Signed contracts"): parse, call the e-Customer service, render."""

from __future__ import annotations

from typing import Any

from flask import Response, request
from flask_smorest import Blueprint

from backoffice.customers import ecustomer
from backoffice.extensions import limiter
from backoffice.i18n import request_language
from backoffice.identity import mask_phone
from customer_api.core import (
    BEARER_SECURITY,
    IDEMPOTENCY_KEY,
    client_ip,
    configured_limit,
    current_customer,
    documented_errors,
    guard_json_body,
    idempotent,
    keeping_attempts,
    require_customer,
    user_agent,
)
from customer_api.schemas import (
    ActivatedSchema,
    ContractListSchema,
    EcustomerRegistrationSchema,
    EcustomerStartSchema,
    PasswordSchema,
    SignatureRequestSchema,
    SignedSchema,
)

blp = Blueprint(
    "ecustomer", __name__, url_prefix="/api/v1", description="e-Customer registration and signed contracts"
)
blp.before_request(guard_json_body)

PDF = {"type": "string", "format": "binary"}


def _tax_id_key() -> str:
    body = request.get_json(silent=True)
    value = body.get("tax_id") if isinstance(body, dict) else None
    compact = "".join(ch for ch in value.upper() if ch.isalnum()) if isinstance(value, str) else ""
    return f"tax_id:{compact[:32]}"


def _pdf(data: bytes, filename: str) -> Response:
    response = Response(data, mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'inline; filename="{filename}"'
    response.headers["Cache-Control"] = "private, no-store"
    return response


@blp.route("/ecustomer/registrations", methods=["POST"])
@limiter.limit(configured_limit("ECUSTOMER_REGISTRATION_LIMIT_IP"), scope="ecustomer-ip")
@limiter.limit(
    configured_limit("ECUSTOMER_REGISTRATION_LIMIT_TAX_ID"), key_func=_tax_id_key, scope="ecustomer-tax-id"
)
@blp.arguments(EcustomerStartSchema)
@blp.doc(parameters=[IDEMPOTENCY_KEY])
@blp.response(201, EcustomerRegistrationSchema)
@documented_errors(blp, 409, 422, 429, 503)
@idempotent
def start(data: dict[str, Any]):
    """Start: tax ID, email and phone must match our records; an SMS code is sent.

    A mismatch answers `details_mismatch` without saying which detail differs."""
    registration = ecustomer.start(
        data["tax_id"],
        data["email"],
        data["phone"],
        language=request_language(),
        ip=client_ip(),
        user_agent=user_agent(),
    )
    return {
        "id": registration.id,
        "status": "code_sent",
        "phone_hint": mask_phone(registration.phone),
    }, 201


@blp.route("/ecustomer/registrations/<registration_id>/code", methods=["POST"])
@blp.response(202)
@documented_errors(blp, 404, 409, 410, 429)
def resend_code(registration_id: str):
    """Send a new code; the previous one stops working (wrong tries are not reset)."""

    def action():
        registration = ecustomer.find(registration_id)
        ecustomer.resend_code(registration, ip=client_ip())

    keeping_attempts(action)


@blp.route("/ecustomer/registrations/<registration_id>/contract", methods=["GET"])
@blp.response(200, PDF, content_type="application/pdf", description="The contract to be signed")
@documented_errors(blp, 404, 409, 410, 503, json_body=False)
def contract(registration_id: str):
    """Exactly the bytes that the signature will be made over."""
    registration = ecustomer.find(registration_id)
    return _pdf(ecustomer.contract_bytes(registration), f"contract-{registration.contract_version}.pdf")


@blp.route("/ecustomer/registrations/<registration_id>/signature", methods=["POST"])
@blp.arguments(SignatureRequestSchema)
@blp.response(200, SignedSchema)
@documented_errors(blp, 404, 409, 410, 422, 503)
def signature(data: dict[str, Any], registration_id: str):
    """Sign the contract with the SMS code; `accept_contract` must be true."""

    def action():
        registration = ecustomer.find(registration_id)
        return ecustomer.sign(
            registration, data["code"], data["accept_contract"], ip=client_ip(), user_agent=user_agent()
        )

    signed = keeping_attempts(action)
    return {"status": "signed", "contract_id": signed.id}


@blp.route("/ecustomer/registrations/<registration_id>/password", methods=["POST"])
@blp.arguments(PasswordSchema)
@blp.response(201, ActivatedSchema)
@documented_errors(blp, 404, 409, 410, 422)
def password(data: dict[str, Any], registration_id: str):
    """Choose the password; the account is active and its username is the tax ID."""
    registration = ecustomer.find(registration_id)
    account = ecustomer.activate(registration, data["password"], ip=client_ip())
    return {"status": "active", "username": account.tax_id}, 201


@blp.route("/me/contracts", methods=["GET"])
@blp.doc(security=BEARER_SECURITY)
@blp.response(200, ContractListSchema)
@documented_errors(blp, 401, json_body=False)
@require_customer
def my_contracts():
    """The contracts this customer has signed."""
    account, _ = current_customer()
    items = [
        {"id": c.id, "kind": c.kind, "signed_at": c.signed_at, "sha256": c.signed_sha256}
        for c in ecustomer.contracts_of(account)
    ]
    return {"items": items}


@blp.route("/me/contracts/<contract_id>", methods=["GET"])
@blp.doc(security=BEARER_SECURITY)
@blp.response(200, PDF, content_type="application/pdf", description="The signed PDF")
@documented_errors(blp, 401, 404, 503, json_body=False)
@require_customer
def my_contract(contract_id: str):
    """The signed PDF; its SHA-256 is the one listed in /me/contracts."""
    account, _ = current_customer()
    signed = ecustomer.contract_of(account, contract_id)
    return _pdf(ecustomer.signed_pdf(signed), f"contract-{signed.id}.pdf")

"""Completing a representative application from the emailed link (API.md "Representative
applications", the `/representative-completions/{token}` rows): parse, call the completion
service, render."""

from __future__ import annotations

from typing import Any

from flask import request
from flask_smorest import Blueprint

from backoffice.extensions import limiter
from backoffice.identity import mask_phone
from backoffice.review import completion as completions
from customer_api.core import (
    IDEMPOTENCY_KEY,
    client_ip,
    configured_limit,
    documented_errors,
    guard_json_body,
    idempotent,
    keeping_attempts,
    user_agent,
)
from customer_api.schemas import (
    ActivatedSchema,
    CompletionConfirmSchema,
    CompletionSignatureSchema,
    CompletionViewSchema,
    PasswordSchema,
    PinSentSchema,
    SignedSchema,
)

blp = Blueprint(
    "representative_completions",
    __name__,
    url_prefix="/api/v1",
    description="Completing a representative's registration from the emailed link",
)
blp.before_request(guard_json_body)


def _token_key() -> str:
    """Limits count per link, whatever address the tries come from."""
    return f"completion:{completions.token_hash((request.view_args or {}).get('token', ''))}"


@blp.route("/representative-completions/<token>", methods=["GET"])
@blp.response(200, CompletionViewSchema)
@documented_errors(blp, 404, 410, json_body=False)
def read(token: str):
    """Where the completion stands, the e-signature provider's terms to accept, and which
    details to type again (their values are never sent back)."""
    return completions.describe(completions.find(token))


@blp.route("/representative-completions/<token>/confirm", methods=["POST"])
@limiter.limit(configured_limit("COMPLETION_CONFIRM_LIMIT"), key_func=_token_key, scope="completion-token")
@blp.arguments(CompletionConfirmSchema)
@blp.response(202, PinSentSchema)
@documented_errors(blp, 404, 409, 410, 422, 429, 503)
def confirm(data: dict[str, Any], token: str):
    """Type again the details validated by phone and accept the provider's terms; a PIN is
    sent by SMS. Confirming again while the PIN is pending sends a new one.

    A mismatch answers `details_mismatch` without saying which detail differs; too many
    mismatches make the link unusable (`410 attempts_exhausted`)."""

    def action():
        return completions.confirm(
            completions.find(token),
            data["company_tax_id"],
            data["tax_id"],
            data["email"],
            data["phone"],
            data["accept_provider_terms"],
            ip=client_ip(),
            user_agent=user_agent(),
        )

    completion = keeping_attempts(action)
    return {"status": "pin_sent", "phone_hint": mask_phone(completion.application.phone)}


@blp.route("/representative-completions/<token>/signature", methods=["POST"])
@limiter.limit(configured_limit("COMPLETION_CONFIRM_LIMIT"), key_func=_token_key, scope="completion-token")
@blp.arguments(CompletionSignatureSchema)
@blp.response(200, SignedSchema)
@documented_errors(blp, 404, 409, 410, 422, 429, 503)
def signature(data: dict[str, Any], token: str):
    """Sign the representative contract with the PIN received by SMS."""

    def action():
        return completions.sign(completions.find(token), data["pin"], ip=client_ip(), user_agent=user_agent())

    signed = keeping_attempts(action)
    return {"status": "signed", "contract_id": signed.id}


@blp.route("/representative-completions/<token>/password", methods=["POST"])
@blp.arguments(PasswordSchema)
@blp.doc(parameters=[IDEMPOTENCY_KEY])
@blp.response(201, ActivatedSchema)
@documented_errors(blp, 404, 409, 410, 422)
@idempotent
def password(data: dict[str, Any], token: str):
    """Choose the password: the account is active, its username is your tax ID, and the link
    is used up."""
    account = completions.activate(completions.find(token), data["password"], ip=client_ip())
    return {"status": "active", "username": account.tax_id}, 201

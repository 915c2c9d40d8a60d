"""Individual accounts (API.md "Individual accounts"): parse, call the account service, render."""

from __future__ import annotations

from typing import Any

from flask import jsonify, request
from flask_smorest import Blueprint

from backoffice.customers import phone
from backoffice.customers import service as accounts
from backoffice.customers.models import CustomerAccount
from backoffice.extensions import db, limiter
from backoffice.i18n import request_language
from backoffice.identity import mask_phone
from customer_api.core import (
    BEARER_SECURITY,
    IDEMPOTENCY_KEY,
    bearer_token,
    client_ip,
    configured_limit,
    current_customer,
    documented_errors,
    guard_json_body,
    idempotent,
    keeping_attempts,
    require_customer,
    unauthorized,
    user_agent,
)
from customer_api.schemas import (
    AccountSchema,
    PasswordResetConfirmSchema,
    PasswordResetRequestSchema,
    PhoneCodeSentSchema,
    PhoneConfirmationSchema,
    PolicyListSchema,
    ProfileUpdateSchema,
    RegistrationSchema,
    SessionSchema,
    SignInSchema,
    StatusSchema,
    TokenSchema,
    VerifiedSessionSchema,
)

blp = Blueprint("accounts", __name__, url_prefix="/api/v1", description="Individual customer accounts")
blp.before_request(guard_json_body)


def _json_field(name: str):
    """Rate-limit key from a body field, normalised so case tricks do not dodge the limit."""

    def key() -> str:
        body = request.get_json(silent=True)
        value = body.get(name) if isinstance(body, dict) else None
        return f"{name}:{str(value).strip().lower()[:255] if isinstance(value, str) else ''}"

    return key


def _failed(response) -> bool:
    return response.status_code in (401, 403)


def account_body(account: CustomerAccount | Any) -> dict[str, Any]:
    """From the account, or from its summary row (`accounts.account_summary`), whose columns
    are named like the account's attributes."""
    return {
        "id": account.id,
        "email": account.email,
        "username": account.username,
        "email_verified": account.email_verified,
        "profile": accounts.profile_of(account),
        "association": {
            "status": str(account.association_status),
            "policyholder_name": account.policyholder_name,
        },
    }


def session_body(issued: accounts.IssuedSession) -> dict[str, Any]:
    return {"access_token": issued.token, "token_type": "Bearer", "expires_in": issued.expires_in}


@blp.route("/accounts", methods=["POST"])
@limiter.limit(configured_limit("REGISTRATION_LIMIT_IP"), scope="registration-ip")
@limiter.limit(
    configured_limit("REGISTRATION_LIMIT_EMAIL"), key_func=_json_field("email"), scope="registration-email"
)
@blp.arguments(RegistrationSchema)
@blp.doc(parameters=[IDEMPOTENCY_KEY])
@blp.response(202, StatusSchema)
@documented_errors(blp, 409, 422, 429)
@idempotent
def register(data: dict[str, Any]):
    """Register with email and password; a verification link is emailed.

    The answer is the same whether or not the email already has an account (its owner is
    emailed instead), so this endpoint cannot be used to find out who is a customer."""
    accounts.register(
        data["email"], data["password"], data["accept_terms"], language=request_language(), ip=client_ip()
    )
    return {"status": "verification_pending"}


@blp.route("/accounts/verify", methods=["POST"])
@blp.arguments(TokenSchema)
@blp.response(200, VerifiedSessionSchema)
@documented_errors(blp, 404, 410, 422)
def verify(data: dict[str, Any]):
    """Verify the email with the token from the link; this also signs the customer in."""
    issued = accounts.verify_email(data["token"], ip=client_ip(), user_agent=user_agent())
    return {**session_body(issued), "account": account_body(issued.account)}


@blp.route("/sessions", methods=["POST"])
@limiter.limit(configured_limit("CUSTOMER_SIGN_IN_LIMIT_IP"), scope="sign-in-ip", deduct_when=_failed)
@limiter.limit(
    configured_limit("CUSTOMER_SIGN_IN_LIMIT_USERNAME"),
    key_func=_json_field("username"),
    scope="sign-in-username",
    deduct_when=_failed,
)
@blp.arguments(SignInSchema)
@blp.response(200, SessionSchema)
@documented_errors(blp, 401, 403, 422, 429)
def sign_in(data: dict[str, Any]):
    """Sign in with email or tax ID and password; returns a bearer access token."""
    try:
        issued = accounts.sign_in(data["username"], data["password"], ip=client_ip(), user_agent=user_agent())
    except accounts.AccountError:
        db.session.commit()  # the refusal answers 401/403, but the failed attempt stays audited
        raise
    return session_body(issued)


@blp.route("/sessions/current", methods=["DELETE"])
@blp.doc(security=BEARER_SECURITY)
@blp.response(204)
@documented_errors(blp, 401, json_body=False)
@require_customer
def sign_out():
    """Sign out: this access token stops working."""
    _, session = current_customer()
    accounts.sign_out(session, ip=client_ip())


@blp.route("/password-resets", methods=["POST"])
@limiter.limit(configured_limit("PASSWORD_RESET_LIMIT_IP"), scope="reset-ip")
@limiter.limit(
    configured_limit("PASSWORD_RESET_LIMIT_EMAIL"), key_func=_json_field("email"), scope="reset-email"
)
@blp.arguments(PasswordResetRequestSchema)
@blp.doc(parameters=[IDEMPOTENCY_KEY])
@blp.response(202)
@documented_errors(blp, 409, 422, 429)
@idempotent
def request_reset(data: dict[str, Any]):
    """Ask for a password-reset link. Always 202: it does not say whether the email is known."""
    accounts.request_password_reset(data["email"], ip=client_ip())


@blp.route("/password-resets/confirm", methods=["POST"])
@blp.arguments(PasswordResetConfirmSchema)
@blp.response(204)
@documented_errors(blp, 404, 410, 422)
def confirm_reset(data: dict[str, Any]):
    """Set a new password with the emailed token; every existing session is signed out."""
    accounts.reset_password(data["token"], data["password"], ip=client_ip())


@blp.route("/me", methods=["GET"])
@blp.doc(security=BEARER_SECURITY)
@blp.response(200, AccountSchema)
@documented_errors(blp, 401, json_body=False)
def me():
    """The signed-in customer's account, profile and association status."""
    account = accounts.account_summary(bearer_token())
    if account is None:
        return unauthorized()
    # Already AccountSchema's shape (tests/test_api_me.py checks): flask-smorest passes a
    # response through, so the body is not dumped a second time on every request.
    return jsonify(account_body(account))


@blp.route("/me", methods=["PATCH"])
@blp.doc(security=BEARER_SECURITY)
@require_customer  # before the body is parsed: without credentials the answer is 401, not 422
@blp.arguments(ProfileUpdateSchema, required=False)  # every field is optional, the body too
@blp.response(200, AccountSchema)
@documented_errors(blp, 401, 422)
def update_me(data: dict[str, Any]):
    """Complete or change the profile: postal address, phone, name and tax ID (the last three
    help match the account to its policyholder record)."""
    account, _ = current_customer()
    change = accounts.ProfileChange(
        address=data.get("address"),
        phone=data.get("phone"),
        phone_sent="phone" in data,
        first_name=data.get("first_name"),
        last_name=data.get("last_name"),
        tax_id=data.get("tax_id"),
        sent=frozenset(name for name in ("first_name", "last_name", "tax_id") if name in data),
    )
    accounts.update_profile(account, change, ip=client_ip())
    return account_body(account)


@blp.route("/me/phone-verification", methods=["POST"])
@blp.doc(security=BEARER_SECURITY)
@blp.response(202, PhoneCodeSentSchema)
@documented_errors(blp, 401, 409, 429)
@require_customer
def send_phone_code():
    """Text a code to the profile phone; asked again, a new code replaces the old one. A proven
    phone lets the account be linked to the policyholder record holding that number."""
    account, _ = current_customer()
    keeping_attempts(lambda: phone.send_code(account, ip=client_ip()))
    return {"status": "code_sent", "phone_hint": mask_phone(account.phone)}, 202


@blp.route("/me/phone-verification/confirm", methods=["POST"])
@blp.doc(security=BEARER_SECURITY)
@require_customer  # before the body is parsed: without credentials the answer is 401, not 422
@blp.arguments(PhoneConfirmationSchema)
@blp.response(200, AccountSchema)
@documented_errors(blp, 401, 409, 410, 422)
def confirm_phone(data: dict[str, Any]):
    """Prove the profile phone with the code it received."""
    account, _ = current_customer()
    keeping_attempts(lambda: phone.confirm(account, data["code"], ip=client_ip()))
    return account_body(account)


@blp.route("/me/policies", methods=["GET"])
@blp.doc(security=BEARER_SECURITY)
@blp.response(200, PolicyListSchema)
@documented_errors(blp, 401, json_body=False)
@require_customer
def my_policies():
    """Policies of the policyholder this account is linked to (empty until it is linked)."""
    account, _ = current_customer()
    items = [
        {"number": p.number, "product": p.product, "status": p.status, "coverage": p.coverage}
        for p in accounts.policies_of(account)
    ]
    return {"items": items}

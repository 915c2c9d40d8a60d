"""API.md "Individual accounts", row by row, with its status and error codes."""

from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from backoffice.audit.models import AuditEvent
from backoffice.customers.models import AssociationCase, AssociationStatus, CustomerAccount, CustomerSession
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage
from tests.factories import (
    CUSTOMER_PASSWORD,
    bearer,
    last_link_token,
    make_customer,
    make_policyholder,
)

NEW_PASSWORD = "Otra-Clave-Nueva-77"


def register(
    client, email="ana.lopez@correo.example", password=CUSTOMER_PASSWORD, accept_terms=True, **kwargs
):
    return client.post(
        "/api/v1/accounts",
        json={"email": email, "password": password, "accept_terms": accept_terms},
        **kwargs,
    )


def sign_in(client, username, password=CUSTOMER_PASSWORD):
    return client.post("/api/v1/sessions", json={"username": username, "password": password})


def emails_to(recipient: str) -> list[OutboxMessage]:
    return list(
        db.session.execute(
            select(OutboxMessage).where(OutboxMessage.recipient == recipient).order_by(OutboxMessage.id)
        ).scalars()
    )


def actions() -> list[str]:
    return list(db.session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())


# POST /accounts


def test_register_answers_202_verification_pending_and_emails_the_link(client):
    response = register(client)

    assert response.status_code == 202
    assert response.json == {"status": "verification_pending"}
    [email] = emails_to("ana.lopez@correo.example")
    assert email.template == "verify_email"
    assert "http://localhost:5000/portal/verify-email?token=" in email.body_text
    assert "SPAM" in email.body_text


def test_register_stores_the_email_lower_cased_and_the_password_hashed(client):
    register(client, email="Ana.Lopez@Correo.EXAMPLE")

    account = db.session.execute(select(CustomerAccount)).scalar_one()
    assert account.email == "ana.lopez@correo.example"
    assert account.password_hash.startswith("$argon2id$")
    assert account.email_verified_at is None
    assert account.terms_accepted_at is not None


def test_register_email_follows_accept_language(client):
    register(client, headers={"Accept-Language": "en-GB,en;q=0.9"})

    [email] = emails_to("ana.lopez@correo.example")
    assert email.language == "en"
    assert email.subject == "Confirm your email address"


def test_register_reports_every_password_rule_broken(client):
    response = register(client, password="short")

    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert response.json["code"] == "validation_error"
    assert response.json["errors"]["password"] == ["min_length", "uppercase", "digit", "special"]


def test_register_refuses_an_invalid_email(client):
    response = register(client, email="not-an-email")

    assert response.status_code == 422
    assert response.json["errors"]["email"] == ["invalid"]


def test_register_requires_accepting_the_terms(client):
    response = register(client, accept_terms=False)

    assert response.status_code == 422
    assert response.json["errors"]["accept_terms"] == ["required"]


def test_register_reports_missing_fields(client):
    response = client.post("/api/v1/accounts", json={})

    assert response.status_code == 422
    assert response.json["errors"] == {
        "email": ["required"],
        "password": ["required"],
        "accept_terms": ["required"],
    }


def test_register_creates_nothing_on_validation_failure(client):
    register(client, password="short")

    assert db.session.execute(select(func.count(CustomerAccount.id))).scalar() == 0
    assert db.session.execute(select(func.count(OutboxMessage.id))).scalar() == 0


def test_registering_an_existing_email_answers_the_same_and_warns_the_owner(app, client):
    make_customer("ana.lopez@correo.example")

    response = register(client, email="ANA.LOPEZ@correo.example", password="Distinta-Clave-99")

    assert response.status_code == 202
    assert response.json == {"status": "verification_pending"}
    assert emails_to("ana.lopez@correo.example")[-1].template == "registration_attempt"
    assert db.session.execute(select(func.count(CustomerAccount.id))).scalar() == 1


def test_known_and_unknown_emails_get_identical_responses(app, client):
    make_customer("known@correo.example")

    known = register(client, email="known@correo.example")
    unknown = register(client, email="unknown@correo.example")

    assert (known.status_code, known.get_data()) == (unknown.status_code, unknown.get_data())


def test_registering_again_before_verifying_sends_a_fresh_link(app, client):
    register(client)

    register(client)

    templates = [message.template for message in emails_to("ana.lopez@correo.example")]
    assert templates == ["verify_email", "registration_repeated_unverified"]


def test_register_is_audited(client):
    register(client)

    assert "customer.registered" in actions()


# POST /accounts/verify


def test_verify_signs_in_and_returns_the_account(client):
    register(client)

    response = client.post(
        "/api/v1/accounts/verify", json={"token": last_link_token("ana.lopez@correo.example")}
    )

    assert response.status_code == 200
    body = response.json
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 8 * 3600
    assert body["account"]["email"] == "ana.lopez@correo.example"
    assert body["account"]["email_verified"] is True
    assert client.get("/api/v1/me", headers=bearer(body["access_token"])).status_code == 200


def test_verify_token_works_only_once(client):
    register(client)
    token = last_link_token("ana.lopez@correo.example")
    client.post("/api/v1/accounts/verify", json={"token": token})

    again = client.post("/api/v1/accounts/verify", json={"token": token})

    assert again.status_code == 410
    assert again.json["code"] == "token_used"


def test_verify_token_expires_after_48_hours(client):
    register(client)
    token = last_link_token("ana.lopez@correo.example")

    with time_machine.travel(utcnow() + timedelta(hours=48, seconds=1)):
        response = client.post("/api/v1/accounts/verify", json={"token": token})

    assert response.status_code == 410
    assert response.json["code"] == "token_expired"


def test_verify_token_still_works_just_before_expiry(client):
    register(client)
    token = last_link_token("ana.lopez@correo.example")

    with time_machine.travel(utcnow() + timedelta(hours=47, minutes=59)):
        response = client.post("/api/v1/accounts/verify", json={"token": token})

    assert response.status_code == 200


def test_verify_lifetime_is_configurable(make_app):
    app = make_app(VERIFY_TOKEN_HOURS=1)
    with app.app_context():
        client = app.test_client()
        register(client)
        token = last_link_token("ana.lopez@correo.example")

        with time_machine.travel(utcnow() + timedelta(hours=1, seconds=1)):
            response = client.post("/api/v1/accounts/verify", json={"token": token})

    assert response.json["code"] == "token_expired"


@pytest.mark.parametrize("tampered", ["", "x", "not-a-token", "A" * 43])
def test_unknown_or_tampered_verify_token_is_404(client, tampered):
    register(client)

    response = client.post("/api/v1/accounts/verify", json={"token": tampered})

    assert response.status_code == 404
    assert response.json["code"] == "token_invalid"


def test_altered_real_token_is_404(client):
    register(client)
    token = last_link_token("ana.lopez@correo.example")
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")

    assert client.post("/api/v1/accounts/verify", json={"token": altered}).status_code == 404


def test_reset_token_cannot_verify_an_email(app, client):
    make_customer("ana.lopez@correo.example", verified=False)
    client.post("/api/v1/password-resets", json={"email": "ana.lopez@correo.example"})

    response = client.post(
        "/api/v1/accounts/verify", json={"token": last_link_token("ana.lopez@correo.example")}
    )

    assert response.status_code == 404


# Association on verification


def test_verification_links_the_only_policyholder_with_that_email(app, client):
    holder = make_policyholder(email="Maria.Garcia@correo.example", policies=2)
    register(client, email="maria.garcia@correo.example")

    response = client.post(
        "/api/v1/accounts/verify", json={"token": last_link_token("maria.garcia@correo.example")}
    )

    assert response.json["account"]["association"] == {"status": "linked", "policyholder_name": holder.name}
    policies = client.get("/api/v1/me/policies", headers=bearer(response.json["access_token"]))
    assert [item["number"] for item in policies.json["items"]] == ["12345678Z-1", "12345678Z-2"]
    assert "customer.linked" in actions()


def test_verification_without_a_matching_holder_opens_an_association_case(app, client):
    register(client)

    response = client.post(
        "/api/v1/accounts/verify", json={"token": last_link_token("ana.lopez@correo.example")}
    )

    assert response.json["account"]["association"]["status"] == "pending"
    case = db.session.execute(select(AssociationCase)).scalar_one()
    assert (case.reason, case.candidate_ids) == ("no_match", [])


def test_two_holders_with_the_same_email_are_not_guessed(app, client):
    first = make_policyholder("12345678Z", email="familia@correo.example")
    second = make_policyholder("87654321X", email="familia@correo.example", name="José García")
    register(client, email="familia@correo.example")

    client.post("/api/v1/accounts/verify", json={"token": last_link_token("familia@correo.example")})

    account = db.session.execute(select(CustomerAccount)).scalar_one()
    assert account.association_status == AssociationStatus.PENDING
    case = db.session.execute(select(AssociationCase)).scalar_one()
    assert (case.reason, sorted(case.candidate_ids)) == ("several_matches", sorted([first.id, second.id]))


def test_policies_are_empty_until_the_account_is_linked(app, client):
    make_customer("ana.lopez@correo.example")
    token = sign_in(client, "ana.lopez@correo.example").json["access_token"]

    response = client.get("/api/v1/me/policies", headers=bearer(token))

    assert response.status_code == 200
    assert response.json == {"items": []}


# POST /sessions


def test_sign_in_with_email_is_case_insensitive(app, client):
    make_customer("ana.lopez@correo.example")

    response = sign_in(client, "  ANA.Lopez@correo.example ")

    assert response.status_code == 200
    assert set(response.json) == {"access_token", "token_type", "expires_in"}
    assert "customer.signed_in" in actions()


def test_sign_in_by_tax_id_for_accounts_that_have_one(app, client):
    account = make_customer("ana.lopez@correo.example")
    account.tax_id = "12345678Z"
    db.session.commit()

    response = sign_in(client, "12345678-z")

    assert response.status_code == 200


def test_wrong_password_and_unknown_user_get_the_same_401(app, client):
    make_customer("ana.lopez@correo.example")

    wrong = sign_in(client, "ana.lopez@correo.example", "Wrong-Password-123")
    unknown = sign_in(client, "nobody@correo.example")

    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json == unknown.json
    assert wrong.json["code"] == "invalid_credentials"
    assert actions().count("customer.sign_in_failed") == 2


def test_unverified_account_with_the_right_password_gets_403(app, client):
    make_customer("ana.lopez@correo.example", verified=False)

    response = sign_in(client, "ana.lopez@correo.example")

    assert response.status_code == 403
    assert response.json["code"] == "email_not_verified"


def test_unverified_account_with_a_wrong_password_gets_401(app, client):
    make_customer("ana.lopez@correo.example", verified=False)

    assert sign_in(client, "ana.lopez@correo.example", "Wrong-Password-123").status_code == 401


# DELETE /sessions/current


def test_sign_out_revokes_the_token(app, client):
    make_customer("ana.lopez@correo.example")
    token = sign_in(client, "ana.lopez@correo.example").json["access_token"]

    response = client.delete("/api/v1/sessions/current", headers=bearer(token))

    assert response.status_code == 204
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401


def test_sign_out_leaves_other_sessions_alone(app, client):
    make_customer("ana.lopez@correo.example")
    phone = sign_in(client, "ana.lopez@correo.example").json["access_token"]
    laptop = sign_in(client, "ana.lopez@correo.example").json["access_token"]

    client.delete("/api/v1/sessions/current", headers=bearer(phone))

    assert client.get("/api/v1/me", headers=bearer(laptop)).status_code == 200


def test_sign_out_without_a_token_is_401(client):
    response = client.delete("/api/v1/sessions/current")

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_session_expires(app, client):
    make_customer("ana.lopez@correo.example")
    token = sign_in(client, "ana.lopez@correo.example").json["access_token"]

    with time_machine.travel(utcnow() + timedelta(hours=8, seconds=1)):
        assert client.get("/api/v1/me", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize(("offset", "status"), [(timedelta(seconds=-1), 200), (timedelta(0), 401)])
def test_me_and_every_other_call_agree_on_when_a_session_ends(app, client, offset, status):
    """GET /me reads its answer in SQL; the other calls check the loaded session in Python."""
    make_customer("ana.lopez@correo.example")
    token = sign_in(client, "ana.lopez@correo.example").json["access_token"]
    newest = select(CustomerSession.expires_at).order_by(CustomerSession.created_at.desc()).limit(1)
    expires_at = db.session.scalar(newest)

    with time_machine.travel(expires_at + offset, tick=False):
        assert client.get("/api/v1/me", headers=bearer(token)).status_code == status
        assert client.get("/api/v1/me/policies", headers=bearer(token)).status_code == status


def test_tokens_are_stored_hashed(app, client):
    make_customer("ana.lopez@correo.example")
    token = sign_in(client, "ana.lopez@correo.example").json["access_token"]

    stored = db.session.execute(select(CustomerSession.token_hash)).scalars().all()
    assert token not in stored
    assert all(len(value) == 64 for value in stored)


# POST /password-resets and /password-resets/confirm


def test_reset_request_is_202_for_known_and_unknown_emails(app, client):
    make_customer("ana.lopez@correo.example")

    known = client.post("/api/v1/password-resets", json={"email": "ana.lopez@correo.example"})
    unknown = client.post("/api/v1/password-resets", json={"email": "nobody@correo.example"})

    assert known.status_code == unknown.status_code == 202
    assert known.get_data() == unknown.get_data()
    assert emails_to("ana.lopez@correo.example")[-1].template == "password_reset"
    assert emails_to("nobody@correo.example") == []


def test_reset_confirm_sets_the_password_and_revokes_every_session(app, client):
    make_customer("ana.lopez@correo.example")
    old_session = sign_in(client, "ana.lopez@correo.example").json["access_token"]
    client.post("/api/v1/password-resets", json={"email": "ana.lopez@correo.example"})

    response = client.post(
        "/api/v1/password-resets/confirm",
        json={"token": last_link_token("ana.lopez@correo.example"), "password": NEW_PASSWORD},
    )

    assert response.status_code == 204
    assert client.get("/api/v1/me", headers=bearer(old_session)).status_code == 401
    assert sign_in(client, "ana.lopez@correo.example").status_code == 401
    assert sign_in(client, "ana.lopez@correo.example", NEW_PASSWORD).status_code == 200
    assert "customer.password_reset" in actions()


def test_reset_confirm_applies_the_password_rules(app, client):
    make_customer("ana.lopez@correo.example")
    client.post("/api/v1/password-resets", json={"email": "ana.lopez@correo.example"})
    token = last_link_token("ana.lopez@correo.example")

    response = client.post(
        "/api/v1/password-resets/confirm", json={"token": token, "password": "Ana.Lopez-2026"}
    )

    assert response.status_code == 422
    assert response.json["errors"]["password"] == ["contains_identity"]
    retry = client.post("/api/v1/password-resets/confirm", json={"token": token, "password": NEW_PASSWORD})
    assert retry.status_code == 204


def test_reset_token_is_single_use(app, client):
    make_customer("ana.lopez@correo.example")
    client.post("/api/v1/password-resets", json={"email": "ana.lopez@correo.example"})
    token = last_link_token("ana.lopez@correo.example")
    client.post("/api/v1/password-resets/confirm", json={"token": token, "password": NEW_PASSWORD})

    again = client.post(
        "/api/v1/password-resets/confirm", json={"token": token, "password": "Tercera-Clave-88"}
    )

    assert again.status_code == 410
    assert again.json["code"] == "token_used"


def test_reset_token_expires(app, client):
    make_customer("ana.lopez@correo.example")
    client.post("/api/v1/password-resets", json={"email": "ana.lopez@correo.example"})
    token = last_link_token("ana.lopez@correo.example")

    with time_machine.travel(utcnow() + timedelta(hours=2, seconds=1)):
        response = client.post(
            "/api/v1/password-resets/confirm", json={"token": token, "password": NEW_PASSWORD}
        )

    assert response.json["code"] == "token_expired"


def test_unknown_reset_token_is_404(client):
    response = client.post(
        "/api/v1/password-resets/confirm", json={"token": "nope", "password": NEW_PASSWORD}
    )

    assert response.status_code == 404
    assert response.json["code"] == "token_invalid"


# GET /me and PATCH /me


def test_me_shape(app, client):
    make_customer("ana.lopez@correo.example")
    token = sign_in(client, "ana.lopez@correo.example").json["access_token"]

    body = client.get("/api/v1/me", headers=bearer(token)).json

    assert set(body) >= {"id", "email", "username", "profile", "association"}
    assert body["username"] == "ana.lopez@correo.example"
    assert body["association"]["status"] in ("linked", "pending", "none")


@pytest.mark.parametrize("header", [{}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}])
def test_me_without_a_valid_token_is_401(client, header):
    response = client.get("/api/v1/me", headers=header)

    assert response.status_code == 401
    assert response.json["code"] == "unauthorized"


def test_profile_update_normalises_phone_and_address(app, client):
    make_customer("ana.lopez@correo.example")
    token = sign_in(client, "ana.lopez@correo.example").json["access_token"]

    response = client.patch(
        "/api/v1/me",
        headers=bearer(token),
        json={
            "phone": "612 34 56 78",
            "address": {
                "line1": "Calle  Mayor 1",
                "postal_code": "28013",
                "city": "Madrid",
                "province": "Madrid",
                "country": "es",
            },
        },
    )

    assert response.status_code == 200
    profile = response.json["profile"]
    assert profile["phone"] == "+34612345678"
    assert profile["address"] == {
        "line1": "Calle Mayor 1",
        "line2": None,
        "postal_code": "28013",
        "city": "Madrid",
        "province": "Madrid",
        "country": "ES",
    }
    assert "customer.profile_changed" in actions()


def test_profile_update_refuses_bad_phone_and_postal_code_and_changes_nothing(app, client):
    make_customer("ana.lopez@correo.example")
    token = sign_in(client, "ana.lopez@correo.example").json["access_token"]

    response = client.patch(
        "/api/v1/me",
        headers=bearer(token),
        json={"phone": "12", "address": {"postal_code": "2801", "city": "Madrid", "country": "ES"}},
    )

    assert response.status_code == 422
    assert response.json["errors"] == {"phone": ["invalid"], "address.postal_code": ["invalid"]}
    assert client.get("/api/v1/me", headers=bearer(token)).json["profile"]["address"]["city"] is None


def test_profile_update_keeps_fields_not_sent(app, client):
    make_customer("ana.lopez@correo.example")
    token = sign_in(client, "ana.lopez@correo.example").json["access_token"]
    client.patch("/api/v1/me", headers=bearer(token), json={"phone": "+34 612 345 678"})

    response = client.patch("/api/v1/me", headers=bearer(token), json={"address": {"city": "Sevilla"}})

    assert response.json["profile"]["phone"] == "+34612345678"
    assert response.json["profile"]["address"]["city"] == "Sevilla"


# Conventions


def test_malformed_json_is_400_problem(client):
    response = client.post("/api/v1/sessions", data="{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert response.json["code"] == "malformed_request"


def test_wrong_types_are_400_with_field_codes(client):
    response = client.post(
        "/api/v1/accounts", json={"email": 12, "password": ["x"], "accept_terms": "perhaps"}
    )

    assert response.status_code == 400
    assert response.json["errors"] == {"email": ["type"], "password": ["type"], "accept_terms": ["type"]}


def test_a_body_that_is_not_an_object_is_400(client):
    response = client.post("/api/v1/accounts", json=["email"])

    assert response.status_code == 400


def test_non_json_body_is_415(client):
    response = client.post(
        "/api/v1/accounts", data="email=a@b.example", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 415
    assert response.json["code"] == "unsupported_media_type"


def test_oversized_body_is_413(client):
    response = client.post("/api/v1/accounts", json={"email": "a@b.example", "password": "x" * 70_000})

    assert response.status_code == 413
    assert response.content_type == "application/problem+json"


def test_unknown_path_is_404_problem(client):
    response = client.get("/api/v1/no-such-thing")

    assert response.status_code == 404
    assert response.content_type == "application/problem+json"


def test_wrong_method_is_405_problem(client):
    response = client.put("/api/v1/accounts", json={})

    assert response.status_code == 405
    assert response.json["code"] == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_messages_are_spanish_by_default_and_english_on_request(client):
    spanish = client.get("/api/v1/me")
    english = client.get("/api/v1/me", headers={"Accept-Language": "en"})

    assert spanish.json["title"] == "Inicia sesión para hacer esto."
    assert english.json["title"] == "Sign in to do this."


def test_back_office_errors_are_not_problem_json(client):
    assert client.get("/no-such-page").content_type.startswith("text/html")


def test_unknown_and_known_usernames_cost_one_password_hash_check_each(app, client, monkeypatch):
    from backoffice import passwords

    checks = []
    real_verify = passwords.verify_password

    def counting_verify(password_hash, password):
        checks.append(password_hash[:9])
        return real_verify(password_hash, password)

    monkeypatch.setattr(passwords, "verify_password", counting_verify)
    monkeypatch.setattr("backoffice.customers.service.verify_password", counting_verify)
    make_customer("ana.lopez@correo.example")

    sign_in(client, "ana.lopez@correo.example", "Wrong-Password-123")
    sign_in(client, "nobody@correo.example", "Wrong-Password-123")

    assert checks == ["$argon2id", "$argon2id"]

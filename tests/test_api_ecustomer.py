"""API.md "e-Customer registration" and "Signed contracts", row by row."""

import hashlib
import io
import re
from datetime import timedelta

import pytest
import time_machine
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext
from sqlalchemy import select

from backoffice.audit.models import AuditEvent
from backoffice.customers.models import CustomerAccount, EcustomerRegistration
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage
from backoffice.signing.models import SignedContract
from backoffice.staff.models import Role
from tests.factories import CUSTOMER_PASSWORD, bearer, make_customer, make_policyholder, signed_in_client

TAX_ID = "12345678Z"
EMAIL = "maria.garcia@correo.example"
PHONE = "+34612345612"
PASSWORD = "Firma-Segura-2026"


@pytest.fixture
def holder(app):
    return make_policyholder(TAX_ID, email=EMAIL, policies=2)


def start(client, tax_id=TAX_ID, email=EMAIL, phone=PHONE, **kwargs):
    return client.post(
        "/api/v1/ecustomer/registrations", json={"tax_id": tax_id, "email": email, "phone": phone}, **kwargs
    )


def latest_code() -> str:
    text = (
        db.session.execute(
            select(OutboxMessage.body_text)
            .where(OutboxMessage.channel == "sms")
            .order_by(OutboxMessage.id.desc())
        )
        .scalars()
        .first()
    )
    return re.search(r"\b(\d{6})\b", text).group(1)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def sign(client, registration_id, code, accept=True):
    return client.post(
        f"/api/v1/ecustomer/registrations/{registration_id}/signature",
        json={"code": code, "accept_contract": accept},
    )


def signed_registration(client) -> str:
    registration_id = start(client).json["id"]
    assert sign(client, registration_id, latest_code()).status_code == 200
    return registration_id


def activated(client) -> tuple[str, str]:
    registration_id = signed_registration(client)
    client.post(f"/api/v1/ecustomer/registrations/{registration_id}/password", json={"password": PASSWORD})
    token = client.post("/api/v1/sessions", json={"username": TAX_ID, "password": PASSWORD}).json[
        "access_token"
    ]
    return registration_id, token


# POST /ecustomer/registrations


def test_matching_details_send_a_code_and_answer_201(client, holder):
    response = start(client, tax_id="12345678-z", email="Maria.Garcia@correo.example", phone="612 345 612")

    assert response.status_code == 201
    assert response.json["status"] == "code_sent"
    assert response.json["phone_hint"] == "+34 6** *** *12"
    sms = db.session.execute(select(OutboxMessage).where(OutboxMessage.channel == "sms")).scalar_one()
    assert sms.recipient == PHONE
    assert re.search(r"\b\d{6}\b", sms.body_text)


def test_registration_ids_are_unguessable(client, holder):
    registration_id = start(client).json["id"]

    assert len(registration_id) >= 22  # at least 128 bits in URL-safe base64
    assert db.session.get(EcustomerRegistration, registration_id) is not None


@pytest.mark.parametrize(
    "details",
    [
        {"tax_id": "87654321X"},
        {"email": "otra@correo.example"},
        {"phone": "+34622000111"},
    ],
    ids=["tax_id", "email", "phone"],
)
def test_any_mismatch_answers_the_same_without_naming_the_field(client, holder, details):
    response = start(client, **details)

    assert response.status_code == 422
    assert response.json["code"] == "details_mismatch"
    assert "errors" not in response.json
    assert "917 83 83 83" in response.json["title"]
    assert set(response.json) == {"type", "title", "status", "code", "contact_phone"}


def test_mismatch_bodies_are_identical_whichever_field_differs(client, holder):
    bodies = {
        start(client, **details).get_data()
        for details in ({"email": "x@correo.example"}, {"phone": "+34622000111"})
    }

    assert len(bodies) == 1


def test_mismatch_message_mentions_the_broker(client, holder):
    response = start(client, email="x@correo.example", headers={"Accept-Language": "en"})

    assert "broker" in response.json["title"]


def test_malformed_details_are_reported_by_field(client, holder):
    response = start(client, tax_id="12345678A", email="not-an-email", phone="12")

    assert response.status_code == 422
    assert response.json["errors"] == {"tax_id": ["invalid"], "email": ["invalid"], "phone": ["invalid"]}


def test_a_company_tax_id_points_to_the_representatives_route(client, holder):
    response = start(client, tax_id="B12345674")

    assert response.status_code == 422
    assert response.json["code"] == "company_tax_id"
    assert response.json["representatives"] == "/api/v1/representative-applications"


def test_a_tax_id_with_an_active_account_is_409(client, holder):
    activated(client)

    response = start(client)

    assert response.status_code == 409
    assert response.json["code"] == "already_registered"


def test_start_is_audited(client, holder):
    start(client)

    assert db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "ecustomer.registration_started")
    ).scalar_one()


# GET /ecustomer/registrations/{id}/contract


def test_contract_is_the_pdf_whose_hash_will_be_signed(client, holder):
    registration_id = start(client).json["id"]

    first = client.get(f"/api/v1/ecustomer/registrations/{registration_id}/contract")
    second = client.get(f"/api/v1/ecustomer/registrations/{registration_id}/contract")

    assert first.status_code == 200
    assert first.content_type == "application/pdf"
    assert first.data.startswith(b"%PDF")
    assert first.data == second.data
    registration = db.session.get(EcustomerRegistration, registration_id)
    assert hashlib.sha256(first.data).hexdigest() == registration.contract_sha256


def test_contract_of_an_unknown_registration_is_404(client):
    assert client.get("/api/v1/ecustomer/registrations/nope/contract").status_code == 404


def test_contract_after_signing_is_409(client, holder):
    registration_id = signed_registration(client)

    assert client.get(f"/api/v1/ecustomer/registrations/{registration_id}/contract").status_code == 409


# POST /ecustomer/registrations/{id}/signature


def test_right_code_signs_the_contract_with_evidence(client, holder):
    registration_id = start(client).json["id"]
    unsigned = client.get(f"/api/v1/ecustomer/registrations/{registration_id}/contract").data

    response = sign(client, registration_id, latest_code())

    assert response.status_code == 200
    assert response.json["status"] == "signed"
    evidence = db.session.get(SignedContract, response.json["contract_id"])
    assert evidence.unsigned_sha256 == hashlib.sha256(unsigned).hexdigest()
    assert (evidence.signer_name, evidence.signer_tax_id) == (holder.name, TAX_ID)
    assert evidence.masked_phone == "+34 6** *** *12"
    assert evidence.provider == "local-pades"
    registration = db.session.get(EcustomerRegistration, registration_id)
    assert evidence.challenge_id == registration.challenge_id
    assert evidence.contract_version == registration.contract_version


def test_signed_pdf_validates_and_matches_the_evidence(app, client, holder):
    registration_id = start(client).json["id"]
    contract_id = sign(client, registration_id, latest_code()).json["contract_id"]
    evidence = db.session.get(SignedContract, contract_id)

    with app.extensions["storage"].open(evidence.signed_key) as stream:
        signed = stream.read()
    with app.extensions["storage"].open(evidence.unsigned_key) as stream:
        unsigned = stream.read()

    assert hashlib.sha256(signed).hexdigest() == evidence.signed_sha256
    assert signed.startswith(unsigned)
    signature = PdfFileReader(io.BytesIO(signed)).embedded_signatures[0]
    signer_certificate = app.extensions["signer"].certificate
    status = validate_pdf_signature(signature, ValidationContext(trust_roots=[signer_certificate]))
    assert status.intact and status.valid
    assert status.signing_cert.dump() == signer_certificate.dump()


def test_wrong_code_answers_422_with_attempts_left(client, holder):
    registration_id = start(client).json["id"]

    response = sign(client, registration_id, wrong(latest_code()))

    assert response.status_code == 422
    assert response.json["code"] == "code_invalid"
    assert response.json["attempts_left"] == 4


def test_five_wrong_codes_exhaust_the_registration(client, holder):
    registration_id = start(client).json["id"]
    code = latest_code()
    answers = [sign(client, registration_id, wrong(code)) for _ in range(5)]

    last = sign(client, registration_id, code)

    assert [a.status_code for a in answers] == [422, 422, 422, 422, 410]
    assert answers[-1].json["code"] == "attempts_exhausted"
    assert last.status_code == 410
    assert last.json["code"] == "attempts_exhausted"
    assert db.session.execute(select(SignedContract)).first() is None


def test_the_contract_must_be_accepted_and_refusing_costs_no_attempt(client, holder):
    registration_id = start(client).json["id"]

    refused = sign(client, registration_id, latest_code(), accept=False)
    accepted = sign(client, registration_id, latest_code())

    assert refused.status_code == 422
    assert refused.json["errors"] == {"accept_contract": ["required"]}
    assert accepted.status_code == 200


def test_code_expires_after_ten_minutes(client, holder):
    registration_id = start(client).json["id"]
    code = latest_code()

    with time_machine.travel(utcnow() + timedelta(minutes=10, seconds=5)):
        response = sign(client, registration_id, code)

    assert response.status_code == 410
    assert response.json["code"] == "code_expired"


def test_signing_twice_is_409(client, holder):
    registration_id = signed_registration(client)

    assert sign(client, registration_id, "123456").status_code == 409


# POST /ecustomer/registrations/{id}/code


def test_resend_too_soon_is_429(client, holder):
    registration_id = start(client).json["id"]

    response = client.post(f"/api/v1/ecustomer/registrations/{registration_id}/code")

    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0


def test_resend_sends_a_new_code_and_retires_the_old_one(client, holder):
    from backoffice.otp import OtpCode

    registration_id = start(client).json["id"]

    with time_machine.travel(utcnow() + timedelta(seconds=61)):
        resent = client.post(f"/api/v1/ecustomer/registrations/{registration_id}/code")
        new = sign(client, registration_id, latest_code())

    assert resent.status_code == 202
    codes = db.session.execute(select(OtpCode).order_by(OtpCode.id)).scalars().all()
    assert len(codes) == 2
    assert codes[0].superseded_at is not None
    assert new.status_code == 200


def test_resend_of_an_unknown_registration_is_404(client):
    assert client.post("/api/v1/ecustomer/registrations/nope/code").status_code == 404


def test_registration_expires_after_24_hours(client, holder):
    registration_id = start(client).json["id"]

    with time_machine.travel(utcnow() + timedelta(hours=24, seconds=1)):
        response = sign(client, registration_id, latest_code())

    assert response.status_code == 410
    assert response.json["code"] == "registration_expired"


# POST /ecustomer/registrations/{id}/password


def test_password_before_signing_is_409(client, holder):
    registration_id = start(client).json["id"]

    response = client.post(
        f"/api/v1/ecustomer/registrations/{registration_id}/password", json={"password": PASSWORD}
    )

    assert response.status_code == 409


def test_password_rules_apply_including_the_tax_id(client, holder):
    registration_id = signed_registration(client)

    response = client.post(
        f"/api/v1/ecustomer/registrations/{registration_id}/password", json={"password": "Clave-12345678Z"}
    )

    assert response.status_code == 422
    assert response.json["errors"]["password"] == ["contains_identity"]


def test_password_creates_a_linked_account_whose_username_is_the_tax_id(client, holder):
    registration_id = signed_registration(client)

    response = client.post(
        f"/api/v1/ecustomer/registrations/{registration_id}/password", json={"password": PASSWORD}
    )

    assert response.status_code == 201
    assert response.json == {"status": "active", "username": TAX_ID}
    session = client.post("/api/v1/sessions", json={"username": "12345678z", "password": PASSWORD})
    assert session.status_code == 200
    me = client.get("/api/v1/me", headers=bearer(session.json["access_token"])).json
    assert me["username"] == TAX_ID
    assert me["email"] == EMAIL
    assert me["association"]["status"] == "linked"
    policies = client.get("/api/v1/me/policies", headers=bearer(session.json["access_token"])).json["items"]
    assert len(policies) == 2


def test_the_new_account_holds_the_phone_the_signing_code_proved(client, holder):
    _, token = activated(client)

    profile = client.get("/api/v1/me", headers=bearer(token)).json["profile"]

    assert (profile["phone"], profile["phone_verified"]) == (PHONE, True)


def test_an_individual_account_keeps_its_own_phone_unproven(client, holder):
    existing = make_customer(EMAIL, password=CUSTOMER_PASSWORD)
    existing.phone = "+34699887766"
    db.session.commit()

    activated(client)

    db.session.refresh(existing)
    assert (existing.phone, existing.phone_verified_at) == ("+34699887766", None)


def test_password_twice_is_409(client, holder):
    registration_id, _ = activated(client)

    response = client.post(
        f"/api/v1/ecustomer/registrations/{registration_id}/password", json={"password": PASSWORD}
    )

    assert response.status_code == 409


def test_an_individual_account_with_the_same_email_gains_the_tax_id(client, holder):
    existing = make_customer(EMAIL, password=CUSTOMER_PASSWORD)

    activated(client)

    db.session.refresh(existing)
    assert existing.tax_id == TAX_ID
    assert db.session.execute(select(CustomerAccount)).scalars().all() == [existing]


# GET /me/contracts and /me/contracts/{id}


def test_my_contracts_list_and_download(client, holder):
    _, token = activated(client)

    listing = client.get("/api/v1/me/contracts", headers=bearer(token))

    assert listing.status_code == 200
    [item] = listing.json["items"]
    assert item["kind"] == "ecustomer"
    pdf = client.get(f"/api/v1/me/contracts/{item['id']}", headers=bearer(token))
    assert pdf.status_code == 200
    assert pdf.content_type == "application/pdf"
    assert hashlib.sha256(pdf.data).hexdigest() == item["sha256"]


def test_someone_elses_contract_is_404(client, holder):
    _, _ = activated(client)
    contract_id = db.session.execute(select(SignedContract.id)).scalar_one()
    make_customer("otra.persona@correo.example")
    other = client.post(
        "/api/v1/sessions", json={"username": "otra.persona@correo.example", "password": CUSTOMER_PASSWORD}
    ).json["access_token"]

    assert client.get(f"/api/v1/me/contracts/{contract_id}", headers=bearer(other)).status_code == 404
    assert client.get("/api/v1/me/contracts", headers=bearer(other)).json == {"items": []}


def test_contracts_need_a_token(client):
    assert client.get("/api/v1/me/contracts").status_code == 401


# Back office


def test_supervisor_sees_registrations_and_the_evidence(app, client, holder):
    registration_id = signed_registration(client)
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)

    listing = supervisor.get("/admin/ecustomer/")
    details = supervisor.get(f"/admin/ecustomer/details/?id={registration_id}")

    assert TAX_ID in listing.get_data(as_text=True)
    page = details.get_data(as_text=True)
    evidence = db.session.execute(select(SignedContract)).scalar_one()
    assert evidence.signed_sha256 in page
    assert "+34 6** *** *12" in page


def test_downloading_a_signed_contract_is_audited(app, client, holder):
    signed_registration(client)
    evidence = db.session.execute(select(SignedContract)).scalar_one()
    supervisor, user = signed_in_client(app, Role.SUPERVISOR)

    response = supervisor.get(f"/admin/ecustomer/contract/{evidence.id}/download")

    assert response.status_code == 200
    assert hashlib.sha256(response.data).hexdigest() == evidence.signed_sha256
    event = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "contract.downloaded")
    ).scalar_one()
    assert (event.actor_id, event.subject_id) == (str(user.id), str(evidence.id))


def test_agents_cannot_download_contracts(app, client, holder):
    signed_registration(client)
    evidence = db.session.execute(select(SignedContract)).scalar_one()
    agent, _ = signed_in_client(app, Role.CALL_AGENT)

    assert agent.get(f"/admin/ecustomer/contract/{evidence.id}/download").status_code == 403


# Outside systems down


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_storage_down_at_start_is_503_and_creates_nothing(make_app, tmp_path):
    app = make_app(STORAGE_URL="s3://documents/x", S3_ENDPOINT_URL=f"http://127.0.0.1:{_closed_port()}")
    with app.app_context():
        make_policyholder(TAX_ID, email=EMAIL)
        response = start(app.test_client())

        assert response.status_code == 503
        assert response.content_type == "application/problem+json"
        assert db.session.execute(select(EcustomerRegistration)).first() is None
        assert db.session.execute(select(OutboxMessage)).first() is None


def test_signing_provider_down_is_503_and_the_code_stays_usable(make_app):
    from backoffice.otp import OtpCode

    app = make_app(SIGNING_TSA_URL=f"http://127.0.0.1:{_closed_port()}/tsa")
    with app.app_context():
        make_policyholder(TAX_ID, email=EMAIL)
        client = app.test_client()
        registration_id = start(client).json["id"]

        response = sign(client, registration_id, latest_code())

        assert response.status_code == 503
        assert db.session.execute(select(OtpCode.used_at)).scalar_one() is None
        assert db.session.execute(select(SignedContract)).first() is None


def test_a_retried_start_with_the_same_idempotency_key_sends_one_code(client, holder):
    first = start(client, headers={"Idempotency-Key": "start-1"})
    second = start(client, headers={"Idempotency-Key": "start-1"})

    assert first.status_code == second.status_code == 201
    assert first.json == second.json
    assert len(db.session.execute(select(EcustomerRegistration)).scalars().all()) == 1
    assert len(db.session.execute(select(OutboxMessage)).scalars().all()) == 1

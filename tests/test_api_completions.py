"""API.md "Representative applications", the `/representative-completions/{token}` rows: the
emailed link, the details confirmed again, the provider's terms, the PIN signature and the
password; and the service's invitations and the expiry job."""

import hashlib
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko_certvalidator import ValidationContext
from sqlalchemy import select

from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.customers.models import AssociationCase, CustomerAccount
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage
from backoffice.otp import OtpChallenge, OtpCode
from backoffice.review import completion
from backoffice.review.jobs import expire_stale_invitations
from backoffice.review.models import (
    ApplicationStatus,
    CompletionStatus,
    RepresentativeApplication,
    RepresentativeCompletion,
)
from backoffice.review.states import transition
from backoffice.signing.contract import render_contract
from backoffice.signing.models import SignedContract
from tests.factories import CUSTOMER_PASSWORD, bearer, make_customer, make_policyholder
from tests.test_api_representatives import FIELDS, submit

SYSTEM = Actor.system("tests")
CIF = "B12345674"
TAX_ID = "12345678Z"
EMAIL = "lucia.perez@transportes.example"
PHONE = "+34611222333"
PASSWORD = "Firma-Segura-2026"
DETAILS = {"company_tax_id": CIF, "tax_id": TAX_ID, "email": EMAIL, "phone": PHONE}
LINK_DAYS = timedelta(days=7)


def validated_application(client, **kwargs) -> RepresentativeApplication:
    """Submitted through the API, then moved along by the legal team and the call centre."""
    application = db.session.get(RepresentativeApplication, submit(client, **kwargs).json["id"])
    for state in (
        ApplicationStatus.IN_REVIEW,
        ApplicationStatus.APPROVED,
        ApplicationStatus.CALL_SCHEDULED,
        ApplicationStatus.VALIDATED,
    ):
        transition(application, state, actor=SYSTEM)
    db.session.commit()
    return application


def invite(application, now=None) -> str:
    _, token = completion.invite(application, actor=SYSTEM, now=now)
    db.session.commit()
    return token


def invite_again(now=None) -> str:
    _, token = completion.reinvite(the_application(), actor=SYSTEM, now=now)
    db.session.commit()
    return token


@pytest.fixture
def token(client) -> str:
    return invite(validated_application(client))


def company_holder():
    holder = make_policyholder(CIF, email=None, name="Transportes Ejemplo S.L.", kind="company")
    db.session.commit()
    return holder


def read(client, token):
    return client.get(f"/api/v1/representative-completions/{token}")


def confirm(client, token, accept=True, **details):
    body = {**DETAILS, **details, "accept_provider_terms": accept}
    return client.post(f"/api/v1/representative-completions/{token}/confirm", json=body)


def sign(client, token, pin):
    return client.post(f"/api/v1/representative-completions/{token}/signature", json={"pin": pin})


def choose_password(client, token, password=PASSWORD, **kwargs):
    return client.post(
        f"/api/v1/representative-completions/{token}/password", json={"password": password}, **kwargs
    )


def latest_pin() -> str:
    text = db.session.execute(
        select(OutboxMessage.body_text)
        .where(OutboxMessage.channel == "sms")
        .order_by(OutboxMessage.id.desc())
        .limit(1)
    ).scalar_one()
    return re.search(r"\b(\d{6})\b", text).group(1)


def wrong(pin: str) -> str:
    return f"{(int(pin) + 1) % 1_000_000:06d}"


def signed(client, token) -> int:
    assert confirm(client, token).status_code == 202
    response = sign(client, token, latest_pin())
    assert response.status_code == 200
    return response.json["contract_id"]


def activated(client, token) -> str:
    signed(client, token)
    assert choose_password(client, token).status_code == 201
    return client.post("/api/v1/sessions", json={"username": TAX_ID, "password": PASSWORD}).json[
        "access_token"
    ]


def the_completion() -> RepresentativeCompletion:
    db.session.expire_all()
    return db.session.execute(
        select(RepresentativeCompletion).order_by(RepresentativeCompletion.id.desc()).limit(1)
    ).scalar_one()


def the_application() -> RepresentativeApplication:
    db.session.expire_all()
    return db.session.execute(select(RepresentativeApplication)).scalar_one()


# The invitation (service, called by the call console)


def test_invite_moves_the_application_to_invited(client):
    application = validated_application(client)

    invite(application)

    assert the_application().status == ApplicationStatus.INVITED


def test_invite_emails_the_link_and_the_expiry_in_madrid_time(client):
    application = validated_application(client)

    token = invite(application, now=datetime(2026, 11, 20, 17, 30, tzinfo=UTC))

    message = db.session.execute(
        select(OutboxMessage).where(OutboxMessage.template == "representative_completion")
    ).scalar_one()
    assert message.recipient == EMAIL
    assert f"http://localhost:5000/portal/representatives/complete?token={token}" in message.body_text
    assert "27 noviembre 2026, 18:30" in message.body_text  # 17:30 UTC + 7 days, Madrid winter time


def test_only_the_hash_of_the_token_is_stored(client, token):
    stored = the_completion()

    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert stored.expires_at - stored.created_at == LINK_DAYS


def test_invite_is_audited_on_the_application(client, token):
    actions = db.session.execute(
        select(AuditEvent.action).where(AuditEvent.subject_id == the_application().id)
    ).scalars()

    assert {"application.invited", "completion.invited"} <= set(actions)


def test_only_a_validated_application_can_be_invited(client):
    application = db.session.get(RepresentativeApplication, submit(client).json["id"])

    with pytest.raises(completion.CompletionError):
        completion.invite(application, actor=SYSTEM)


def test_a_new_link_supersedes_the_old_one(client, token):
    new_token = invite_again()

    assert read(client, token).status_code == 404
    assert read(client, token).json["code"] == "token_invalid"
    assert read(client, new_token).status_code == 200


def test_a_new_link_keeps_the_application_invited_and_is_audited(client, token):
    invite_again()

    assert the_application().status == ApplicationStatus.INVITED
    assert db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "completion.reinvited")
    ).scalar_one()


def test_only_an_invited_application_gets_a_new_link(client):
    application = validated_application(client)

    with pytest.raises(completion.CompletionError):
        completion.reinvite(application, actor=SYSTEM)


# GET /representative-completions/{token}


def test_the_link_shows_terms_and_fields_without_echoing_values(client, token):
    response = read(client, token)

    assert response.status_code == 200
    assert response.json["status"] == "invited"
    assert response.json["fields_to_confirm"] == ["company_tax_id", "tax_id", "email", "phone"]
    assert response.json["provider_terms"]["version"] == "2026.1"
    assert "PAdES" in response.json["provider_terms"]["text"]
    page = response.get_data(as_text=True)
    for value in (CIF, TAX_ID, EMAIL, "611", FIELDS["first_name"]):
        assert value not in page


def test_the_terms_are_in_the_applicants_language(client):
    token = invite(validated_application(client, headers={"Accept-Language": "en"}))

    terms = read(client, token).json["provider_terms"]

    assert terms["language"] == "en"
    assert terms["text"].startswith("TERMS OF USE OF THE ELECTRONIC SIGNATURE SERVICE")


def test_an_unknown_link_is_404(client):
    response = read(client, "a" * 43)

    assert response.status_code == 404
    assert response.json["code"] == "token_invalid"


def test_an_expired_link_is_410(client, token):
    with time_machine.travel(utcnow() + LINK_DAYS + timedelta(seconds=1)):
        response = read(client, token)

    assert response.status_code == 410
    assert response.json["code"] == "token_expired"


def test_a_used_link_is_410(client, token):
    activated(client, token)

    response = read(client, token)

    assert response.status_code == 410
    assert response.json["code"] == "token_used"


# POST /representative-completions/{token}/confirm


def test_matching_details_send_a_pin_to_the_validated_phone(client, token):
    response = confirm(client, token)

    assert response.status_code == 202
    assert response.json == {"status": "pin_sent", "phone_hint": "+34 6** *** *33"}
    sms = db.session.execute(select(OutboxMessage).where(OutboxMessage.channel == "sms")).scalar_one()
    assert sms.recipient == PHONE
    assert "representante" in sms.body_text
    assert db.session.execute(select(OtpChallenge.purpose)).scalar_one() == "representative_contract"


def test_details_written_differently_but_equal_once_normalised_match(client, token):
    response = confirm(
        client,
        token,
        company_tax_id="b-1234.5674",
        tax_id="12345678-z",
        email="Lucia.PEREZ@Transportes.Example",
        phone="611 22 23 33",
    )

    assert response.status_code == 202


@pytest.mark.parametrize(
    "details",
    [
        {"company_tax_id": "A58818501"},
        {"tax_id": "87654321X"},
        {"email": "otra@transportes.example"},
        {"phone": "+34622000111"},
    ],
    ids=["company_tax_id", "tax_id", "email", "phone"],
)
def test_any_mismatch_answers_the_same_without_naming_the_field(client, token, details):
    response = confirm(client, token, **details)

    assert response.status_code == 422
    assert response.json["code"] == "details_mismatch"
    assert set(response.json) == {"type", "title", "status", "code", "contact_phone", "attempts_left"}
    assert response.json["contact_phone"] in response.json["title"]


def test_a_mismatch_stays_counted_although_the_request_fails(client, token):
    confirm(client, token, email="otra@transportes.example")

    assert the_completion().confirm_failures == 1


def test_five_mismatches_kill_the_link(client, token):
    answers = [confirm(client, token, email="otra@transportes.example") for _ in range(5)]

    right = confirm(client, token)

    assert [answer.status_code for answer in answers] == [422, 422, 422, 422, 410]
    assert answers[-1].json["code"] == "attempts_exhausted"
    assert (right.status_code, right.json["code"]) == (410, "attempts_exhausted")


def test_a_link_killed_by_mismatches_is_audited(client, token):
    for _ in range(5):
        confirm(client, token, email="otra@transportes.example")

    assert db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "completion.attempts_exhausted")
    ).scalar_one()


@pytest.mark.parametrize("accept", [False, None], ids=["false", "missing"])
def test_the_provider_terms_must_be_accepted(client, token, accept):
    body = {**DETAILS, **({} if accept is None else {"accept_provider_terms": accept})}

    response = client.post(f"/api/v1/representative-completions/{token}/confirm", json=body)

    assert response.status_code == 422
    assert response.json["errors"] == {"accept_provider_terms": ["required"]}


def test_malformed_details_are_reported_by_field_and_not_counted(client, token):
    response = confirm(client, token, company_tax_id=TAX_ID, tax_id=CIF, email="nope", phone="12")

    assert response.status_code == 422
    assert response.json["errors"] == {
        "company_tax_id": ["invalid"],
        "tax_id": ["invalid"],
        "email": ["invalid"],
        "phone": ["invalid"],
    }
    assert the_completion().confirm_failures == 0


def test_the_terms_acceptance_is_recorded(client, token):
    terms = Path(__file__).resolve().parents[1] / "templates/terms/provider/2026.1/es.txt"
    expected = hashlib.sha256(terms.read_bytes()).hexdigest()

    client.post(
        f"/api/v1/representative-completions/{token}/confirm",
        json={**DETAILS, "accept_provider_terms": True},
        environ_base={"REMOTE_ADDR": "198.51.100.4"},
    )

    stored = the_completion()
    assert (stored.terms_version, stored.terms_sha256) == ("2026.1", expected)
    assert stored.terms_accepted_at is not None
    assert stored.terms_accepted_ip == "198.51.100.4"


def test_the_contract_names_the_representative_for_the_company(client, token):
    confirm(client, token)

    stored = the_completion()
    expected = render_contract(
        language="es",
        holder_name="Lucía Pérez Gil, en nombre y representación de Transportes Ejemplo S.L. (B12345674)",
        tax_id=TAX_ID,
        signing_date=stored.terms_accepted_at.astimezone(ZoneInfo("Europe/Madrid")).date(),
    )
    assert stored.contract_sha256 == hashlib.sha256(expected).hexdigest()


def test_confirming_again_too_soon_is_429(client, token):
    confirm(client, token)

    response = confirm(client, token)

    assert response.status_code == 429
    assert response.json["code"] == "resend_too_soon"
    assert int(response.headers["Retry-After"]) > 0


def test_confirming_again_later_sends_a_new_pin_and_retires_the_old_one(client, token):
    confirm(client, token)

    with time_machine.travel(utcnow() + timedelta(seconds=61)):
        again = confirm(client, token)

    assert again.status_code == 202
    codes = db.session.execute(select(OtpCode).order_by(OtpCode.id)).scalars().all()
    assert len(codes) == 2
    assert codes[0].superseded_at is not None


def test_confirming_after_signing_is_409(client, token):
    signed(client, token)

    assert confirm(client, token).status_code == 409


def test_confirm_is_rate_limited_per_link(make_app):
    app = make_app(COMPLETION_CONFIRM_LIMIT="2 per hour")
    with app.app_context():
        client = app.test_client()
        token = invite(validated_application(client))
        statuses = [confirm(client, token, email="otra@transportes.example").status_code for _ in range(3)]

    assert statuses == [422, 422, 429]


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_storage_down_at_confirm_is_503_and_sends_nothing(make_app):
    app = make_app()
    with app.app_context():
        token = invite(validated_application(app.test_client()))
    down = make_app(STORAGE_URL="s3://documents/x", S3_ENDPOINT_URL=f"http://127.0.0.1:{_closed_port()}")
    with down.app_context():
        response = confirm(down.test_client(), token)

        assert response.status_code == 503
        assert the_completion().status == CompletionStatus.INVITED
        assert db.session.execute(select(OutboxMessage).where(OutboxMessage.channel == "sms")).first() is None


# POST /representative-completions/{token}/signature


def test_the_right_pin_signs_the_contract_with_evidence(client, token):
    confirm(client, token)

    response = sign(client, token, latest_pin())

    assert response.status_code == 200
    assert response.json["status"] == "signed"
    evidence = db.session.get(SignedContract, response.json["contract_id"])
    assert evidence.kind == "representative"
    assert (evidence.signer_name, evidence.signer_tax_id) == ("Lucía Pérez Gil", TAX_ID)
    assert evidence.masked_phone == "+34 6** *** *33"
    assert evidence.unsigned_sha256 == the_completion().contract_sha256
    assert evidence.policyholder_id is None


def test_the_evidence_names_the_companys_policyholder_record(client, token):
    holder = company_holder()

    contract_id = signed(client, token)

    assert db.session.get(SignedContract, contract_id).policyholder_id == holder.id


def test_the_signed_pdf_validates(app, client, token):
    evidence = db.session.get(SignedContract, signed(client, token))

    with app.extensions["storage"].open(evidence.signed_key) as stream:
        data = stream.read()

    assert hashlib.sha256(data).hexdigest() == evidence.signed_sha256
    signature = PdfFileReader(io.BytesIO(data)).embedded_signatures[0]
    certificate = app.extensions["signer"].certificate
    status = validate_pdf_signature(signature, ValidationContext(trust_roots=[certificate]))
    assert status.intact and status.valid


def test_a_wrong_pin_answers_422_with_attempts_left(client, token):
    confirm(client, token)

    response = sign(client, token, wrong(latest_pin()))

    assert response.status_code == 422
    assert response.json["code"] == "code_invalid"
    assert response.json["attempts_left"] == 4


def test_five_wrong_pins_exhaust_the_link(client, token):
    confirm(client, token)
    pin = latest_pin()
    answers = [sign(client, token, wrong(pin)) for _ in range(5)]

    right = sign(client, token, pin)

    assert [answer.status_code for answer in answers] == [422, 422, 422, 422, 410]
    assert answers[-1].json["code"] == "attempts_exhausted"
    assert (right.status_code, right.json["code"]) == (410, "attempts_exhausted")
    assert db.session.execute(select(SignedContract)).first() is None


def test_the_pin_expires_after_ten_minutes(client, token):
    confirm(client, token)
    pin = latest_pin()

    with time_machine.travel(utcnow() + timedelta(minutes=10, seconds=5)):
        response = sign(client, token, pin)

    assert response.status_code == 410
    assert response.json["code"] == "code_expired"


def test_signing_before_confirming_is_409(client, token):
    response = sign(client, token, "123456")

    assert response.status_code == 409
    assert response.json["code"] == "not_confirmed"


def test_signing_twice_is_409(client, token):
    signed(client, token)

    response = sign(client, token, "123456")

    assert response.status_code == 409
    assert response.json["code"] == "already_signed"


# POST /representative-completions/{token}/password


def test_password_before_signing_is_409(client, token):
    confirm(client, token)

    response = choose_password(client, token)

    assert response.status_code == 409
    assert response.json["code"] == "not_signed"


def test_password_rules_apply_including_the_tax_id(client, token):
    signed(client, token)

    response = choose_password(client, token, "Clave-12345678Z")

    assert response.status_code == 422
    assert response.json["errors"]["password"] == ["contains_identity"]


def test_password_creates_an_account_whose_username_is_the_tax_id(client, token):
    signed(client, token)

    response = choose_password(client, token)

    assert response.status_code == 201
    assert response.json == {"status": "active", "username": TAX_ID}
    session = client.post("/api/v1/sessions", json={"username": "12345678z", "password": PASSWORD})
    assert session.status_code == 200
    me = client.get("/api/v1/me", headers=bearer(session.json["access_token"])).json
    assert (me["username"], me["email"]) == (TAX_ID, EMAIL)


def test_the_account_is_linked_to_the_companys_policyholder_record(client, token):
    company_holder()

    access_token = activated(client, token)

    me = client.get("/api/v1/me", headers=bearer(access_token)).json
    assert me["association"] == {"status": "linked", "policyholder_name": "Transportes Ejemplo S.L."}
    policies = client.get("/api/v1/me/policies", headers=bearer(access_token)).json["items"]
    assert [policy["number"] for policy in policies] == [f"{CIF}-1"]


def test_without_a_company_record_the_account_waits_for_a_clerk(client, token):
    access_token = activated(client, token)

    me = client.get("/api/v1/me", headers=bearer(access_token)).json
    assert me["association"]["status"] == "pending"
    case = db.session.execute(select(AssociationCase)).scalar_one()
    assert case.reason == "representative_company_not_found"


def test_the_signed_contract_belongs_to_the_new_account(client, token):
    access_token = activated(client, token)

    [item] = client.get("/api/v1/me/contracts", headers=bearer(access_token)).json["items"]

    assert item["kind"] == "representative"


def test_activation_completes_the_application(client, token):
    activated(client, token)

    assert the_application().status == ApplicationStatus.COMPLETED
    assert db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "application.completed")
    ).scalar_one()


def test_a_tax_id_that_already_has_an_account_is_409(client, token):
    existing = make_customer("otra.cuenta@correo.example")
    existing.tax_id = TAX_ID
    db.session.commit()
    signed(client, token)

    response = choose_password(client, token)

    assert response.status_code == 409
    assert response.json["code"] == "already_registered"


def test_an_individual_account_with_the_same_email_gains_the_tax_id(client, token):
    existing = make_customer(EMAIL, password=CUSTOMER_PASSWORD)

    activated(client, token)

    db.session.refresh(existing)
    assert existing.tax_id == TAX_ID
    assert db.session.execute(select(CustomerAccount)).scalars().all() == [existing]


def test_a_retried_password_with_the_same_idempotency_key_answers_the_same(client, token):
    signed(client, token)

    first = choose_password(client, token, headers={"Idempotency-Key": "password-1"})
    second = choose_password(client, token, headers={"Idempotency-Key": "password-1"})

    assert first.status_code == second.status_code == 201
    assert first.json == second.json
    assert len(db.session.execute(select(CustomerAccount)).scalars().all()) == 1


# The expiry job


def test_an_unused_expired_link_expires_the_application(client, token):
    expired = expire_stale_invitations(now=utcnow() + LINK_DAYS + timedelta(seconds=1))
    db.session.commit()

    assert expired == 1
    assert the_application().status == ApplicationStatus.EXPIRED
    event = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "application.expired")
    ).scalar_one()
    assert event.actor_kind == "system"


def test_a_live_link_is_left_alone(client, token):
    assert expire_stale_invitations(now=utcnow() + LINK_DAYS - timedelta(minutes=1)) == 0
    assert the_application().status == ApplicationStatus.INVITED


def test_only_the_newest_link_counts(client, token):
    invite_again(now=utcnow() + timedelta(days=6))

    assert expire_stale_invitations(now=utcnow() + LINK_DAYS + timedelta(days=1)) == 0


def test_a_completed_application_is_not_expired(client, token):
    activated(client, token)

    assert expire_stale_invitations(now=utcnow() + LINK_DAYS + timedelta(days=1)) == 0

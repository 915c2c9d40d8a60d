"""Issue 8.5: the evidence bundle of a representative application and of an e-Customer
registration: one ZIP with a PDF summary, the raw records and the signed contract, hashed in
its manifest, never holding a one-time code, and audited when a member of staff takes it."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from datetime import datetime, time
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
import time_machine
from sqlalchemy import select

from backoffice import audit, otp
from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.calls import service as calls
from backoffice.calls.jobs import replan_calls
from backoffice.calls.models import AgentShift
from backoffice.customers.models import EcustomerRegistration
from backoffice.extensions import db
from backoffice.review import decisions, queue
from backoffice.review.models import RepresentativeApplication
from backoffice.signing.models import SignedContract
from backoffice.staff.models import Role
from tests.factories import last_link_token, make_policyholder, make_staff, signed_in_client
from tests.test_api_ecustomer import latest_code, wrong
from tests.test_api_ecustomer import sign as sign_registration
from tests.test_api_ecustomer import start as start_registration
from tests.test_api_representatives import FIELDS, submit

MADRID = ZoneInfo("Europe/Madrid")
MONDAY_10H = datetime(2026, 11, 23, 10, 0, tzinfo=MADRID)
PASSWORD = "Firma-Segura-2026"
CORRECTED_NAME = "Transportes Ejemplo Sociedad Limitada"
# A fixed code: a random one could match digits found elsewhere in the bundle by coincidence
# (the tax ID 12345678Z holds 123456), and the test would fail for the wrong reason.
CODE = 480913
APPLICATION_ROLES = {Role.LEGAL_REVIEWER, Role.SUPERVISOR, Role.ADMIN}
REGISTRATION_ROLES = {Role.SUPERVISOR, Role.ADMIN}


@pytest.fixture(autouse=True)
def known_codes(monkeypatch):
    monkeypatch.setattr(otp, "secrets", SimpleNamespace(randbelow=lambda upper: CODE))


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def record(data: bytes, name: str):
    return json.loads(members(data)[f"records/{name}.json"])


def stored(key: str) -> bytes:
    from flask import current_app

    with current_app.extensions["storage"].open(key) as stream:
        return stream.read()


def completed_application(client) -> tuple[RepresentativeApplication, str]:
    """An application taken from submission to an active account (as in the journey test),
    with one correction on the call and one wrong PIN before the right one. Returns it and
    the completion link's token."""
    make_policyholder(FIELDS["company_tax_id"], email=None, name=FIELDS["company_name"], kind="company")
    reviewer = make_staff(Role.LEGAL_REVIEWER, name="Elena Jurídica")
    agent = make_staff(Role.CALL_AGENT, name="Pablo Llamadas")
    db.session.add(AgentShift(agent_id=agent.id, weekday=0, starts=time(10), ends=time(14)))
    db.session.commit()
    with time_machine.travel(MONDAY_10H, tick=False):
        application = db.session.get(RepresentativeApplication, submit(client).json["id"])
        queue.claim_next(reviewer, actor=Actor.staff(reviewer))
        for document in application.documents:
            decisions.review_document(document, accepted=True, reviewer=reviewer, actor=Actor.staff(reviewer))
        decisions.approve(application, reviewer=reviewer, actor=Actor.staff(reviewer))
        db.session.commit()
        replan_calls()
        db.session.commit()
        task = calls.start_next_call(agent, actor=Actor.staff(agent))
        checks = {name: {"status": "confirmed"} for name in calls.VALIDATED_FIELDS}
        checks["company_name"] = {"status": "corrected", "value": CORRECTED_NAME}
        calls.log_outcome(task, agent, "validated", checks=checks, actor=Actor.staff(agent))
        db.session.commit()

        token = last_link_token(application.email)
        link = f"/api/v1/representative-completions/{token}"
        confirmed = client.post(
            f"{link}/confirm",
            json={
                "company_tax_id": FIELDS["company_tax_id"],
                "tax_id": FIELDS["tax_id"],
                "email": FIELDS["email"],
                "phone": FIELDS["phone"],
                "accept_provider_terms": True,
            },
        )
        assert confirmed.status_code == 202, confirmed.json
        assert latest_code() == str(CODE)
        assert client.post(f"{link}/signature", json={"pin": wrong(latest_code())}).status_code == 422
        assert client.post(f"{link}/signature", json={"pin": latest_code()}).status_code == 200
        assert client.post(f"{link}/password", json={"password": PASSWORD}).status_code == 201
    return application, token


def active_registration(client) -> EcustomerRegistration:
    """An e-Customer sign-up with one wrong code, then signed and activated."""
    make_policyholder("12345678Z", email="maria.garcia@correo.example", policies=2)
    registration_id = start_registration(client).json["id"]
    assert sign_registration(client, registration_id, wrong(latest_code())).status_code == 422
    assert sign_registration(client, registration_id, latest_code()).status_code == 200
    response = client.post(
        f"/api/v1/ecustomer/registrations/{registration_id}/password", json={"password": PASSWORD}
    )
    assert response.status_code == 201, response.json
    return db.session.get(EcustomerRegistration, registration_id)


def application_bundle(app, client, role=Role.LEGAL_REVIEWER):
    application, token = completed_application(client)
    staff, user = signed_in_client(app, role)
    response = staff.get(f"/admin/review/{application.id}/evidence")
    assert response.status_code == 200
    return application, token, user, response


def registration_bundle(app, client, role=Role.SUPERVISOR):
    registration = active_registration(client)
    staff, user = signed_in_client(app, role)
    response = staff.get(f"/admin/ecustomer/registration/{registration.id}/evidence")
    assert response.status_code == 200
    return registration, user, response


def assert_manifest_holds(data: bytes, user) -> None:
    contents = members(data)
    assert list(contents) == sorted(contents)
    manifest = json.loads(contents.pop("manifest.json"))
    assert [entry["name"] for entry in manifest["files"]] == sorted(contents)
    for entry in manifest["files"]:
        assert entry["sha256"] == hashlib.sha256(contents[entry["name"]]).hexdigest()
        assert entry["size"] == len(contents[entry["name"]])
    assert manifest["generated_by"] == {"kind": "staff", "id": str(user.id), "label": user.email}
    assert datetime.fromisoformat(manifest["generated_at"]).utcoffset().total_seconds() == 0
    assert contents["summary.pdf"].startswith(b"%PDF")


def assert_no_code(data: bytes) -> None:
    """Neither the right code nor the wrong one typed, in the ZIP or in any member unpacked."""
    typed = [str(CODE).encode(), wrong(str(CODE)).encode()]
    hmacs = [h.encode() for h in db.session.execute(select(otp.OtpCode.code_hmac)).scalars()]
    for secret in typed + hmacs:
        assert secret not in data
        for name, content in members(data).items():
            assert secret not in content, name


# Representative applications


def test_application_bundle_is_a_zip_whose_manifest_hashes_every_member(app, client):
    _, _, user, response = application_bundle(app, client)

    assert response.mimetype == "application/zip"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="evidence-application-')
    assert_manifest_holds(response.data, user)


def test_application_bundle_records_documents_decisions_and_calls(app, client):
    application, _, _, response = application_bundle(app, client)
    reviewer = db.session.execute(
        select(AuditEvent.actor_id).where(AuditEvent.action == "application.approved")
    ).scalar_one()

    documents = record(response.data, "documents")
    assert len(documents) == 3
    for document in documents:
        row = next(d for d in application.documents if d.id == document["id"])
        assert document["sha256"] == hashlib.sha256(stored(row.storage_key)).hexdigest() == row.sha256
        assert document["stored_file_matches"] is True
    decided = record(response.data, "review_decisions")
    assert [d["action"] for d in decided] == ["document.accepted"] * 3 + ["application.approved"]
    assert {(d["reviewer"]["id"], d["reviewer"]["name"]) for d in decided} == {
        (int(reviewer), "Elena Jurídica")
    }
    (task,) = record(response.data, "calls")
    (attempt,) = task["attempts"]
    assert (attempt["outcome"], attempt["agent"]["name"]) == ("validated", "Pablo Llamadas")
    assert attempt["field_checks"]["company_name"] == {
        "status": "corrected",
        "old": FIELDS["company_name"],
        "new": CORRECTED_NAME,
    }
    assert attempt["field_checks"]["tax_id"] == {"status": "confirmed", "value": FIELDS["tax_id"]}
    assert datetime.fromisoformat(attempt["started_at"]) == MONDAY_10H


def test_application_bundle_counts_pins_and_tries_but_holds_no_pin_or_token(app, client):
    _, token, _, response = application_bundle(app, client)

    (codes,) = record(response.data, "sms_codes")
    assert len(codes["deliveries"]) == 1
    assert codes["challenge"]["wrong_attempts"] == 1
    assert [a["outcome"] for a in codes["attempts"]] == ["code_invalid", "accepted"]
    assert_no_code(response.data)
    assert token.encode() not in response.data
    assert all(token.encode() not in content for content in members(response.data).values())


def test_application_bundle_holds_the_signed_contract_and_its_evidence(app, client):
    _, _, _, response = application_bundle(app, client)
    contract = db.session.execute(select(SignedContract)).scalar_one()

    contents = members(response.data)
    signed = contents["files/contract-signed.pdf"]
    assert signed.startswith(b"%PDF")
    assert hashlib.sha256(signed).hexdigest() == contract.signed_sha256
    assert hashlib.sha256(contents["files/contract-unsigned.pdf"]).hexdigest() == contract.unsigned_sha256
    signature = record(response.data, "signature")
    assert (signature["id"], signature["signed_file_matches"]) == (contract.id, True)
    assert record(response.data, "account")["association_status"] == "linked"


def test_taking_an_application_bundle_is_audited(app, client):
    application, _, user, response = application_bundle(app, client, Role.SUPERVISOR)

    event = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "evidence_bundle.downloaded")
    ).scalar_one()
    assert (event.actor_id, event.subject_type, event.subject_id) == (
        str(user.id),
        "representative_application",
        application.id,
    )
    assert event.after["sha256"] == hashlib.sha256(response.data).hexdigest()


@pytest.mark.parametrize("role", list(Role), ids=[role.value for role in Role])
def test_application_bundle_answers_by_role(app, role):
    application = db.session.get(RepresentativeApplication, submit(app.test_client()).json["id"])
    staff, _ = signed_in_client(app, role)

    response = staff.get(f"/admin/review/{application.id}/evidence")

    assert response.status_code == (200 if role in APPLICATION_ROLES else 403)


def test_admins_still_cannot_open_the_review_queue(app):
    staff, _ = signed_in_client(app, Role.ADMIN)

    assert staff.get("/admin/review/").status_code == 403


def test_unknown_application_bundle_is_404(app):
    staff, _ = signed_in_client(app, Role.LEGAL_REVIEWER)

    assert staff.get("/admin/review/0123456789abcdef0123456789abcdef/evidence").status_code == 404


def test_review_page_links_to_the_bundle(app):
    application = db.session.get(RepresentativeApplication, submit(app.test_client()).json["id"])
    staff, _ = signed_in_client(app, Role.LEGAL_REVIEWER)

    page = staff.get(f"/admin/review/{application.id}").get_data(as_text=True)

    assert f"/admin/review/{application.id}/evidence" in page


# e-Customer registrations


def test_registration_bundle_is_a_zip_whose_manifest_hashes_every_member(app, client):
    _, user, response = registration_bundle(app, client)

    assert response.mimetype == "application/zip"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="evidence-ecustomer-')
    assert_manifest_holds(response.data, user)


def test_registration_bundle_records_the_match_codes_signature_and_account(app, client):
    registration, _, response = registration_bundle(app, client)
    contract = db.session.get(SignedContract, registration.signed_contract_id)

    match = record(response.data, "identity_match")
    assert match["submitted"] == {
        "tax_id": "12345678Z",
        "email": "maria.garcia@correo.example",
        "phone": "+34612345612",
    }
    assert match["policyholder"]["id"] == registration.policyholder_id
    codes = record(response.data, "sms_codes")
    assert len(codes["deliveries"]) == 1
    assert [a["outcome"] for a in codes["attempts"]] == ["code_invalid", "accepted"]
    signed = members(response.data)["files/contract-signed.pdf"]
    assert hashlib.sha256(signed).hexdigest() == contract.signed_sha256
    assert record(response.data, "account")["id"] == registration.account_id
    actions = [event["action"] for event in record(response.data, "audit_events")]
    assert actions[0] == "ecustomer.registration_started"
    assert "customer.linked" in actions


def test_registration_bundle_holds_no_code(app, client):
    _, _, response = registration_bundle(app, client)

    assert_no_code(response.data)


def test_taking_a_registration_bundle_is_audited(app, client):
    registration, user, response = registration_bundle(app, client, Role.ADMIN)

    event = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "evidence_bundle.downloaded")
    ).scalar_one()
    assert (event.actor_id, event.subject_type, event.subject_id) == (
        str(user.id),
        "ecustomer_registration",
        registration.id,
    )
    assert event.after["sha256"] == hashlib.sha256(response.data).hexdigest()


def test_registration_bundle_with_a_file_missing_from_storage_is_503_and_not_audited(app, client):
    registration = active_registration(client)
    contract = db.session.get(SignedContract, registration.signed_contract_id)
    app.extensions["storage"].delete(contract.signed_key)
    staff, _ = signed_in_client(app, Role.SUPERVISOR)

    response = staff.get(f"/admin/ecustomer/registration/{registration.id}/evidence")

    assert response.status_code == 503
    assert (
        db.session.execute(
            select(AuditEvent).where(AuditEvent.action == "evidence_bundle.downloaded")
        ).first()
        is None
    )


@pytest.mark.parametrize("role", list(Role), ids=[role.value for role in Role])
def test_registration_bundle_answers_by_role(app, client, role):
    make_policyholder("12345678Z", email="maria.garcia@correo.example")
    registration_id = start_registration(client).json["id"]
    staff, _ = signed_in_client(app, role)

    response = staff.get(f"/admin/ecustomer/registration/{registration_id}/evidence")

    assert response.status_code == (200 if role in REGISTRATION_ROLES else 403)


def test_unknown_registration_bundle_is_404(app):
    staff, _ = signed_in_client(app, Role.SUPERVISOR)

    assert staff.get("/admin/ecustomer/registration/no-such-registration/evidence").status_code == 404


def test_registration_page_links_to_the_bundle(app, client):
    make_policyholder("12345678Z", email="maria.garcia@correo.example")
    registration_id = start_registration(client).json["id"]
    staff, _ = signed_in_client(app, Role.SUPERVISOR)

    page = staff.get(f"/admin/ecustomer/details/?id={registration_id}").get_data(as_text=True)

    assert f"/admin/ecustomer/registration/{registration_id}/evidence" in page


@pytest.mark.parametrize("role", [Role.ADMIN, Role.SUPERVISOR])
def test_the_audit_log_leads_from_an_application_event_to_its_bundle(app, role):
    application_id = submit(app.test_client()).json["id"]
    staff, _ = signed_in_client(app, role)

    page = staff.get("/admin/audit/", query_string={"search": application_id}).get_data(as_text=True)
    bundle = staff.get(f"/admin/review/{application_id}/evidence")

    assert f'href="/admin/review/{application_id}/evidence"' in page
    assert (bundle.status_code, bundle.mimetype) == (200, "application/zip")


def test_the_audit_log_links_no_bundle_for_other_subjects(app):
    staff, admin = signed_in_client(app, Role.ADMIN)
    audit.record("staff.deactivated", actor=Actor.system(), subject_type="staff", subject_id=admin.id)
    db.session.commit()

    page = staff.get("/admin/audit/").get_data(as_text=True)

    assert re.search(rf'class="col-subject_id">\s*{admin.id}\s*</td>', page)
    assert 'data-testid="evidence-link"' not in page

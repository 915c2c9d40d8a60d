"""API.md "Representative applications" (submission, reading, requested documents)."""

import gc
import hashlib
import io
import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from fpdf import FPDF
from PIL import Image
from sqlalchemy import func, select

from backoffice.audit import Actor
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage
from backoffice.review.models import (
    ApplicationDocument,
    ApplicationStatus,
    DocumentStatus,
    RepresentativeApplication,
)
from backoffice.review.states import IllegalTransition, transition

MADRID = ZoneInfo("Europe/Madrid")
FRIDAY_18H = datetime(2026, 11, 20, 18, 0, tzinfo=MADRID)


def pdf_bytes(text: str = "Escritura") -> bytes:
    document = FPDF()
    document.set_creation_date(datetime(2026, 1, 1, tzinfo=UTC))  # same text, same bytes
    document.add_page()
    document.set_font("Helvetica", size=12)
    document.cell(text=text)
    return bytes(document.output())


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), "white").save(buffer, format="JPEG")
    return buffer.getvalue()


FIELDS = {
    "company_tax_id": "B12345674",
    "company_name": "Transportes Ejemplo S.L.",
    "first_name": "Lucía",
    "last_name": "Pérez Gil",
    "tax_id": "12345678Z",
    "email": "lucia.perez@transportes.example",
    "phone": "+34 611 222 333",
}


def files(**overrides):
    chosen = {
        "public_deed": (pdf_bytes("Escritura"), "escritura.pdf"),
        "power_of_attorney": (jpeg_bytes(), "poder.jpg"),
        "tax_id_document": (png_bytes(), "dni.png"),
    }
    chosen.update(overrides)
    return {kind: (io.BytesIO(data), name) for kind, (data, name) in chosen.items() if data is not None}


def submit(client, fields=None, uploads=None, **kwargs):
    data = {**(FIELDS if fields is None else fields), **(files() if uploads is None else uploads)}
    return client.post(
        "/api/v1/representative-applications", data=data, content_type="multipart/form-data", **kwargs
    )


def test_submission_answers_201_with_a_key_shown_once_and_the_sla_deadline(client):
    with time_machine.travel(FRIDAY_18H, tick=False):
        response = submit(client)

    assert response.status_code == 201
    body = response.json
    assert body["status"] == "submitted"
    assert len(body["access_key"]) >= 32
    assert datetime.fromisoformat(body["call_deadline"]) == datetime(2026, 11, 24, 18, 0, tzinfo=MADRID)
    application = db.session.get(RepresentativeApplication, body["id"])
    assert body["access_key"] not in application.access_key_hash
    assert application.access_key_hash == hashlib.sha256(body["access_key"].encode()).hexdigest()


def test_documents_are_stored_by_content_with_hashes_and_display_names(app, client):
    deed = pdf_bytes("Escritura")
    response = submit(client, uploads=files(public_deed=(deed, "../../etc/escritura.pdf")))

    documents = (
        db.session.execute(select(ApplicationDocument).order_by(ApplicationDocument.id)).scalars().all()
    )
    assert [d.kind.value for d in documents] == ["public_deed", "power_of_attorney", "tax_id_document"]
    assert [d.content_type for d in documents] == ["application/pdf", "image/jpeg", "image/png"]
    assert documents[0].sha256 == hashlib.sha256(deed).hexdigest()
    assert documents[0].display_name == "escritura.pdf"
    assert "escritura" not in documents[0].storage_key
    with app.extensions["storage"].open(documents[0].storage_key) as stored:
        assert stored.read() == deed
    assert response.status_code == 201


def test_acknowledgement_email_states_the_real_deadline_in_the_applicants_language(client):
    with time_machine.travel(FRIDAY_18H, tick=False):
        submit(client, headers={"Accept-Language": "en"})

    message = db.session.execute(select(OutboxMessage)).scalar_one()
    assert message.recipient == "lucia.perez@transportes.example"
    assert message.language == "en"
    assert "Tuesday 24 November 2026, 18:00" in message.body_text


def test_spanish_acknowledgement_by_default(client):
    with time_machine.travel(FRIDAY_18H, tick=False):
        submit(client)

    assert (
        "martes 24 noviembre 2026, 18:00" in db.session.execute(select(OutboxMessage.body_text)).scalar_one()
    )


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("company_tax_id", "12345678Z", "invalid"),
        ("company_tax_id", "", "required"),
        ("tax_id", "B12345674", "invalid"),
        ("tax_id", "1234", "invalid"),
        ("email", "nope", "invalid"),
        ("phone", "12", "invalid"),
        ("company_name", "", "required"),
        ("first_name", "   ", "required"),
    ],
)
def test_fields_are_validated(client, field, value, code):
    response = submit(client, fields={**FIELDS, field: value})

    assert response.status_code == 422
    assert response.json["errors"][field] == [code]


@pytest.mark.parametrize(
    ("slots", "code"),
    [
        ([{"weekday": 5, "from": "10:00", "to": "12:00"}], "outside_window"),
        ([{"weekday": 1, "from": "07:00", "to": "09:00"}], "outside_window"),
        ([{"weekday": 1, "from": "21:00", "to": "22:30"}], "outside_window"),
        ([{"weekday": 1, "from": "12:00", "to": "11:00"}], "outside_window"),
        ([{"weekday": 1, "from": "noon", "to": "13:00"}], "invalid"),
        ({"weekday": 1}, "invalid"),
    ],
)
def test_preferred_call_times_must_be_inside_the_window(client, slots, code):
    response = submit(client, fields={**FIELDS, "preferred_call_times": json.dumps(slots)})

    assert response.status_code == 422
    assert response.json["errors"]["preferred_call_times"] == [code]


def test_preferred_call_times_inside_the_window_are_kept(client):
    slots = [{"weekday": 0, "from": "08:00", "to": "10:00"}, {"weekday": 4, "from": "20:00", "to": "22:00"}]

    response = submit(client, fields={**FIELDS, "preferred_call_times": json.dumps(slots)})

    assert db.session.get(RepresentativeApplication, response.json["id"]).preferred_call_times == slots


def test_missing_file_is_required(client):
    response = submit(client, uploads=files(tax_id_document=(None, None)))

    assert response.status_code == 422
    assert response.json["errors"]["tax_id_document"] == ["required"]


def test_type_is_judged_by_content_not_name(client):
    response = submit(
        client, uploads=files(public_deed=(b"<html><script>alert(1)</script></html>", "deed.pdf"))
    )

    assert response.status_code == 422
    assert response.json["errors"]["public_deed"] == ["unsupported_type"]


def test_truncated_pdf_is_unreadable(client):
    deed = pdf_bytes()

    response = submit(client, uploads=files(public_deed=(deed[: len(deed) // 2], "deed.pdf")))

    assert response.json["errors"]["public_deed"] == ["unreadable"]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_file_over_10_mb_is_too_large(client):
    big_pdf = pdf_bytes() + b"%" + b"0" * (10 * 1024 * 1024)

    response = submit(client, uploads=files(public_deed=(big_pdf, "deed.pdf")))
    status, errors = response.status_code, response.json["errors"]
    del response  # as in the 35 MB test below
    gc.collect()

    assert status == 422
    assert errors["public_deed"] == ["too_large"]


# Werkzeug's test client spools a large body to a temporary file that it leaves for the
# garbage collector when the app refuses it unread; the app itself opens nothing here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_request_over_35_mb_is_413(client):
    filler = b"0" * (12 * 1024 * 1024)
    uploads = files(
        public_deed=(filler, "a.pdf"), power_of_attorney=(filler, "b.pdf"), tax_id_document=(filler, "c.pdf")
    )

    response = submit(client, uploads=uploads)
    status, content_type = response.status_code, response.content_type
    del response  # it holds the request, whose spooled body the test client never closes
    gc.collect()

    assert status == 413
    assert content_type == "application/problem+json"


def test_field_and_file_errors_are_reported_together_and_nothing_is_stored(app, client):
    response = submit(
        client, fields={**FIELDS, "email": "nope"}, uploads=files(public_deed=(b"GIF89a", "x.gif"))
    )

    assert response.json["errors"] == {"email": ["invalid"], "public_deed": ["unsupported_type"]}
    assert db.session.execute(select(func.count(RepresentativeApplication.id))).scalar() == 0
    assert not [path for path in app.extensions["storage"].root.rglob("*") if path.is_file()]


def test_json_body_is_415(client):
    response = client.post("/api/v1/representative-applications", json=FIELDS)

    assert response.status_code == 415


def test_idempotent_retry_with_a_new_boundary_returns_the_first_answer(client):
    first = submit(client, headers={"Idempotency-Key": "rep-1"})
    second = submit(client, headers={"Idempotency-Key": "rep-1"})

    assert first.status_code == second.status_code == 201
    assert first.json == second.json
    assert db.session.execute(select(func.count(RepresentativeApplication.id))).scalar() == 1
    assert db.session.execute(select(func.count(ApplicationDocument.id))).scalar() == 3


def test_same_idempotency_key_with_another_file_is_refused(client):
    submit(client, headers={"Idempotency-Key": "rep-2"})

    response = submit(
        client, uploads=files(public_deed=(pdf_bytes("Otra"), "x.pdf")), headers={"Idempotency-Key": "rep-2"}
    )

    assert response.status_code == 422
    assert response.json["code"] == "idempotency_key_mismatch"


def test_the_replayed_access_key_is_not_stored_in_clear(client):
    from backoffice.idempotency import IdempotencyRecord

    key = submit(client, headers={"Idempotency-Key": "rep-3"}).json["access_key"]

    stored = json.dumps(db.session.execute(select(IdempotencyRecord.body)).scalar_one())
    assert key not in stored


# GET /representative-applications/{id}


def test_read_with_the_access_key(client):
    created = submit(client).json

    response = client.get(
        f"/api/v1/representative-applications/{created['id']}",
        headers={"X-Access-Key": created["access_key"]},
    )

    assert response.status_code == 200
    assert response.json["status"] == "submitted"
    assert [d["kind"] for d in response.json["documents"]] == [
        "public_deed",
        "power_of_attorney",
        "tax_id_document",
    ]
    assert response.json["requested_documents"] == []


def test_wrong_key_and_unknown_id_answer_the_same_404(client):
    created = submit(client).json

    wrong_key = client.get(
        f"/api/v1/representative-applications/{created['id']}", headers={"X-Access-Key": "nope"}
    )
    no_key = client.get(f"/api/v1/representative-applications/{created['id']}")
    unknown = client.get(
        "/api/v1/representative-applications/0123456789abcdef0123456789abcdef",
        headers={"X-Access-Key": created["access_key"]},
    )

    assert wrong_key.status_code == no_key.status_code == unknown.status_code == 404
    assert wrong_key.get_data() == unknown.get_data()


# POST /representative-applications/{id}/documents


def _request_documents(application_id: str, kinds: list[str]) -> None:
    application = db.session.get(RepresentativeApplication, application_id)
    actor = Actor.system("tests")
    transition(application, ApplicationStatus.IN_REVIEW, actor=actor)
    for document in application.documents:
        if document.kind.value in kinds:
            document.status = DocumentStatus.REJECTED
            document.reason_code = "illegible"
    application.requested_documents = kinds
    transition(application, ApplicationStatus.NEEDS_DOCUMENTS, actor=actor)
    db.session.commit()


def test_uploading_before_documents_were_requested_is_409(client):
    created = submit(client).json

    response = client.post(
        f"/api/v1/representative-applications/{created['id']}/documents",
        data=files(
            public_deed=(pdf_bytes(), "d.pdf"), power_of_attorney=(None, None), tax_id_document=(None, None)
        ),
        headers={"X-Access-Key": created["access_key"]},
        content_type="multipart/form-data",
    )

    assert response.status_code == 409


def test_requested_documents_put_the_application_back_with_a_new_deadline(client):
    with time_machine.travel(FRIDAY_18H, tick=False):
        created = submit(client).json
    _request_documents(created["id"], ["public_deed"])

    with time_machine.travel(datetime(2026, 11, 23, 10, 0, tzinfo=MADRID), tick=False):
        response = client.post(
            f"/api/v1/representative-applications/{created['id']}/documents",
            data=files(
                public_deed=(pdf_bytes("Nueva"), "nueva.pdf"),
                power_of_attorney=(None, None),
                tax_id_document=(None, None),
            ),
            headers={"X-Access-Key": created["access_key"]},
            content_type="multipart/form-data",
        )

    assert response.status_code == 200
    assert response.json["status"] == "submitted"
    assert datetime.fromisoformat(response.json["call_deadline"]) == datetime(
        2026, 11, 25, 10, 0, tzinfo=MADRID
    )
    statuses = sorted((d["kind"], d["status"]) for d in response.json["documents"])
    assert statuses == [
        ("power_of_attorney", "pending"),
        ("public_deed", "pending"),
        ("tax_id_document", "pending"),
    ]
    superseded = db.session.execute(
        select(ApplicationDocument).where(ApplicationDocument.status == DocumentStatus.SUPERSEDED)
    ).scalar_one()
    assert superseded.kind.value == "public_deed"


def test_only_the_requested_documents_may_be_uploaded(client):
    created = submit(client).json
    _request_documents(created["id"], ["public_deed"])

    response = client.post(
        f"/api/v1/representative-applications/{created['id']}/documents",
        data=files(public_deed=(pdf_bytes(), "d.pdf"), tax_id_document=(None, None)),
        headers={"X-Access-Key": created["access_key"]},
        content_type="multipart/form-data",
    )

    assert response.status_code == 422
    assert response.json["errors"] == {"power_of_attorney": ["not_requested"]}


# The state machine


def test_illegal_transitions_are_refused_and_change_nothing(client):
    created = submit(client).json
    application = db.session.get(RepresentativeApplication, created["id"])

    with pytest.raises(IllegalTransition):
        transition(application, ApplicationStatus.COMPLETED, actor=Actor.system("tests"))

    assert application.status == ApplicationStatus.SUBMITTED


def test_every_transition_is_audited_with_from_and_to(client):
    from backoffice.audit.models import AuditEvent

    created = submit(client).json
    application = db.session.get(RepresentativeApplication, created["id"])
    transition(application, ApplicationStatus.IN_REVIEW, actor=Actor.system("tests"), reviewer="legal")
    db.session.commit()

    event = db.session.execute(
        select(AuditEvent).where(AuditEvent.action == "application.in_review")
    ).scalar_one()
    assert event.before == {"status": "submitted"}
    assert event.after == {"status": "in_review", "reviewer": "legal"}


def test_final_states_allow_no_move():
    from backoffice.review.states import ALLOWED, FINAL

    assert {
        ApplicationStatus.COMPLETED,
        ApplicationStatus.REJECTED,
        ApplicationStatus.CALL_FAILED,
        ApplicationStatus.EXPIRED,
    } == FINAL
    assert all(not ALLOWED[state] for state in FINAL)
    assert set(ALLOWED) == set(ApplicationStatus)


def test_utc_and_madrid_submissions_get_the_same_deadline(client):
    with time_machine.travel(FRIDAY_18H.astimezone(UTC), tick=False):
        body = submit(client).json

    assert datetime.fromisoformat(body["call_deadline"]) == datetime(2026, 11, 24, 17, 0, tzinfo=UTC)


def test_acknowledgement_states_the_configured_call_window(make_app):
    app = make_app(CALL_WINDOW="Mon-Thu 09:00-14:00", REDIS_URL=None)
    with app.app_context():
        submit(app.test_client())

        text = db.session.execute(select(OutboxMessage.body_text)).scalar_one()

    assert "de lunes a jueves de 9:00 a 14:00" in text


def test_default_acknowledgement_states_the_weekday_window_in_english(client):
    submit(client, headers={"Accept-Language": "en"})

    assert (
        "Monday to Friday from 08:00 to 22:00"
        in db.session.execute(select(OutboxMessage.body_text)).scalar_one()
    )

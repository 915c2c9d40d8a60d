"""A customer proves the profile phone with an SMS code; a proven phone on a policyholder's
record, with the name typed in the profile agreeing, links the account to that record."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from backoffice.audit.models import AuditEvent
from backoffice.customers import matching
from backoffice.customers.models import AssociationStatus, CustomerAccount, HolderKind, Policyholder
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage
from tests.factories import bearer, make_customer, sign_in_token

PHONE = "+34612345678"
CODE = re.compile(r"\b(\d{6})\b")


def customer(client, *, phone: str | None = PHONE, **profile) -> tuple[CustomerAccount, dict[str, str]]:
    account = make_customer()
    headers = bearer(sign_in_token(client, account.email))
    if phone is not None or profile:
        response = client.patch("/api/v1/me", json={"phone": phone, **profile}, headers=headers)
        assert response.status_code == 200, response.json
    return account, headers


def texts_to(phone: str = PHONE) -> list[str]:
    return list(
        db.session.execute(
            select(OutboxMessage.body_text).where(OutboxMessage.recipient == phone).order_by(OutboxMessage.id)
        ).scalars()
    )


def last_code(phone: str = PHONE) -> str:
    return CODE.search(texts_to(phone)[-1]).group(1)


def send(client, headers):
    return client.post("/api/v1/me/phone-verification", headers=headers)


def confirm(client, headers, code):
    return client.post("/api/v1/me/phone-verification/confirm", json={"code": code}, headers=headers)


def stored(account: CustomerAccount) -> CustomerAccount:
    """The account as the requests left it in the database (not this session's copy)."""
    db.session.expire_all()
    return db.session.get(CustomerAccount, account.id)


def actions(account: CustomerAccount) -> list[str]:
    return list(
        db.session.execute(
            select(AuditEvent.action).where(AuditEvent.subject_id == str(account.id)).order_by(AuditEvent.seq)
        ).scalars()
    )


def holder(name: str, *, tax_id: str, phone: str = PHONE, email: str = "otra@correo.example") -> Policyholder:
    record = Policyholder(tax_id=tax_id, kind=HolderKind.PERSON, name=name, email=email, phone=phone)
    db.session.add(record)
    db.session.commit()
    return record


# Proving the phone


def test_asking_for_a_code_texts_the_profile_phone(app):
    client = app.test_client()
    _, headers = customer(client)

    response = send(client, headers)

    assert response.status_code == 202
    assert response.json == {"status": "code_sent", "phone_hint": "+34 6** *** *78"}
    assert "confirmar este telefono" in texts_to()[-1]


def test_the_right_code_proves_the_phone(app):
    client = app.test_client()
    account, headers = customer(client)
    send(client, headers)

    response = confirm(client, headers, last_code())

    assert response.status_code == 200
    assert response.json["profile"]["phone_verified"] is True
    assert client.get("/api/v1/me", headers=headers).json["profile"]["phone_verified"] is True
    assert "customer.phone_verified" in actions(account)


def test_a_new_account_has_no_proven_phone(app):
    client = app.test_client()
    _, headers = customer(client)

    assert client.get("/api/v1/me", headers=headers).json["profile"]["phone_verified"] is False


def test_a_wrong_code_is_refused_and_counted(app):
    client = app.test_client()
    account, headers = customer(client)
    send(client, headers)
    wrong = "000000" if last_code() != "000000" else "111111"

    response = confirm(client, headers, wrong)

    assert response.status_code == 422
    assert (response.json["code"], response.json["attempts_left"]) == ("code_invalid", 4)
    assert confirm(client, headers, wrong).json["attempts_left"] == 3
    assert stored(account).phone_verified_at is None


def test_without_a_phone_no_code_is_sent(app):
    client = app.test_client()
    _, headers = customer(client, phone=None)

    response = send(client, headers)

    assert (response.status_code, response.json["code"]) == (409, "phone_missing")


def test_a_proven_phone_is_not_proven_again(app):
    client = app.test_client()
    _, headers = customer(client)
    send(client, headers)
    confirm(client, headers, last_code())

    response = send(client, headers)

    assert (response.status_code, response.json["code"]) == (409, "phone_already_verified")


def test_confirming_before_asking_for_a_code_is_refused(app):
    client = app.test_client()
    _, headers = customer(client)

    response = confirm(client, headers, "123456")

    assert (response.status_code, response.json["code"]) == (409, "no_code_sent")


def test_asking_again_at_once_is_too_soon(app):
    client = app.test_client()
    _, headers = customer(client)
    send(client, headers)

    response = send(client, headers)

    assert (response.status_code, response.json["code"]) == (429, "resend_too_soon")
    assert int(response.headers["Retry-After"]) > 0
    assert len(texts_to()) == 1


def test_a_code_sent_to_the_old_number_does_not_prove_the_new_one(app):
    client = app.test_client()
    account, headers = customer(client)
    send(client, headers)
    code = last_code()

    client.patch("/api/v1/me", json={"phone": "+34699887766"}, headers=headers)
    response = confirm(client, headers, code)

    assert (response.status_code, response.json["code"]) == (409, "no_code_sent")
    assert stored(account).phone_verified_at is None


@pytest.mark.parametrize(("typed", "still_proven"), [("699 887 766", False), ("612 34 56 78", True)])
def test_a_new_number_drops_the_proof_and_the_same_number_keeps_it(app, typed, still_proven):
    client = app.test_client()
    _, headers = customer(client)
    send(client, headers)
    confirm(client, headers, last_code())

    response = client.patch("/api/v1/me", json={"phone": typed}, headers=headers)

    assert response.json["profile"]["phone_verified"] is still_proven


def test_an_account_may_start_proving_only_a_few_numbers_an_hour(app):
    app.config["PHONE_VERIFICATION_NUMBERS_PER_HOUR"] = 2
    client = app.test_client()
    _, headers = customer(client)
    numbers = ["+34612345678", "+34699887766", "+34655443322"]
    answers = []
    for number in numbers:
        client.patch("/api/v1/me", json={"phone": number}, headers=headers)
        answers.append(send(client, headers))

    assert [answer.status_code for answer in answers] == [202, 202, 429]
    assert answers[2].json["code"] == "resend_limit"
    assert texts_to(numbers[2]) == []


def test_many_accounts_cannot_add_up_guesses_at_one_numbers_codes(app):
    app.config["PHONE_VERIFICATION_STARTS_PER_NUMBER_PER_HOUR"] = 2
    client = app.test_client()
    answers = [send(client, customer(client)[1]) for _ in range(3)]

    assert [answer.status_code for answer in answers] == [202, 202, 429]
    assert answers[2].json["code"] == "resend_limit"
    assert len(texts_to()) == 2


def test_the_limit_on_new_numbers_lifts_after_an_hour(app):
    app.config["PHONE_VERIFICATION_NUMBERS_PER_HOUR"] = 1
    client = app.test_client()
    _, headers = customer(client)
    send(client, headers)
    client.patch("/api/v1/me", json={"phone": "+34699887766"}, headers=headers)
    assert send(client, headers).status_code == 429

    with time_machine.travel(utcnow() + timedelta(hours=1, seconds=1)):
        assert send(client, headers).status_code == 202


# The proven phone as evidence


def test_a_proven_phone_and_the_name_link_an_account_registered_with_another_email(app):
    client = app.test_client()
    record = holder("María García López", tax_id="12345678Z")
    account, headers = customer(client, first_name="María", last_name="García López")
    assert stored(account).association_status != AssociationStatus.LINKED
    send(client, headers)

    response = confirm(client, headers, last_code())

    assert response.json["association"] == {"status": "linked", "policyholder_name": record.name}
    assert stored(account).policyholder_id == record.id


def unsaved_account(*, phone_verified: bool) -> CustomerAccount:
    """Registered with another address than the record's, the name and phone typed."""
    return CustomerAccount(
        email="otra.direccion@correo.example",
        password_hash="x",
        first_name="María",
        last_name="García López",
        phone=PHONE,
        email_verified_at=utcnow(),
        phone_verified_at=utcnow() if phone_verified else None,
    )


def decision_for(account: CustomerAccount) -> matching.Decision:
    return matching.decide(matching.rank(account, db.session.execute(select(Policyholder)).scalars()))


def test_an_unproven_phone_and_the_name_are_not_enough(app):
    record = holder("María García López", tax_id="12345678Z")

    assert decision_for(unsaved_account(phone_verified=False)).link_to is None
    assert decision_for(unsaved_account(phone_verified=True)).link_to == record.id


def test_operators_may_refuse_the_proven_phone_as_a_proof(app):
    app.config["MATCH_LINK_WITH_PROVEN_PHONE"] = False
    holder("María García López", tax_id="12345678Z")

    assert decision_for(unsaved_account(phone_verified=True)).link_to is None


def test_a_proven_family_phone_links_to_the_relative_whose_name_was_typed(app):
    client = app.test_client()
    holder("José García López", tax_id="87654321X")
    mine = holder("María García López", tax_id="12345678Z", email="maria@correo.example")
    account, headers = customer(client, first_name="María", last_name="García López")
    send(client, headers)

    confirm(client, headers, last_code())

    assert stored(account).policyholder_id == mine.id


def test_a_proven_phone_without_a_name_does_not_link(app):
    client = app.test_client()
    holder("María García López", tax_id="12345678Z")
    account, headers = customer(client)
    send(client, headers)

    response = confirm(client, headers, last_code())

    assert response.json["association"]["status"] != "linked"
    linked = (
        select(func.count()).select_from(CustomerAccount).where(CustomerAccount.policyholder_id.is_not(None))
    )
    assert db.session.scalar(linked) == 0


def test_after_too_many_wrong_codes_a_new_code_can_be_asked_for(app):
    client = app.test_client()
    _, headers = customer(client)
    send(client, headers)
    wrong = "000000" if last_code() != "000000" else "111111"
    answers = [confirm(client, headers, wrong) for _ in range(5)]

    assert (answers[-1].status_code, answers[-1].json["code"]) == (410, "attempts_exhausted")
    assert answers[-1].json["title"] == "Demasiados códigos incorrectos. Pide un código nuevo."
    assert send(client, headers).status_code == 202
    assert confirm(client, headers, last_code()).json["profile"]["phone_verified"] is True

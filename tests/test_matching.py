"""The matching engine: keys, evidence, decisions, cases, re-matching, and its callers."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select, text

from backoffice.audit.models import AuditEvent
from backoffice.customers import matching
from backoffice.customers.importing import import_policyholders
from backoffice.customers.jobs import rematch_nightly
from backoffice.customers.models import (
    AssociationCase,
    AssociationStatus,
    CaseStatus,
    CustomerAccount,
    HolderKind,
    Policyholder,
)
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.periodic import PERIODIC_JOBS
from tests.factories import (
    CUSTOMER_PASSWORD,
    TEST_ACTOR,
    bearer,
    last_link_token,
    make_customer,
    make_policyholder,
    sign_in_token,
)


def holder(tax_id="12345678Z", *, name="María García López", email="maria.garcia@correo.example", phone=None):
    record = Policyholder(tax_id=tax_id, kind=HolderKind.PERSON, name=name, email=email, phone=phone)
    db.session.add(record)
    db.session.commit()
    return record


def account(
    email="maria.garcia@correo.example", *, first=None, last=None, phone=None, tax_id=None, verified=True
):
    record = CustomerAccount(
        email=email,
        password_hash="x",
        first_name=first,
        last_name=last,
        phone=phone,
        declared_tax_id=tax_id,
        email_verified_at=utcnow() if verified else None,
    )
    db.session.add(record)
    db.session.commit()
    return record


def actions() -> list[str]:
    return list(db.session.execute(select(AuditEvent.action).order_by(AuditEvent.seq)).scalars())


def cases() -> list[AssociationCase]:
    return list(db.session.execute(select(AssociationCase).order_by(AssociationCase.id)).scalars())


# Keys


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("María García López", "garcia lopez maria"),
        ("GARCIA LOPEZ, MARIA", "garcia lopez maria"),
        ("  lópez   garcía-maría ", "garcia lopez maria"),
        ("Peña Muñoz, Íñigo", "inigo munoz pena"),
        ("Transportes O'Neill S.L.", "l neill o s transportes"),
        ("", None),
    ],
)
def test_names_fold_case_accents_punctuation_and_order(name, key):
    assert matching.fold_name(name) == key


@pytest.mark.parametrize(
    ("email", "local", "domain"),
    [
        ("Maria.Garcia@Correo.Example", "mariagarcia", "correo.example"),
        ("maria.garcia+seguros@gmail.com", "mariagarcia", "gmail.com"),
        ("m.a.r.i.a@gmail.com", "maria", "gmail.com"),
        (None, None, None),
    ],
)
def test_email_canonical_local_part_and_exact_domain(email, local, domain):
    assert matching.holder_keys("Ana", email, None) == {
        "name_key": "ana",
        "email_local": local,
        "email_domain": domain,
    }


def test_dots_make_the_same_mailbox_only_where_the_provider_ignores_them():
    assert matching.same_mailbox("Ana.Gil+x@gmail.com", "anagil@gmail.com")
    assert not matching.same_mailbox("ana.gil@correo.example", "anagil@correo.example")
    assert matching.same_mailbox("Ana.Gil+x@correo.example", "ana.gil@correo.example")


def test_holder_keys_follow_the_record_whoever_writes_it(app):
    record = holder(name="José Peña", email="Jose.Pena+x@correo.example")
    assert (record.name_key, record.email_local, record.email_domain) == (
        "jose pena",
        "josepena",
        "correo.example",
    )
    record.name = "Peña Ruiz, José"
    db.session.commit()
    assert record.name_key == "jose pena ruiz"


def test_the_importer_fills_the_keys(app):
    csv_text = (
        "tax_id,kind,name,email,phone,policy_number,product,policy_status,coverage\n"
        "12345678Z,person,María García López,Maria.Garcia@Correo.Example,612345678,P-1,auto,active,\n"
    )
    import_policyholders(io.StringIO(csv_text), actor=TEST_ACTOR)
    db.session.commit()
    record = db.session.execute(select(Policyholder)).scalar_one()
    assert (record.name_key, record.email_local, record.email_domain) == (
        "garcia lopez maria",
        "mariagarcia",
        "correo.example",
    )


def test_nightly_backfill_fills_rows_loaded_around_the_orm(app):
    db.session.execute(
        Policyholder.__table__.insert(),
        [
            {
                "tax_id": "12345678Z",
                "kind": "person",
                "name": "Ana Gil",
                "email": "ana@correo.example",
                "created_at": utcnow(),
                "updated_at": utcnow(),
            }
        ],
    )
    db.session.commit()
    result = rematch_nightly()
    db.session.commit()
    record = db.session.execute(select(Policyholder)).scalar_one()
    assert result["keys_filled"] == 1
    assert (record.name_key, record.email_local) == ("ana gil", "ana")


def test_the_nightly_rematch_is_a_periodic_job():
    job = next(job for job in PERIODIC_JOBS if job.path == "backoffice.customers.jobs.rematch_nightly")
    assert job.interval_seconds == 86400


# Evidence


def evidence(candidate: matching.Candidate) -> dict[str, matching.FieldEvidence]:
    return {item.field: item for item in candidate.evidence}


def test_each_field_gives_its_evidence(app):
    record = holder(phone="+34612345678")
    mine = account(
        "Maria.Garcia+portal@correo.example",
        first="maria",
        last="GARCIA LOPEZ",
        phone="+34612345678",
        tax_id="12345678Z",
    )

    found = evidence(matching.explain(mine, record))

    assert found["tax_id"] == matching.FieldEvidence("tax_id", "12345678Z", "12345678Z", True, 1.0)
    assert (found["email"].agrees, found["email"].similarity) == (True, 1.0)
    assert (found["phone"].agrees, found["phone"].similarity) == (True, 1.0)
    assert (found["name"].agrees, found["name"].similarity) == (True, 1.0)


def test_missing_sides_are_unknown_not_disagreeing(app):
    record = holder(email=None)
    mine = account()

    found = evidence(matching.explain(mine, record))

    assert {name: item.agrees for name, item in found.items()} == {
        "tax_id": None,
        "email": None,
        "phone": None,
        "name": None,
    }


def test_names_are_similar_despite_typos_and_order_but_not_another_first_name(app):
    record = holder(name="María García López")
    typo = matching.explain(account("a@correo.example", first="Maria", last="Lopez Garica"), record)
    other = matching.explain(account("b@correo.example", first="Juana", last="García López"), record)

    assert 0.8 <= evidence(typo)["name"].similarity < 1 and evidence(typo)["name"].agrees
    assert evidence(other)["name"].similarity <= matching.NAME_CONTRADICTS
    assert other.contradicted and not typo.contradicted


def test_email_local_parts_are_compared_fuzzily_only_on_the_same_domain(app):
    record = holder(email="maria.garcia@correo.example")
    near = matching.explain(account("maria.garcai@correo.example"), record)
    elsewhere = matching.explain(account("maria.garcia@otro.example"), record)

    assert evidence(near)["email"].agrees is False and evidence(near)["email"].similarity > 0.8
    assert evidence(elsewhere)["email"].similarity == 0.0


def test_a_mistyped_first_name_cannot_hide_behind_a_shared_surname(app):
    record = holder(name="José García Sanz")
    relative = matching.explain(account("b@correo.example", first="Paericia", last="García Sanz"), record)

    assert relative.contradicted and not relative.sure


@pytest.mark.parametrize(
    ("verified", "on_record", "apart"),
    [
        ("maria.garcia@correo.example", "maria.garcai@correo.example", True),
        ("maria.garcia@correo.example", "mariagarcia@correo.example", True),
        ("maria.garcia@correo.example", "maria.garciaa@correo.example", True),
        ("maria.garcia@correo.example", "maria.garcia@otro.example", False),
        ("maria.garcia@correo.example", "mario.garcio@correo.example", False),
        ("anagil@correo.example", "anagl@correo.example", False),
    ],
)
def test_one_slip_in_the_records_address_is_recognised(verified, on_record, apart):
    assert matching.one_edit_apart(verified, on_record) is apart


def test_a_slip_in_the_records_address_links_when_the_name_and_phone_agree(app):
    record = holder(email="maria.garcai@correo.example", phone="+34612345678")
    mine = account("maria.garcia@correo.example", first="María", last="García López", phone="+34612345678")

    assert matching.match_account(mine, actor=matching.SYSTEM) == AssociationStatus.LINKED
    assert mine.policyholder_id == record.id


def test_a_slip_in_the_records_address_links_when_the_tax_id_and_phone_agree(app):
    record = holder(email="maria.garcai@correo.example", phone="+34612345678")
    mine = account("maria.garcia@correo.example", phone="+34612345678", tax_id="12345678Z")

    assert matching.match_account(mine, actor=matching.SYSTEM) == AssociationStatus.LINKED
    assert mine.policyholder_id == record.id


def test_a_slip_in_the_records_address_and_the_phone_alone_do_not_link(app):
    holder(email="maria.garcai@correo.example", phone="+34612345678")
    mine = account("maria.garcia@correo.example", phone="+34612345678")

    assert matching.match_account(mine, actor=matching.SYSTEM) == AssociationStatus.PENDING


def test_a_slip_in_the_records_address_and_the_name_alone_do_not_link(app):
    holder(email="maria.garcai@correo.example", phone="+34612345678")
    mine = account("maria.garcia@correo.example", first="María", last="García López")

    assert matching.match_account(mine, actor=matching.SYSTEM) == AssociationStatus.PENDING


def test_a_different_tax_id_contradicts(app):
    record = holder()
    candidate = matching.explain(account(tax_id="87654321X"), record)

    assert evidence(candidate)["tax_id"].agrees is False
    assert candidate.contradicted and not candidate.sure


# Decisions


def test_a_sure_unique_match_is_linked_and_audited(app):
    record = holder()
    mine = account("MARIA.GARCIA+web@correo.example", first="María", last="García")

    status = matching.match_account(mine, actor=matching.SYSTEM)
    db.session.commit()

    assert status == AssociationStatus.LINKED
    assert mine.policyholder_id == record.id
    assert "customer.linked" in actions() and not cases()


def test_two_holders_sharing_an_email_are_never_guessed(app):
    first = holder("12345678Z", email="familia@correo.example", name="María García López")
    second = holder("87654321X", email="familia@correo.example", name="José García López")
    mine = account("familia@correo.example")

    status = matching.match_account(mine, actor=matching.SYSTEM)
    db.session.commit()

    assert status == AssociationStatus.PENDING
    (case,) = cases()
    assert case.reason == "several_matches"
    assert sorted(case.candidate_ids) == sorted([first.id, second.id])


def test_a_relative_ruled_out_by_the_name_does_not_make_it_ambiguous(app):
    holder("12345678Z", email="familia@correo.example", name="María García López")
    jose = holder("87654321X", email="familia@correo.example", name="José García López")

    status = matching.match_account(
        account("familia@correo.example", first="José", last="García"), actor=matching.SYSTEM
    )

    assert status == AssociationStatus.LINKED
    assert db.session.execute(select(CustomerAccount.policyholder_id)).scalar_one() == jose.id


def test_without_a_sure_match_a_case_holds_the_ranked_candidates_and_evidence(app):
    best = holder("12345678Z", name="María García López", email="mgarcia@otro.example", phone="+34612345678")
    holder("87654321X", name="María García Pérez", email="otra@otro.example")
    mine = account("maria.garcia@correo.example", first="María", last="García López", phone="+34612345678")

    status = matching.match_account(mine, actor=matching.SYSTEM)
    db.session.commit()

    assert status == AssociationStatus.PENDING
    (case,) = cases()
    assert case.reason == "not_sure"
    assert case.candidate_ids[0] == best.id
    assert [item["policyholder_id"] for item in case.evidence] == case.candidate_ids
    scores = [item["score"] for item in case.evidence]
    assert scores == sorted(scores, reverse=True)
    first = {item["field"]: item for item in case.evidence[0]["evidence"]}
    assert first["phone"]["agrees"] is True and first["name"]["similarity"] == 1.0
    assert first["email"]["agrees"] is False
    assert "association.case_opened" in actions()


def test_typed_details_alone_never_link_without_the_email_unless_all_three_agree(app):
    record = holder(email="maria@otro.example", phone="+34612345678")
    two = account("a@correo.example", first="María", last="García López", phone="+34612345678")
    three = account(
        "b@correo.example", first="María", last="García López", phone="+34612345678", tax_id="12345678Z"
    )

    assert matching.match_account(two, actor=matching.SYSTEM) == AssociationStatus.PENDING
    assert matching.match_account(three, actor=matching.SYSTEM) == AssociationStatus.LINKED
    assert three.policyholder_id == record.id


@pytest.mark.parametrize(
    "details",
    [
        {"first": "María", "last": "García López"},  # email and name: the fuzzy search is skipped
        {"phone": "+34612345678"},  # email and phone
        {"first": "María", "last": "Garcia Lopes"},  # a typo in the surname
        {"first": "Juana", "last": "García López"},  # another first name
        {},  # the email alone
    ],
)
def test_the_quick_decision_is_the_decision_on_every_candidate(app, details):
    holder("12345678Z", name="María García López", email="maria.garcia@correo.example", phone="+34612345678")
    holder("87654321X", name="María García López", email="mgl@otro.example", phone="+34699999999")
    holder("11111111H", name="Maria Garcia Lopes", email="maria.garcia@otro.example")
    mine = account("maria.garcia@correo.example", **details)

    ranked, decision = matching.assess(mine)

    assert decision == matching.decide(matching.rank(mine, matching.candidate_holders(mine)))
    assert {c.policyholder_id for c in ranked} <= {h.id for h in matching.candidate_holders(mine)}


def test_a_full_identifying_look_up_means_the_full_search_runs(app, monkeypatch):
    holder("12345678Z", email="maria.garcia@correo.example", phone="+34612345678")
    for number in range(3):
        holder(f"{10000000 + number}", name=f"Otra Persona {number}", email=None, phone="+34612345678")
    monkeypatch.setattr(matching, "PHONE_BLOCK_LIMIT", 2)
    mine = account("maria.garcia@correo.example", first="María", last="García López", phone="+34612345678")

    _, full = matching._run_blocks(matching._exact_blocks(mine, postgres=False))

    assert full


def test_no_candidate_opens_a_no_match_case(app):
    mine = account("nadie@correo.example")
    assert matching.match_account(mine, actor=matching.SYSTEM) == AssociationStatus.PENDING
    assert [(case.reason, case.candidate_ids) for case in cases()] == [("no_match", [])]


def test_an_unverified_account_is_never_matched(app):
    holder()
    mine = account(verified=False)
    assert matching.match_account(mine, actor=matching.SYSTEM) == AssociationStatus.NONE
    assert not cases()


def test_the_case_is_refreshed_not_duplicated(app):
    mine = account("maria.garcia@correo.example", first="María", last="García López")
    matching.match_account(mine, actor=matching.SYSTEM)
    db.session.commit()
    events = len(actions())

    matching.match_account(mine, actor=matching.SYSTEM)  # nothing new: nothing written
    assert len(actions()) == events

    newcomer = holder("12345678Z", name="María García López", email="mgl@otro.example")
    matching.match_account(mine, actor=matching.SYSTEM)
    db.session.commit()

    (case,) = cases()
    assert case.candidate_ids == [newcomer.id]
    assert case.reason == "not_sure"
    assert actions()[-1] == "association.case_refreshed"


def test_a_linked_account_is_left_alone(app):
    record = holder()
    mine = account()
    matching.match_account(mine, actor=matching.SYSTEM)
    holder("87654321X", email="maria.garcia@correo.example", name="Otra")
    events = len(actions())

    assert matching.match_account(mine, actor=matching.SYSTEM) == AssociationStatus.LINKED
    assert mine.policyholder_id == record.id and len(actions()) == events


def test_candidates_are_ranked_and_limited(app):
    for number in range(7):
        holder(
            f"{10000000 + number}{'TRWAGMYFPDXBNJZSQVHLCKE'[(10000000 + number) % 23]}",
            name="María García López",
            email=f"m{number}@otro.example",
        )
    mine = account(first="María", last="García López")

    found = matching.candidates(mine, limit=5)

    assert len(found) == 5
    assert [c.score for c in found] == sorted((c.score for c in found), reverse=True)
    assert set(found[0].as_json()) >= {"policyholder_id", "score", "sure", "evidence"}


# Re-matching


def test_rematch_pending_links_a_waiting_account_when_its_record_arrives(app):
    mine = account("maria.garcia@correo.example")
    matching.match_account(mine, actor=matching.SYSTEM)
    unverified = account("otra@correo.example", verified=False)
    db.session.commit()
    record = holder()

    assert matching.rematch_pending() == 1
    db.session.commit()

    assert mine.association_status == AssociationStatus.LINKED and mine.policyholder_id == record.id
    (case,) = cases()
    assert (case.status, case.policyholder_id) == (CaseStatus.LINKED, record.id)
    assert unverified.association_status == AssociationStatus.NONE
    assert "association.case_closed" in actions()


def test_rematch_respects_a_clerks_no_match_until_someone_new_appears(app):
    first = holder("12345678Z", name="María García López", email="mgl@otro.example")
    mine = account(first="María", last="García López")
    matching.match_account(mine, actor=matching.SYSTEM)
    (case,) = cases()
    case.status, mine.association_status = CaseStatus.NO_MATCH, AssociationStatus.NONE
    db.session.commit()

    matching.rematch_pending()
    assert len(cases()) == 1 and case.candidate_ids == [first.id]

    holder("87654321X", name="María García López", email="otra@otro.example")
    matching.rematch_pending()
    assert len(cases()) == 2 and mine.association_status == AssociationStatus.PENDING


def test_rematch_pending_honours_the_limit(app):
    for number in range(3):
        matching.match_account(account(f"c{number}@correo.example"), actor=matching.SYSTEM)
    assert matching.rematch_pending(limit=2) == 2


def test_cases_opened_by_other_flows_are_left_to_the_clerk(app):
    from backoffice.customers.association import open_case

    holder()
    mine = account()
    open_case(mine, "representative_company_not_found", [])
    db.session.commit()

    assert matching.match_account(mine, actor=matching.SYSTEM) == AssociationStatus.PENDING
    assert [case.reason for case in cases()] == ["representative_company_not_found"]


# Through the API


def test_verification_uses_the_engine(app, client):
    record = make_policyholder(email="Maria.Garcia@correo.example")
    client.post(
        "/api/v1/accounts",
        json={"email": "mariagarcia+web@correo.example", "password": CUSTOMER_PASSWORD, "accept_terms": True},
    )
    token = last_link_token("mariagarcia+web@correo.example")
    response = client.post("/api/v1/accounts/verify", json={"token": token})

    # Not the same mailbox outside Gmail: the dots matter there, so a clerk decides.
    assert response.json["account"]["association"]["status"] == "pending"
    (case,) = cases()
    assert case.candidate_ids == [record.id]
    assert case.evidence[0]["evidence"][1]["field"] == "email"


def test_profile_names_and_tax_id_are_saved_returned_and_rematch(app, client):
    make_customer("ana.gil@correo.example")
    record = make_policyholder("12345678Z", email="ana@otro.example", name="Ana Gil Pérez")
    record.phone = "+34612345678"
    db.session.commit()
    token = sign_in_token(client, "ana.gil@correo.example")

    response = client.patch(
        "/api/v1/me",
        json={
            "first_name": " Ana ",
            "last_name": "Gil  Pérez",
            "tax_id": "12.345.678-z",
            "phone": "612 345 678",
        },
        headers=bearer(token),
    )

    assert response.status_code == 200, response.json
    profile = response.json["profile"]
    assert (profile["first_name"], profile["last_name"], profile["tax_id"]) == (
        "Ana",
        "Gil Pérez",
        "12345678Z",
    )
    assert response.json["association"] == {"status": "linked", "policyholder_name": "Ana Gil Pérez"}
    assert response.json["username"] == "ana.gil@correo.example"  # the tax ID is evidence, not a username
    assert client.get("/api/v1/me", headers=bearer(token)).json["profile"]["tax_id"] == "12345678Z"


@pytest.mark.parametrize("tax_id", ["12345678A", "B12345674"])
def test_a_profile_tax_id_must_be_a_valid_personal_one(app, client, tax_id):
    make_customer("ana.gil@correo.example")
    token = sign_in_token(client, "ana.gil@correo.example")

    response = client.patch("/api/v1/me", json={"tax_id": tax_id}, headers=bearer(token))

    assert response.status_code == 422
    assert response.json["errors"] == {"tax_id": ["invalid"]}


def test_profile_fields_can_be_cleared(app, client):
    make_customer("ana.gil@correo.example")
    token = sign_in_token(client, "ana.gil@correo.example")
    client.patch("/api/v1/me", json={"first_name": "Ana", "tax_id": "12345678Z"}, headers=bearer(token))

    response = client.patch("/api/v1/me", json={"first_name": None, "tax_id": ""}, headers=bearer(token))

    assert (response.json["profile"]["first_name"], response.json["profile"]["tax_id"]) == (None, None)


# PostgreSQL: the trigram path


def test_name_typos_are_found_by_trigrams_on_postgresql(app):
    record = holder(name="María García López", email="mgl@otro.example")
    mine = account(first="Maria", last="Garcai Lopez")

    found = [c.policyholder_id for c in matching.candidates(mine)]

    if db.engine.dialect.name == "postgresql":
        assert found == [record.id]
        plan = "\n".join(
            db.session.execute(
                text(
                    "EXPLAIN SELECT id FROM policyholders WHERE name_key % :q "
                    "ORDER BY name_key <-> :q LIMIT 10"
                ).bindparams(q="garcai lopez maria")
            ).scalars()
        )
        db.session.execute(text("SET LOCAL enable_seqscan = off"))
        forced = "\n".join(
            db.session.execute(
                text(
                    "EXPLAIN SELECT id FROM policyholders WHERE name_key % :q "
                    "ORDER BY name_key <-> :q LIMIT 10"
                ).bindparams(q="garcai lopez maria")
            ).scalars()
        )
        assert "ix_policyholders_name_key_trgm" in forced, (plan, forced)
    else:
        assert found == []  # SQLite blocks on the exact folded name only

"""The association clerk console: the case queue, claims and decisions, driven through the back
office as clerks and supervisors use it (and the service directly where time matters)."""

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.customers import cases
from backoffice.customers.models import AssociationCase, AssociationStatus, CaseStatus, CustomerAccount
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage
from backoffice.staff.models import Role, StaffUser
from tests.conftest import POSTGRES_URL, csrf_token_from
from tests.factories import (
    CUSTOMER_PASSWORD,
    bearer,
    make_customer,
    make_policyholder,
    make_staff,
    signed_in_client,
)

BASE = "/admin/association"


def _case(
    *,
    email: str | None = None,
    first_name: str = "María",
    last_name: str = "García López",
    tax_id: str | None = "12345678Z",
    phone: str | None = "+34612345612",
    language: str = "es",
    opened_at: datetime | None = None,
    candidates=(),
    reason: str = "several_matches",
) -> AssociationCase:
    """A verified customer whose association is pending, with one open case."""
    account = make_customer(email)
    account.first_name, account.last_name = first_name, last_name
    account.declared_tax_id, account.phone, account.language = tax_id, phone, language
    case = db.session.execute(
        select(AssociationCase).where(AssociationCase.account_id == account.id)
    ).scalar_one_or_none()
    if case is None:
        case = AssociationCase(account_id=account.id, reason=reason)
        db.session.add(case)
    account.association_status = AssociationStatus.PENDING
    case.reason = reason
    case.candidate_ids = [holder.id for holder in candidates]
    case.evidence = [
        {
            "policyholder_id": holder.id,
            "score": 0.5,
            "sure": False,
            "evidence": [
                {
                    "field": "email",
                    "account_value": account.email,
                    "holder_value": holder.email,
                    "agrees": False,
                    "similarity": 0.4,
                }
            ],
        }
        for holder in candidates
    ]
    if opened_at is not None:
        case.opened_at = opened_at
    db.session.commit()
    return case


def _token_page(client, case):
    return csrf_token_from(client, f"{BASE}/{case.id}")


def _send(client, case, path: str, **data):
    token = _token_page(client, case)
    return client.post(f"{BASE}/{case.id}{path}", data={"csrf_token": token, **data})


def _claim_next(client):
    token = csrf_token_from(client, f"{BASE}/")
    return client.post(f"{BASE}/claim-next", data={"csrf_token": token})


def _events(action: str) -> list[AuditEvent]:
    return list(
        db.session.execute(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        ).scalars()
    )


def _emails(recipient: str, template: str) -> list[OutboxMessage]:
    return list(
        db.session.execute(
            select(OutboxMessage).where(
                OutboxMessage.recipient == recipient, OutboxMessage.template == template
            )
        ).scalars()
    )


# Roles


@pytest.mark.parametrize("role", list(Role), ids=[role.value for role in Role])
def test_queue_and_case_page_answer_by_role(app, role):
    case = _case()
    client, _ = signed_in_client(app, role)

    allowed = role in (Role.ASSOCIATION_CLERK, Role.SUPERVISOR)
    assert client.get(f"{BASE}/").status_code == (200 if allowed else 403)
    assert client.get(f"{BASE}/{case.id}").status_code == (200 if allowed else 403)


def test_supervisors_cannot_decide_and_clerks_cannot_unlink(app):
    case = _case(candidates=[make_policyholder()])
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)

    assert _send(supervisor, case, "/link", policyholder_id=case.candidate_ids[0]).status_code == 403
    assert _send(supervisor, case, "/claim").status_code == 403
    assert _send(clerk, case, "/unlink", reason="Wrong person").status_code == 403


# Claims


def test_claim_next_gives_the_oldest_open_case_and_is_exclusive(app):
    now = datetime.now(UTC)
    newer = _case(opened_at=now - timedelta(hours=1))
    oldest = _case(opened_at=now - timedelta(days=2))
    waiting = _case(opened_at=now - timedelta(days=5))
    waiting.status = CaseStatus.WAITING_CUSTOMER
    db.session.commit()
    first, first_user = signed_in_client(app, Role.ASSOCIATION_CLERK)
    second, second_user = signed_in_client(app, Role.ASSOCIATION_CLERK)
    third, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)

    assert _claim_next(first).headers["Location"].endswith(f"{BASE}/{oldest.id}")
    assert _claim_next(second).headers["Location"].endswith(f"{BASE}/{newer.id}")
    assert _claim_next(first).headers["Location"].endswith(f"{BASE}/{oldest.id}")  # the one it holds
    empty = _claim_next(third)

    assert empty.headers["Location"].endswith(f"{BASE}/")
    db.session.expire_all()
    assert db.session.get(AssociationCase, oldest.id).claimed_by_id == first_user.id
    assert db.session.get(AssociationCase, newer.id).claimed_by_id == second_user.id
    assert db.session.get(AssociationCase, waiting.id).claimed_by_id is None
    assert len(_events("association.case_claimed")) == 2


def test_a_clerk_cannot_claim_a_case_someone_else_holds_until_the_claim_expires(app):
    case = _case()
    first = make_staff(Role.ASSOCIATION_CLERK)
    second = make_staff(Role.ASSOCIATION_CLERK)
    now = datetime.now(UTC)
    cases.claim_next(first, actor=Actor.staff(first), now=now - timedelta(minutes=31))
    db.session.commit()

    with pytest.raises(cases.CaseError) as refused:
        cases.claim(case, second, actor=Actor.staff(second), now=now - timedelta(minutes=20))
    db.session.rollback()
    taken = cases.claim(case, second, actor=Actor.staff(second), now=now)
    db.session.commit()

    assert refused.value.code == "not_claimable"
    assert taken.claimed_by_id == second.id


def test_acting_without_the_claim_is_refused(app):
    holder = make_policyholder()
    case = _case(candidates=[holder])
    first, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)
    second, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)

    unclaimed = _send(second, case, "/link", policyholder_id=holder.id, confirmed="1")
    _claim_next(first)
    not_theirs = _send(second, case, "/no-match", reason="Not them", confirmed="1")

    assert unclaimed.status_code == 400 and "Claim case" in unclaimed.get_data(as_text=True)
    assert not_theirs.status_code == 400
    db.session.expire_all()
    assert db.session.get(AssociationCase, case.id).status == CaseStatus.OPEN
    assert db.session.get(CustomerAccount, case.account_id).association_status == AssociationStatus.PENDING


def test_supervisor_reassigns_a_case_to_another_clerk(app):
    case = _case()
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)
    other = make_staff(Role.ASSOCIATION_CLERK)
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)
    _claim_next(clerk)

    response = _send(supervisor, case, "/reassign", clerk_id=other.id)

    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(AssociationCase, case.id).claimed_by_id == other.id
    (event,) = _events("association.case_reassigned")
    assert event.after["clerk_id"] == other.id


# Decisions


def test_link_by_a_clerk_then_unlink_by_a_supervisor_round_trip(app):
    holder = make_policyholder(email="otra.direccion@correo.example")
    case = _case(candidates=[holder], language="en")
    clerk, clerk_user = signed_in_client(app, Role.ASSOCIATION_CLERK)
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)
    _claim_next(clerk)

    page = clerk.get(f"{BASE}/{case.id}").get_data(as_text=True)
    linked = _send(clerk, case, "/link", policyholder_id=holder.id, confirmed="1")

    assert "✗</span> differs" in page and "✓</span> agrees" in page  # not by colour alone
    assert holder.tax_id in page
    assert linked.status_code == 302
    db.session.expire_all()
    account = db.session.get(CustomerAccount, case.account_id)
    assert (account.association_status, account.policyholder_id) == (AssociationStatus.LINKED, holder.id)
    closed = db.session.get(AssociationCase, case.id)
    assert (closed.status, closed.policyholder_id, closed.decided_by_id, closed.claimed_by_id) == (
        CaseStatus.LINKED,
        holder.id,
        clerk_user.id,
        None,
    )
    (event,) = _events("association.case_linked")
    assert (event.actor_id, event.before["status"], event.after["status"]) == (
        str(clerk_user.id),
        "open",
        "linked",
    )
    assert _events("customer.linked")[-1].after == {"status": "linked", "policyholder_id": holder.id}
    (email,) = _emails(account.email, "account_linked")
    assert email.language == "en"
    assert "policy" in email.body_text

    unlinked = _send(supervisor, case, "/unlink", reason="Linked to the wrong holder", confirmed="1")

    assert unlinked.status_code == 302
    db.session.expire_all()
    account = db.session.get(CustomerAccount, case.account_id)
    assert (account.association_status, account.policyholder_id) == (AssociationStatus.PENDING, None)
    new_case = db.session.execute(
        select(AssociationCase).where(
            AssociationCase.account_id == account.id, AssociationCase.status == CaseStatus.OPEN
        )
    ).scalar_one()
    assert new_case.reason == "unlinked"
    assert holder.id in new_case.candidate_ids
    assert unlinked.headers["Location"].endswith(f"{BASE}/{new_case.id}")
    (event,) = _events("customer.unlinked")
    assert event.before == {"status": "linked", "policyholder_id": holder.id}
    assert event.after["reason"] == "Linked to the wrong holder"


def test_unlink_needs_a_reason(app):
    holder = make_policyholder()
    case = _case(candidates=[holder])
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)
    _claim_next(clerk)
    _send(clerk, case, "/link", policyholder_id=holder.id, confirmed="1")

    response = _send(supervisor, case, "/unlink", reason="   ", confirmed="1")

    assert response.status_code == 400
    assert "Write the reason" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(CustomerAccount, case.account_id).association_status == AssociationStatus.LINKED


def test_link_to_a_policyholder_found_by_tax_id(app):
    listed = make_policyholder()
    other = make_policyholder("87654321X", email="juan@correo.example", name="Juan Pérez")
    case = _case(candidates=[listed])
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)
    _claim_next(clerk)

    page = clerk.get(f"{BASE}/{case.id}", query_string={"tax_id": "87654321-x"}).get_data(as_text=True)
    missing = clerk.get(f"{BASE}/{case.id}", query_string={"tax_id": "00000000T"}).get_data(as_text=True)
    response = _send(clerk, case, "/link", policyholder_id=other.id, confirmed="1")

    assert "Found by tax ID" in page and "Juan Pérez" in page
    assert "No policyholder has the tax ID" in missing
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(CustomerAccount, case.account_id).policyholder_id == other.id


def test_linking_without_confirmation_asks_and_links_nothing(app):
    holder = make_policyholder()
    case = _case(candidates=[holder])
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)
    _claim_next(clerk)

    response = _send(clerk, case, "/link", policyholder_id=holder.id)

    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert 'data-testid="confirmation"' in page and holder.tax_id in page
    db.session.expire_all()
    assert db.session.get(AssociationCase, case.id).status == CaseStatus.OPEN
    assert db.session.get(CustomerAccount, case.account_id).association_status == AssociationStatus.PENDING


def test_no_match_without_confirmation_closes_nothing(app):
    case = _case(candidates=[make_policyholder()])
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)
    _claim_next(clerk)

    response = _send(clerk, case, "/no-match", reason="No policy under this name or tax ID")

    assert 'data-testid="confirmation"' in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(AssociationCase, case.id).status == CaseStatus.OPEN


def test_link_and_claim_next_opens_the_next_case(app):
    holder = make_policyholder()
    first = _case(candidates=[holder], opened_at=datetime(2026, 11, 23, 9, tzinfo=UTC))
    following = _case(email="otro.cliente@correo.example", opened_at=datetime(2026, 11, 23, 10, tzinfo=UTC))
    clerk, clerk_user = signed_in_client(app, Role.ASSOCIATION_CLERK)
    _claim_next(clerk)

    response = _send(clerk, first, "/link", policyholder_id=holder.id, confirmed="1", then="next")

    assert response.headers["Location"].endswith(f"{BASE}/{following.id}")
    db.session.expire_all()
    assert db.session.get(AssociationCase, first.id).status == CaseStatus.LINKED
    assert db.session.get(AssociationCase, following.id).claimed_by_id == clerk_user.id


def test_asking_the_customer_and_claiming_next_on_an_empty_queue_goes_back_to_the_queue(app):
    case = _case(candidates=[make_policyholder()])
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)
    _claim_next(clerk)

    response = _send(clerk, case, "/ask-customer", message="- Check your mobile number, please.", then="next")

    assert response.headers["Location"].endswith(f"{BASE}/")
    page = clerk.get(response.headers["Location"]).get_data(as_text=True)
    assert "no open case is waiting" in page
    db.session.expire_all()
    assert db.session.get(AssociationCase, case.id).status == CaseStatus.WAITING_CUSTOMER


def test_the_case_page_declares_its_keyboard_shortcuts_and_questions(app):
    holder = make_policyholder()
    case = _case(candidates=[holder])
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)
    _claim_next(clerk)

    page = clerk.get(f"{BASE}/{case.id}").get_data(as_text=True)

    assert 'data-testid="link-candidate" data-shortcut="l"' in page
    assert f"Link this account to {holder.name} ({holder.tax_id})?" in page
    assert 'data-testid="shortcut-help"' in page


def test_no_match_requires_a_reason(app):
    case = _case()
    clerk, clerk_user = signed_in_client(app, Role.ASSOCIATION_CLERK)
    _claim_next(clerk)

    refused = _send(clerk, case, "/no-match", reason="  ", confirmed="1")
    done = _send(clerk, case, "/no-match", reason="No policy under this name or tax ID", confirmed="1")

    assert refused.status_code == 400
    assert "Write the reason" in refused.get_data(as_text=True)
    assert done.status_code == 302
    db.session.expire_all()
    closed = db.session.get(AssociationCase, case.id)
    assert (closed.status, closed.decision_reason, closed.decided_by_id) == (
        CaseStatus.NO_MATCH,
        "No policy under this name or tax ID",
        clerk_user.id,
    )
    assert db.session.get(CustomerAccount, case.account_id).association_status == AssociationStatus.NONE
    (event,) = _events("association.case_no_match")
    assert event.after["decision_reason"] == "No policy under this name or tax ID"


@pytest.mark.parametrize(
    ("language", "label", "subject_word"), [("en", "Email address", "profile"), ("es", "Correo", "perfil")]
)
def test_ask_the_customer_emails_them_in_their_language(app, language, label, subject_word):
    case = _case(candidates=[make_policyholder()], language=language, phone=None)
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)
    _claim_next(clerk)

    page = clerk.get(f"{BASE}/{case.id}").get_data(as_text=True)
    response = _send(clerk, case, "/ask-customer", message="- Check your mobile number, please.")

    assert label in page  # the message is composed in the customer's language, to edit
    assert "—</span> missing" in page  # no phone in the profile
    assert response.status_code == 302
    account = db.session.get(CustomerAccount, case.account_id)
    (email,) = _emails(account.email, "association_check_details")
    assert email.language == language
    assert subject_word in email.subject
    assert "Check your mobile number, please." in email.body_text
    db.session.expire_all()
    waiting = db.session.get(AssociationCase, case.id)
    assert (waiting.status, waiting.claimed_by_id) == (CaseStatus.WAITING_CUSTOMER, None)
    assert waiting.customer_asked_at is not None
    assert _events("association.customer_asked")[0].after["status"] == "waiting_customer"
    listed = clerk.get(f"{BASE}/", query_string={"status": "waiting_customer"}).get_data(as_text=True)
    assert account.email in listed


def test_a_case_waiting_for_the_customer_reopens_when_they_update_their_profile(app, client):
    case = _case(candidates=[make_policyholder()], phone=None)
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)
    _claim_next(clerk)
    _send(clerk, case, "/ask-customer", message="- Check your mobile number, please.")
    account = db.session.get(CustomerAccount, case.account_id)
    token = client.post("/api/v1/sessions", json={"username": account.email, "password": CUSTOMER_PASSWORD})

    response = client.patch(
        "/api/v1/me", json={"phone": "+34 699 000 111"}, headers=bearer(token.json["access_token"])
    )

    assert response.status_code == 200
    db.session.expire_all()
    assert db.session.get(AssociationCase, case.id).status == CaseStatus.OPEN
    (event,) = _events("association.case_reopened")
    assert event.actor_kind == "customer"


def test_the_composed_message_never_shows_the_policyholder_data(app):
    holder = make_policyholder(email="secreta@correo.example")
    case = _case(candidates=[holder])

    message = cases.compose_customer_message(case)

    assert "secreta@correo.example" not in message
    assert case.account.email in message


# Search and filters


def test_search_by_email_name_and_tax_id(app):
    maria = _case(email="maria.garcia@correo.example")
    juan = _case(
        email="juan.perez@correo.example", first_name="Juan", last_name="Pérez Gil", tax_id="87654321X"
    )
    client, _ = signed_in_client(app, Role.SUPERVISOR)

    def found(q):
        page = client.get(f"{BASE}/", query_string={"q": q}).get_data(as_text=True)
        return {c.account.email for c in (maria, juan) if c.account.email in page}

    assert found("JUAN.PEREZ@") == {"juan.perez@correo.example"}
    assert found("maría garcía") == {"maria.garcia@correo.example"}
    assert found("87654321-x") == {"juan.perez@correo.example"}
    assert found("correo.example") == {"maria.garcia@correo.example", "juan.perez@correo.example"}


def test_filters_by_status_reason_dates_and_claims(app):
    now = datetime.now(UTC)
    _case(email="old@correo.example", opened_at=now - timedelta(days=10), reason="no_match")
    recent = _case(email="recent@correo.example", opened_at=now - timedelta(hours=2))
    closed = _case(email="closed@correo.example", opened_at=now - timedelta(days=1))
    closed.status = CaseStatus.NO_MATCH
    db.session.commit()
    clerk = make_staff(Role.ASSOCIATION_CLERK)
    cases.claim(recent, clerk, actor=Actor.staff(clerk))
    db.session.commit()

    def emails(**filters):
        return {case.account.email for case in cases.queue(**filters)}

    assert emails() == {"old@correo.example", "recent@correo.example"}
    assert emails(statuses=None) == {"old@correo.example", "recent@correo.example", "closed@correo.example"}
    assert emails(statuses=[CaseStatus.NO_MATCH]) == {"closed@correo.example"}
    assert emails(reasons=["no_match"]) == {"old@correo.example"}
    assert emails(opened_from=(now - timedelta(days=3)).date()) == {"recent@correo.example"}
    assert emails(opened_to=(now - timedelta(days=5)).date()) == {"old@correo.example"}
    assert emails(claimed_by=clerk) == {"recent@correo.example"}
    assert emails(unclaimed=True) == {"old@correo.example"}
    with pytest.raises(cases.CaseError):
        cases.queue(statuses=["nonsense"])


def test_queue_page_filters_claimed_by_me(app):
    _case(email="first@correo.example", opened_at=datetime.now(UTC) - timedelta(days=1))
    _case(email="second@correo.example")
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)
    _claim_next(clerk)

    mine = clerk.get(f"{BASE}/", query_string={"claimed": "mine"}).get_data(as_text=True)
    unclaimed = clerk.get(f"{BASE}/", query_string={"claimed": "unclaimed"}).get_data(as_text=True)
    nonsense = clerk.get(f"{BASE}/", query_string={"status": "bogus", "from": "not-a-date", "claimed": "x"})

    assert "first@correo.example" in mine and "second@correo.example" not in mine
    assert "second@correo.example" in unclaimed and "first@correo.example" not in unclaimed
    assert nonsense.status_code == 200


# Bad requests


def test_posts_without_a_csrf_token_are_refused(app):
    case = _case()
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)

    assert clerk.post(f"{BASE}/claim-next").status_code == 400
    assert clerk.post(f"{BASE}/{case.id}/no-match", data={"reason": "x"}).status_code == 400
    db.session.expire_all()
    assert db.session.get(AssociationCase, case.id).claimed_by_id is None


def test_bad_input_gives_a_form_error_not_a_server_error(app):
    case = _case(candidates=[make_policyholder()])
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)
    _claim_next(clerk)

    for value in ("", "abc", "999999"):
        response = _send(clerk, case, "/link", policyholder_id=value)
        assert response.status_code == 400
        assert "Choose the policyholder" in response.get_data(as_text=True)
    too_long = _send(clerk, case, "/ask-customer", message="x" * (cases.MAX_MESSAGE_LENGTH + 1))
    assert too_long.status_code == 400 and "at most" in too_long.get_data(as_text=True)
    assert _send(supervisor, case, "/reassign", clerk_id="424242").status_code == 400
    assert clerk.get(f"{BASE}/999999").status_code == 404
    assert _send(supervisor, case, "/unlink", reason="Not linked yet", confirmed="1").status_code == 400


@pytest.mark.skipif(not POSTGRES_URL, reason="row locks are a PostgreSQL matter")
def test_two_clerks_claiming_at_once_never_get_the_same_case(app):
    case = _case()
    clerk_ids = [make_staff(Role.ASSOCIATION_CLERK).id for _ in range(4)]
    start = threading.Barrier(len(clerk_ids))
    claimed: list[int | None] = []

    def claim_next_as(clerk_id: int) -> None:
        with app.app_context():
            clerk = db.session.get(StaffUser, clerk_id)
            start.wait(timeout=10)
            got = cases.claim_next(clerk, actor=Actor.staff(clerk))
            db.session.commit()
            claimed.append(got.id if got else None)
            db.session.remove()

    threads = [threading.Thread(target=claim_next_as, args=(clerk_id,)) for clerk_id in clerk_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(claimed, key=str) == sorted([case.id, None, None, None], key=str)
    assert len(_events("association.case_claimed")) == 1


@pytest.mark.parametrize(("proven", "shown"), [(True, True), (False, False)])
def test_the_case_page_says_whether_the_customer_proved_the_phone(app, proven, shown):
    case = _case(candidates=[make_policyholder()])
    if proven:
        db.session.get(CustomerAccount, case.account_id).phone_verified_at = datetime(
            2026, 11, 20, tzinfo=UTC
        )
        db.session.commit()
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)

    page = clerk.get(f"{BASE}/{case.id}").get_data(as_text=True)

    assert ('data-testid="phone-proven"' in page) is shown


@pytest.mark.parametrize(("proven", "suggested"), [(False, True), (True, False)])
def test_asking_the_customer_suggests_proving_the_phone_until_it_is_proven(app, proven, suggested):
    case = _case(candidates=[make_policyholder()], language="en")
    if proven:
        db.session.get(CustomerAccount, case.account_id).phone_verified_at = datetime(
            2026, 11, 20, tzinfo=UTC
        )
        db.session.commit()
    clerk, _ = signed_in_client(app, Role.ASSOCIATION_CLERK)
    _claim_next(clerk)

    _send(clerk, case, "/ask-customer", message="- Check your surname, please.")

    account = db.session.get(CustomerAccount, case.account_id)
    (email,) = _emails(account.email, "association_check_details")
    assert ("confirm your mobile phone" in email.body_text) is suggested
    assert ("confirm your mobile phone" in email.body_html) is suggested
    assert "\n\n\n" not in email.body_text

"""Linked accounts: supervisors find any linked portal account (whoever linked it: the matching
engine, a clerk, the customer's sign-up), see the evidence, and unlink it with a reason."""

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.customers import cases, linked, matching
from backoffice.customers.models import AssociationCase, AssociationStatus, CaseStatus, CustomerAccount
from backoffice.extensions import db
from backoffice.staff.models import Role
from tests.conftest import csrf_token_from
from tests.factories import make_customer, make_policyholder, make_staff, signed_in_client

BASE = "/admin/linked-accounts"


def _auto_linked(
    email: str = "maria.garcia@correo.example",
    *,
    tax_id: str = "12345678Z",
    name: str = "María García López",
) -> CustomerAccount:
    """A customer the matching engine linked by itself when they verified their email (the
    policyholder record has that mailbox)."""
    holder = make_policyholder(tax_id, email=email, name=name)
    account = make_customer(email)
    assert (account.association_status, account.policyholder_id) == (AssociationStatus.LINKED, holder.id)
    return account


def _clerk_linked(email: str, *, tax_id: str, name: str) -> CustomerAccount:
    """A customer nobody could match automatically, linked by a clerk deciding the case."""
    holder = make_policyholder(tax_id, email=None, name=name)
    account = make_customer(email)
    clerk = make_staff(Role.ASSOCIATION_CLERK)
    actor = Actor.staff(clerk)
    case = matching.open_case_for(account)
    cases.claim(case, clerk, actor=actor)
    cases.link_case(case, holder, actor=actor)
    db.session.commit()
    assert account.association_status == AssociationStatus.LINKED
    return account


def _send(client, account: CustomerAccount, **data):
    token = csrf_token_from(client, f"{BASE}/{account.id}")
    return client.post(f"{BASE}/{account.id}/unlink", data={"csrf_token": token, **data})


def _reloaded(account: CustomerAccount) -> CustomerAccount:
    db.session.expire_all()
    return db.session.get(CustomerAccount, account.id)


def _events(action: str) -> list[AuditEvent]:
    return list(
        db.session.execute(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.seq)
        ).scalars()
    )


def test_the_list_shows_an_automatically_linked_account_beside_its_policyholder(app):
    account = _auto_linked()
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)

    response = supervisor.get(f"{BASE}/")

    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert account.email in page
    assert "María García López" in page and "12345678Z" in page
    assert "Automatically (matching engine)" in page
    assert f'href="{BASE}/{account.id}"' in page


def test_the_account_page_shows_the_evidence_of_the_match(app):
    account = _auto_linked()
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)

    page = supervisor.get(f"{BASE}/{account.id}").get_data(as_text=True)

    assert 'data-testid="link-evidence"' in page
    assert "✓</span> agrees" in page  # the email, field by field
    assert "Linked to María García López (12345678Z)" in page
    assert "Automatically (matching engine)" in page
    assert 'data-testid="unlink"' in page and "data-confirm=" in page


@pytest.mark.parametrize(
    "query",
    ["ana.ruiz@correo", "11111111-h", "Ruíz", "ana ruiz"],
    ids=["account email", "holder tax ID with separators", "holder name with accent", "two words"],
)
def test_search_finds_by_email_and_policyholder_tax_id_or_name(app, query):
    wanted = _auto_linked("ana.ruiz@correo.example", tax_id="11111111H", name="Ana Ruiz Sanz")
    other = _auto_linked("juan.perez@correo.example", tax_id="22222222J", name="Juan Pérez Gil")
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)

    page = supervisor.get(f"{BASE}/", query_string={"q": query}).get_data(as_text=True)

    assert wanted.email in page
    assert other.email not in page


@pytest.mark.parametrize(("how", "shown"), [("automatic", "auto"), ("clerk", "clerk")])
def test_filter_by_how_the_link_was_made(app, how, shown):
    accounts = {
        "auto": _auto_linked("ana.ruiz@correo.example", tax_id="11111111H", name="Ana Ruiz Sanz"),
        "clerk": _clerk_linked("otra.persona@correo.example", tax_id="22222222J", name="Juan Pérez Gil"),
    }
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)

    page = supervisor.get(f"{BASE}/", query_string={"how": how}).get_data(as_text=True)

    assert accounts[shown].email in page
    assert all(account.email not in page for key, account in accounts.items() if key != shown)


def test_pages_are_bounded_and_walk_newest_first_without_counting(app):
    now = datetime.now(UTC)
    emails = [f"cliente{n}@correo.example" for n in range(3)]
    for n, email in enumerate(emails):
        account = _auto_linked(email, tax_id=["11111111H", "22222222J", "33333333P"][n], name=f"Titular {n}")
        account.linked_at = now - timedelta(days=n)  # cliente0 newest
    db.session.commit()

    first = linked.linked_accounts(limit=2)
    second = linked.linked_accounts(limit=2, older_than=linked.Cursor.decode(first.older))
    back = linked.linked_accounts(limit=2, newer_than=linked.Cursor.decode(second.newer))

    assert [row.account.email for row in first.rows] == emails[:2] and first.newer is None
    assert [row.account.email for row in second.rows] == emails[2:] and second.older is None
    assert [row.account.email for row in back.rows] == emails[:2]


@pytest.mark.parametrize("role", [Role.ASSOCIATION_CLERK, Role.CALL_AGENT, Role.LEGAL_REVIEWER])
def test_other_roles_get_403(app, role):
    account = _auto_linked()
    client, _ = signed_in_client(app, role)
    token = csrf_token_from(client, "/admin/")

    assert client.get(f"{BASE}/").status_code == 403
    assert client.get(f"{BASE}/{account.id}").status_code == 403
    unlink = client.post(
        f"{BASE}/{account.id}/unlink", data={"csrf_token": token, "reason": "Wrong", "confirmed": "1"}
    )
    assert unlink.status_code == 403
    assert _reloaded(account).association_status == AssociationStatus.LINKED


def test_admins_read_the_list_but_only_supervisors_unlink(app):
    account = _auto_linked()
    admin, _ = signed_in_client(app, Role.ADMIN)

    page = admin.get(f"{BASE}/{account.id}").get_data(as_text=True)
    response = _send(admin, account, reason="Wrong person", confirmed="1")

    assert 'data-testid="unlink"' not in page
    assert response.status_code == 403
    assert _reloaded(account).association_status == AssociationStatus.LINKED


def test_unlink_without_confirmation_asks_and_changes_nothing(app):
    account = _auto_linked()
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)

    response = _send(supervisor, account, reason="Wrong person")

    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert 'data-testid="confirmation"' in page
    assert "María García López (12345678Z)" in page
    assert 'name="reason" value="Wrong person"' in page and 'name="confirmed" value="1"' in page
    account = _reloaded(account)
    assert account.association_status == AssociationStatus.LINKED
    assert _events("customer.unlinked") == []


def test_unlink_with_a_reason_and_confirmation_unlinks_audits_and_opens_a_case(app):
    account = _auto_linked()
    holder_id = account.policyholder_id
    supervisor, supervisor_user = signed_in_client(app, Role.SUPERVISOR)

    response = _send(supervisor, account, reason="Same email, different person", confirmed="1")

    assert response.status_code == 302
    account = _reloaded(account)
    assert (account.association_status, account.policyholder_id) == (AssociationStatus.PENDING, None)
    (event,) = _events("customer.unlinked")
    assert (event.actor_kind, event.actor_id, event.subject_id) == (
        "staff",
        str(supervisor_user.id),
        str(account.id),
    )
    assert event.before == {"status": "linked", "policyholder_id": holder_id}
    assert event.after["reason"] == "Same email, different person"
    case = db.session.execute(
        select(AssociationCase).where(
            AssociationCase.account_id == account.id, AssociationCase.status == CaseStatus.OPEN
        )
    ).scalar_one()
    assert case.reason == "unlinked" and holder_id in case.candidate_ids
    listing = supervisor.get(response.headers["Location"]).get_data(as_text=True)
    assert f'href="/admin/association/{case.id}"' in listing
    assert account.email not in listing.split('data-testid="linked-accounts"')[1]


def test_unlink_without_a_reason_is_refused_with_a_message(app):
    account = _auto_linked()
    supervisor, _ = signed_in_client(app, Role.SUPERVISOR)

    response = _send(supervisor, account, reason="   ", confirmed="1")

    assert response.status_code == 400
    assert "Write the reason" in response.get_data(as_text=True)
    assert _reloaded(account).association_status == AssociationStatus.LINKED


def test_unlinking_an_account_that_is_no_longer_linked_says_so(app):
    account = _auto_linked()
    supervisor, supervisor_user = signed_in_client(app, Role.SUPERVISOR)
    token = csrf_token_from(supervisor, f"{BASE}/{account.id}")
    cases.unlink(account, "Unlinked by someone else first", actor=Actor.staff(supervisor_user))
    db.session.commit()

    response = supervisor.post(
        f"{BASE}/{account.id}/unlink",
        data={"csrf_token": token, "reason": "Wrong person", "confirmed": "1"},
    )

    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert f"Account {account.id} is not linked." in page
    assert 'data-testid="not-linked"' in page
    assert len(_events("customer.unlinked")) == 1

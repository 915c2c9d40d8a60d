"""GET /me is the API's most frequent request: one SQL statement, and a body that already has
AccountSchema's shape (the view returns it without dumping it through the schema again)."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import psycopg
import pytest
from sqlalchemy import event

from backoffice.customers.association import link
from backoffice.db import AppSession
from backoffice.extensions import db
from customer_api.accounts import account_body
from customer_api.schemas import AccountSchema
from tests.conftest import requires_postgres
from tests.factories import TEST_ACTOR, bearer, make_customer, make_policyholder, sign_in_token


@contextmanager
def sent_while(describe: Callable[[Any, str], Any]) -> Iterator[list[Any]]:
    """`describe(cursor, statement)` of each SQL statement sent while the block runs: watched at
    the driver on PostgreSQL, where GET /me's read does not pass through SQLAlchemy, and through
    SQLAlchemy's events elsewhere. The pool's liveness ping (";") is not a request's statement."""
    sent: list[Any] = []
    if db.engine.dialect.name == "postgresql":
        execute = psycopg.Cursor.execute

        def spy(cursor, query, *args, **kwargs):
            if query != ";":
                sent.append(describe(cursor, query))
            return execute(cursor, query, *args, **kwargs)

        with mock.patch.object(psycopg.Cursor, "execute", spy):
            yield sent
        return

    def record(connection, cursor, statement, parameters, context, executemany) -> None:
        sent.append(describe(cursor, statement))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def statements():
    return sent_while(lambda cursor, statement: statement)


def autocommit_modes():
    """(first word of each statement, whether it ran outside a transaction)."""
    return sent_while(lambda cursor, statement: (statement.split()[0], cursor.connection.autocommit))


def linked_customer(email: str = "ana.gil@correo.example"):
    account = make_customer(email)
    holder = make_policyholder("12345678Z", email="ana@otro.example", name="Ana Gil Pérez")
    link(account, holder, actor=TEST_ACTOR)
    account.first_name, account.last_name, account.phone = "Ana", "Gil Pérez", "+34612345678"
    account.address_line1, account.postal_code, account.city = "Calle Mayor 1", "28013", "Madrid"
    account.province, account.country, account.declared_tax_id = "Madrid", "ES", "12345678Z"
    db.session.commit()
    return account


def test_me_of_a_linked_account_is_one_statement(app, client):
    linked_customer()
    token = sign_in_token(client, "ana.gil@correo.example")

    with statements() as sent:
        response = client.get("/api/v1/me", headers=bearer(token))

    assert response.json["association"] == {"status": "linked", "policyholder_name": "Ana Gil Pérez"}
    assert len(sent) == 1, sent


@pytest.mark.parametrize("linked", [True, False])
def test_the_me_body_is_what_the_schema_would_dump(app, client, linked):
    account = linked_customer() if linked else make_customer("ana.gil@correo.example")
    token = sign_in_token(client, "ana.gil@correo.example")

    body = account_body(account)

    assert AccountSchema().dump(body) == body
    assert client.get("/api/v1/me", headers=bearer(token)).json == body


@requires_postgres
def test_me_is_one_round_trip_on_postgres(app, client):
    """No BEGIN and COMMIT around the one read: the API's most frequent request."""
    token = sign_in_token(client, make_customer("ana.gil@correo.example").email)

    with autocommit_modes() as sent:
        assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200

    assert sent == [("SELECT", True)]


@requires_postgres
def test_the_next_request_on_that_connection_writes_in_a_transaction(make_app):
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0})
    with app.app_context():
        make_customer("ana.gil@correo.example")
        db.session.commit()  # the pool's one connection goes back for the requests
        client = app.test_client()
        token = sign_in_token(client, "ana.gil@correo.example")
        client.get("/api/v1/me", headers=bearer(token))

        with autocommit_modes() as sent:
            response = client.patch("/api/v1/me", headers=bearer(token), json={"first_name": "Ana"})

    assert response.status_code == 200
    assert ("UPDATE", False) in sent
    assert all(autocommit is False for _, autocommit in sent)


@requires_postgres
def test_a_read_that_fails_at_the_driver_gives_its_connection_up(make_app):
    app = make_app(PROPAGATE_EXCEPTIONS=False, SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0})
    with app.app_context():
        make_customer("ana.gil@correo.example")
        db.session.commit()
        client = app.test_client()
        token = sign_in_token(client, "ana.gil@correo.example")
        invalidated = []
        event.listen(db.engine, "invalidate", lambda *args: invalidated.append(args))
        lost = psycopg.OperationalError("server closed the connection unexpectedly")

        with mock.patch.object(psycopg.Cursor, "execute", side_effect=lost):
            failed = client.get("/api/v1/me", headers=bearer(token))
        again = client.get("/api/v1/me", headers=bearer(token))

    assert failed.status_code == 500
    assert len(invalidated) == 1
    assert again.status_code == 200


@requires_postgres
def test_me_opens_and_ends_no_session_transaction(app, client):
    token = sign_in_token(client, make_customer("ana.gil@correo.example").email)
    opened = []

    def record(session, transaction) -> None:
        opened.append(transaction)

    event.listen(AppSession, "after_transaction_create", record)
    try:
        response = client.get("/api/v1/me", headers=bearer(token))
    finally:
        event.remove(AppSession, "after_transaction_create", record)

    assert response.status_code == 200
    assert opened == []

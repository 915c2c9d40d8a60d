import threading

import pytest
from flask_admin.contrib.sqla.filters import FilterEqual
from sqlalchemy import event, select, text
from sqlalchemy.exc import DatabaseError

from backoffice import audit
from backoffice.admin import UTCBetweenFilter
from backoffice.audit.models import AuditEvent, genesis_hash
from backoffice.audit.service import CHAIN_KEY, Actor, event_hash, verify_chain
from backoffice.config import ConfigError, load_config
from backoffice.db import savepoint
from backoffice.extensions import db
from backoffice.staff.models import Role
from tests.conftest import POSTGRES_URL, requires_postgres
from tests.factories import signed_in_client

ACTOR = Actor.staff(type("U", (), {"id": 7, "email": "legal@ventanilla.example"})(), "203.0.113.9")


def _write_events(count: int) -> None:
    for number in range(count):
        audit.record(
            "application.reviewed",
            actor=ACTOR,
            subject_type="application",
            subject_id=number,
            before={"status": "submitted"},
            after={"status": "in_review", "n": number},
        )
    db.session.commit()


def _raw(sql: str) -> None:
    """What a database administrator could do by hand, bypassing the append-only triggers."""
    with db.engine.begin() as connection:
        if POSTGRES_URL:
            connection.execute(text("SET LOCAL session_replication_role = replica"))
            connection.execute(text(sql))
        else:
            connection.execute(text("DROP TRIGGER audit_events_no_update"))
            connection.execute(text("DROP TRIGGER audit_events_no_delete"))
            connection.execute(text(sql))


def test_event_keeps_who_what_which_record_before_after_ip_and_time(app):
    event = audit.record(
        "staff.role_changed",
        actor=ACTOR,
        subject_type="staff",
        subject_id=3,
        before={"role": "call_agent"},
        after={"role": "supervisor"},
    )
    db.session.commit()

    stored = db.session.get(AuditEvent, event.seq)
    assert (stored.actor_kind, stored.actor_id, stored.actor_label) == (
        "staff",
        "7",
        "legal@ventanilla.example",
    )
    assert (stored.action, stored.subject_type, stored.subject_id) == ("staff.role_changed", "staff", "3")
    assert stored.before == {"role": "call_agent"} and stored.after == {"role": "supervisor"}
    assert stored.ip == "203.0.113.9"
    assert stored.occurred_at.tzinfo is not None


def test_events_are_numbered_and_chained(app):
    _write_events(3)

    events = db.session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()
    assert [event.seq for event in events] == [1, 2, 3]
    assert [(event.chain, event.chain_seq) for event in events] == [(1, 1), (1, 2), (1, 3)]
    assert events[0].prev_hash == "0" * 64
    assert events[1].prev_hash == events[0].hash
    assert events[2].prev_hash == events[1].hash


def test_an_event_rolls_back_with_the_change_it_describes(app):
    _write_events(1)
    audit.record("application.approved", actor=ACTOR, subject_type="application", subject_id=1)
    db.session.rollback()
    _write_events(1)

    assert verify_chain().ok
    assert verify_chain().checked == 2


def test_verify_reports_an_intact_chain(app):
    _write_events(5)

    report = verify_chain()

    assert report.ok and report.checked == 5


def test_verify_finds_an_edited_event(app):
    _write_events(5)
    _raw("UPDATE audit_events SET action = 'application.approved' WHERE seq = 3")

    report = verify_chain()

    assert (report.ok, report.broken_at) == (False, 3)
    assert "changed" in report.problem


def test_verify_finds_an_edit_that_recomputed_the_hash(app):
    _write_events(5)
    forged = db.session.get(AuditEvent, 3)
    forged.after = {"status": "approved"}
    from backoffice.audit.service import event_hash

    new_hash = event_hash(forged)
    db.session.rollback()
    _raw(f"UPDATE audit_events SET after = '{{\"status\": \"approved\"}}', hash = '{new_hash}' WHERE seq = 3")

    report = verify_chain()

    assert (report.ok, report.broken_at) == (False, 4)


def test_verify_finds_a_deleted_event(app):
    _write_events(5)
    _raw("DELETE FROM audit_events WHERE seq = 2")

    report = verify_chain()

    assert (report.ok, report.broken_at) == (False, 3)
    assert "missing" in report.problem


def test_verify_finds_events_cut_from_the_end(app):
    _write_events(5)
    _raw("DELETE FROM audit_events WHERE seq >= 4")

    report = verify_chain()

    assert (report.ok, report.broken_at) == (False, None)
    assert "chain 1 ends at its event 3 but its head records event 5" in report.problem


def _write_events_on_chain(chain: int, count: int) -> None:
    """As a transaction would when every lower chain was busy."""
    db.session.info[CHAIN_KEY] = chain
    _write_events(count)


def test_events_of_one_transaction_stay_on_one_chain_in_order(app):
    _write_events_on_chain(2, 3)

    events = db.session.execute(select(AuditEvent).order_by(AuditEvent.seq)).scalars().all()
    assert [(event.chain, event.chain_seq) for event in events] == [(2, 1), (2, 2), (2, 3)]
    assert events[0].prev_hash == genesis_hash(2) != "0" * 64
    assert events[1].prev_hash == events[0].hash


def test_the_next_transaction_chooses_its_chain_afresh(app):
    _write_events_on_chain(2, 1)
    _write_events(1)

    assert db.session.info.get(CHAIN_KEY) is None
    assert verify_chain().ok


def test_verify_walks_every_chain(app):
    _write_events_on_chain(1, 2)
    _write_events_on_chain(2, 3)
    _write_events_on_chain(1, 1)

    report = verify_chain()

    assert report.ok and report.checked == 6


def test_verify_finds_an_edit_on_a_second_chain(app):
    _write_events_on_chain(1, 2)
    _write_events_on_chain(2, 2)
    _raw("UPDATE audit_events SET actor_label = 'someone@else.example' WHERE seq = 4")

    report = verify_chain()

    assert (report.ok, report.broken_at) == (False, 4)
    assert report.problem.startswith("chain 2:")


def test_verify_finds_an_event_moved_to_another_chain(app):
    _write_events_on_chain(1, 2)
    _write_events_on_chain(2, 2)
    _raw("UPDATE audit_events SET chain = 2, chain_seq = 3 WHERE seq = 2")

    assert verify_chain().ok is False


def test_verify_finds_a_whole_chain_removed(app):
    _write_events_on_chain(1, 2)
    _write_events_on_chain(2, 2)
    _raw("DELETE FROM audit_events WHERE chain = 2")

    report = verify_chain()

    assert report.ok is False
    assert "chain 2 ends at its event 0 but its head records event 2" in report.problem


def test_an_event_in_a_rolled_back_savepoint_leaves_the_chain_whole(app):
    with savepoint(db.session) as nested:
        audit.record("application.approved", actor=ACTOR, subject_type="application", subject_id=1)
        nested.rollback()
    _write_events(2)

    report = verify_chain()

    assert report.ok and report.checked == 2


@requires_postgres
def test_a_second_writer_takes_another_chain_instead_of_waiting(app):
    audit.record("application.approved", actor=ACTOR, subject_type="application", subject_id=1)
    outcome = []

    def second_writer():
        with app.app_context():
            db.session.execute(text("SET LOCAL lock_timeout = '5s'"))
            outcome.append(audit.record("staff.signed_in", actor=ACTOR).chain)
            db.session.commit()

    writer = threading.Thread(target=second_writer)
    writer.start()
    writer.join()
    db.session.commit()

    assert outcome == [2]
    assert verify_chain().ok


@requires_postgres
def test_a_writer_holding_the_pools_last_connection_can_open_a_chain(make_app):
    """Opening a chain takes a second connection. Taken from the pool, it waited for connections
    whose holders waited for this writer's row locks: 16 reviewers on a pool of 15 hung."""
    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0, "pool_timeout": 2})
    with app.app_context():
        db.session.info[CHAIN_KEY] = 9  # as when every open chain is busy

        assert audit.record("application.approved", actor=ACTOR).chain == 9
        db.session.commit()
        assert verify_chain().ok


def test_any_content_is_hashed_as_event_hash_defines(app):
    """On PostgreSQL the database computes the hash; it must be the one `audit verify` recomputes."""
    tricky = [
        {"subject_id": None, "before": None, "after": None},
        {
            "subject_id": 'quote " and \\ backslash',
            "before": {"name": "Peña Ñúñez €"},
            "after": {"n": [1, None]},
        },
        {
            "subject_id": "emoji 🎉",
            "before": {"nested": {"prev_hash": "x", "seq": 1}},
            "after": {"text": "a\nb"},
        },
    ]
    for content in tricky:
        audit.record("customer.updated", actor=ACTOR, subject_type="customer_account", **content)
    db.session.commit()

    events = db.session.scalars(select(AuditEvent).order_by(AuditEvent.seq)).all()
    assert [event_hash(event) for event in events] == [event.hash for event in events]
    assert verify_chain().ok


@requires_postgres
def test_postgres_writes_an_event_in_one_statement(app):
    _write_events(1)  # opens chain 1
    statements = []

    def listener(connection, cursor, statement, *args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        audit.record("application.approved", actor=ACTOR, subject_type="application", subject_id=1)
        audit.record("application.rejected", actor=ACTOR, subject_type="application", subject_id=2)
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)
    db.session.commit()

    assert len(statements) == 2
    assert verify_chain().ok and verify_chain().checked == 3


def test_audit_chains_must_be_a_sensible_number(tmp_path):
    with pytest.raises(ConfigError, match="AUDIT_CHAINS"):
        load_config({"AUDIT_CHAINS": "0"}, str(tmp_path))


def test_cli_verify_exits_non_zero_on_a_broken_chain(app):
    _write_events(3)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0

    _raw("UPDATE audit_events SET ip = '198.51.100.1' WHERE seq = 2")
    result = runner.invoke(args=["audit", "verify"])

    assert result.exit_code == 1
    assert "BROKEN at event 2" in result.output


def test_the_database_refuses_updates_to_audit_events(app):
    _write_events(1)

    with pytest.raises(DatabaseError, match="append-only"):
        db.session.execute(text("UPDATE audit_events SET action = 'x' WHERE seq = 1"))
    db.session.rollback()


def test_the_database_refuses_deletes_of_audit_events(app):
    _write_events(1)

    with pytest.raises(DatabaseError, match="append-only"):
        db.session.execute(text("DELETE FROM audit_events"))
    db.session.rollback()


@requires_postgres
def test_postgres_refuses_truncating_the_audit_log(app):
    _write_events(1)

    with pytest.raises(DatabaseError, match="append-only"):
        db.session.execute(text("TRUNCATE audit_events"))
    db.session.rollback()


def test_audit_view_lists_events_for_supervisors_without_edit_or_delete(app):
    _write_events(2)
    client, _ = signed_in_client(app, Role.SUPERVISOR)

    page = client.get("/admin/audit/").get_data(as_text=True)

    assert "application.reviewed" in page
    assert client.get("/admin/audit/edit/?id=1").status_code in (302, 404)
    assert client.get("/admin/audit/new/").status_code in (302, 404)
    assert db.session.get(AuditEvent, 1) is not None


def test_audit_view_pages_without_counting_the_log(app):
    _write_events(60)
    client, _ = signed_in_client(app, Role.ADMIN)
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement.lower())

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        first = client.get("/admin/audit/").get_data(as_text=True)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    second = client.get("/admin/audit/?page=1")

    assert not [statement for statement in statements if "count(" in statement]
    assert "page=1" in first
    assert second.status_code == 200
    assert "page=2" not in second.get_data(as_text=True)


def test_audit_view_filters_by_action_and_date_range(app):
    _write_events(2)
    audit.record("staff.deactivated", actor=ACTOR, subject_type="staff", subject_id=9)
    db.session.commit()
    client, _ = signed_in_client(app, Role.ADMIN)
    view = next(view for view in app.extensions["admin"][0]._views if view.endpoint == "audit")
    action_filter = next(
        i for i, f in enumerate(view._filters) if type(f) is FilterEqual and f.column.key == "action"
    )
    date_filter = next(i for i, f in enumerate(view._filters) if isinstance(f, UTCBetweenFilter))

    by_action = client.get("/admin/audit/", query_string={f"flt0_{action_filter}": "staff.deactivated"})
    by_date = client.get(
        "/admin/audit/", query_string={f"flt0_{date_filter}": "2000-01-01 00:00:00 to 2000-12-31 00:00:00"}
    )

    assert by_action.status_code == by_date.status_code == 200
    assert "staff.deactivated" in by_action.get_data(as_text=True)
    assert "application.reviewed" not in by_action.get_data(as_text=True)
    assert "application.reviewed" not in by_date.get_data(as_text=True)


def test_audit_view_verify_button_reports_the_result(app):
    _write_events(2)
    client, _ = signed_in_client(app, Role.ADMIN)
    from tests.conftest import csrf_token_from

    response = client.post(
        "/admin/audit/verify/",
        data={"csrf_token": csrf_token_from(client, "/admin/audit/")},
        follow_redirects=True,
    )

    assert "Audit log intact" in response.get_data(as_text=True)

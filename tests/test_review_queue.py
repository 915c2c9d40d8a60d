"""The legal review queue (backoffice/review/queue.py): claims, expiry, release, reassignment,
the SLA state and the filtered list, on the real database."""

from __future__ import annotations

import io
import itertools
import threading
import time
from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, func, select, text
from stdnum.es import cif

from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.extensions import db
from backoffice.review import queue
from backoffice.review import service as applications
from backoffice.review.documents import inspect_upload
from backoffice.review.models import ApplicationStatus as S
from backoffice.review.models import RepresentativeApplication
from backoffice.review.queue import QueueError
from backoffice.review.states import IllegalTransition, transition
from backoffice.staff.models import Role, StaffUser
from tests.conftest import requires_postgres
from tests.factories import make_staff
from tests.test_api_representatives import jpeg_bytes, pdf_bytes, png_bytes

MADRID = ZoneInfo("Europe/Madrid")
# Monday 16 November 2026, an ordinary working week.
MONDAY_10H = datetime(2026, 11, 16, 10, 0, tzinfo=MADRID)
NOW = datetime(2026, 11, 16, 13, 0, tzinfo=MADRID)
# Friday 18:00 → deadline Tuesday 24 November 18:00 (weekend not counted).
FRIDAY_18H = datetime(2026, 11, 20, 18, 0, tzinfo=MADRID)
TUESDAY_DEADLINE = datetime(2026, 11, 24, 18, 0, tzinfo=MADRID)
SYSTEM = Actor.system("tests")
DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
_numbers = itertools.count(1)


@cache
def _document_bytes() -> dict[str, tuple[bytes, str]]:
    return {
        "public_deed": (pdf_bytes("Escritura"), "escritura.pdf"),
        "power_of_attorney": (jpeg_bytes(), "poder.jpg"),
        "tax_id_document": (png_bytes(), "dni.png"),
    }


def _company_tax_id(number: int) -> str:
    base = f"B{number:07d}"
    return base + cif.calc_check_digits(base)[0]


def _person_tax_id(number: int) -> str:
    return f"{number:08d}{DNI_LETTERS[number % 23]}"


def make_application(submitted_at: datetime, **fields: str) -> RepresentativeApplication:
    """A real submission (documents inspected and stored), committed."""
    number = next(_numbers) + 100
    values = {
        "company_tax_id": _company_tax_id(number),
        "company_name": f"Sociedad Numero {number} S.L.",
        "first_name": "Ana",
        "last_name": f"Apellido{number}",
        "tax_id": _person_tax_id(number),
        "email": f"representante{number}@empresa.example",
        "phone": "+34 611 222 333",
        **fields,
    }
    files = {kind: inspect_upload(io.BytesIO(data), name) for kind, (data, name) in _document_bytes().items()}
    try:
        submission = applications.submit(values, files, language="es", ip=None, now=submitted_at)
    finally:
        for upload in files.values():
            upload.data.close()
    db.session.commit()
    return submission.application


def reviewer(**kwargs) -> StaffUser:
    return make_staff(Role.LEGAL_REVIEWER, **kwargs)


def as_actor(user: StaffUser) -> Actor:
    return Actor.staff(user)


def claim(user: StaffUser, now: datetime = NOW) -> RepresentativeApplication | None:
    application = queue.claim_next(user, actor=as_actor(user), now=now)
    db.session.commit()
    return application


def events(application: RepresentativeApplication, action: str) -> list[AuditEvent]:
    return list(
        db.session.execute(
            select(AuditEvent)
            .where(AuditEvent.subject_id == application.id, AuditEvent.action == action)
            .order_by(AuditEvent.seq)
        ).scalars()
    )


def ids(rows) -> list[str]:
    return [row.id for row in rows]


def decide(application: RepresentativeApplication, to_state: S, now: datetime = NOW) -> None:
    """Claim-free shortcut through the state machine (the decisions module is tested elsewhere)."""
    if application.status == S.SUBMITTED:
        transition(application, S.IN_REVIEW, actor=SYSTEM, now=now)
    transition(application, to_state, actor=SYSTEM, now=now)
    db.session.commit()


# Claiming


def test_claim_next_gives_the_earliest_deadline_first(app):
    later = make_application(MONDAY_10H + timedelta(hours=2))
    earliest = make_application(MONDAY_10H)
    make_application(MONDAY_10H + timedelta(hours=1))

    claimed = claim(reviewer())

    assert claimed.id == earliest.id
    assert later.call_deadline > earliest.call_deadline


def test_claiming_puts_the_application_in_review_for_the_reviewer_and_audits_it(app):
    application = make_application(MONDAY_10H)
    user = reviewer()

    claim(user)

    db.session.refresh(application)
    assert application.status == S.IN_REVIEW
    assert (application.claimed_by_id, application.claimed_at, application.last_activity_at) == (
        user.id,
        NOW,
        NOW,
    )
    (event,) = events(application, "application.in_review")
    assert event.after == {"status": "in_review", "reviewer_id": user.id}
    assert event.actor_id == str(user.id)


def test_claim_next_skips_applications_someone_else_holds(app):
    first = make_application(MONDAY_10H)
    second = make_application(MONDAY_10H + timedelta(hours=1))
    claim(reviewer())

    assert claim(reviewer()).id == second.id
    assert first.id != second.id


def test_a_reviewer_holding_a_claim_gets_the_same_application_back(app):
    held = make_application(MONDAY_10H + timedelta(hours=1))
    user = reviewer()
    claim(user)
    make_application(MONDAY_10H)  # an earlier deadline arrives meanwhile

    again = claim(user, NOW + timedelta(minutes=10))

    assert again.id == held.id
    assert again.last_activity_at == NOW + timedelta(minutes=10)
    assert len(events(held, "application.in_review")) == 1


def test_claim_next_returns_none_when_nothing_is_waiting(app):
    make_application(MONDAY_10H)
    claim(reviewer())

    assert claim(reviewer()) is None


def test_claim_next_ignores_applications_out_of_review(app):
    waiting_for_documents = make_application(MONDAY_10H)
    approved = make_application(MONDAY_10H + timedelta(minutes=1))
    waiting = make_application(MONDAY_10H + timedelta(hours=1))
    decide(waiting_for_documents, S.NEEDS_DOCUMENTS)
    decide(approved, S.APPROVED)

    assert claim(reviewer()).id == waiting.id


@pytest.mark.parametrize(
    ("role", "active"),
    [
        (Role.SUPERVISOR, True),
        (Role.CALL_AGENT, True),
        (Role.ASSOCIATION_CLERK, True),
        (Role.ADMIN, True),
        (Role.LEGAL_REVIEWER, False),
    ],
)
def test_only_active_legal_reviewers_can_claim(app, role, active):
    application = make_application(MONDAY_10H)
    user = make_staff(role, active=active)

    with pytest.raises(QueueError) as refused:
        queue.claim_next(user, actor=as_actor(user), now=NOW)

    assert refused.value.code == "not_a_reviewer"
    db.session.rollback()
    assert db.session.get(RepresentativeApplication, application.id).status == S.SUBMITTED


# Claiming one chosen application


def test_claim_takes_a_chosen_waiting_application(app):
    make_application(MONDAY_10H)
    chosen = make_application(MONDAY_10H + timedelta(hours=1))
    user = reviewer()

    queue.claim(chosen, user, actor=as_actor(user), now=NOW)
    db.session.commit()

    assert (chosen.status, chosen.claimed_by_id) == (S.IN_REVIEW, user.id)


def test_claim_refuses_an_application_someone_else_holds(app):
    application = make_application(MONDAY_10H)
    claim(reviewer())
    other = reviewer()

    with pytest.raises(QueueError) as refused:
        queue.claim(application, other, actor=as_actor(other), now=NOW + timedelta(minutes=5))

    assert refused.value.code == "not_claimable"


def test_claim_refuses_a_second_claim_while_one_is_held(app):
    make_application(MONDAY_10H)
    other = make_application(MONDAY_10H + timedelta(hours=1))
    user = reviewer()
    claim(user)

    with pytest.raises(QueueError) as refused:
        queue.claim(other, user, actor=as_actor(user), now=NOW)

    assert refused.value.code == "holds_another"


# Expiry and activity


def test_a_claim_idle_for_exactly_30_minutes_is_still_held(app):
    make_application(MONDAY_10H)
    claim(reviewer())

    assert claim(reviewer(), NOW + timedelta(minutes=30)) is None


def test_a_claim_idle_past_30_minutes_is_taken_over_and_audited(app):
    application = make_application(MONDAY_10H)
    first, second = reviewer(), reviewer()
    claim(first)
    later = NOW + timedelta(minutes=30, seconds=1)

    taken = claim(second, later)

    assert taken.id == application.id
    assert (taken.status, taken.claimed_by_id, taken.claimed_at) == (S.IN_REVIEW, second.id, later)
    (event,) = events(application, "application.claimed")
    assert event.before == {"reviewer_id": first.id, "last_activity_at": NOW.astimezone(UTC).isoformat()}
    assert event.after == {"reviewer_id": second.id}
    assert event.actor_id == str(second.id)


def test_touch_keeps_the_claim_alive(app):
    application = make_application(MONDAY_10H)
    holder = reviewer()
    claim(holder)

    queue.touch(application, holder, now=NOW + timedelta(minutes=25))
    db.session.commit()

    assert claim(reviewer(), NOW + timedelta(minutes=45)) is None
    assert db.session.get(RepresentativeApplication, application.id).last_activity_at == NOW + timedelta(
        minutes=25
    )


def test_touch_by_anyone_but_the_holder_is_refused(app):
    application = make_application(MONDAY_10H)
    claim(reviewer())

    with pytest.raises(QueueError) as refused:
        queue.touch(application, reviewer(), now=NOW)

    assert refused.value.code == "not_yours"


def test_touch_never_claims_an_unclaimed_application(app):
    application = make_application(MONDAY_10H)

    with pytest.raises(QueueError) as refused:
        queue.touch(application, reviewer(), now=NOW)

    assert refused.value.code == "not_yours"
    assert db.session.get(RepresentativeApplication, application.id).claimed_by_id is None


# Release


def test_release_puts_the_application_back_in_the_queue(app):
    application = make_application(MONDAY_10H)
    holder = reviewer()
    claim(holder)

    queue.release(application, actor=as_actor(holder), now=NOW + timedelta(minutes=5))
    db.session.commit()

    assert (application.status, application.claimed_by_id, application.claimed_at) == (
        S.SUBMITTED,
        None,
        None,
    )
    (event,) = events(application, "application.submitted")[-1:]
    assert event.after == {"status": "submitted", "released": True, "previous_reviewer_id": holder.id}
    assert claim(reviewer(), NOW + timedelta(minutes=6)).id == application.id


def test_release_refuses_an_application_that_is_not_in_review(app):
    application = make_application(MONDAY_10H)

    with pytest.raises(IllegalTransition):
        queue.release(application, actor=SYSTEM, now=NOW)

    db.session.rollback()
    assert db.session.get(RepresentativeApplication, application.id).status == S.SUBMITTED


def test_another_reviewer_cannot_release_a_claim(app):
    application = make_application(MONDAY_10H)
    claim(reviewer())
    other = reviewer()

    with pytest.raises(QueueError) as refused:
        queue.release(application, actor=as_actor(other), now=NOW)

    assert refused.value.code == "not_yours"


def test_a_supervisor_can_release_a_reviewers_claim(app):
    application = make_application(MONDAY_10H)
    claim(reviewer())

    queue.release(application, actor=as_actor(make_staff(Role.SUPERVISOR)), now=NOW)

    assert (application.status, application.claimed_by_id) == (S.SUBMITTED, None)


# Reassignment


def test_reassign_moves_a_claim_to_another_reviewer_starting_now(app):
    application = make_application(MONDAY_10H)
    first, second = reviewer(), reviewer()
    supervisor = make_staff(Role.SUPERVISOR)
    claim(first)
    moment = NOW + timedelta(minutes=5)

    moved = queue.reassign([application], second, actor=as_actor(supervisor), now=moment)
    db.session.commit()

    assert moved == 1
    assert (application.status, application.claimed_by_id) == (S.IN_REVIEW, second.id)
    assert (application.claimed_at, application.last_activity_at) == (moment, moment)
    (event,) = events(application, "application.reassigned")
    assert (event.before, event.after) == ({"reviewer_id": first.id}, {"reviewer_id": second.id})
    assert event.actor_id == str(supervisor.id)


def test_reassign_in_bulk_writes_one_event_per_application(app):
    claimed = make_application(MONDAY_10H)
    waiting = [make_application(MONDAY_10H + timedelta(hours=n)) for n in (1, 2)]
    claim(reviewer())
    target = reviewer()

    moved = queue.reassign([claimed, *waiting], target, actor=as_actor(make_staff(Role.SUPERVISOR)), now=NOW)
    db.session.commit()

    assert moved == 3
    for application in (claimed, *waiting):
        assert (application.status, application.claimed_by_id) == (S.IN_REVIEW, target.id)
        assert len(events(application, "application.reassigned")) == 1


def test_reassign_to_nobody_puts_the_applications_back_in_the_queue(app):
    application = make_application(MONDAY_10H)
    holder = reviewer()
    claim(holder)

    moved = queue.reassign([application], None, actor=as_actor(make_staff(Role.SUPERVISOR)), now=NOW)
    db.session.commit()

    assert moved == 1
    assert (application.status, application.claimed_by_id, application.claimed_at) == (
        S.SUBMITTED,
        None,
        None,
    )
    (event,) = events(application, "application.reassigned")
    assert (event.before, event.after) == ({"reviewer_id": holder.id}, {"reviewer_id": None})


@pytest.mark.parametrize(
    ("role", "active"), [(Role.SUPERVISOR, True), (Role.CALL_AGENT, True), (Role.LEGAL_REVIEWER, False)]
)
def test_reassign_refuses_a_target_who_is_not_an_active_legal_reviewer(app, role, active):
    application = make_application(MONDAY_10H)
    holder = reviewer()
    claim(holder)
    target = make_staff(role, active=active)

    with pytest.raises(QueueError) as refused:
        queue.reassign([application], target, actor=as_actor(make_staff(Role.SUPERVISOR)), now=NOW)

    assert refused.value.code == "not_a_reviewer"
    db.session.rollback()
    assert db.session.get(RepresentativeApplication, application.id).claimed_by_id == holder.id


def test_reassign_refuses_decided_applications_and_changes_nothing(app):
    in_review = make_application(MONDAY_10H)
    approved = make_application(MONDAY_10H + timedelta(hours=1))
    holder = reviewer()
    claim(holder)
    decide(approved, S.APPROVED)

    with pytest.raises(QueueError) as refused:
        queue.reassign(
            [in_review, approved], reviewer(), actor=as_actor(make_staff(Role.SUPERVISOR)), now=NOW
        )

    assert refused.value.code == "not_reassignable"
    assert refused.value.details == {"application_ids": [approved.id]}
    db.session.rollback()
    assert db.session.get(RepresentativeApplication, in_review.id).claimed_by_id == holder.id


def test_only_supervisors_reassign(app):
    application = make_application(MONDAY_10H)
    someone = reviewer()

    with pytest.raises(QueueError) as refused:
        queue.reassign([application], someone, actor=as_actor(reviewer()), now=NOW)

    assert refused.value.code == "not_a_supervisor"


# SLA state and countdown


@pytest.fixture
def friday_application(app) -> RepresentativeApplication:
    application = make_application(FRIDAY_18H)
    assert application.call_deadline == TUESDAY_DEADLINE
    return application


def test_sla_is_on_track_with_exactly_twelve_working_hours_left(friday_application):
    moment = datetime(2026, 11, 24, 6, 0, tzinfo=MADRID)

    assert queue.countdown(friday_application, now=moment) == 12.0
    assert queue.sla_state(friday_application, now=moment) == "on_track"


def test_sla_is_at_risk_with_less_than_twelve_working_hours_left(friday_application):
    moment = datetime(2026, 11, 24, 6, 0, 1, tzinfo=MADRID)

    assert queue.sla_state(friday_application, now=moment) == "at_risk"


def test_weekend_hours_do_not_count_down(friday_application):
    sunday_night = datetime(2026, 11, 22, 23, 0, tzinfo=MADRID)

    assert queue.countdown(friday_application, now=sunday_night) == 42.0
    assert queue.sla_state(friday_application, now=sunday_night) == "on_track"


def test_a_weekend_does_not_buy_time_before_a_monday_deadline(app):
    # Thursday 06:00 + 48 working hours = Monday 06:00: on Friday evening 10 hours are left.
    application = make_application(datetime(2026, 11, 19, 6, 0, tzinfo=MADRID))
    friday_evening = datetime(2026, 11, 20, 20, 0, tzinfo=MADRID)

    assert application.call_deadline == datetime(2026, 11, 23, 6, 0, tzinfo=MADRID)
    assert queue.countdown(application, now=friday_evening) == 10.0
    assert queue.sla_state(application, now=friday_evening) == "at_risk"


def test_a_public_holiday_does_not_count_down(app):
    # Friday 4 December + 48 working hours skips the weekend and Tuesday 8 December.
    application = make_application(datetime(2026, 12, 4, 18, 0, tzinfo=MADRID))
    holiday_evening = datetime(2026, 12, 8, 20, 0, tzinfo=MADRID)

    assert application.call_deadline == datetime(2026, 12, 9, 18, 0, tzinfo=MADRID)
    assert queue.countdown(application, now=holiday_evening) == 18.0
    assert queue.sla_state(application, now=holiday_evening) == "on_track"


def test_sla_is_breached_from_the_deadline_on(friday_application):
    assert queue.sla_state(friday_application, now=TUESDAY_DEADLINE) == "breached"
    assert queue.countdown(friday_application, now=TUESDAY_DEADLINE + timedelta(hours=1)) == -1.0


def test_sla_is_paused_while_documents_are_awaited(friday_application):
    decide(friday_application, S.NEEDS_DOCUMENTS)

    assert queue.sla_state(friday_application, now=TUESDAY_DEADLINE + timedelta(days=3)) == "paused"


def test_sla_is_done_once_decided(friday_application):
    decide(friday_application, S.APPROVED)

    assert queue.sla_state(friday_application, now=TUESDAY_DEADLINE + timedelta(days=3)) == "done"


# The list


def test_queue_is_sorted_by_deadline(app):
    made = [make_application(MONDAY_10H + timedelta(hours=n)) for n in (3, 0, 2, 1)]

    assert ids(queue.queue(now=NOW)) == ids(sorted(made, key=lambda a: a.call_deadline))


def test_queue_query_is_a_select_the_view_can_paginate(app):
    made = [make_application(MONDAY_10H + timedelta(hours=n)) for n in range(3)]

    page = db.paginate(queue.queue_query(now=NOW), page=2, per_page=2, error_out=False)

    assert ids(page.items) == [made[2].id]
    assert page.total == 3


def test_walking_the_queue_page_by_page_visits_every_application_once_in_order(app):
    made = [make_application(MONDAY_10H + timedelta(hours=n)) for n in (2, 0, 0, 1)]
    assert len({application.call_deadline for application in made}) == 3  # a tie, broken by id
    walked, after = [], None

    while True:
        page = queue.queue_page(after=after, size=1, now=NOW)
        walked += ids(page.applications)
        if page.next_after is None:
            break
        after = page.next_after

    assert walked == ids(queue.queue(now=NOW))


def test_a_queue_page_says_where_the_next_one_starts(app):
    made = [make_application(MONDAY_10H + timedelta(hours=n)) for n in range(3)]

    first = queue.queue_page(size=2, now=NOW)
    last = queue.queue_page(after=first.next_after, size=2, now=NOW)

    assert ids(first.applications) == [made[0].id, made[1].id]
    assert first.next_after == made[1].id
    assert ids(last.applications) == [made[2].id]
    assert last.next_after is None


def test_a_queue_page_keeps_the_filters(app):
    claimed = make_application(MONDAY_10H)
    waiting = [make_application(MONDAY_10H + timedelta(hours=n)) for n in (1, 2)]
    claim(reviewer())

    first = queue.queue_page(statuses=[S.SUBMITTED], size=1, now=NOW)
    second = queue.queue_page(after=first.next_after, statuses=[S.SUBMITTED], size=1, now=NOW)

    assert claimed.id not in ids(first.applications) + ids(second.applications)
    assert ids(first.applications) + ids(second.applications) == ids(waiting)


def test_a_queue_page_after_an_unknown_application_is_an_invalid_filter(app):
    with pytest.raises(QueueError) as refused:
        queue.queue_page(after="no-such-application", now=NOW)

    assert refused.value.code == "invalid_filter"


def test_a_queue_page_reads_a_bounded_slice_and_counts_nothing(app):
    make_application(MONDAY_10H)
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        queue.queue_page(size=10, now=NOW)
    finally:
        event.remove(db.engine, "before_cursor_execute", record)

    assert len(statements) == 1
    assert "LIMIT" in statements[0].upper()
    assert "count(" not in statements[0].lower()


def test_queue_filters_by_status(app):
    claimed = make_application(MONDAY_10H)
    waiting = make_application(MONDAY_10H + timedelta(hours=1))
    claim(reviewer())
    approved = make_application(MONDAY_10H + timedelta(hours=2))
    decide(approved, S.APPROVED)

    assert ids(queue.queue(statuses=[S.IN_REVIEW], now=NOW)) == [claimed.id]
    assert ids(queue.queue(statuses=["submitted", "approved"], now=NOW)) == [waiting.id, approved.id]


def test_queue_filters_by_sla_state(app):
    # Submitted on Monday 16 November, looked at on Wednesday 18 November at 09:00.
    moment = datetime(2026, 11, 18, 9, 0, tzinfo=MADRID)
    breached = make_application(datetime(2026, 11, 16, 8, 0, tzinfo=MADRID))  # deadline Wed 08:00
    at_risk = make_application(datetime(2026, 11, 16, 20, 0, tzinfo=MADRID))  # deadline Wed 20:00
    on_track = make_application(datetime(2026, 11, 16, 21, 0, tzinfo=MADRID))  # deadline Wed 21:00
    paused = make_application(datetime(2026, 11, 16, 7, 0, tzinfo=MADRID))
    decide(paused, S.NEEDS_DOCUMENTS)
    done = make_application(datetime(2026, 11, 16, 6, 0, tzinfo=MADRID))
    decide(done, S.APPROVED)

    found = {state: ids(queue.queue(sla_states=[state], now=moment)) for state in queue.SLA_STATES}

    assert found == {
        "breached": [breached.id],
        "at_risk": [at_risk.id],
        "on_track": [on_track.id],
        "paused": [paused.id],
        "done": [done.id],
    }
    assert ids(queue.queue(sla_states=["breached", "at_risk"], now=moment)) == [breached.id, at_risk.id]


def test_sla_filter_agrees_with_sla_state_at_every_instant(app):
    start = datetime(2026, 12, 2, 7, 0, tzinfo=MADRID)  # Wednesday; the 6th and 8th are holidays
    made = [make_application(start + timedelta(hours=7 * n)) for n in range(12)]
    decide(made[3], S.NEEDS_DOCUMENTS)
    decide(made[5], S.APPROVED)
    instants = [start + timedelta(hours=3 * n) for n in range(80)]
    for application in made:
        instants += [application.call_deadline, application.call_deadline - timedelta(microseconds=1)]
        boundary = application.call_deadline - timedelta(hours=12)
        instants += [boundary, boundary + timedelta(microseconds=1)]

    for moment in instants:
        for state in queue.SLA_STATES:
            expected = {a.id for a in made if queue.sla_state(a, now=moment) == state}
            assert set(ids(queue.queue(sla_states=[state], now=moment))) == expected, (moment, state)


def test_an_unknown_sla_state_is_refused(app):
    with pytest.raises(QueueError) as refused:
        queue.queue_query(sla_states=["late"], now=NOW)

    assert refused.value.code == "invalid_filter"


def test_queue_mine_shows_only_my_claims(app):
    mine = make_application(MONDAY_10H)
    make_application(MONDAY_10H + timedelta(hours=1))
    make_application(MONDAY_10H + timedelta(hours=2))
    me = reviewer()
    claim(me)
    claim(reviewer())

    assert ids(queue.queue(mine_of=me, now=NOW)) == [mine.id]
    assert ids(queue.queue(mine_of=me.id, now=NOW)) == [mine.id]


def test_queue_unassigned_shows_only_unclaimed_applications(app):
    make_application(MONDAY_10H)
    free = make_application(MONDAY_10H + timedelta(hours=1))
    claim(reviewer())

    assert ids(queue.queue(unassigned=True, now=NOW)) == [free.id]


def test_queue_filters_by_reviewer(app):
    make_application(MONDAY_10H)
    theirs = make_application(MONDAY_10H + timedelta(hours=1))
    claim(reviewer())
    someone = reviewer()
    claim(someone)

    assert ids(queue.queue(reviewer_id=someone.id, now=NOW)) == [theirs.id]


def test_queue_filters_by_submission_day_in_the_business_time_zone(app):
    # 00:30 in Madrid on Tuesday 17 November is still Monday 16 November in UTC.
    sunday = make_application(datetime(2026, 11, 15, 23, 59, tzinfo=MADRID))
    tuesday_early = make_application(datetime(2026, 11, 17, 0, 30, tzinfo=MADRID))
    wednesday_late = make_application(datetime(2026, 11, 18, 23, 59, tzinfo=MADRID))
    make_application(datetime(2026, 11, 19, 0, 0, tzinfo=MADRID))

    found = queue.queue(submitted_from=date(2026, 11, 16), submitted_to=date(2026, 11, 18), now=NOW)

    assert ids(found) == [tuesday_early.id, wednesday_late.id]
    assert sunday.id not in ids(queue.queue(submitted_from=date(2026, 11, 16), now=NOW))


def test_queue_datetime_bounds_are_inclusive(app):
    at = datetime(2026, 11, 17, 12, 0, tzinfo=MADRID)
    application = make_application(at)

    assert ids(queue.queue(submitted_from=at, submitted_to=at, now=NOW)) == [application.id]


SEARCHED = {
    "company_tax_id": "B12345674",
    "company_name": "Transportes Ejemplo S.L.",
    "first_name": "Marta",
    "last_name": "Ortega Ruiz",
    "tax_id": "12345678Z",
    "email": "marta.ortega@transportes.example",
}


@pytest.mark.parametrize(
    "term",
    [
        "transportes ejemplo",  # company name, any case
        "B12345674",  # CIF
        "  b-1234 5674 ",  # CIF as typed, with separators
        "MARTA",  # first name
        "ortega",  # last name
        "marta ortega",  # full name
        "12345678z",  # tax ID
        "12.345.678-Z",  # tax ID as typed
        "Marta.Ortega@",  # email
    ],
)
def test_search_finds_each_field(app, term):
    target = make_application(MONDAY_10H, **SEARCHED)
    make_application(MONDAY_10H + timedelta(hours=1))

    assert ids(queue.queue(search=term, now=NOW)) == [target.id]


@pytest.mark.parametrize("term", ["%", "_", "Ortega%Ruiz"])
def test_search_takes_wildcards_literally(app, term):
    make_application(MONDAY_10H, **SEARCHED)

    assert queue.queue(search=term, now=NOW) == []


def test_a_blank_search_does_not_filter(app):
    made = [make_application(MONDAY_10H + timedelta(hours=n)) for n in range(2)]

    assert ids(queue.queue(search="   ", now=NOW)) == ids(made)


# Concurrency


def _claim_until_empty(app, reviewer_ids, pool_size, barrier_timeout=30):
    """Each thread: its own app context and reviewer; claim, commit, approve, commit, until
    the queue is empty. Returns {reviewer id: [application ids]} and any thread errors."""
    db.session.commit()  # the test's own connection goes back to the pool
    handed_out: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(reviewer_ids))

    def work(reviewer_id: int) -> None:
        got: list[str] = []
        try:
            with app.app_context():
                try:
                    user = db.session.get(StaffUser, reviewer_id)
                    actor = Actor.staff(user)
                    db.session.commit()  # give the connection back while waiting
                    barrier.wait(timeout=barrier_timeout)
                    for _ in range(pool_size + 1):
                        application = queue.claim_next(user, actor=actor, now=NOW)
                        db.session.commit()
                        if application is None:
                            break
                        got.append(application.id)
                        transition(application, S.APPROVED, actor=actor, now=NOW)
                        db.session.commit()
                finally:
                    db.session.rollback()
                    db.session.remove()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        handed_out[reviewer_id] = got

    threads = [threading.Thread(target=work, args=(reviewer_id,)) for reviewer_id in reviewer_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a claiming thread hung"
    return handed_out, errors


def _pool(count: int) -> list[str]:
    return [make_application(MONDAY_10H + timedelta(minutes=7 * n)).id for n in range(count)]


@requires_postgres
def test_sixteen_concurrent_reviewers_get_every_application_exactly_once_on_postgres(app):
    pool = _pool(40)
    reviewer_ids = [reviewer().id for _ in range(16)]

    handed_out, errors = _claim_until_empty(app, reviewer_ids, len(pool))

    assert errors == []
    claimed = [application_id for got in handed_out.values() for application_id in got]
    assert sorted(claimed) == sorted(pool)
    holders = dict(
        db.session.execute(
            select(RepresentativeApplication.id, RepresentativeApplication.claimed_by_id)
        ).all()
    )
    for reviewer_id, got in handed_out.items():
        assert all(holders[application_id] == reviewer_id for application_id in got)
    assert db.session.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "application.in_review")
    ) == len(pool)


@requires_postgres
def test_a_reviewers_second_request_waits_and_gets_the_claim_the_first_made(app):
    """A double click: the second claim-next waits for the first's transaction and hands back
    the application it claimed, never a second one."""
    _pool(2)
    user = reviewer()
    db.session.commit()
    first = queue.claim_next(user, actor=as_actor(user), now=NOW)  # not committed yet
    second: list[str | None] = []
    errors: list[BaseException] = []

    def double_click() -> None:
        try:
            with app.app_context():
                again = db.session.get(StaffUser, user.id)
                got = queue.claim_next(again, actor=as_actor(again), now=NOW)
                second.append(got.id if got else None)
                db.session.commit()
                db.session.remove()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=double_click)
    thread.start()
    _wait_until_a_backend_waits_for_a_lock()
    db.session.commit()
    thread.join(timeout=30)

    assert errors == []
    assert second == [first.id]
    claimed = db.session.scalars(
        select(RepresentativeApplication.id).where(RepresentativeApplication.claimed_by_id == user.id)
    ).all()
    assert claimed == [first.id]


def _wait_until_a_backend_waits_for_a_lock(timeout: float = 10.0) -> None:
    """Block until another session of this database is queued on a row lock."""
    deadline = time.monotonic() + timeout
    with db.engine.connect() as connection:
        while time.monotonic() < deadline:
            waiting = connection.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                )
            )
            connection.rollback()
            if waiting:
                return
            time.sleep(0.01)
    raise AssertionError("the second request never queued on the reviewer's lock")


def test_a_few_concurrent_reviewers_get_every_application_exactly_once(app):
    """The same on whichever database runs the suite (SQLite: compare-and-set under its lock)."""
    pool = _pool(12)
    reviewer_ids = [reviewer().id for _ in range(4)]

    handed_out, errors = _claim_until_empty(app, reviewer_ids, len(pool))

    assert errors == []
    claimed = [application_id for got in handed_out.values() for application_id in got]
    assert sorted(claimed) == sorted(pool)

"""The legal review queue: claims, the SLA countdown, reassignment and the filtered list.

Claims
------
A reviewer works one application at a time. An application is *waiting* when its status is
`submitted` or `in_review` and nobody holds a live claim on it: it is unclaimed, or its
holder has been idle (no `touch`) for more than `REVIEW_CLAIM_IDLE_MINUTES` (30): then the
claim has expired and anyone may take it over. `claim_next` hands out the waiting application
with the earliest `call_deadline` (ties by id), except that a reviewer who still holds a live
claim gets that one back instead of a new one. `claim` takes one chosen application under
the same rules (`not_claimable` when someone else holds it, `holds_another` while the
reviewer holds a live claim elsewhere).

Claiming is atomic, so any number of web processes can pull from the same queue without two
reviewers ever getting the same application:

* PostgreSQL: the reviewer's own staff row is locked first (`FOR NO KEY UPDATE`, so that one
  reviewer's double click cannot take two claims), then the candidate is selected with
  `FOR UPDATE SKIP LOCKED` ordered by deadline, `LIMIT 1`, and claimed in the same
  transaction. Rows another transaction is claiming are skipped, not waited for.
* SQLite (development, tests): there are no row locks, so the claim is a compare-and-set
  `UPDATE ... WHERE id = :id AND status = :seen AND claimed_by_id IS :seen_holder AND
  (claimed_by_id IS NULL OR last_activity_at < :stale) AND NOT EXISTS (a live claim of this
  reviewer)`; when another worker won (rowcount 0) the next candidate is tried. The first
  UPDATE takes SQLite's database write lock, so the second look is always decisive.

Claiming a `submitted` application moves it to `in_review` through `states.transition`
(audited, with the reviewer id); taking over an expired claim on an `in_review` application
records `application.claimed` with the previous holder. Invariant kept by every function
here: among `submitted`/`in_review` applications, *claimed* means `in_review` and *unclaimed*
means `submitted` (`release` and unassigning move it back; assigning moves it forward).

The SLA state and filtering
---------------------------
`sla_state` is `paused` while the applicant owes documents, `done` once decided, and for
`submitted`/`in_review`: `breached` from the deadline on, `at_risk` while fewer than
`REVIEW_AT_RISK_HOURS` working hours remain, else `on_track`.

Design choice: the SLA filter runs entirely in SQL, exactly. Working hours left,
`working_hours_between(now, deadline)`, never decreases as the deadline moves later, and
`add_working_hours(now, H)` is the earliest instant at which H working hours have elapsed, so
"fewer than H working hours left" is exactly `call_deadline < add_working_hours(now, H)`.
Each SLA state is therefore a plain range on `call_deadline` (computed once per query in
Python with the business calendar, holidays and DST included), and `queue_query` returns a
`Select` the view can paginate. `queue(...)` is the same query executed into a list.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from flask import current_app, g
from flask_babel import gettext as _
from sqlalchemy import ColumnElement, Select, and_, bindparam, exists, false, func, or_, select, update
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import set_committed_value

from backoffice import audit
from backoffice.audit import Actor
from backoffice.calls.calendar import BusinessCalendar
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.review.models import ApplicationStatus as S
from backoffice.review.models import RepresentativeApplication as Application
from backoffice.review.states import transition
from backoffice.staff.models import Role, StaffUser

# Statuses in which the application sits in the review queue and can be claimed.
REVIEWABLE = (S.SUBMITTED, S.IN_REVIEW)
SLA_STATES = ("on_track", "at_risk", "breached", "paused", "done")
# SQLite: candidates looked at per round of compare-and-set, and rounds before giving up.
_CANDIDATES_PER_ROUND = 10
_MAX_ROUNDS = 20
# Applications per page of the list.
PAGE_SIZE = 50
_TAX_ID_SEPARATORS = re.compile(r"[\s\-.]+")


class QueueError(Exception):
    """A queue action refused; `code` is stable (`not_a_reviewer`, `not_a_supervisor`,
    `not_allowed` (unknown or inactive staff actor), `not_yours`, `not_claimable`,
    `holds_another`, `not_reassignable`, `not_found`, `invalid_filter`, `busy`), `details`
    says which records."""

    def __init__(self, code: str, message: str | None = None, **details: Any):
        super().__init__(message or code)
        self.code = code
        self.details = details


# Settings and helpers


def _calendar() -> BusinessCalendar:
    """One calendar per app context (a list page asks for it once per row)."""
    config = current_app.config
    key = tuple(
        str(config.get(name))
        for name in ("BUSINESS_TZ", "CALL_WINDOW", "HOLIDAYS_COUNTRY", "HOLIDAYS_SUBDIV", "SLA_HOURS")
    )
    cached = g.get("_review_queue_calendar")
    if cached is None or cached[0] != key:
        cached = (key, BusinessCalendar.from_config(config))
        g._review_queue_calendar = cached
    return cached[1]


def _idle_limit() -> timedelta:
    return timedelta(minutes=current_app.config["REVIEW_CLAIM_IDLE_MINUTES"])


def _at_risk_hours() -> float:
    return float(current_app.config["REVIEW_AT_RISK_HOURS"])


def _stale_before(now: datetime) -> datetime:
    """A claim whose last activity is before this instant has expired."""
    return now - _idle_limit()


def _is_postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def _staff_of(actor: Actor) -> StaffUser | None:
    """The staff user behind an actor; None for system actors (jobs, commands)."""
    if actor.kind != "staff":
        return None
    user = db.session.get(StaffUser, int(actor.id)) if actor.id and str(actor.id).isdigit() else None
    if user is None or not user.active:
        raise QueueError("not_allowed", _("This staff account cannot act on the queue."))
    return user


def _require_reviewer(user: StaffUser | None) -> StaffUser:
    if user is None or not user.active or user.role != Role.LEGAL_REVIEWER:
        raise QueueError("not_a_reviewer", _("Only an active legal reviewer can hold a review claim."))
    return user


def _claimable(stale_before: datetime, table: Any = Application) -> ColumnElement[bool]:
    """Waiting in the queue: reviewable and unclaimed or with an expired claim."""
    return and_(
        table.status.in_(REVIEWABLE),
        or_(
            table.claimed_by_id.is_(None),
            table.last_activity_at.is_(None),
            table.last_activity_at < stale_before,
        ),
    )


def _live_claim_of(reviewer_id: int, stale_before: datetime, table: Any = Application) -> ColumnElement[bool]:
    return and_(
        table.claimed_by_id == reviewer_id,
        table.status.in_(REVIEWABLE),
        table.last_activity_at >= stale_before,
    )


def claim_is_live(application: Application, *, now: datetime | None = None) -> bool:
    """Someone holds the application and has not been idle past the limit."""
    now = now or utcnow()
    return (
        application.claimed_by_id is not None
        and application.last_activity_at is not None
        and application.last_activity_at >= _stale_before(now)
    )


def _lock_rows(ids: Sequence[str]) -> list[Application]:
    """Re-read applications under a lock (PostgreSQL: row locks in id order; SQLite: a no-op
    UPDATE takes the database write lock first), so what we check is what we change."""
    ids = sorted(set(ids))
    if not ids:
        return []
    statement = (
        select(Application)
        .where(Application.id.in_(ids))
        .order_by(Application.id)
        .execution_options(populate_existing=True)
    )
    if _is_postgres():
        statement = statement.with_for_update(key_share=True)
    else:
        db.session.execute(
            update(Application)
            .where(Application.id.in_(ids))
            .values(last_activity_at=Application.last_activity_at)
            .execution_options(synchronize_session=False)
        )
    return list(db.session.execute(statement).scalars())


# SLA


def countdown(application: Application, *, now: datetime | None = None) -> float:
    """Working hours left until the call deadline; negative once it has passed. Meaningful for
    applications in the queue (while paused or decided it is measured to the old deadline)."""
    return _calendar().working_hours_between(now or utcnow(), application.call_deadline)


def sla_state(application: Application, *, now: datetime | None = None) -> str:
    """`on_track`, `at_risk`, `breached` for applications in the queue; `paused` while the
    applicant owes documents; `done` once decided."""
    now = now or utcnow()
    status = S(application.status)
    if status == S.NEEDS_DOCUMENTS:
        return "paused"
    if status not in REVIEWABLE:
        return "done"
    if now >= application.call_deadline:
        return "breached"
    if countdown(application, now=now) < _at_risk_hours():
        return "at_risk"
    return "on_track"


def _sla_condition(state: str, now: datetime, at_risk_until: datetime) -> ColumnElement[bool]:
    in_queue = Application.status.in_(REVIEWABLE)
    deadline = Application.call_deadline
    if state == "paused":
        return Application.status == S.NEEDS_DOCUMENTS
    if state == "done":
        return Application.status.not_in((*REVIEWABLE, S.NEEDS_DOCUMENTS))
    if state == "breached":
        return and_(in_queue, deadline <= now)
    if state == "at_risk":
        return and_(in_queue, deadline > now, deadline < at_risk_until)
    if state == "on_track":
        return and_(in_queue, deadline > now, deadline >= at_risk_until)
    raise QueueError("invalid_filter", _("Unknown SLA state %(state)s.", state=repr(state)), sla_state=state)


# Claims


def claim_next(reviewer: StaffUser, *, actor: Actor, now: datetime | None = None) -> Application | None:
    """Give the reviewer the waiting application with the earliest deadline (or the one they
    already hold), claimed for them; None when nothing is waiting. Flushes, never commits."""
    now = now or utcnow()
    _require_reviewer(reviewer)
    stale_before = _stale_before(now)
    if _is_postgres():
        return _claim_next_with_row_locks(reviewer, actor=actor, now=now, stale_before=stale_before)
    return _claim_next_compare_and_set(reviewer, actor=actor, now=now, stale_before=stale_before)


# Claim-next's statements, built once (it runs back to back under load, and building a
# statement per call cost as much client time as running it).
_LOCK_REVIEWER = (
    # FOR NO KEY UPDATE leaves foreign-key checks on the staff row alone.
    select(StaffUser.id).where(StaffUser.id == bindparam("reviewer_id")).with_for_update(key_share=True)
)


def _earliest(what: Any, condition: ColumnElement[bool]) -> Select[Any]:
    """The first application meeting `condition` in queue order (deadline, then id)."""
    return select(what).where(condition).order_by(Application.call_deadline, Application.id).limit(1)


_HELD = _earliest(
    Application, _live_claim_of(bindparam("reviewer_id"), bindparam("stale_before"))
).execution_options(populate_existing=True)
# After the reviewer's lock, one statement: the claim they still hold or else the next waiting
# application (SKIP LOCKED), locked and read in its newest version. The held claim is looked
# for first and COALESCE evaluates the pick only when there is none. This statement's snapshot
# is taken after the reviewer's lock was granted, so it sees a claim their other request has
# just committed.
_HELD_ID = _earliest(
    Application.id, _live_claim_of(bindparam("reviewer_id"), bindparam("stale_before"))
).with_for_update(key_share=True)
_NEXT_CLAIMABLE_ID = _earliest(Application.id, _claimable(bindparam("stale_before"))).with_for_update(
    skip_locked=True, key_share=True
)
_HELD_OR_NEXT = (
    select(Application)
    .where(Application.id == func.coalesce(_HELD_ID.scalar_subquery(), _NEXT_CLAIMABLE_ID.scalar_subquery()))
    .with_for_update(key_share=True)
    .execution_options(populate_existing=True)
)


def _lock_reviewer(reviewer: StaffUser) -> None:
    """PostgreSQL: serialise one reviewer's claims. A Core statement on the session's connection:
    it loads no objects, and the ORM's execution path costs more client time than the lock."""
    db.session.connection().execute(_LOCK_REVIEWER, {"reviewer_id": reviewer.id}).one()


def _held_by(reviewer: StaffUser, stale_before: datetime) -> Application | None:
    parameters = {"reviewer_id": reviewer.id, "stale_before": stale_before}
    return db.session.execute(_HELD, parameters).scalar_one_or_none()


def _claim_next_with_row_locks(
    reviewer: StaffUser, *, actor: Actor, now: datetime, stale_before: datetime
) -> Application | None:
    _lock_reviewer(reviewer)
    parameters = {"reviewer_id": reviewer.id, "stale_before": stale_before}
    application = db.session.execute(_HELD_OR_NEXT, parameters).scalar_one_or_none()
    if application is None:
        return None
    if application.claimed_by_id == reviewer.id and claim_is_live(application, now=now):
        application.last_activity_at = now
        db.session.flush()
        return application
    return _hand_over(
        application,
        reviewer,
        previous_status=S(application.status),
        previous_holder=application.claimed_by_id,
        previous_activity=application.last_activity_at,
        actor=actor,
        now=now,
    )


def _claim_next_compare_and_set(
    reviewer: StaffUser, *, actor: Actor, now: datetime, stale_before: datetime
) -> Application | None:
    other = aliased(Application)
    holds_live_claim = exists().where(_live_claim_of(reviewer.id, stale_before, other))
    for _round in range(_MAX_ROUNDS):
        held = _held_by(reviewer, stale_before)
        if held is not None:
            kept = db.session.execute(
                update(Application)
                .where(Application.id == held.id, _live_claim_of(reviewer.id, stale_before))
                .values(last_activity_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
            if kept:
                set_committed_value(held, "last_activity_at", now)
                return held
            continue
        candidates = db.session.execute(
            select(
                Application.id, Application.status, Application.claimed_by_id, Application.last_activity_at
            )
            .where(_claimable(stale_before))
            .order_by(Application.call_deadline, Application.id)
            .limit(_CANDIDATES_PER_ROUND)
        ).all()
        if not candidates:
            return None
        for candidate in candidates:
            holder_was = (
                Application.claimed_by_id.is_(None)
                if candidate.claimed_by_id is None
                else Application.claimed_by_id == candidate.claimed_by_id
            )
            won = db.session.execute(
                update(Application)
                .where(
                    Application.id == candidate.id,
                    Application.status == candidate.status,
                    holder_was,
                    _claimable(stale_before),
                    ~holds_live_claim,
                )
                .values(claimed_by_id=reviewer.id, claimed_at=now, last_activity_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
            if won:
                application = db.session.execute(
                    select(Application)
                    .where(Application.id == candidate.id)
                    .execution_options(populate_existing=True)
                ).scalar_one()
                return _hand_over(
                    application,
                    reviewer,
                    previous_status=S(candidate.status),
                    previous_holder=candidate.claimed_by_id,
                    previous_activity=candidate.last_activity_at,
                    actor=actor,
                    now=now,
                )
            if _held_by(reviewer, stale_before) is not None:
                break  # this reviewer got a claim in another request meanwhile: hand that back
    raise QueueError("busy", _("The queue is too busy right now; try again."))


def _hand_over(
    application: Application,
    reviewer: StaffUser,
    *,
    previous_status: S,
    previous_holder: int | None,
    previous_activity: datetime | None,
    actor: Actor,
    now: datetime,
) -> Application:
    """Write the claim on a row this transaction owns, and audit it."""
    application.claimed_by_id = reviewer.id
    application.claimed_at = now
    application.last_activity_at = now
    if previous_status == S.SUBMITTED:
        details: dict[str, Any] = {"reviewer_id": reviewer.id}
        if previous_holder is not None:
            details["previous_reviewer_id"] = previous_holder
        transition(application, S.IN_REVIEW, actor=actor, now=now, **details)
    else:
        audit.record(
            "application.claimed",
            actor=actor,
            subject_type="representative_application",
            subject_id=application.id,
            before={
                "reviewer_id": previous_holder,
                "last_activity_at": previous_activity.isoformat() if previous_activity else None,
            },
            after={"reviewer_id": reviewer.id},
        )
    db.session.flush()
    return application


def claim(
    application: Application, reviewer: StaffUser, *, actor: Actor, now: datetime | None = None
) -> Application:
    """Claim one chosen application (opened from the list). Refused with `not_claimable` when
    someone else holds a live claim or it is not in the queue, and with `holds_another` when
    the reviewer already holds a live claim on another application."""
    now = now or utcnow()
    _require_reviewer(reviewer)
    stale_before = _stale_before(now)
    if _is_postgres():
        _lock_reviewer(reviewer)
    (locked,) = _lock_rows([application.id]) or (None,)
    if locked is None:
        raise QueueError("not_found", _("No application %(id)s.", id=application.id))
    if locked.claimed_by_id == reviewer.id and claim_is_live(locked, now=now) and locked.status in REVIEWABLE:
        locked.last_activity_at = now
        db.session.flush()
        return locked
    if locked.status not in REVIEWABLE or claim_is_live(locked, now=now):
        raise QueueError(
            "not_claimable",
            _("Application %(id)s is not waiting for review.", id=locked.id),
            application_id=locked.id,
        )
    held = _held_by(reviewer, stale_before)
    if held is not None:
        raise QueueError(
            "holds_another",
            _("Finish or release the application you hold first."),
            application_id=held.id,
        )
    return _hand_over(
        locked,
        reviewer,
        previous_status=S(locked.status),
        previous_holder=locked.claimed_by_id,
        previous_activity=locked.last_activity_at,
        actor=actor,
        now=now,
    )


def touch(application: Application, reviewer: StaffUser, *, now: datetime | None = None) -> None:
    """The holder did something: their claim stays alive for another idle period. Anyone else
    (including when nobody or an expired holder has it) gets `not_yours`; touching never claims."""
    now = now or utcnow()
    kept = db.session.execute(
        update(Application)
        .where(Application.id == application.id, Application.claimed_by_id == reviewer.id)
        .values(last_activity_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    if not kept:
        raise QueueError(
            "not_yours",
            _("You do not hold application %(id)s.", id=application.id),
            application_id=application.id,
        )
    set_committed_value(application, "claimed_by_id", reviewer.id)
    set_committed_value(application, "last_activity_at", now)


def release(application: Application, *, actor: Actor, now: datetime | None = None) -> Application:
    """Give the application back to the queue: unclaimed, in_review → submitted (audited).
    A staff actor must be the holder or a supervisor; anything not in review is refused by
    the state machine (`IllegalTransition`)."""
    now = now or utcnow()
    user = _staff_of(actor)
    (locked,) = _lock_rows([application.id]) or (None,)
    if locked is None:
        raise QueueError("not_found", _("No application %(id)s.", id=application.id))
    if user is not None and user.id != locked.claimed_by_id and user.role != Role.SUPERVISOR:
        raise QueueError(
            "not_yours", _("You do not hold application %(id)s.", id=locked.id), application_id=locked.id
        )
    previous = locked.claimed_by_id
    transition(locked, S.SUBMITTED, actor=actor, now=now, released=True, previous_reviewer_id=previous)
    locked.claimed_by_id = None
    locked.claimed_at = None
    db.session.flush()
    return locked


def reassign(
    applications: Iterable[Application],
    to_reviewer: StaffUser | None,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> int:
    """A supervisor moves claims, one or many at once, to an active legal reviewer (their
    claim starts now) or to nobody (None: back to the queue). All or nothing: if any
    application has left review (`not_reassignable`) nothing changes. One
    `application.reassigned` event per application moved (plus the status transition when
    it enters or leaves `in_review`). Returns how many moved; ones already with the target
    are left alone."""
    now = now or utcnow()
    user = _staff_of(actor)
    if user is not None and user.role != Role.SUPERVISOR:
        raise QueueError("not_a_supervisor", _("Only a supervisor can reassign applications."))
    if to_reviewer is not None:
        _require_reviewer(to_reviewer)
    ids = sorted({application.id for application in applications})
    locked = _lock_rows(ids)
    missing = sorted(set(ids) - {application.id for application in locked})
    if missing:
        raise QueueError("not_found", _("Some applications do not exist."), application_ids=missing)
    decided = [application.id for application in locked if application.status not in REVIEWABLE]
    if decided:
        raise QueueError(
            "not_reassignable",
            _("Only applications still in review can be reassigned."),
            application_ids=decided,
        )
    target = to_reviewer.id if to_reviewer is not None else None
    moved = 0
    for application in locked:
        previous = application.claimed_by_id
        if previous == target:
            continue
        application.claimed_by_id = target
        application.claimed_at = now if target is not None else None
        if target is not None:
            application.last_activity_at = now
            if application.status == S.SUBMITTED:
                transition(
                    application, S.IN_REVIEW, actor=actor, now=now, reviewer_id=target, reassigned=True
                )
        elif application.status == S.IN_REVIEW:
            transition(
                application, S.SUBMITTED, actor=actor, now=now, previous_reviewer_id=previous, reassigned=True
            )
        audit.record(
            "application.reassigned",
            actor=actor,
            subject_type="representative_application",
            subject_id=application.id,
            before={"reviewer_id": previous},
            after={"reviewer_id": target},
        )
        moved += 1
    db.session.flush()
    return moved


# The list


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=_calendar().tz)


def _bound(value: date | datetime, *, end: bool) -> tuple[datetime, bool]:
    """(instant, inclusive): a date is a whole business-time-zone day; a datetime is itself."""
    if isinstance(value, datetime):
        if value.utcoffset() is None:
            raise QueueError("invalid_filter", _("Give date filters a time zone."))
        return value, True
    if end:
        return _day_start(value + timedelta(days=1)), False
    return _day_start(value), True


def _search_condition(search: str) -> ColumnElement[bool] | None:
    term = " ".join(search.split())
    if not term:
        return None
    conditions = [
        column.icontains(term, autoescape=True)
        for column in (
            Application.company_name,
            Application.first_name,
            Application.last_name,
            Application.first_name + " " + Application.last_name,
            Application.email,
            Application.company_tax_id,
            Application.tax_id,
        )
    ]
    compact = _TAX_ID_SEPARATORS.sub("", term).upper()
    if compact and compact != term:
        conditions += [
            Application.company_tax_id.contains(compact, autoescape=True),
            Application.tax_id.contains(compact, autoescape=True),
        ]
    return or_(*conditions)


def queue_query(
    *,
    statuses: Iterable[S | str] | None = None,
    sla_states: Iterable[str] | None = None,
    reviewer_id: int | None = None,
    mine_of: StaffUser | int | None = None,
    unassigned: bool = False,
    submitted_from: date | datetime | None = None,
    submitted_to: date | datetime | None = None,
    search: str | None = None,
    now: datetime | None = None,
) -> Select[tuple[Application]]:
    """Applications matching every given filter, earliest deadline first (ties by id).

    `statuses`, `sla_states`: any of (an empty list matches nothing; None means no filter).
    `reviewer_id` / `mine_of` (a StaffUser or its id): claimed by that reviewer (live or
    expired claim alike). `unassigned`: nobody holds it. `submitted_from`/`submitted_to`:
    both ends included; a date means that whole day in the business time zone. `search`:
    case-insensitive substring of company name or CIF, first, last or full name, tax ID or
    email; for tax IDs the term is also tried upper-cased without spaces, dashes or dots.
    Unknown statuses or SLA states raise `QueueError("invalid_filter")`.
    """
    now = now or utcnow()
    statement = select(Application).order_by(Application.call_deadline, Application.id)
    if statuses is not None:
        try:
            wanted = [S(status) for status in statuses]
        except ValueError as exc:
            raise QueueError("invalid_filter", str(exc)) from exc
        statement = statement.where(Application.status.in_(wanted) if wanted else false())
    if sla_states is not None:
        states = list(sla_states)
        at_risk_until = _calendar().add_working_hours(now, _at_risk_hours())
        conditions = [_sla_condition(state, now, at_risk_until) for state in states]
        statement = statement.where(or_(*conditions) if conditions else false())
    if mine_of is not None:
        statement = statement.where(
            Application.claimed_by_id == (mine_of.id if isinstance(mine_of, StaffUser) else mine_of)
        )
    if reviewer_id is not None:
        statement = statement.where(Application.claimed_by_id == reviewer_id)
    if unassigned:
        statement = statement.where(Application.claimed_by_id.is_(None))
    if submitted_from is not None:
        start, _inclusive = _bound(submitted_from, end=False)
        statement = statement.where(Application.submitted_at >= start)
    if submitted_to is not None:
        end, inclusive = _bound(submitted_to, end=True)
        statement = statement.where(
            Application.submitted_at <= end if inclusive else Application.submitted_at < end
        )
    if search is not None:
        condition = _search_condition(search)
        if condition is not None:
            statement = statement.where(condition)
    return statement


def queue(**filters: Any) -> list[Application]:
    """`queue_query(**filters)` executed: the whole filtered list, earliest deadline first."""
    return list(db.session.execute(queue_query(**filters)).scalars())


@dataclass(frozen=True)
class QueuePage:
    """One page of the list; `next_after` is the id to pass as `after` for the next page, None
    on the last one."""

    applications: list[Application]
    next_after: str | None


def queue_page(*, after: str | None = None, size: int | None = None, **filters: Any) -> QueuePage:
    """`queue_query(**filters)`, one page at a time, keyset-paginated: the `size` applications
    that follow application `after` in (deadline, id) order. Read from the (call_deadline, id)
    index, a page costs the same on the first page and the thousandth, with no row count, however
    big the table. `size` defaults to PAGE_SIZE. An unknown `after` raises
    `QueueError("invalid_filter")`."""
    size = size or PAGE_SIZE
    statement = queue_query(**filters)
    if after is not None:
        anchor = db.session.execute(
            select(Application.call_deadline, Application.id).where(Application.id == after)
        ).one_or_none()
        if anchor is None:
            raise QueueError("invalid_filter", _("No application %(id)s to continue after.", id=after))
        # `deadline >= d` bounds the index scan; the rest breaks ties by id.
        statement = statement.where(
            Application.call_deadline >= anchor.call_deadline,
            or_(Application.call_deadline > anchor.call_deadline, Application.id > anchor.id),
        )
    rows = list(db.session.execute(statement.limit(size + 1)).scalars())
    return QueuePage(rows[:size], rows[size - 1].id if len(rows) > size else None)

"""Association cases: the clerk's queue, claims and decisions.

A case is *active* while its status is `open` or `waiting_customer`; `linked` and `no_match`
close it. Every rule of the clerk console lives here; the views only parse, call and render.

Claims
------
One association clerk works a case at a time, and a clerk holds at most one live claim.
`claimed_at` is the holder's last activity: every action refreshes it, and a claim idle for
more than `ASSOCIATION_CLAIM_IDLE_MINUTES` (30) has expired, so anyone may take the case
over. Deciding (link, no match) or asking the customer ends the claim.

`claim_next` hands out the oldest `open` case (by `opened_at`, ties by id) that nobody holds,
or the case the clerk already holds. Cases waiting for the customer are not handed out: a
clerk opens one from the list and `claim`s it when the customer answers.

Claiming is atomic, as in the review queue (`review/queue.py`), in a simpler form:

* PostgreSQL: the clerk's staff row is locked (`FOR NO KEY UPDATE`: one clerk's double click
  cannot take two claims), then the candidate is read `FOR UPDATE SKIP LOCKED`, so two clerks
  never wait for, nor get, the same case.
* SQLite (development, tests): a no-op UPDATE of the clerk's staff row takes the database
  write lock before anything is read, and the claim itself is a compare-and-set UPDATE
  (`WHERE id = :id AND status = 'open' AND (unclaimed OR expired)`), so the look is decisive.

Decisions
---------
`link_case` links the account (through `association.link`) and emails the customer;
`no_match` closes the case with a required reason and leaves the account unassociated;
`ask_customer` emails the customer the clerk's (edited) message, in the customer's
language, and parks the case in `waiting_customer`; `unlink` (supervisors, reason required)
takes a link back: the account is `pending` again with a new open case. Every change is
audited with before/after, in the caller's transaction; functions flush, never commit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import ColumnElement, Select, and_, false, or_, select, update

from backoffice import audit
from backoffice.audit import Actor
from backoffice.customers import matching
from backoffice.customers.association import link, open_case
from backoffice.customers.models import (
    AssociationCase,
    AssociationStatus,
    CaseStatus,
    CustomerAccount,
    Policyholder,
)
from backoffice.db import utcnow
from backoffice.extensions import db
from backoffice.identity import IdentityError, normalise_tax_id
from backoffice.notifications.service import pick_language, queue_email
from backoffice.staff.models import Role, StaffUser

ACTIVE = (CaseStatus.OPEN, CaseStatus.WAITING_CUSTOMER)
MAX_REASON_LENGTH = 1000
MAX_MESSAGE_LENGTH = 4000
UNLINKED_REASON = "unlinked"
FIELDS = ("tax_id", "email", "phone", "name")
_TAX_ID_SEPARATORS = re.compile(r"[\s\-.]+")

# What the customer is asked to check, by field, in their language. Only the customer's own
# profile values are ever quoted: never what the policyholder record says.
FIELD_LABELS = {
    "en": {
        "tax_id": "Tax ID (DNI/NIE)",
        "email": "Email address",
        "phone": "Mobile phone number",
        "name": "First name and surnames",
    },
    "es": {
        "tax_id": "NIF/NIE",
        "email": "Correo electrónico",
        "phone": "Teléfono móvil",
        "name": "Nombre y apellidos",
    },
}
NOT_FILLED_IN = {"en": "not filled in", "es": "sin rellenar"}


class CaseError(Exception):
    """A case action refused; `code` is stable (`not_a_clerk`, `not_a_supervisor`,
    `not_allowed`, `not_yours`, `not_claimable`, `holds_another`, `closed`, `not_found`,
    `reason_required`, `reason_too_long`, `message_required`, `message_too_long`,
    `already_linked`, `not_linked`, `invalid_filter`, `invalid_tax_id`), `details` says which
    records."""

    def __init__(self, code: str, message: str | None = None, **details: Any):
        super().__init__(message or code)
        self.code = code
        self.details = details


# Settings and helpers


def _idle_limit() -> timedelta:
    return timedelta(minutes=current_app.config["ASSOCIATION_CLAIM_IDLE_MINUTES"])


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
        raise CaseError("not_allowed", _("This staff account cannot act on association cases."))
    return user


def _require_clerk(user: StaffUser | None) -> StaffUser:
    if user is None or not user.active or user.role != Role.ASSOCIATION_CLERK:
        raise CaseError("not_a_clerk", _("Only an active association clerk can hold a case."))
    return user


def _require_supervisor(actor: Actor) -> StaffUser | None:
    user = _staff_of(actor)
    if user is not None and user.role != Role.SUPERVISOR:
        raise CaseError("not_a_supervisor", _("Only a supervisor can do this."))
    return user


def _unheld(stale_before: datetime) -> ColumnElement[bool]:
    return or_(
        AssociationCase.claimed_by_id.is_(None),
        AssociationCase.claimed_at.is_(None),
        AssociationCase.claimed_at < stale_before,
    )


def _live_claim_of(clerk_id: int, stale_before: datetime) -> ColumnElement[bool]:
    return and_(
        AssociationCase.claimed_by_id == clerk_id,
        AssociationCase.status.in_(ACTIVE),
        AssociationCase.claimed_at >= stale_before,
    )


def claim_is_live(case: AssociationCase, *, now: datetime | None = None) -> bool:
    """Someone holds the active case and has not been idle past the limit."""
    now = now or utcnow()
    return (
        case.status in ACTIVE
        and case.claimed_by_id is not None
        and case.claimed_at is not None
        and case.claimed_at >= _stale_before(now)
    )


def holder_of(case: AssociationCase, *, now: datetime | None = None) -> int | None:
    """The id of the clerk holding a live claim, or None."""
    return case.claimed_by_id if claim_is_live(case, now=now) else None


def _lock_staff(user: StaffUser) -> None:
    """Serialise one clerk's claims. PostgreSQL: lock the staff row (FOR NO KEY UPDATE leaves
    foreign-key checks alone). SQLite: a no-op UPDATE takes the database write lock."""
    if _is_postgres():
        db.session.execute(
            select(StaffUser.id).where(StaffUser.id == user.id).with_for_update(key_share=True)
        ).one()
    else:
        db.session.execute(
            update(StaffUser)
            .where(StaffUser.id == user.id)
            .values(active=StaffUser.active)
            .execution_options(synchronize_session=False)
        )


def _locked(case: AssociationCase) -> AssociationCase:
    """Re-read the case under a lock, so what is checked is what is changed."""
    statement = (
        select(AssociationCase).where(AssociationCase.id == case.id).execution_options(populate_existing=True)
    )
    if _is_postgres():
        statement = statement.with_for_update(key_share=True)
    else:
        db.session.execute(
            update(AssociationCase)
            .where(AssociationCase.id == case.id)
            .values(status=AssociationCase.status)
            .execution_options(synchronize_session=False)
        )
    locked = db.session.execute(statement).scalar_one_or_none()
    if locked is None:
        raise CaseError("not_found", _("No case %(id)s.", id=case.id), case_id=case.id)
    return locked


def _locked_account(account_id: int) -> CustomerAccount:
    """Re-read the account under a row lock (PostgreSQL; SQLite holds the database write lock):
    the matching engine locks it the same way, so a clerk's decision and an automatic match
    never interleave. Taken before the case lock, in the engine's order."""
    account = db.session.execute(
        select(CustomerAccount)
        .where(CustomerAccount.id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if account is None:
        raise CaseError("not_found", _("No account %(id)s.", id=account_id), account_id=account_id)
    return account


def _held_by(clerk: StaffUser, stale_before: datetime) -> AssociationCase | None:
    return db.session.execute(
        select(AssociationCase)
        .where(_live_claim_of(clerk.id, stale_before))
        .order_by(AssociationCase.opened_at, AssociationCase.id)
        .limit(1)
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _claim_state(case: AssociationCase) -> dict[str, Any]:
    return {
        "clerk_id": case.claimed_by_id,
        "claimed_at": case.claimed_at.isoformat() if case.claimed_at else None,
    }


def _record(action: str, case: AssociationCase, actor: Actor, before: dict, after: dict) -> None:
    audit.record(
        action,
        actor=actor,
        subject_type="association_case",
        subject_id=case.id,
        before=before,
        after=after,
    )


# Claims


def claim_next(clerk: StaffUser, *, actor: Actor, now: datetime | None = None) -> AssociationCase | None:
    """Give the clerk the oldest open case nobody holds (or the one they already hold),
    claimed for them; None when nothing is waiting."""
    now = now or utcnow()
    _require_clerk(clerk)
    stale_before = _stale_before(now)
    _lock_staff(clerk)
    held = _held_by(clerk, stale_before)
    if held is not None:
        held.claimed_at = now
        db.session.flush()
        return held
    waiting = (
        select(AssociationCase)
        .where(AssociationCase.status == CaseStatus.OPEN, _unheld(stale_before))
        .order_by(AssociationCase.opened_at, AssociationCase.id)
        .execution_options(populate_existing=True)
    )
    if _is_postgres():
        candidate = db.session.execute(
            waiting.limit(1).with_for_update(skip_locked=True, key_share=True)
        ).scalar_one_or_none()
        return None if candidate is None else _hand_over(candidate, clerk, actor=actor, now=now)
    for candidate in db.session.execute(waiting.limit(10)).scalars():
        before = _claim_state(candidate)
        won = db.session.execute(
            update(AssociationCase)
            .where(
                AssociationCase.id == candidate.id,
                AssociationCase.status == CaseStatus.OPEN,
                _unheld(stale_before),
            )
            .values(claimed_by_id=clerk.id, claimed_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if won:
            db.session.refresh(candidate)
            _record("association.case_claimed", candidate, actor, before, _claim_state(candidate))
            return candidate
    return None


def _hand_over(case: AssociationCase, clerk: StaffUser, *, actor: Actor, now: datetime) -> AssociationCase:
    before = _claim_state(case)
    case.claimed_by_id = clerk.id
    case.claimed_at = now
    db.session.flush()
    _record("association.case_claimed", case, actor, before, _claim_state(case))
    return case


def claim(
    case: AssociationCase, clerk: StaffUser, *, actor: Actor, now: datetime | None = None
) -> AssociationCase:
    """Claim one chosen active case (opened from the list, e.g. one waiting for the customer).
    `not_claimable` when it is closed or someone else holds it; `holds_another` while the
    clerk holds a live claim on another case."""
    now = now or utcnow()
    _require_clerk(clerk)
    stale_before = _stale_before(now)
    _lock_staff(clerk)
    locked = _locked(case)
    if locked.status not in ACTIVE:
        raise CaseError("not_claimable", _("Case %(id)s is closed.", id=locked.id), case_id=locked.id)
    if claim_is_live(locked, now=now):
        if locked.claimed_by_id == clerk.id:
            locked.claimed_at = now
            db.session.flush()
            return locked
        raise CaseError(
            "not_claimable", _("Someone else holds case %(id)s.", id=locked.id), case_id=locked.id
        )
    held = _held_by(clerk, stale_before)
    if held is not None:
        raise CaseError("holds_another", _("Finish or release the case you hold first."), case_id=held.id)
    return _hand_over(locked, clerk, actor=actor, now=now)


def _require_holder(case: AssociationCase, actor: Actor, now: datetime) -> tuple[AssociationCase, StaffUser]:
    """Lock the case and check the acting clerk holds its claim; refreshes the claim. An expired
    claim nobody has taken over yet still counts, as in the review queue."""
    clerk = _require_clerk(_staff_of(actor))
    locked = _locked(case)
    if locked.status not in ACTIVE:
        raise CaseError("closed", _("Case %(id)s is already closed.", id=locked.id), case_id=locked.id)
    if locked.claimed_by_id != clerk.id:
        raise CaseError(
            "not_yours", _("Claim case %(id)s before acting on it.", id=locked.id), case_id=locked.id
        )
    locked.claimed_at = now
    return locked, clerk


def _drop_claim(case: AssociationCase) -> None:
    case.claimed_by_id = None
    case.claimed_at = None


def release(case: AssociationCase, *, actor: Actor, now: datetime | None = None) -> AssociationCase:
    """Give the case back to the queue. The holder or a supervisor may."""
    now = now or utcnow()
    user = _staff_of(actor)
    locked = _locked(case)
    if user is not None and user.role != Role.SUPERVISOR and user.id != locked.claimed_by_id:
        raise CaseError("not_yours", _("You do not hold case %(id)s.", id=locked.id), case_id=locked.id)
    before = _claim_state(locked)
    _drop_claim(locked)
    db.session.flush()
    _record("association.case_released", locked, actor, before, _claim_state(locked))
    return locked


def reassign(
    case: AssociationCase, to_clerk: StaffUser | None, *, actor: Actor, now: datetime | None = None
) -> AssociationCase:
    """A supervisor gives an active case to an active clerk (their claim starts now) or to
    nobody (back to the queue)."""
    now = now or utcnow()
    _require_supervisor(actor)
    if to_clerk is not None:
        _require_clerk(to_clerk)
    locked = _locked(case)
    if locked.status not in ACTIVE:
        raise CaseError("closed", _("Case %(id)s is already closed.", id=locked.id), case_id=locked.id)
    before = _claim_state(locked)
    if to_clerk is None:
        _drop_claim(locked)
    else:
        locked.claimed_by_id = to_clerk.id
        locked.claimed_at = now
    db.session.flush()
    _record("association.case_reassigned", locked, actor, before, _claim_state(locked))
    return locked


# Decisions


def _clean_text(value: str | None, *, limit: int, required: CaseError, too_long: CaseError) -> str:
    """The typed text without trailing blanks, or the refusal for an empty or too long one."""
    text = "\n".join(line.rstrip() for line in (value or "").strip().splitlines())
    if not text:
        raise required
    if len(text) > limit:
        raise too_long
    return text


def _reason(value: str | None) -> str:
    """A clerk's or supervisor's reason for a decision."""
    return _clean_text(
        value,
        limit=MAX_REASON_LENGTH,
        required=CaseError("reason_required", _("Write the reason.")),
        too_long=CaseError(
            "reason_too_long",
            _("The reason can be at most %(limit)d characters.", limit=MAX_REASON_LENGTH),
        ),
    )


def _case_state(case: AssociationCase) -> dict[str, Any]:
    return {
        "status": str(case.status),
        "policyholder_id": case.policyholder_id,
        "clerk_id": case.claimed_by_id,
        "decision_reason": case.decision_reason,
    }


def _close(case: AssociationCase, status: CaseStatus, clerk: StaffUser, now: datetime) -> None:
    case.status = status
    case.closed_at = now
    case.decided_by_id = clerk.id
    _drop_claim(case)


def link_case(
    case: AssociationCase, holder: Policyholder, *, actor: Actor, now: datetime | None = None
) -> AssociationCase:
    """Link the case's account to `holder` (one of the candidates, or any policyholder the clerk
    found by tax ID), close the case and email the customer."""
    now = now or utcnow()
    account = _locked_account(case.account_id)
    locked, clerk = _require_holder(case, actor, now)
    if account.association_status == AssociationStatus.LINKED:
        raise CaseError(
            "already_linked", _("Account %(id)s is already linked.", id=account.id), account_id=account.id
        )
    before = _case_state(locked)
    link(account, holder, actor=actor, now=now)
    locked.policyholder_id = holder.id
    _close(locked, CaseStatus.LINKED, clerk, now)
    db.session.flush()
    _record("association.case_linked", locked, actor, before, _case_state(locked))
    language = pick_language(account.language)
    queue_email(
        account.email,
        "account_linked",
        {
            "name": account.first_name or "",
            "policies": len(holder.policies),
            "contact_phone": current_app.config["CUSTOMER_CONTACT_PHONE"],
        },
        language=language,
    )
    return locked


def no_match(
    case: AssociationCase, reason: str, *, actor: Actor, now: datetime | None = None
) -> AssociationCase:
    """Close the case without a link; the reason is required. The account is no longer
    pending: it has no policyholder."""
    now = now or utcnow()
    text = _reason(reason)
    account = _locked_account(case.account_id)
    locked, clerk = _require_holder(case, actor, now)
    before = _case_state(locked)
    locked.decision_reason = text
    _close(locked, CaseStatus.NO_MATCH, clerk, now)
    if account.association_status == AssociationStatus.PENDING and not _other_active_case(locked):
        audit.record(
            "customer.association_closed",
            actor=actor,
            subject_type="customer_account",
            subject_id=account.id,
            before={"status": str(account.association_status)},
            after={"status": str(AssociationStatus.NONE)},
        )
        account.association_status = AssociationStatus.NONE
    db.session.flush()
    _record("association.case_no_match", locked, actor, before, _case_state(locked))
    return locked


def _other_active_case(case: AssociationCase) -> bool:
    return (
        db.session.execute(
            select(AssociationCase.id).where(
                AssociationCase.account_id == case.account_id,
                AssociationCase.id != case.id,
                AssociationCase.status.in_(ACTIVE),
            )
        ).first()
        is not None
    )


def profile_values(account: CustomerAccount) -> dict[str, str | None]:
    """The account's side of the comparison, field by field."""
    return {
        "tax_id": matching.account_tax_id(account),
        "email": account.email,
        "phone": account.phone,
        "name": matching.account_name(account),
    }


def compose_customer_message(case: AssociationCase, fields: Iterable[str] | None = None) -> str:
    """The default list of details to check, in the customer's language: the fields that do not
    agree with the best candidate (all of them when there is none), each with the value in
    the customer's profile."""
    account = case.account
    language = pick_language(account.language)
    if fields is None:
        fields = _doubtful_fields(case)
    values = profile_values(account)
    labels = FIELD_LABELS.get(language, FIELD_LABELS["en"])
    empty = NOT_FILLED_IN.get(language, NOT_FILLED_IN["en"])
    return "\n".join(f"- {labels[field]}: {values[field] or empty}" for field in fields if field in labels)


def _doubtful_fields(case: AssociationCase) -> list[str]:
    ranked = ranked_candidates(case)
    if not ranked:
        return list(FIELDS)
    doubtful = [item.field for item in ranked[0].fields if item.field in FIELDS and item.agrees is not True]
    return doubtful or list(FIELDS)


def ask_customer(
    case: AssociationCase, message: str, *, actor: Actor, now: datetime | None = None
) -> AssociationCase:
    """Email the customer, in their language, the details to check (the clerk's edited message)
    → `waiting_customer`. The claim ends; the case stays in the queue's filters."""
    now = now or utcnow()
    text = _clean_text(
        message,
        limit=MAX_MESSAGE_LENGTH,
        required=CaseError("message_required", _("Write the message to the customer.")),
        too_long=CaseError(
            "message_too_long",
            _("The message to the customer can be at most %(limit)d characters.", limit=MAX_MESSAGE_LENGTH),
        ),
    )
    locked, _clerk = _require_holder(case, actor, now)
    account = locked.account
    before = {**_case_state(locked), "customer_asked_at": _iso(locked.customer_asked_at)}
    locked.status = CaseStatus.WAITING_CUSTOMER
    locked.customer_asked_at = now
    _drop_claim(locked)
    db.session.flush()
    _record(
        "association.customer_asked",
        locked,
        actor,
        before,
        {**_case_state(locked), "customer_asked_at": _iso(now), "message": text},
    )
    queue_email(
        account.email,
        "association_check_details",
        {
            "name": account.first_name or "",
            "message": text,
            "contact_phone": current_app.config["CUSTOMER_CONTACT_PHONE"],
            # A phone proven by SMS that is on their record is enough to link them.
            "suggest_proving_phone": account.phone_verified_at is None,
        },
        language=pick_language(account.language),
    )
    return locked


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def unlink(
    account: CustomerAccount, reason: str, *, actor: Actor, now: datetime | None = None
) -> AssociationCase:
    """A supervisor takes a link back, with a reason: the account is `pending` again and a new
    open case (reason `unlinked`, fresh candidates) goes to the clerks. Returns the new case."""
    now = now or utcnow()
    _require_supervisor(actor)
    text = _reason(reason)
    account = _locked_account(account.id)
    if account.association_status != AssociationStatus.LINKED or account.policyholder_id is None:
        raise CaseError(
            "not_linked", _("Account %(id)s is not linked.", id=account.id), account_id=account.id
        )
    previous = account.policyholder_id
    before = {"status": str(account.association_status), "policyholder_id": previous}
    account.policyholder = None
    account.linked_at = None
    db.session.flush()
    audit.record(
        "customer.unlinked",
        actor=actor,
        subject_type="customer_account",
        subject_id=account.id,
        before=before,
        after={"status": str(AssociationStatus.PENDING), "policyholder_id": None, "reason": text},
    )
    ranked: list[Any] = list(matching.candidates(account))
    if previous not in {candidate.policyholder_id for candidate in ranked}:
        holder = db.session.get(Policyholder, previous)
        ranked.append(matching.explain(account, holder) if holder is not None else previous)
    return open_case(account, UNLINKED_REASON, ranked, actor=actor, now=now)


# What the case page shows


@dataclass(frozen=True)
class FieldView:
    field: str
    account_value: str | None
    holder_value: str | None
    agrees: bool | None
    similarity: float

    @property
    def verdict(self) -> str:
        """`agrees`, `differs` or `missing` (one side has no value)."""
        if not self.account_value or not self.holder_value:
            return "missing"
        return "agrees" if self.agrees else "differs"


@dataclass(frozen=True)
class CandidateView:
    holder: Policyholder | None
    policyholder_id: int
    score: float
    sure: bool
    fields: tuple[FieldView, ...]
    live: bool  # computed now (True) or the evidence stored when the case was opened


def _from_engine(candidate: Any, holder: Policyholder) -> CandidateView:
    return CandidateView(
        holder=holder,
        policyholder_id=holder.id,
        score=float(candidate.score),
        sure=bool(candidate.sure),
        fields=tuple(
            FieldView(e.field, e.account_value, e.holder_value, e.agrees, float(e.similarity or 0))
            for e in candidate.evidence
        ),
        live=True,
    )


def _from_stored(item: dict[str, Any], holder: Policyholder | None, policyholder_id: int) -> CandidateView:
    return CandidateView(
        holder=holder,
        policyholder_id=policyholder_id,
        score=float(item.get("score") or 0),
        sure=bool(item.get("sure")),
        fields=tuple(
            FieldView(
                str(e.get("field")),
                e.get("account_value"),
                e.get("holder_value"),
                e.get("agrees"),
                float(e.get("similarity") or 0),
            )
            for e in item.get("evidence", ())
        ),
        live=False,
    )


def explain_holder(account: CustomerAccount, holder: Policyholder) -> CandidateView:
    """The engine's current view of one account/holder pair (evidence as of now, not as of
    when the case was opened)."""
    return _from_engine(matching.explain(account, holder), holder)


def ranked_candidates(case: AssociationCase) -> list[CandidateView]:
    """The case's stored candidates, re-explained live by the engine (so the evidence reflects
    today's profile and import) and ranked best first; a holder no longer in the database
    keeps the evidence stored when the case was opened."""
    stored = {
        int(item["policyholder_id"]): item
        for item in case.evidence or []
        if isinstance(item, dict) and str(item.get("policyholder_id", "")).isdigit()
    }
    ids: list[int] = []
    for value in [*(case.candidate_ids or []), *stored]:
        if str(value).isdigit() and int(value) not in ids:
            ids.append(int(value))
    views = []
    for policyholder_id in ids:
        holder = db.session.get(Policyholder, policyholder_id)
        if holder is None:
            views.append(_from_stored(stored.get(policyholder_id, {}), None, policyholder_id))
        else:
            views.append(explain_holder(case.account, holder))
    return sorted(views, key=lambda view: (-view.score, view.policyholder_id))


def find_policyholder(tax_id: str) -> Policyholder | None:
    """Any policyholder by tax ID, as typed by a clerk (spaces, dashes and case do not matter)."""
    term = (tax_id or "").strip()
    if not term:
        return None
    try:
        value = normalise_tax_id(term).value
    except IdentityError:
        value = _TAX_ID_SEPARATORS.sub("", term).upper()
    return db.session.execute(select(Policyholder).where(Policyholder.tax_id == value)).scalar_one_or_none()


# The list


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZoneInfo(current_app.config["BUSINESS_TZ"]))


def _search_condition(search: str) -> ColumnElement[bool] | None:
    term = " ".join(search.split())
    if not term:
        return None
    account = CustomerAccount
    conditions = [
        column.icontains(term, autoescape=True)
        for column in (
            account.email,
            account.first_name,
            account.last_name,
            account.first_name + " " + account.last_name,
            account.declared_tax_id,
            account.tax_id,
        )
    ]
    compact = _TAX_ID_SEPARATORS.sub("", term).upper()
    if compact and compact != term:
        conditions += [
            account.declared_tax_id.contains(compact, autoescape=True),
            account.tax_id.contains(compact, autoescape=True),
        ]
    return or_(*conditions)


def queue_query(
    *,
    statuses: Iterable[CaseStatus | str] | None = ACTIVE,
    reasons: Iterable[str] | None = None,
    opened_from: date | None = None,
    opened_to: date | None = None,
    claimed_by: StaffUser | int | None = None,
    unclaimed: bool = False,
    search: str | None = None,
    now: datetime | None = None,
) -> Select[tuple[AssociationCase]]:
    """Cases matching every given filter, oldest first (ties by id).

    `statuses`: any of (default: the active ones; None: every status). `reasons`: any of.
    `opened_from`/`opened_to`: whole days in the business time zone, both included.
    `claimed_by`: that clerk holds a live claim; `unclaimed`: nobody does (or the claim has
    expired). `search`: case-insensitive substring of the account's email, first, last or full
    name or tax ID (typed with or without separators). Unknown statuses: `invalid_filter`."""
    now = now or utcnow()
    stale_before = _stale_before(now)
    statement = (
        select(AssociationCase)
        .join(CustomerAccount, CustomerAccount.id == AssociationCase.account_id)
        .order_by(AssociationCase.opened_at, AssociationCase.id)
    )
    if statuses is not None:
        try:
            wanted = [CaseStatus(status) for status in statuses]
        except ValueError as exc:
            raise CaseError("invalid_filter", str(exc)) from exc
        statement = statement.where(AssociationCase.status.in_(wanted) if wanted else false())
    if reasons is not None:
        wanted_reasons = list(reasons)
        statement = statement.where(AssociationCase.reason.in_(wanted_reasons) if wanted_reasons else false())
    if opened_from is not None:
        statement = statement.where(AssociationCase.opened_at >= _day_start(opened_from))
    if opened_to is not None:
        statement = statement.where(AssociationCase.opened_at < _day_start(opened_to + timedelta(days=1)))
    if claimed_by is not None:
        clerk_id = claimed_by.id if isinstance(claimed_by, StaffUser) else claimed_by
        statement = statement.where(_live_claim_of(clerk_id, stale_before))
    if unclaimed:
        statement = statement.where(_unheld(stale_before))
    if search:
        condition = _search_condition(search)
        if condition is not None:
            statement = statement.where(condition)
    return statement


def queue(**filters: Any) -> list[AssociationCase]:
    """`queue_query(**filters)` executed."""
    return list(db.session.execute(queue_query(**filters)).scalars())


def reasons_in_use() -> list[str]:
    """The distinct case reasons, for the filter."""
    return sorted(db.session.execute(select(AssociationCase.reason).distinct()).scalars())


def clerks() -> list[StaffUser]:
    return list(
        db.session.execute(
            select(StaffUser)
            .where(StaffUser.role == Role.ASSOCIATION_CLERK, StaffUser.active.is_(True))
            .order_by(StaffUser.name)
        ).scalars()
    )

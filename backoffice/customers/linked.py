"""Linked accounts, for supervisors: which portal accounts are linked to which policyholder,
how each link was made and the evidence for it, so a wrong link can be found and taken back
(taking it back is `cases.unlink`; this module only reads).

How a link was made is not stored on the account: it is the actor of the account's latest
`customer.linked` audit event (written by `association.link` for every link):

* `system` → the matching engine linked it automatically (on email verification, after an
  import, or in the nightly re-match);
* `staff` → an association clerk linked it deciding a case;
* `customer` → the customer's own sign-up proved it (e-Customer registration, representative
  completion);
* no event → not recorded (rows written around the services).

The list is ordered newest link first and read a page at a time with a keyset cursor (the
link time and id of the last row shown): no `count(*)` and no OFFSET, so a page costs the
same on the thousandth page as on the first.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Select, String, and_, cast, func, or_, select

from backoffice.audit.models import AuditEvent
from backoffice.customers import cases, matching
from backoffice.customers.models import (
    AssociationCase,
    AssociationStatus,
    CaseStatus,
    CustomerAccount,
    Policyholder,
)
from backoffice.extensions import db

PAGE_SIZE = 50
LINKED_ACTION = "customer.linked"
ACCOUNT_SUBJECT = "customer_account"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_TAX_ID_SEPARATORS = re.compile(r"[\s\-.]+")


class LinkMethod(enum.StrEnum):
    AUTOMATIC = "automatic"
    CLERK = "clerk"
    SIGN_UP = "sign_up"
    UNKNOWN = "unknown"


_ACTOR_KIND = {LinkMethod.AUTOMATIC: "system", LinkMethod.CLERK: "staff", LinkMethod.SIGN_UP: "customer"}
_METHOD_OF_KIND = {kind: method for method, kind in _ACTOR_KIND.items()}


def method_of(event: AuditEvent | None) -> LinkMethod:
    """How the link recorded by this `customer.linked` event was made."""
    if event is None:
        return LinkMethod.UNKNOWN
    return _METHOD_OF_KIND.get(event.actor_kind, LinkMethod.UNKNOWN)


@dataclass(frozen=True)
class Cursor:
    """A position in the list: the link time and id of one row."""

    moment: datetime
    account_id: int

    def encode(self) -> str:
        return f"{(self.moment - _EPOCH) // timedelta(microseconds=1)}-{self.account_id}"

    @classmethod
    def decode(cls, value: str | None) -> Cursor | None:
        """None for a missing or malformed cursor (the list then starts from the newest)."""
        micros, _, account_id = (value or "").partition("-")
        if not micros.isdigit() or not account_id.isdigit():
            return None
        try:
            return cls(_EPOCH + timedelta(microseconds=int(micros)), int(account_id))
        except OverflowError:
            return None


@dataclass(frozen=True)
class LinkedRow:
    account: CustomerAccount
    holder: Policyholder
    method: LinkMethod
    event: AuditEvent | None  # the `customer.linked` event of this link


@dataclass(frozen=True)
class LinkedPage:
    rows: list[LinkedRow]
    newer: str | None  # cursor of the page before (newer links), None on the first page
    older: str | None  # cursor of the page after (older links), None on the last page


@dataclass(frozen=True)
class LinkDetail:
    account: CustomerAccount
    holder: Policyholder | None  # None when the account is not linked (any more)
    method: LinkMethod
    event: AuditEvent | None
    evidence: cases.CandidateView | None  # the engine's comparison of the pair, as of now
    case: AssociationCase | None  # the case a clerk (or the engine) closed with this link
    open_case: AssociationCase | None  # the account's active case, when it is not linked

    @property
    def linked(self) -> bool:
        return self.holder is not None


def _sort_key() -> ColumnElement[datetime]:
    """When the account was linked; an account linked around the services without a time sorts
    by its creation instead of vanishing from the list."""
    return func.coalesce(CustomerAccount.linked_at, CustomerAccount.created_at)


def _link_actor_kind() -> ColumnElement[str | None]:
    """The actor kind of the account's latest `customer.linked` event (index on subject)."""
    return (
        select(AuditEvent.actor_kind)
        .where(
            AuditEvent.subject_type == ACCOUNT_SUBJECT,
            AuditEvent.subject_id == cast(CustomerAccount.id, String),
            AuditEvent.action == LINKED_ACTION,
        )
        .order_by(AuditEvent.seq.desc())
        .limit(1)
        .correlate(CustomerAccount)
        .scalar_subquery()
    )


def _method_condition(method: LinkMethod) -> ColumnElement[bool]:
    kind = _link_actor_kind()
    if method == LinkMethod.UNKNOWN:
        return or_(kind.is_(None), kind.not_in(list(_METHOD_OF_KIND)))
    return kind == _ACTOR_KIND[method]


def _term_condition(term: str) -> ColumnElement[bool]:
    """One searched word: in the account's email, name or tax ID, or the policyholder's tax ID
    or name (accents and case aside); a tax ID may be typed with separators."""
    conditions = [
        column.icontains(term, autoescape=True)
        for column in (
            CustomerAccount.email,
            CustomerAccount.first_name,
            CustomerAccount.last_name,
            CustomerAccount.declared_tax_id,
            CustomerAccount.tax_id,
            Policyholder.tax_id,
            Policyholder.name,
        )
    ]
    folded = matching.fold_name(term)
    if folded:
        conditions.append(Policyholder.name_key.contains(folded, autoescape=True))
    compact = _TAX_ID_SEPARATORS.sub("", term).upper()
    if compact and compact != term:
        conditions += [
            column.contains(compact, autoescape=True)
            for column in (CustomerAccount.declared_tax_id, CustomerAccount.tax_id, Policyholder.tax_id)
        ]
    return or_(*conditions)


def linked_query(
    *, search: str | None = None, method: LinkMethod | str | None = None
) -> Select[tuple[CustomerAccount, Policyholder]]:
    """Linked accounts with their policyholder, unordered. `search`: every word must appear
    in one of the searched fields (`_term_condition`); `method`: how the link was made. An
    unknown method is refused with `ValueError`."""
    statement = (
        select(CustomerAccount, Policyholder)
        .join(Policyholder, Policyholder.id == CustomerAccount.policyholder_id)
        .where(CustomerAccount.association_status == AssociationStatus.LINKED)
    )
    for term in (search or "").split():
        statement = statement.where(_term_condition(term))
    if method:
        statement = statement.where(_method_condition(LinkMethod(method)))
    return statement


def _link_events(account_ids: list[int]) -> dict[int, AuditEvent]:
    """The latest `customer.linked` event of each account, in one query."""
    if not account_ids:
        return {}
    events = db.session.execute(
        select(AuditEvent)
        .where(
            AuditEvent.subject_type == ACCOUNT_SUBJECT,
            AuditEvent.subject_id.in_([str(account_id) for account_id in account_ids]),
            AuditEvent.action == LINKED_ACTION,
        )
        .order_by(AuditEvent.seq)
    ).scalars()
    return {int(event.subject_id): event for event in events}


def _cursor(row: LinkedRow) -> str:
    account = row.account
    return Cursor(account.linked_at or account.created_at, account.id).encode()


def linked_accounts(
    *,
    search: str | None = None,
    method: LinkMethod | str | None = None,
    older_than: Cursor | None = None,
    newer_than: Cursor | None = None,
    limit: int = PAGE_SIZE,
) -> LinkedPage:
    """One page of linked accounts, newest link first (ties by id): the first page, the page
    after `older_than` or the page before `newer_than`."""
    statement = linked_query(search=search, method=method)
    key, account_id = _sort_key(), CustomerAccount.id
    if newer_than is not None:
        statement = statement.where(
            or_(key > newer_than.moment, and_(key == newer_than.moment, account_id > newer_than.account_id))
        ).order_by(key, account_id)
    else:
        if older_than is not None:
            statement = statement.where(
                or_(
                    key < older_than.moment,
                    and_(key == older_than.moment, account_id < older_than.account_id),
                )
            )
        statement = statement.order_by(key.desc(), account_id.desc())
    found = db.session.execute(statement.limit(limit + 1)).all()
    more = len(found) > limit
    found = found[:limit]
    if newer_than is not None:
        found.reverse()
    events = _link_events([account.id for account, _holder in found])
    rows = [
        LinkedRow(account, holder, method_of(events.get(account.id)), events.get(account.id))
        for account, holder in found
    ]
    if newer_than is not None:
        newer = _cursor(rows[0]) if more else None
        older = _cursor(rows[-1]) if rows else None
    else:
        older = _cursor(rows[-1]) if more else None
        newer = _cursor(rows[0]) if older_than is not None and rows else None
    return LinkedPage(rows, newer=newer, older=older)


def link_detail(account: CustomerAccount) -> LinkDetail:
    """The account beside its policyholder: how and when the link was made, the engine's
    field-by-field comparison of the two (computed now) and the case that led to the link, if
    any. For an account that is not linked, its active case instead."""
    holder = None
    if account.association_status == AssociationStatus.LINKED and account.policyholder_id is not None:
        holder = db.session.get(Policyholder, account.policyholder_id)
    event = _link_events([account.id]).get(account.id) if holder is not None else None
    case = None
    if holder is not None:
        case = db.session.execute(
            select(AssociationCase)
            .where(
                AssociationCase.account_id == account.id,
                AssociationCase.status == CaseStatus.LINKED,
                AssociationCase.policyholder_id == holder.id,
            )
            .order_by(AssociationCase.id.desc())
            .limit(1)
        ).scalar_one_or_none()
    return LinkDetail(
        account=account,
        holder=holder,
        method=method_of(event) if holder is not None else LinkMethod.UNKNOWN,
        event=event,
        evidence=cases.explain_holder(account, holder) if holder is not None else None,
        case=case,
        open_case=None if holder is not None else matching.open_case_for(account),
    )

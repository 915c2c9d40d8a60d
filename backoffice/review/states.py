"""The application state machine: one table of allowed moves, and the only function that
writes an application's status (and audits it)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from backoffice import audit
from backoffice.audit import Actor
from backoffice.db import utcnow
from backoffice.review.models import ApplicationStatus as S
from backoffice.review.models import RepresentativeApplication

ALLOWED: dict[S, frozenset[S]] = {
    S.SUBMITTED: frozenset({S.IN_REVIEW, S.EXPIRED}),
    S.IN_REVIEW: frozenset({S.SUBMITTED, S.NEEDS_DOCUMENTS, S.APPROVED, S.REJECTED}),
    S.NEEDS_DOCUMENTS: frozenset({S.SUBMITTED, S.EXPIRED}),
    S.APPROVED: frozenset({S.CALL_SCHEDULED, S.EXPIRED}),
    S.CALL_SCHEDULED: frozenset({S.VALIDATED, S.CALL_FAILED, S.SUBMITTED}),
    S.VALIDATED: frozenset({S.INVITED}),
    S.INVITED: frozenset({S.COMPLETED, S.EXPIRED}),
    S.COMPLETED: frozenset(),
    S.REJECTED: frozenset(),
    S.CALL_FAILED: frozenset(),
    S.EXPIRED: frozenset(),
}
FINAL = frozenset(state for state, moves in ALLOWED.items() if not moves)
# Each status as staff read it (the stored value stays the stable code).
STATUS_LABELS = {
    S.SUBMITTED: _l("Submitted"),
    S.IN_REVIEW: _l("In review"),
    S.NEEDS_DOCUMENTS: _l("Needs documents"),
    S.APPROVED: _l("Approved"),
    S.CALL_SCHEDULED: _l("Call scheduled"),
    S.VALIDATED: _l("Validated"),
    S.INVITED: _l("Invited"),
    S.COMPLETED: _l("Completed"),
    S.REJECTED: _l("Rejected"),
    S.CALL_FAILED: _l("Call failed"),
    S.EXPIRED: _l("Expired"),
}


class IllegalTransition(ValueError):
    """A move the state machine does not allow; nothing was changed."""

    def __init__(self, application: RepresentativeApplication, to_state: S):
        super().__init__(
            _(
                "Application %(id)s cannot go from %(from_status)s to %(to_status)s.",
                id=application.id,
                from_status=STATUS_LABELS[S(application.status)],
                to_status=STATUS_LABELS[S(to_state)],
            )
        )
        self.from_state = application.status
        self.to_state = to_state


def can_transition(application: RepresentativeApplication, to_state: S) -> bool:
    return to_state in ALLOWED[S(application.status)]


def transition(
    application: RepresentativeApplication,
    to_state: S,
    *,
    actor: Actor,
    now: datetime | None = None,
    **details: Any,
) -> RepresentativeApplication:
    """Move the application, or refuse; the audit event records from, to and why."""
    to_state = S(to_state)
    if not can_transition(application, to_state):
        raise IllegalTransition(application, to_state)
    from_state = S(application.status)
    application.status = to_state
    if to_state in FINAL or to_state in (S.APPROVED, S.NEEDS_DOCUMENTS):
        application.decided_at = now or utcnow()
    audit.record(
        f"application.{to_state.value}",
        actor=actor,
        subject_type="representative_application",
        subject_id=application.id,
        before={"status": from_state.value},
        after={"status": to_state.value, **details},
    )
    return application

"""A representative application's whole life as a Hypothesis state machine (DESIGN.md,
"Application states"): the real services — submission, claims, document review, requests for
documents and the applicant's upload, approval, rejection confirmed by a second reviewer, call
outcomes, the completion link's steps and the expiry job — in any order and at any time. After
every step no application may be in an illegal state: its status is one of the states, its audit
trail has one event per status change and only uses edges of the transition table, final states
never change, and what a state requires (a reviewer, a call task, a signed contract...) is there.

Each example runs in one transaction that is rolled back at its end, so every example starts from
the same database (the staff, made once per test). Each step runs in a savepoint, and a refusal
undoes it as the failed request's rollback would, except what the service asks to keep (a counted
wrong PIN or mismatch). Time is the machine's own clock, passed to the services as `now`.
"""

from __future__ import annotations

import io
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest
from flask import Flask, current_app
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.calls import service as calls
from backoffice.calls.models import CallOutcome, CallTask, CallTaskStatus
from backoffice.customers.models import CustomerAccount
from backoffice.customers.service import AccountError
from backoffice.db import savepoint
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage
from backoffice.review import completion, decisions, jobs, queue, service
from backoffice.review.documents import inspect_upload
from backoffice.review.models import (
    ApplicationStatus,
    CompletionStatus,
    DocumentKind,
    DocumentStatus,
    RepresentativeApplication,
    RepresentativeCompletion,
)
from backoffice.review.states import ALLOWED, FINAL, IllegalTransition, transition
from backoffice.signing.models import SignedContract
from backoffice.staff.models import Role, StaffUser
from tests.factories import make_staff
from tests.test_api_representatives import FIELDS, jpeg_bytes, pdf_bytes, png_bytes

S = ApplicationStatus
T = TypeVar("T")

MADRID = ZoneInfo("Europe/Madrid")
START = datetime(2026, 11, 23, 9, 0, tzinfo=MADRID).astimezone(UTC)  # a Monday, the window open
NIF_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"
PASSWORD = "Firma-Segura-2026"
KINDS = tuple(kind.value for kind in DocumentKind)
SUBJECT = "representative_application"
MAX_APPLICATIONS = 3  # per example: enough to compete for reviewers and the agent

# What the services answer when a step is not allowed: the step is refused, nothing changes.
REFUSALS = (
    AccountError,
    calls.CallError,
    completion.CompletionError,
    decisions.ReviewError,
    IllegalTransition,
    queue.QueueError,
    service.ApplicationError,
)
# A state past legal approval: its three documents were accepted and a reviewer approved it.
APPROVED_STATES = (S.APPROVED, S.CALL_SCHEDULED, S.VALIDATED, S.INVITED, S.COMPLETED, S.CALL_FAILED)
# States reached only through a successful validation call.
INVITED_STATES = (S.VALIDATED, S.INVITED, S.COMPLETED)

# The routes an application usually takes, and the call outcome each one needs.
ROUTES = ("complete", "reject", "ask for documents", "no answer", "data mismatch", "let the link expire")
CALL_OUTCOMES = {"no answer": CallOutcome.NO_ANSWER, "data mismatch": CallOutcome.DATA_MISMATCH}

MACHINE_SETTINGS = settings(
    max_examples=100,
    stateful_step_count=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Across the examples of a run: how many applications were seen in each status after a step,
# and the refusals met.
REACHED: Counter[str] = Counter()
REFUSED: Counter[str] = Counter()


@cache
def _documents() -> dict[str, tuple[bytes, str]]:
    return {
        "public_deed": (pdf_bytes("Escritura"), "escritura.pdf"),
        "power_of_attorney": (jpeg_bytes(), "poder.jpg"),
        "tax_id_document": (png_bytes(), "dni.png"),
    }


def _nif(number: int) -> str:
    number += 10_000_000
    return f"{number:08d}{NIF_LETTERS[number % 23]}"


@dataclass(frozen=True)
class Staff:
    reviewers: tuple[StaffUser, StaffUser]
    agent: StaffUser
    supervisor: StaffUser


class ApplicationLifecycle(RuleBasedStateMachine):
    applications = Bundle("applications")

    def __init__(self, staff: Staff) -> None:
        super().__init__()
        self.staff = staff
        self.now = START
        self.numbers = itertools.count(1)
        self.seen: dict[str, S] = {}
        self.visited: set[tuple[str, S]] = set()

    def teardown(self) -> None:
        REACHED.update(status.value for _, status in self.visited)
        db.session.rollback()

    # How a step runs

    def _attempt(self, action: Callable[[], T]) -> T | None:
        """One request's worth of work: a refusal undoes what it wrote, except what the service
        asks to keep, as the API's `keeping_attempts` commits it."""
        kept: AccountError | None = None
        try:
            with savepoint(db.session):
                try:
                    return action()
                except AccountError as error:
                    if not error.keep_changes:
                        raise
                    kept = error
        except REFUSALS as error:
            REFUSED[getattr(error, "code", type(error).__name__)] += 1
            return None
        REFUSED[f"{kept.code} (counted)"] += 1
        return None

    def _application(self, application_id: str) -> RepresentativeApplication:
        return db.session.get(RepresentativeApplication, application_id)

    def _reviewer(self, which: int) -> StaffUser:
        return self.staff.reviewers[which]

    def _as(self, user: StaffUser) -> Actor:
        return Actor.staff(user)

    def _files(self, stack: ExitStack, kinds: list[str]) -> dict[str, Any]:
        files = {}
        for kind in kinds:
            data, name = _documents()[kind]
            inspected = inspect_upload(io.BytesIO(data), name)
            stack.callback(inspected.data.close)
            files[kind] = inspected
        return files

    def _newest(self, model: Any, *where: Any) -> Any:
        order = model.seq if model is AuditEvent else model.id
        return db.session.execute(select(model).where(*where).order_by(order.desc()).limit(1)).scalar()

    def _link(self, application: RepresentativeApplication) -> str:
        """The token of the newest completion link emailed to the representative; without one,
        a token that was never issued (the service refuses it)."""
        email = self._newest(
            OutboxMessage,
            OutboxMessage.recipient == application.email,
            OutboxMessage.template == completion.EMAIL_TEMPLATE,
        )
        match = re.search(r"token=([\w-]+)", email.body_text) if email is not None else None
        return match.group(1) if match else "never-issued-link-0000"

    def _texted_code(self, application: RepresentativeApplication) -> str:
        sms = self._newest(OutboxMessage, OutboxMessage.recipient == application.phone)
        match = re.search(r"\b(\d{6})\b", sms.body_text) if sms is not None else None
        return match.group(1) if match else "000000"

    # The applicant

    @precondition(lambda self: len(self.seen) < MAX_APPLICATIONS)
    @rule(target=applications)
    def submit(self) -> str:
        number = next(self.numbers)
        fields = {
            **FIELDS,
            "tax_id": _nif(number),
            "email": f"representative{number}@empresa.example",
            "phone": f"+34{600_000_000 + number}",
        }
        with ExitStack() as stack:
            files = self._files(stack, list(KINDS))
            submission = self._attempt(
                lambda: service.submit(fields, files, language="es", ip=None, now=self.now)
            )
        assert submission is not None, "a complete, valid application was refused"
        self.seen[submission.application.id] = S.SUBMITTED
        return submission.application.id

    @rule(application=applications)
    def upload_requested_documents(self, application: str) -> None:
        record = self._application(application)
        with ExitStack() as stack:
            files = self._files(stack, list(record.requested_documents or ["public_deed"]))
            self._attempt(lambda: service.resubmit_documents(record, files, ip=None, now=self.now))

    # The legal team

    @rule(application=applications, reviewer=st.integers(0, 1))
    def claim(self, application: str, reviewer: int) -> None:
        user = self._reviewer(reviewer)
        self._attempt(
            lambda: queue.claim(self._application(application), user, actor=self._as(user), now=self.now)
        )

    @rule(application=applications, reviewer=st.integers(0, 1))
    def release(self, application: str, reviewer: int) -> None:
        actor = self._as(self._reviewer(reviewer))
        self._attempt(lambda: queue.release(self._application(application), actor=actor, now=self.now))

    @rule(application=applications, to=st.sampled_from([None, 0, 1]))
    def reassign(self, application: str, to: int | None) -> None:
        target = None if to is None else self._reviewer(to)
        actor = self._as(self.staff.supervisor)
        self._attempt(
            lambda: queue.reassign([self._application(application)], target, actor=actor, now=self.now)
        )

    @rule(application=applications, reviewer=st.integers(0, 1))
    def accept_documents(self, application: str, reviewer: int) -> None:
        user = self._reviewer(reviewer)
        self._attempt(
            lambda: decisions.accept_pending_documents(
                self._application(application), reviewer=user, actor=self._as(user), now=self.now
            )
        )

    @rule(application=applications, kind=st.sampled_from(KINDS), reviewer=st.integers(0, 1))
    def reject_document(self, application: str, kind: str, reviewer: int) -> None:
        user = self._reviewer(reviewer)
        document = decisions.current_documents(self._application(application))[kind]
        self._attempt(
            lambda: decisions.review_document(
                document,
                accepted=False,
                reason_code="illegible",
                reviewer=user,
                actor=self._as(user),
                now=self.now,
            )
        )

    @rule(
        application=applications,
        kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=3, unique=True),
        reviewer=st.integers(0, 1),
    )
    def request_documents(self, application: str, kinds: list[str], reviewer: int) -> None:
        user, record = self._reviewer(reviewer), self._application(application)
        message = decisions.compose_documents_request(record, kinds)
        self._attempt(
            lambda: decisions.request_documents(
                record, kinds, message, reviewer=user, actor=self._as(user), now=self.now
            )
        )

    @rule(application=applications, reviewer=st.integers(0, 1))
    def approve(self, application: str, reviewer: int) -> None:
        user = self._reviewer(reviewer)
        self._attempt(
            lambda: decisions.approve(
                self._application(application), reviewer=user, actor=self._as(user), now=self.now
            )
        )

    @rule(application=applications, reviewer=st.integers(0, 1))
    def propose_rejection(self, application: str, reviewer: int) -> None:
        user = self._reviewer(reviewer)
        self._attempt(
            lambda: decisions.propose_rejection(
                self._application(application),
                "The power of attorney does not cover this company.",
                reviewer=user,
                actor=self._as(user),
                now=self.now,
            )
        )

    @rule(application=applications, reviewer=st.integers(0, 1))
    def confirm_rejection(self, application: str, reviewer: int) -> None:
        user = self._reviewer(reviewer)
        self._attempt(
            lambda: decisions.confirm_rejection(
                self._application(application), confirmer=user, actor=self._as(user), now=self.now
            )
        )

    @rule(application=applications, reviewer=st.integers(0, 1))
    def withdraw_rejection(self, application: str, reviewer: int) -> None:
        user = self._reviewer(reviewer)
        self._attempt(
            lambda: decisions.withdraw_rejection(
                self._application(application), reviewer=user, actor=self._as(user), now=self.now
            )
        )

    # The call centre

    @rule()
    def start_call(self) -> None:
        agent = self.staff.agent
        self._attempt(lambda: calls.start_next_call(agent, actor=self._as(agent), now=self.now))

    def _in_call(self) -> bool:
        return calls.current_call(self.staff.agent) is not None

    @precondition(_in_call)
    @rule(
        outcome=st.sampled_from(list(CallOutcome)),
        callback_in=st.sampled_from([timedelta(hours=2), timedelta(hours=30), timedelta(days=4)]),
    )
    def log_call(self, outcome: CallOutcome, callback_in: timedelta) -> None:
        agent = self.staff.agent
        task = calls.current_call(agent)
        self._attempt(
            lambda: calls.log_outcome(
                task,
                agent,
                outcome.value,
                actor=self._as(agent),
                checks={name: {"status": "confirmed"} for name in calls.VALIDATED_FIELDS},
                notes="The company name on the deed differs." if outcome == CallOutcome.DATA_MISMATCH else "",
                callback_at=self.now + callback_in if outcome == CallOutcome.CALLBACK_REQUESTED else None,
                now=self.now,
            )
        )

    @rule(application=applications)
    def send_a_new_link(self, application: str) -> None:
        actor = self._as(self.staff.supervisor)
        self._attempt(lambda: completion.reinvite(self._application(application), actor=actor, now=self.now))

    # The representative, from the emailed link

    @rule(application=applications, same_details=st.booleans())
    def confirm_details(self, application: str, same_details: bool) -> None:
        record = self._application(application)
        phone = record.phone if same_details else "+34699999999"

        def confirm() -> Any:
            found = completion.find(self._link(record), now=self.now)
            return completion.confirm(
                found,
                record.company_tax_id,
                record.tax_id,
                record.email,
                phone,
                True,
                ip=None,
                user_agent=None,
                now=self.now,
            )

        self._attempt(confirm)

    @rule(application=applications, right_pin=st.booleans())
    def sign(self, application: str, right_pin: bool) -> None:
        record = self._application(application)
        pin = self._texted_code(record)
        if not right_pin:
            pin = f"{(int(pin) + 1) % 1_000_000:06d}"

        def sign() -> Any:
            found = completion.find(self._link(record), now=self.now)
            return completion.sign(found, pin, ip=None, user_agent=None, now=self.now)

        self._attempt(sign)

    @rule(application=applications)
    def choose_password(self, application: str) -> None:
        record = self._application(application)
        self._attempt(
            lambda: completion.activate(
                completion.find(self._link(record), now=self.now), PASSWORD, ip=None, now=self.now
            )
        )

    # Time and the periodic jobs

    @rule(hours=st.sampled_from([1, 3, 9, 24, 72, 24 * 8]))
    def wait(self, hours: int) -> None:
        self.now += timedelta(hours=hours)

    @rule()
    def expire_stale_invitations(self) -> None:
        self._attempt(lambda: jobs.expire_stale_invitations(now=self.now))

    # The road ahead, several steps at a time and by one of the usual routes, so that runs
    # reach every final state and not only the detours on the way.

    @rule(application=applications, route=st.sampled_from(ROUTES), steps=st.integers(1, 12))
    def go_further(self, application: str, route: str, steps: int) -> None:
        for _ in range(steps):
            if S(self._application(application).status) in FINAL:
                return
            self._next_step(application, route)
            self.no_application_is_in_an_illegal_state()

    def _next_step(self, application: str, route: str) -> None:
        """What the application goes through next on this route."""
        record = self._application(application)
        match record.status:
            case S.SUBMITTED:
                for reviewer in self.staff.reviewers:
                    if self._attempt(
                        lambda user=reviewer: queue.claim(record, user, actor=self._as(user), now=self.now)
                    ):
                        return
            case S.IN_REVIEW:
                self._decide(application, record, route)
            case S.NEEDS_DOCUMENTS:
                self.upload_requested_documents(application)
            case S.CALL_SCHEDULED:
                self._call(record, CALL_OUTCOMES.get(route, CallOutcome.VALIDATED))
            case S.INVITED if route == "let the link expire":
                link = self._newest(
                    RepresentativeCompletion, RepresentativeCompletion.application_id == record.id
                )
                self.now = max(self.now, link.expires_at)
                self.expire_stale_invitations()
            case S.INVITED:
                link = self._newest(
                    RepresentativeCompletion, RepresentativeCompletion.application_id == record.id
                )
                if link.status == CompletionStatus.INVITED:
                    self.confirm_details(application, True)
                elif link.status == CompletionStatus.PIN_SENT:
                    self.sign(application, True)
                else:
                    self.choose_password(application)

    def _decide(self, application: str, record: RepresentativeApplication, route: str) -> None:
        """A proposed rejection is confirmed by the other reviewer; rejected documents are asked
        for again; pending ones are accepted; then the application is approved."""
        documents = decisions.current_documents(record).values()
        rejected = [d.kind.value for d in documents if d.status == DocumentStatus.REJECTED]
        if record.rejection_proposed_by_id is not None:
            other = next(r for r in self.staff.reviewers if r.id != record.rejection_proposed_by_id)
            self.confirm_rejection(application, self.staff.reviewers.index(other))
        elif route == "reject":
            self.propose_rejection(application, 0)
        elif rejected:
            self.request_documents(application, rejected, 0)
        elif route == "ask for documents":
            self.reject_document(application, DocumentKind.PUBLIC_DEED.value, 0)
        elif any(d.status == DocumentStatus.PENDING for d in documents):
            self.accept_documents(application, 0)
        else:
            self.approve(application, 0)

    def _call(self, record: RepresentativeApplication, outcome: CallOutcome) -> None:
        """The agent calls when the task is due and the window is open (time passes until
        then), and logs the call in progress."""
        if not self._in_call():
            (task,) = self._tasks(record, CallTaskStatus.OPEN)
            self.now = max(self.now, task.not_before or self.now, task.callback_at or self.now)
            business = calls.calendar()
            if not business.is_open(self.now):
                self.now = business.next_open(self.now)
            self.start_call()
        if self._in_call():
            self.log_call(outcome, timedelta(0))

    # No illegal state, after every step

    @rule(application=applications, data=st.data())
    def a_move_outside_the_table_is_refused(self, application: str, data: st.DataObject) -> None:
        record = self._application(application)
        before = S(record.status)
        to = data.draw(st.sampled_from(sorted(set(S) - ALLOWED[before])))
        with pytest.raises(IllegalTransition):
            transition(record, to, actor=Actor.system("tests"), now=self.now)
        assert record.status == before

    @invariant()
    def no_application_is_in_an_illegal_state(self) -> None:
        db.session.flush()
        db.session.expire_all()
        for application_id, previous in self.seen.items():
            application = self._application(application_id)
            status = S(application.status)
            self.visited.add((application_id, status))
            if previous in FINAL:
                assert status == previous, f"{application_id} left the final state {previous}"
            self._check_history(application)
            self._check_requirements(application)
            self.seen[application_id] = status

    def _check_history(self, application: RepresentativeApplication) -> None:
        """One audit event per status change, chained from `submitted` to the current status,
        each one an edge of the table."""
        events = db.session.execute(
            select(AuditEvent)
            .where(AuditEvent.subject_type == SUBJECT, AuditEvent.subject_id == application.id)
            .order_by(AuditEvent.seq)
        ).scalars()
        at = S.SUBMITTED
        submissions = 0
        for event in events:
            before, after = event.before or {}, event.after or {}
            if "status" not in before and "status" not in after:
                submissions += event.action == "application.submitted"
                continue
            assert "status" in before and "status" in after, (event.action, before, after)
            source, target = S(before["status"]), S(after["status"])
            assert source == at, f"{event.action}: from {source}, but the application was {at}"
            assert target in ALLOWED[source], f"{source} → {target} is not in the table"
            assert event.action == f"application.{target.value}"
            at = target
        assert submissions == 1
        assert at == application.status, f"the trail ends at {at}, the application is {application.status}"

    def _tasks(self, application: RepresentativeApplication, *statuses: CallTaskStatus) -> list[CallTask]:
        return list(
            db.session.execute(
                select(CallTask).where(
                    CallTask.application_id == application.id, CallTask.status.in_(statuses)
                )
            ).scalars()
        )

    def _check_requirements(self, application: RepresentativeApplication) -> None:
        """What each state needs to be there."""
        status = S(application.status)
        if status == S.IN_REVIEW:
            assert application.claimed_by_id is not None, "in review by nobody"
        if status not in (S.SUBMITTED, S.IN_REVIEW):
            assert application.decided_at is not None, f"{status} without a decision time"
        assert bool(application.requested_documents) == (status == S.NEEDS_DOCUMENTS)
        open_tasks = self._tasks(application, CallTaskStatus.OPEN, CallTaskStatus.IN_CALL)
        assert len(open_tasks) == (status == S.CALL_SCHEDULED), (
            f"{status} with {len(open_tasks)} open call tasks"
        )
        if status in APPROVED_STATES:
            documents = decisions.current_documents(application).values()
            assert {d.status for d in documents} == {DocumentStatus.ACCEPTED} and len(documents) == 3
            approval = self._last_event(application, "application.approved")
            assert approval is not None and approval.after["reviewer_id"] in {
                r.id for r in self.staff.reviewers
            }
        if status in INVITED_STATES or (
            status == S.EXPIRED and self._last_event(application, "application.invited")
        ):
            validated = self._tasks(application, CallTaskStatus.DONE)
            assert any(task.outcome == CallOutcome.VALIDATED.value for task in validated)
        newest = self._newest(
            RepresentativeCompletion, RepresentativeCompletion.application_id == application.id
        )
        if status == S.INVITED:
            assert newest.status in (
                CompletionStatus.INVITED,
                CompletionStatus.PIN_SENT,
                CompletionStatus.SIGNED,
            )
        if status == S.COMPLETED:
            assert newest.status == CompletionStatus.ACTIVE
            assert newest.terms_accepted_at and newest.signed_at and newest.completed_at
            contract = db.session.get(SignedContract, newest.signed_contract_id)
            account = db.session.get(CustomerAccount, newest.account_id)
            assert contract is not None and account is not None and contract.account_id == account.id
            assert account.tax_id == application.tax_id and account.password_hash
        if status == S.CALL_FAILED:
            (failed,) = self._tasks(application, CallTaskStatus.FAILED)
            assert failed.closed_at and failed.failed_attempts >= current_app.config["CALL_MAX_ATTEMPTS"]
        if status == S.REJECTED:
            rejection = self._last_event(application, "application.rejected").after
            assert application.rejection_reason and rejection["confirmation"] == "given"
            assert rejection["confirmed_by_id"] not in (None, rejection["proposed_by_id"])
        if status == S.EXPIRED:
            assert newest is not None and newest.expires_at <= self.now

    def _last_event(self, application: RepresentativeApplication, action: str) -> AuditEvent | None:
        return self._newest(
            AuditEvent,
            AuditEvent.subject_type == SUBJECT,
            AuditEvent.subject_id == application.id,
            AuditEvent.action == action,
        )


@pytest.fixture
def staff(app: Flask) -> Staff:
    """Made once for all the examples (each example's own records are rolled back)."""
    return Staff(
        reviewers=(make_staff(Role.LEGAL_REVIEWER), make_staff(Role.LEGAL_REVIEWER)),
        agent=make_staff(Role.CALL_AGENT),
        supervisor=make_staff(Role.SUPERVISOR),
    )


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print which statuses the runs reached and which refusals they met, past pytest's capture."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\napplications seen in each status: {dict(sorted(REACHED.items()))}")
            reporter.write_line(f"refused steps: {dict(sorted(REFUSED.items()))}")


def test_no_sequence_of_actions_reaches_an_illegal_state(app: Flask, staff: Staff, report: None) -> None:
    run_state_machine_as_test(lambda: ApplicationLifecycle(staff), settings=MACHINE_SETTINGS)

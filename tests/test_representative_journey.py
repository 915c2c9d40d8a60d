"""The whole representative path: submission through the API, legal review, the planned
validation call, the emailed completion link, the PIN signature and the first sign-in."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import time_machine
from sqlalchemy import select

from backoffice.audit import Actor
from backoffice.audit.service import verify_chain
from backoffice.calls import service as calls
from backoffice.calls.jobs import replan_calls
from backoffice.calls.models import AgentShift, CallTask, CallTaskStatus
from backoffice.customers.models import CustomerAccount
from backoffice.extensions import db
from backoffice.review import decisions, queue
from backoffice.review.models import ApplicationStatus, RepresentativeApplication
from backoffice.staff.models import Role
from tests.factories import last_link_token, make_policyholder, make_staff
from tests.test_api_ecustomer import latest_code
from tests.test_api_representatives import FIELDS, submit

MADRID = ZoneInfo("Europe/Madrid")
MONDAY_10H = datetime(2026, 11, 23, 10, 0, tzinfo=MADRID)
PASSWORD = "Firma-Segura-2026"


def test_from_submission_to_the_first_sign_in(client):
    company = make_policyholder(
        FIELDS["company_tax_id"], email=None, name=FIELDS["company_name"], kind="company"
    )
    reviewer = make_staff(Role.LEGAL_REVIEWER)
    agent = make_staff(Role.CALL_AGENT)
    db.session.add(AgentShift(agent_id=agent.id, weekday=0, starts=time(10), ends=time(14)))
    db.session.commit()

    with time_machine.travel(MONDAY_10H, tick=False):
        submitted = submit(client)
        assert submitted.status_code == 201
        application = db.session.get(RepresentativeApplication, submitted.json["id"])

        claimed = queue.claim_next(reviewer, actor=Actor.staff(reviewer))
        assert claimed.id == application.id
        for document in application.documents:
            decisions.review_document(
                document,
                accepted=True,
                reason_code=None,
                reason_text=None,
                reviewer=reviewer,
                actor=Actor.staff(reviewer),
            )
        decisions.approve(application, reviewer=reviewer, actor=Actor.staff(reviewer))
        db.session.commit()
        replan_calls()  # what the worker does after approval (inline without Redis)
        db.session.commit()
        task = db.session.execute(
            select(CallTask).where(CallTask.application_id == application.id)
        ).scalar_one()
        assert (task.assigned_agent_id, task.slot_start) == (agent.id, MONDAY_10H)

        started = calls.start_next_call(agent, actor=Actor.staff(agent))
        assert started.id == task.id
        checks = {name: {"status": "confirmed"} for name in calls.VALIDATED_FIELDS}
        calls.log_outcome(started, agent, "validated", checks=checks, actor=Actor.staff(agent))
        db.session.commit()
        assert application.status == ApplicationStatus.INVITED

        token = last_link_token(application.email)
        link = f"/api/v1/representative-completions/{token}"
        assert client.get(link).status_code == 200
        confirmed = client.post(
            f"{link}/confirm",
            json={
                "company_tax_id": "b-12345674",
                "tax_id": "12345678-z",
                "email": "Lucia.Perez@Transportes.example",
                "phone": "611 22 23 33",
                "accept_provider_terms": True,
            },
        )
        assert confirmed.status_code == 202, confirmed.json
        signed = client.post(f"{link}/signature", json={"pin": latest_code()})
        assert signed.status_code == 200, signed.json
        activated = client.post(f"{link}/password", json={"password": PASSWORD})
        assert activated.status_code == 201, activated.json
        assert activated.json == {"status": "active", "username": "12345678Z"}

        session = client.post("/api/v1/sessions", json={"username": "12345678Z", "password": PASSWORD})
        assert session.status_code == 200
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {session.json['access_token']}"})
        assert me.json["association"]["status"] == "linked"

    db.session.expire_all()
    assert db.session.get(RepresentativeApplication, application.id).status == ApplicationStatus.COMPLETED
    assert db.session.get(CallTask, task.id).status == CallTaskStatus.DONE
    account = db.session.execute(
        select(CustomerAccount).where(CustomerAccount.tax_id == "12345678Z")
    ).scalar_one()
    assert account.policyholder_id == company.id
    assert client.get(link).status_code == 410
    assert verify_chain().ok

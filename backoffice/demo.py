"""`flask demo load`: demo staff (one per role) and a few policyholders, for development only."""

from __future__ import annotations

from datetime import time

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from backoffice.audit import Actor
from backoffice.calls.models import AgentShift
from backoffice.customers.models import HolderKind, Policy, Policyholder
from backoffice.extensions import db
from backoffice.staff import mfa
from backoffice.staff import service as staff
from backoffice.staff.models import Role

demo_cli = AppGroup("demo", help="Demo data for development.")
DEMO_ACTOR = Actor.system("demo")
DEMO_PASSWORD = "Ventanilla-demo-2026!"
# Two-step sign-in is required for everyone, demo staff included: they share this published
# authenticator key, so one entry in an authenticator app survives any number of fresh databases.
DEMO_TOTP_SECRET = "VENTANILLADEMOSTAFFTOTPKEY234567"

DEMO_STAFF = (
    ("legal@ventanilla.example", "Lucía Legal", Role.LEGAL_REVIEWER),
    ("agent@ventanilla.example", "Andrés Agente", Role.CALL_AGENT),
    ("clerk@ventanilla.example", "Clara Asociación", Role.ASSOCIATION_CLERK),
    ("supervisor@ventanilla.example", "Sofía Supervisora", Role.SUPERVISOR),
    ("admin@ventanilla.example", "Alberto Admin", Role.ADMIN),
)

# tax_id, kind, name, email, phone, [(policy number, product, status, coverage)]
DEMO_HOLDERS = (
    (
        "12345678Z",
        HolderKind.PERSON,
        "María García López",
        "maria.garcia@correo.example",
        "+34612345612",
        [
            ("AUT-0001001", "auto", "active", "Todo riesgo con franquicia"),
            ("HOG-0002001", "home", "active", "Continente y contenido"),
        ],
    ),
    (
        "X1234567L",
        HolderKind.PERSON,
        "John Smith",
        "john.smith@mail.example",
        "+34622000111",
        [("VID-0003001", "life", "active", "Vida riesgo 150.000 EUR")],
    ),
    (
        "87654321X",
        HolderKind.PERSON,
        "José Martínez Ruiz",
        "jose.martinez@correo.example",
        "+34633444555",
        [("AUT-0001002", "auto", "lapsed", "Terceros ampliado")],
    ),
    (
        "B12345674",
        HolderKind.COMPANY,
        "Transportes Ejemplo S.L.",
        "flota@transportes.example",
        "+34911222333",
        [
            ("FLO-0004001", "fleet", "active", "Flota de 12 vehículos"),
            ("TRA-0005001", "transport", "active", "Mercancías en tránsito"),
        ],
    ),
)


def load_demo() -> tuple[int, int]:
    created_staff = 0
    for email, name, role in DEMO_STAFF:
        user = staff.find_by_email(email)
        if user is None:
            user = staff.create_staff(email, name, role, DEMO_PASSWORD, actor=DEMO_ACTOR)
            created_staff += 1
        if not mfa.is_enrolled(user):
            mfa.enrol_with_secret(user, DEMO_TOTP_SECRET, actor=DEMO_ACTOR)
    created_holders = 0
    for tax_id, kind, name, email, phone, policies in DEMO_HOLDERS:
        if db.session.execute(select(Policyholder).where(Policyholder.tax_id == tax_id)).scalar_one_or_none():
            continue
        holder = Policyholder(tax_id=tax_id, kind=kind, name=name, email=email, phone=phone)
        holder.policies = [
            Policy(number=number, product=product, status=status, coverage=coverage)
            for number, product, status, coverage in policies
        ]
        db.session.add(holder)
        created_holders += 1
    _demo_shifts()
    db.session.flush()
    return created_staff, created_holders


def _demo_shifts() -> None:
    """The demo call agent works Monday to Friday, 09:00–17:00, so the planner has slots."""
    agent = staff.find_by_email("agent@ventanilla.example")
    if db.session.execute(select(AgentShift.id).where(AgentShift.agent_id == agent.id)).first():
        return
    for weekday in range(5):
        db.session.add(AgentShift(agent_id=agent.id, weekday=weekday, starts=time(9), ends=time(17)))


@demo_cli.command("load")
def load_command() -> None:
    """Load demo staff and policyholders (idempotent; refused outside development)."""
    if current_app.config["APP_ENV"] != "development":
        raise click.ClickException("Demo data is for development only (APP_ENV=development).")
    created_staff, created_holders = load_demo()
    db.session.commit()
    click.echo(f"Demo data: {created_staff} staff and {created_holders} policyholders added.")
    click.echo(f"Demo staff sign-in at http://127.0.0.1:5000/login, password for all: {DEMO_PASSWORD}")
    click.echo(
        f"Second step, for all: add the key {DEMO_TOTP_SECRET} to an authenticator app (time-based, "
        "6 digits), or print the current code with: "
        f".venv/bin/python -c \"import pyotp; print(pyotp.TOTP('{DEMO_TOTP_SECRET}').now())\""
    )
    for email, _, role in DEMO_STAFF:
        click.echo(f"  {role.value:18} {email}")

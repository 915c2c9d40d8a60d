"""`flask staff ...`: manage staff from the terminal (the first admin is created here)."""

from __future__ import annotations

import sys

import click
from flask.cli import AppGroup
from sqlalchemy import select

from backoffice.audit import Actor
from backoffice.extensions import db
from backoffice.staff import mfa, service
from backoffice.staff.models import Role, StaffUser

staff_cli = AppGroup("staff", help="Manage staff users.")
CLI_ACTOR = Actor.system("cli")
ROLE_NAMES = click.Choice([role.value for role in Role])


def _user(email: str) -> StaffUser:
    user = service.find_by_email(email)
    if user is None:
        raise click.ClickException(f"No staff user with email {email}.")
    return user


def _fail(error: service.StaffError) -> None:
    details = "; ".join(f"{field}: {', '.join(codes)}" for field, codes in error.errors.items())
    raise click.ClickException(f"{error} {details}".strip())


@staff_cli.command("create")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option("--role", required=True, type=ROLE_NAMES)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def create_command(email: str, name: str, role: str, password_stdin: bool) -> None:
    """Create a staff user; the password is prompted for (or read from stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = service.create_staff(email, name, role, password, actor=CLI_ACTOR)
    except service.StaffError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(f"Created {user.email} ({user.role}).")


@staff_cli.command("set-role")
@click.option("--email", required=True)
@click.option("--role", required=True, type=ROLE_NAMES)
def set_role_command(email: str, role: str) -> None:
    user = service.set_role(_user(email), role, actor=CLI_ACTOR)
    db.session.commit()
    click.echo(f"{user.email} is now {user.role}.")


@staff_cli.command("deactivate")
@click.option("--email", required=True)
def deactivate_command(email: str) -> None:
    """Deactivate a user; their live sessions stop working at once."""
    user = service.deactivate(_user(email), actor=CLI_ACTOR)
    db.session.commit()
    click.echo(f"{user.email} is deactivated.")


@staff_cli.command("reset-mfa")
@click.option("--email", required=True)
def reset_mfa_command(email: str) -> None:
    """Remove a user's two-step sign-in (for when no other admin can): their sessions end and
    they set up a new authenticator at their next sign-in."""
    try:
        user = mfa.reset(_user(email), actor=CLI_ACTOR, reauthenticated_at=None)
    except service.StaffError as exc:
        _fail(exc)
    db.session.commit()
    click.echo(f"{user.email} will set up two-step sign-in again at their next sign-in.")


@staff_cli.command("list")
def list_command() -> None:
    for user in db.session.execute(select(StaffUser).order_by(StaffUser.email)).scalars():
        click.echo(
            f"{user.email:40} {user.role.value:18} {'active' if user.active else 'inactive'}  {user.name}"
        )

"""`flask audit verify`: detect any edit to the log, even one made directly in the database."""

import click
from flask.cli import AppGroup

from backoffice.audit.service import verify_chain

audit_cli = AppGroup("audit", help="Audit log tools.")


@audit_cli.command("verify")
def verify_command() -> None:
    """Check the hash chain of the audit log and report the first broken link."""
    report = verify_chain()
    if report.ok:
        click.echo(f"Audit log intact: {report.checked} events verified.")
        return
    where = "" if report.broken_at is None else f" at event {report.broken_at}"
    click.echo(
        f"Audit log BROKEN{where}: {report.problem} ({report.checked} events before it verified).",
        err=True,
    )
    raise SystemExit(1)

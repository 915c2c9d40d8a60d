"""Operator commands for jobs and notifications."""

from __future__ import annotations

import time

import click
from flask.cli import AppGroup

from backoffice.extensions import db
from backoffice.jobs import run_in_transaction
from backoffice.notifications import service as notifications
from backoffice.periodic import PERIODIC_JOBS

jobs_cli = AppGroup("jobs", help="Background and periodic jobs.")
notifications_cli = AppGroup("notifications", help="Outgoing email and SMS.")


@jobs_cli.command("run-periodic")
@click.option("--loop", is_flag=True, help="Keep running each job at its interval (development).")
def run_periodic_command(loop: bool) -> None:
    """Run every periodic job inline, once (or at its interval with --loop)."""
    last_run: dict[str, float] = {}
    while True:
        for job in PERIODIC_JOBS:
            if loop and time.monotonic() - last_run.get(job.name, float("-inf")) < job.interval_seconds:
                continue
            last_run[job.name] = time.monotonic()
            result = run_in_transaction(job.path)
            click.echo(f"{job.name}: {result}")
        if not loop:
            return
        time.sleep(1)


@notifications_cli.command("send-test")
@click.option("--to", "recipient", required=True, help="Email address to send the test message to.")
@click.option("--language", type=click.Choice(["es", "en"]), default="es")
def send_test_command(recipient: str, language: str) -> None:
    """Write a test email to the outbox, to check the mail set-up end to end."""
    message = notifications.queue_email(recipient, "test_message", {}, language=language)
    db.session.commit()
    click.echo(f"Test message {message.id} written to the outbox.")

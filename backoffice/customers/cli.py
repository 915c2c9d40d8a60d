"""`flask policyholders ...`: import policyholder records exported by the core insurance system."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import click
from flask.cli import AppGroup
from flask_babel import force_locale

from backoffice.audit import Actor
from backoffice.customers.importing import ImportFileError, ImportReport, import_policyholders
from backoffice.extensions import db

policyholders_cli = AppGroup("policyholders", help="Policyholder records from the core insurance system.")
IMPORT_ACTOR = Actor.system("policyholders-import")
SHOWN_REJECTIONS = 50
# The command speaks English; the importer's reasons are said in it too (the app's default is Spanish).
OUTPUT_LANGUAGE = "en"


@policyholders_cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--rejects-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every rejected row (line, code, message) to this CSV file.",
)
def import_command(file: Path, rejects_file: Path | None) -> None:
    """Import FILE (CSV, UTF-8); bad rows are reported and skipped, the rest is committed."""
    with force_locale(OUTPUT_LANGUAGE):
        _import(file, rejects_file)


def _import(file: Path, rejects_file: Path | None) -> None:
    try:
        total = _count_rows(file)
        with (
            file.open(encoding="utf-8-sig", newline="") as handle,
            click.progressbar(length=total, label="Importing", file=sys.stderr) as bar,
        ):
            report = import_policyholders(
                handle, actor=IMPORT_ACTOR, progress=lambda done: bar.update(done - bar.pos), source=file.name
            )
        if rejects_file is not None:
            _write_rejects(rejects_file, report)
    except ImportFileError as exc:
        db.session.rollback()
        raise click.ClickException(f"{file}: {exc} Nothing was imported.") from exc
    except OSError as exc:
        db.session.rollback()
        raise click.ClickException(f"Cannot read or write a file: {exc}. Nothing was imported.") from exc
    db.session.commit()
    _print_summary(report, rejects_file)


def _count_rows(file: Path) -> int:
    """Lines after the header, for the progress bar's length (counted as bytes: fast, never fails to decode)."""
    with file.open("rb") as handle:
        return max(sum(1 for _ in handle) - 1, 0)


def _write_rejects(path: Path, report: ImportReport) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["line", "code", "message"])
        writer.writerows([r.line, r.code, r.message] for r in report.rejected)


def _print_summary(report: ImportReport, rejects_file: Path | None) -> None:
    click.echo(f"Rows read: {report.rows_read}")
    click.echo(
        f"Policyholders: {report.holders_created} created, {report.holders_updated} updated, "
        f"{report.holders_unchanged} unchanged"
    )
    click.echo(
        f"Policies: {report.policies_created} created, {report.policies_updated} updated, "
        f"{report.policies_unchanged} unchanged"
    )
    click.echo(f"Rejected rows: {len(report.rejected)}")
    for rejection in report.rejected[:SHOWN_REJECTIONS]:
        click.echo(f"  line {rejection.line}: {rejection.code}: {rejection.message}")
    hidden = len(report.rejected) - SHOWN_REJECTIONS
    if hidden > 0:
        click.echo(f"  ... and {hidden} more")
    if rejects_file is not None and report.rejected:
        click.echo(f"All rejected rows were written to {rejects_file}.")

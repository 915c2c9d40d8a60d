"""Policyholder CSV import from the core insurance system (CLI now; upload page and job later).

The file has a header row and one row per policy, so a holder with three policies has three
rows: `tax_id,kind,name,email,phone,policy_number,product,policy_status,coverage`.
Holders are upserted by normalised tax ID, policies by policy number, so importing the same
file twice changes nothing. A bad row is reported (spreadsheet line number, code, details)
and skipped; the rest still imports. A bad header, an empty file or text that is not UTF-8
is fatal (`ImportFileError`): the caller rolls back.

What goes wrong is kept language-neutral (a stable code and the values that explain it), so a
run or a report can be read later in the reader's language: `rejection_message` and
`file_error_message` say it in the current locale.

Rows are handled in batches: existing holders and policies are looked up with one query each
per batch and the session is flushed once per batch, so large files import in one pass
without a query per row. Nothing is committed here; the caller owns the transaction.

Rejection codes: `columns`, `tax_id_required`, `tax_id_invalid`, `kind_required`,
`kind_invalid`, `kind_mismatch`, `name_required`, `email_invalid`, `phone_invalid`,
`policy_number_required`, `product_required`, `policy_status_required`, `<field>_too_long`,
`holder_conflict` (rows for one holder disagree), `policy_duplicate` (a policy number
appears twice in the file), `policy_taken` (the policy belongs to another holder).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TextIO

from flask_babel import lazy_gettext as _l
from sqlalchemy import select

from backoffice import audit
from backoffice.audit import Actor
from backoffice.customers.models import HolderKind, Policy, Policyholder
from backoffice.db import plan_for_current_sizes
from backoffice.extensions import db
from backoffice.identity import IdentityError, normalise_email, normalise_phone, normalise_tax_id

COLUMNS = (
    "tax_id",
    "kind",
    "name",
    "email",
    "phone",
    "policy_number",
    "product",
    "policy_status",
    "coverage",
)
BATCH_SIZE = 500

# Longest value each column may hold, taken from the models so the two cannot drift apart.
_MAX_LENGTHS = {
    "name": Policyholder.__table__.c.name.type.length,
    "email": Policyholder.__table__.c.email.type.length,
    "phone": Policyholder.__table__.c.phone.type.length,
    "policy_number": Policy.__table__.c.number.type.length,
    "product": Policy.__table__.c.product.type.length,
    "policy_status": Policy.__table__.c.status.type.length,
}

# What each code says; the details fill the named placeholders.
_FILE_ERRORS = {
    "empty_file": _l("The file is empty; line 1 must be the header: %(header)s"),
    "bad_header": _l("Line 1 must be the header %(header)s (%(problems)s)."),
    "bad_csv": _l("Line %(line)s is not valid CSV: %(error)s."),
    "not_utf8": _l("The file is not UTF-8 text (near line %(line)s)."),
}
_HEADER_PROBLEMS = {
    "missing": _l("missing: %(columns)s"),
    "unexpected": _l("unexpected: %(columns)s"),
    "repeated": _l("repeated: %(columns)s"),
}
_REASONS = {
    "columns": _l("expected %(expected)s columns, found %(found)s"),
    "tax_id_required": _l("tax ID is missing"),
    "tax_id_invalid": _l("tax ID '%(value)s' is not a valid NIF, NIE or CIF"),
    "kind_required": _l("kind is missing"),
    "kind_invalid": _l("kind must be person or company, not '%(value)s'"),
    "name_required": _l("name is missing"),
    "name_too_long": _l("name is longer than %(limit)s characters"),
    "email_required": _l("email is missing"),
    "email_invalid": _l("email '%(value)s' is not a valid email address"),
    "email_too_long": _l("email is longer than %(limit)s characters"),
    "phone_required": _l("phone is missing"),
    "phone_invalid": _l("phone '%(value)s' is not a valid phone number"),
    "phone_too_long": _l("phone is longer than %(limit)s characters"),
    "policy_number_required": _l("policy number is missing"),
    "policy_number_too_long": _l("policy number is longer than %(limit)s characters"),
    "product_required": _l("product is missing"),
    "product_too_long": _l("product is longer than %(limit)s characters"),
    "policy_status_required": _l("policy status is missing"),
    "policy_status_too_long": _l("policy status is longer than %(limit)s characters"),
    "holder_conflict": _l(
        "holder %(tax_id)s has different %(fields)s on line %(first_line)s; all rows of a holder must agree"
    ),
    "policy_duplicate": _l("policy %(policy_number)s already appears on line %(first_line)s"),
    "policy_taken": _l(
        "policy %(policy_number)s belongs to another policyholder (%(owner)s), not %(tax_id)s"
    ),
}
# `kind_mismatch` says what the tax ID's register is for: a person or a company.
_KIND_MISMATCH = {
    "person": _l("tax ID %(tax_id)s is a %(type)s, which is a person, but kind is %(kind)s"),
    "company": _l("tax ID %(tax_id)s is a %(type)s, which is a company, but kind is %(kind)s"),
}
# The holder details `holder_conflict` may name.
_DETAIL_NAMES = {
    "kind": _l("kind"),
    "name": _l("name"),
    "email": _l("email"),
    "phone": _l("phone"),
}


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (bad header, not UTF-8, broken CSV); nothing should be kept.

    `code` and `details` are what a run stores; `str()` says it in the current locale."""

    def __init__(self, code: str, **details: Any) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return file_error_message(self.code, self.details)


class Rejection(NamedTuple):
    line: int
    code: str
    details: dict[str, Any]

    @property
    def message(self) -> str:
        """Why the row was rejected, in the current locale."""
        return rejection_message(self.code, self.details)


def file_error_message(code: str, details: dict[str, Any]) -> str:
    """An `ImportFileError` said in the current locale (the code itself if it is unknown)."""
    template = _FILE_ERRORS.get(code)
    if template is None:
        return code
    problems = "; ".join(
        str(label) % {"columns": ", ".join(details[key])}
        for key, label in _HEADER_PROBLEMS.items()
        if details.get(key)
    )
    return str(template) % {**details, "header": ",".join(COLUMNS), "problems": problems}


def rejection_message(code: str, details: dict[str, Any]) -> str:
    """A rejected row's reason said in the current locale (the code itself if it is unknown)."""
    if code == "kind_mismatch":
        template = _KIND_MISMATCH.get(details.get("holder", ""))
    else:
        template = _REASONS.get(code)
    if template is None:
        return code
    fields = ", ".join(str(_DETAIL_NAMES.get(name, name)) for name in details.get("fields", ()))
    return str(template) % {**details, "fields": fields}


@dataclass
class ImportReport:
    rows_read: int = 0
    holders_created: int = 0
    holders_updated: int = 0
    holders_unchanged: int = 0
    policies_created: int = 0
    policies_updated: int = 0
    policies_unchanged: int = 0
    rejected: list[Rejection] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """The numbers for a summary or the audit event (rejected rows counted, not listed)."""
        return {
            "rows_read": self.rows_read,
            "holders_created": self.holders_created,
            "holders_updated": self.holders_updated,
            "holders_unchanged": self.holders_unchanged,
            "policies_created": self.policies_created,
            "policies_updated": self.policies_updated,
            "policies_unchanged": self.policies_unchanged,
            "rejected": len(self.rejected),
        }


class _RowError(Exception):
    def __init__(self, code: str, **details: Any) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details


@dataclass(frozen=True)
class _Row:
    line: int
    tax_id: str
    kind: HolderKind
    name: str
    email: str | None
    phone: str | None
    policy_number: str
    product: str
    status: str
    coverage: str | None

    @property
    def holder_details(self) -> dict[str, object]:
        return {"kind": self.kind, "name": self.name, "email": self.email, "phone": self.phone}

    @property
    def policy_details(self) -> dict[str, object]:
        return {"product": self.product, "status": self.status, "coverage": self.coverage}


@dataclass
class _SeenHolder:
    """A holder already accepted in this import: the first row's details, and the record."""

    line: int
    details: dict[str, object]
    holder: Policyholder | None
    holder_id: int | None = None


def import_policyholders(
    lines: Iterable[str] | TextIO,
    *,
    actor: Actor,
    progress: Callable[[int], None] | None = None,
    source: str | None = None,
    batch_size: int = BATCH_SIZE,
) -> ImportReport:
    """Upsert holders and policies from CSV text; report bad rows; write one audit event.

    `lines` is an open text file or any iterable of lines (opened with `newline=""` ideally,
    so quoted fields may hold line breaks). `progress(rows_done)` is called after each batch.
    `source` (e.g. the file name) is kept in the audit event. The caller commits.
    """
    reader = csv.reader(_without_bom(lines))
    run = _Run(batch_size)
    line = 0  # the last line read whole, for error messages
    try:
        positions = _read_header(reader)
        line = 1
        for line, cells in enumerate(reader, start=2):
            if not any(cell.strip() for cell in cells):
                continue  # blank lines keep their number but are not rows
            run.read(line, cells, positions)
            if run.report.rows_read % batch_size == 0:
                run.flush()
                if progress:
                    progress(run.report.rows_read)
    except csv.Error as exc:
        raise ImportFileError("bad_csv", line=line + 1, error=str(exc)) from exc
    except UnicodeDecodeError as exc:
        raise ImportFileError("not_utf8", line=line + 1) from exc
    run.flush()
    if progress and run.report.rows_read % batch_size:
        progress(run.report.rows_read)  # the last, partial batch

    report = run.report
    report.rejected.sort(key=lambda rejection: rejection.line)
    after: dict[str, object] = {"source": source} if source else {}
    audit.record(
        "policyholders.imported", actor=actor, subject_type="import", after={**after, **report.counts()}
    )
    return report


def _without_bom(lines: Iterable[str]) -> Iterator[str]:
    """Spreadsheets often save UTF-8 with a byte-order mark; it must not end up in the first column name."""
    iterator = iter(lines)
    for first in iterator:
        yield first.removeprefix("\ufeff")
        break
    yield from iterator


def _read_header(reader: Iterator[list[str]]) -> dict[str, int]:
    header = next(reader, None)
    if header is None:
        raise ImportFileError("empty_file")
    names = [name.strip().lower() for name in header]
    missing = [name for name in COLUMNS if name not in names]
    unexpected = [name for name in names if name not in COLUMNS]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if missing or unexpected or duplicated:
        raise ImportFileError("bad_header", missing=missing, unexpected=unexpected, repeated=duplicated)
    return {name: names.index(name) for name in COLUMNS}


class _Run:
    """One import in progress: the pending batch, what this file has already said, the counts."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.report = ImportReport()
        self.batch: list[_Row] = []
        self.holders: dict[str, _SeenHolder] = {}
        self.policy_lines: dict[str, int] = {}

    def read(self, line: int, cells: list[str], positions: dict[str, int]) -> None:
        self.report.rows_read += 1
        try:
            self.batch.append(_parse(line, cells, positions))
        except _RowError as exc:
            self._reject(line, exc.code, exc.details)

    def _reject(self, line: int, code: str, details: dict[str, Any]) -> None:
        self.report.rejected.append(Rejection(line, code, details))

    def flush(self) -> None:
        """Apply the batch: holders first (so new ones get ids), then their policies."""
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        plan_for_current_sizes(db.session)  # per batch: the job commits between batches
        holders = self._existing_holders(batch)
        policies = self._existing_policies(batch)
        new_holders: list[_SeenHolder] = []
        accepted: list[tuple[_Row, _SeenHolder, Policy | None]] = []
        for row in batch:
            existing = policies.get(row.policy_number)
            problem = self._conflict(row, existing)
            if problem:
                self._reject(row.line, *problem)
                continue
            seen = self.holders.get(row.tax_id)
            if seen is None:
                seen = _SeenHolder(row.line, row.holder_details, self._upsert_holder(row, holders))
                self.holders[row.tax_id] = seen
                new_holders.append(seen)
            self.policy_lines[row.policy_number] = row.line
            accepted.append((row, seen, existing[0] if existing else None))
        db.session.flush()
        for seen in new_holders:
            seen.holder_id, seen.holder = seen.holder.id, None  # keep the id, let the object go
        for row, seen, policy in accepted:
            self._upsert_policy(row, seen.holder_id, policy)
        db.session.flush()

    def _existing_holders(self, batch: list[_Row]) -> dict[str, Policyholder]:
        tax_ids = {row.tax_id for row in batch if row.tax_id not in self.holders}
        if not tax_ids:
            return {}
        found = db.session.execute(select(Policyholder).where(Policyholder.tax_id.in_(tax_ids))).scalars()
        return {holder.tax_id: holder for holder in found}

    def _existing_policies(self, batch: list[_Row]) -> dict[str, tuple[Policy, str]]:
        """Policies already stored, with their holder's tax ID to tell whose they are."""
        numbers = {row.policy_number for row in batch if row.policy_number not in self.policy_lines}
        if not numbers:
            return {}
        found = db.session.execute(
            select(Policy, Policyholder.tax_id).join(Policy.holder).where(Policy.number.in_(numbers))
        ).tuples()
        return {policy.number: (policy, owner) for policy, owner in found}

    def _conflict(self, row: _Row, existing: tuple[Policy, str] | None) -> tuple[str, dict[str, Any]] | None:
        """Why this row cannot be applied given earlier rows and stored policies, if it cannot."""
        seen = self.holders.get(row.tax_id)
        if seen is not None and seen.details != row.holder_details:
            fields = [name for name, value in row.holder_details.items() if seen.details[name] != value]
            return "holder_conflict", {"tax_id": row.tax_id, "fields": fields, "first_line": seen.line}
        if row.policy_number in self.policy_lines:
            first = self.policy_lines[row.policy_number]
            return "policy_duplicate", {"policy_number": row.policy_number, "first_line": first}
        if existing is not None and existing[1] != row.tax_id:
            return (
                "policy_taken",
                {"policy_number": row.policy_number, "owner": existing[1], "tax_id": row.tax_id},
            )
        return None

    def _upsert_holder(self, row: _Row, holders: dict[str, Policyholder]) -> Policyholder:
        holder = holders.get(row.tax_id)
        if holder is None:
            holder = Policyholder(tax_id=row.tax_id, **row.holder_details)
            db.session.add(holder)
            self.report.holders_created += 1
        elif _update(holder, row.holder_details):
            self.report.holders_updated += 1
        else:
            self.report.holders_unchanged += 1
        return holder

    def _upsert_policy(self, row: _Row, holder_id: int | None, policy: Policy | None) -> None:
        if policy is None:
            db.session.add(Policy(policyholder_id=holder_id, number=row.policy_number, **row.policy_details))
            self.report.policies_created += 1
        elif _update(policy, row.policy_details):
            self.report.policies_updated += 1
        else:
            self.report.policies_unchanged += 1


def _update(record: object, wanted: dict[str, object]) -> bool:
    """Set only the values that differ, so an unchanged record is not written (nor its updated_at)."""
    changed = False
    for name, value in wanted.items():
        if getattr(record, name) != value:
            setattr(record, name, value)
            changed = True
    return changed


def _parse(line: int, cells: list[str], positions: dict[str, int]) -> _Row:
    """Check and normalise one row; raise `_RowError` with the first problem found."""
    if len(cells) != len(COLUMNS):
        raise _RowError("columns", expected=len(COLUMNS), found=len(cells))
    raw = {name: cells[index].strip() for name, index in positions.items()}

    tax_id = _identity(normalise_tax_id, raw, "tax_id")
    kind_text = _required(raw, "kind").lower()
    if kind_text not in {kind.value for kind in HolderKind}:
        raise _RowError("kind_invalid", value=raw["kind"])
    kind = HolderKind(kind_text)
    if tax_id.is_person != (kind is HolderKind.PERSON):
        raise _RowError(
            "kind_mismatch",
            tax_id=tax_id.value,
            type=tax_id.kind.upper(),
            holder="person" if tax_id.is_person else "company",
            kind=kind.value,
        )
    name = " ".join(_required(raw, "name").split())
    email = _identity(normalise_email, raw, "email") if raw["email"] else None
    phone = _identity(normalise_phone, raw, "phone") if raw["phone"] else None
    checked = {
        "name": name,
        "email": email,
        "phone": phone,
        "policy_number": _required(raw, "policy_number"),
        "product": _required(raw, "product").lower(),
        "policy_status": _required(raw, "policy_status").lower(),
    }
    for field_name, value in checked.items():
        limit = _MAX_LENGTHS[field_name]
        if value is not None and len(value) > limit:
            raise _RowError(f"{field_name}_too_long", limit=limit)
    return _Row(
        line=line,
        tax_id=tax_id.value,
        kind=kind,
        name=name,
        email=email,
        phone=phone,
        policy_number=checked["policy_number"],
        product=checked["product"],
        status=checked["policy_status"],
        coverage=raw["coverage"] or None,
    )


def _required(raw: dict[str, str], column: str) -> str:
    if not raw[column]:
        raise _RowError(f"{column}_required")
    return raw[column]


def _identity(normalise: Callable, raw: dict[str, str], column: str):
    try:
        return normalise(raw[column])
    except IdentityError as exc:
        if exc.code == "required":
            raise _RowError(f"{column}_required") from exc
        raise _RowError(f"{column}_invalid", value=raw[column]) from exc

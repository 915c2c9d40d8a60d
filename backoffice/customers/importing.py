"""Policyholder CSV import from the core insurance system (CLI now; upload page and job later).

The file has a header row and one row per policy, so a holder with three policies has three
rows: `tax_id,kind,name,email,phone,policy_number,product,policy_status,coverage`.
Holders are upserted by normalised tax ID, policies by policy number, so importing the same
file twice changes nothing. A bad row is reported (spreadsheet line number, code, message)
and skipped; the rest still imports. A bad header, an empty file or text that is not UTF-8
is fatal (`ImportFileError`): the caller rolls back.

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
from typing import NamedTuple, TextIO

from sqlalchemy import select

from backoffice import audit
from backoffice.audit import Actor
from backoffice.customers.models import HolderKind, Policy, Policyholder
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
_LABELS = {
    "tax_id": "tax ID",
    "policy_number": "policy number",
    "policy_status": "policy status",
}


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (bad header, not UTF-8, broken CSV); nothing should be kept."""


class Rejection(NamedTuple):
    line: int
    code: str
    message: str


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
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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
        raise ImportFileError(f"Line {line + 1} is not valid CSV: {exc}.") from exc
    except UnicodeDecodeError as exc:
        raise ImportFileError(f"The file is not UTF-8 text (near line {line + 1}).") from exc
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
    expected = ",".join(COLUMNS)
    header = next(reader, None)
    if header is None:
        raise ImportFileError(f"The file is empty; line 1 must be the header: {expected}")
    names = [name.strip().lower() for name in header]
    missing = [name for name in COLUMNS if name not in names]
    unexpected = [name for name in names if name not in COLUMNS]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if missing or unexpected or duplicated:
        problems = [
            f"{label}: {', '.join(values)}"
            for label, values in (("missing", missing), ("unexpected", unexpected), ("repeated", duplicated))
            if values
        ]
        raise ImportFileError(f"Line 1 must be the header {expected} ({'; '.join(problems)}).")
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
            self._reject(line, exc.code, exc.message)

    def _reject(self, line: int, code: str, message: str) -> None:
        self.report.rejected.append(Rejection(line, code, message))

    def flush(self) -> None:
        """Apply the batch: holders first (so new ones get ids), then their policies."""
        if not self.batch:
            return
        batch, self.batch = self.batch, []
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

    def _conflict(self, row: _Row, existing: tuple[Policy, str] | None) -> tuple[str, str] | None:
        """Why this row cannot be applied given earlier rows and stored policies, if it cannot."""
        seen = self.holders.get(row.tax_id)
        if seen is not None and seen.details != row.holder_details:
            fields = ", ".join(
                name for name, value in row.holder_details.items() if seen.details[name] != value
            )
            return (
                "holder_conflict",
                f"holder {row.tax_id} has different {fields} on line {seen.line}; all rows of a holder must agree",
            )
        if row.policy_number in self.policy_lines:
            first = self.policy_lines[row.policy_number]
            return "policy_duplicate", f"policy {row.policy_number} already appears on line {first}"
        if existing is not None and existing[1] != row.tax_id:
            return (
                "policy_taken",
                f"policy {row.policy_number} belongs to another policyholder ({existing[1]}), not {row.tax_id}",
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
        raise _RowError("columns", f"expected {len(COLUMNS)} columns, found {len(cells)}")
    raw = {name: cells[index].strip() for name, index in positions.items()}

    tax_id = _identity(normalise_tax_id, raw, "tax_id", "a valid NIF, NIE or CIF")
    kind_text = _required(raw, "kind").lower()
    if kind_text not in {kind.value for kind in HolderKind}:
        raise _RowError("kind_invalid", f"kind must be person or company, not {raw['kind']!r}")
    kind = HolderKind(kind_text)
    if tax_id.is_person != (kind is HolderKind.PERSON):
        raise _RowError(
            "kind_mismatch",
            f"tax ID {tax_id.value} is a {tax_id.kind.upper()}, which is "
            f"{'a person' if tax_id.is_person else 'a company'}, but kind is {kind.value}",
        )
    name = " ".join(_required(raw, "name").split())
    email = _identity(normalise_email, raw, "email", "a valid email address") if raw["email"] else None
    phone = _identity(normalise_phone, raw, "phone", "a valid phone number") if raw["phone"] else None
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
            raise _RowError(
                f"{field_name}_too_long", f"{_label(field_name)} is longer than {limit} characters"
            )
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


def _label(column: str) -> str:
    return _LABELS.get(column, column.replace("_", " "))


def _required(raw: dict[str, str], column: str) -> str:
    if not raw[column]:
        raise _RowError(f"{column}_required", f"{_label(column)} is missing")
    return raw[column]


def _identity(normalise: Callable, raw: dict[str, str], column: str, what: str):
    try:
        return normalise(raw[column])
    except IdentityError as exc:
        if exc.code == "required":
            raise _RowError(f"{column}_required", f"{_label(column)} is missing") from exc
        raise _RowError(f"{column}_invalid", f"{_label(column)} {raw[column]!r} is not {what}") from exc

"""Evidence bundles: one ZIP per sign-up that a legal team can hand to an auditor or a court.

A bundle holds `summary.pdf` (what a reader needs first), `records/<name>.json` (the raw
records, times in ISO 8601 UTC), `files/<name>` (stored files such as the signed contract) and
`manifest.json`, which lists every other member with its SHA-256 and size, when the bundle was
made and by whom. Members are written in name order, all dated at the generation time.

The builders here are shared by the representative application and the e-Customer bundles;
they read records and stored files, and never include a one-time code, its HMAC or a link
token (only what the services store about them: counts, times and outcomes).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from flask_babel import gettext as _
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from sqlalchemy import and_, or_, select

from backoffice import audit
from backoffice.audit import Actor
from backoffice.audit.models import AuditEvent
from backoffice.customers.models import CustomerAccount
from backoffice.extensions import db
from backoffice.otp import OtpChallenge, OtpCode
from backoffice.signing.contract import PDF_ENCODING, _pdf_text
from backoffice.signing.models import SignedContract
from backoffice.staff.models import StaffUser

FORMAT = "ventanilla-evidence-bundle/1"
MANIFEST = "manifest.json"
SUMMARY = "summary.pdf"
DOWNLOADED = "evidence_bundle.downloaded"
SIGNED_CONTRACT_SUBJECT = "signed_contract"
ACCOUNT_SUBJECT = "customer_account"
# What the sign-up did to its account; the account's later life (sign-ins, profile) is not
# evidence of the sign-up.
ACCOUNT_ACTIONS = ("customer.linked", "customer.unlinked", "customer.association_closed")
CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class Section:
    """A titled block of label / value rows in the PDF summary."""

    title: str
    rows: Sequence[tuple[str, str]]


@dataclass(frozen=True)
class Bundle:
    filename: str
    data: bytes
    sha256: str


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def stamp(moment: datetime | None) -> str:
    """A time as the summary prints it (always UTC, like the records)."""
    return "—" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(value: Any) -> bytes:
    return (
        json.dumps(value, default=_json_default, ensure_ascii=False, indent=2, sort_keys=True) + "\n"
    ).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Reading what the services stored


def stored_bytes(key: str) -> bytes:
    """A stored file through the storage port; StorageError propagates (the caller answers 503)."""
    with current_app.extensions["storage"].open(key) as stream:
        return stream.read()


def stored_sha256(key: str) -> str:
    """The SHA-256 of a stored file as it is now, read in chunks (documents may be large)."""
    digest = hashlib.sha256()
    with current_app.extensions["storage"].open(key) as stream:
        while chunk := stream.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def staff_of(ids: Iterable[int | str | None]) -> dict[str, dict[str, Any]]:
    """Staff members by id (as text, like audit actor ids): who reviewed, called or downloaded."""
    wanted = {int(i) for i in ids if i is not None and str(i).isdigit()}
    if not wanted:
        return {}
    users = db.session.execute(select(StaffUser).where(StaffUser.id.in_(wanted))).scalars()
    return {
        str(user.id): {"id": user.id, "name": user.name, "email": user.email, "role": user.role.value}
        for user in users
    }


def audit_events(subjects: Mapping[str, Iterable[Any]], *, account_id: int | None = None) -> list[AuditEvent]:
    """The audit events about the given subjects (type: ids), plus how the sign-up's account
    was linked, in the log's order. Hashes are kept so each can be checked against the log."""
    conditions = [
        and_(AuditEvent.subject_type == kind, AuditEvent.subject_id.in_([str(i) for i in ids]))
        for kind, ids in subjects.items()
    ]
    if account_id is not None:
        conditions.append(
            and_(
                AuditEvent.subject_type == ACCOUNT_SUBJECT,
                AuditEvent.subject_id == str(account_id),
                AuditEvent.action.in_(ACCOUNT_ACTIONS),
            )
        )
    return list(
        db.session.execute(select(AuditEvent).where(or_(*conditions)).order_by(AuditEvent.seq)).scalars()
    )


def audit_record(events: Sequence[AuditEvent]) -> list[dict[str, Any]]:
    return [
        {
            "seq": event.seq,
            "chain": event.chain,
            "chain_seq": event.chain_seq,
            "occurred_at": event.occurred_at,
            "actor_kind": event.actor_kind,
            "actor_id": event.actor_id,
            "actor_label": event.actor_label,
            "action": event.action,
            "subject_type": event.subject_type,
            "subject_id": event.subject_id,
            "before": event.before,
            "after": event.after,
            "ip": event.ip,
            "prev_hash": event.prev_hash,
            "hash": event.hash,
        }
        for event in events
    ]


def audit_section(events: Sequence[AuditEvent]) -> Section:
    return Section(
        _("Audit trail"),
        [
            (
                f"#{event.seq} {stamp(event.occurred_at)}",
                f"{event.action} · {event.actor_label or event.actor_kind}",
            )
            for event in events
        ],
    )


def code_record(challenge_id: int | None, attempts: Sequence[AuditEvent]) -> dict[str, Any] | None:
    """The SMS code challenge: where codes went and when, and each try's outcome, from the
    challenge, its code rows and the flow's audit events. Never a code nor its HMAC."""
    challenge = db.session.get(OtpChallenge, challenge_id) if challenge_id else None
    if challenge is None:
        return None
    codes = db.session.execute(
        select(OtpCode).where(OtpCode.challenge_id == challenge.id).order_by(OtpCode.id)
    ).scalars()
    return {
        "challenge": {
            "id": challenge.id,
            "purpose": challenge.purpose,
            "subject_type": challenge.subject_type,
            "subject_id": challenge.subject_id,
            "phone": challenge.phone,
            "document_sha256": challenge.document_sha256,
            "wrong_attempts": challenge.wrong_attempts,
            "created_at": challenge.created_at,
            "exhausted_at": challenge.exhausted_at,
            "completed_at": challenge.completed_at,
        },
        "deliveries": [
            {
                "id": code.id,
                "phone": code.phone,
                "sent_at": code.sent_at,
                "expires_at": code.expires_at,
                "superseded_at": code.superseded_at,
                "used_at": code.used_at,
            }
            for code in codes
        ],
        "attempts": [
            {
                "at": event.occurred_at,
                "outcome": (event.after or {}).get("reason", "rejected")
                if event.action.endswith("_rejected")
                else "accepted",
                "attempts_left": (event.after or {}).get("attempts_left"),
                "ip": event.ip,
                "audit_seq": event.seq,
            }
            for event in attempts
        ],
    }


def code_section(record: dict[str, Any] | None) -> Section:
    if record is None:
        return Section(_("SMS codes"), [(_("Codes"), _("No code was sent."))])
    challenge = record["challenge"]
    rows = [
        (
            _("Challenge"),
            _(
                "#%(id)s: %(sent)s code(s) sent, %(wrong)s wrong attempt(s); completed %(completed)s",
                id=challenge["id"],
                sent=len(record["deliveries"]),
                wrong=challenge["wrong_attempts"],
                completed=stamp(challenge["completed_at"]),
            ),
        ),
        (_("Binds the document"), f"SHA-256 {challenge['document_sha256']}"),
    ]
    rows += [
        (
            _("Code sent %(at)s", at=stamp(code["sent_at"])),
            _(
                "to %(phone)s; expires %(expires)s; superseded %(superseded)s; used %(used)s",
                phone=code["phone"],
                expires=stamp(code["expires_at"]),
                superseded=stamp(code["superseded_at"]),
                used=stamp(code["used_at"]),
            ),
        )
        for code in record["deliveries"]
    ]
    rows += [
        (_("Attempt %(at)s", at=stamp(attempt["at"])), f"{attempt['outcome']} · IP {attempt['ip'] or '—'}")
        for attempt in record["attempts"]
    ]
    rows.append((_("Codes"), _("Codes are never stored or exported: only their delivery and use.")))
    return Section(_("SMS codes"), rows)


def signature_evidence(
    contract_id: int | None,
) -> tuple[dict[str, Any] | None, dict[str, bytes], Section]:
    """The signature's evidence record, the unsigned and signed PDFs as stored, and whether
    each still matches the hash recorded when it was signed."""
    contract = db.session.get(SignedContract, contract_id) if contract_id else None
    if contract is None:
        return None, {}, Section(_("Signature"), [(_("Contract"), _("Not signed."))])
    unsigned = stored_bytes(contract.unsigned_key)
    signed = stored_bytes(contract.signed_key)
    record = {
        "id": contract.id,
        "kind": contract.kind,
        "account_id": contract.account_id,
        "policyholder_id": contract.policyholder_id,
        "contract_version": contract.contract_version,
        "language": contract.language,
        "signer_name": contract.signer_name,
        "signer_tax_id": contract.signer_tax_id,
        "masked_phone": contract.masked_phone,
        "challenge_id": contract.challenge_id,
        "signed_at": contract.signed_at,
        "ip": contract.ip,
        "user_agent": contract.user_agent,
        "provider": contract.provider,
        "timestamped": contract.timestamped,
        "unsigned_sha256": contract.unsigned_sha256,
        "signed_sha256": contract.signed_sha256,
        "unsigned_file": "files/contract-unsigned.pdf",
        "signed_file": "files/contract-signed.pdf",
        "unsigned_file_matches": _sha256(unsigned) == contract.unsigned_sha256,
        "signed_file_matches": _sha256(signed) == contract.signed_sha256,
    }
    matches = {True: _("matches the recorded hash"), False: _("DOES NOT match the recorded hash")}
    section = Section(
        _("Signature"),
        [
            (
                _("Contract"),
                f"#{contract.id} {contract.kind} {contract.contract_version} ({contract.language})",
            ),
            (_("Signer"), f"{contract.signer_name}, {contract.signer_tax_id}"),
            (_("Phone (masked)"), contract.masked_phone),
            (_("Signed at"), stamp(contract.signed_at)),
            (_("IP / user agent"), f"{contract.ip or '—'} / {contract.user_agent or '—'}"),
            (
                _("Provider"),
                contract.provider + (_(" (RFC 3161 timestamp)") if contract.timestamped else ""),
            ),
            (
                _("Unsigned PDF"),
                f"SHA-256 {contract.unsigned_sha256}; {matches[record['unsigned_file_matches']]}",
            ),
            (_("Signed PDF"), f"SHA-256 {contract.signed_sha256}; {matches[record['signed_file_matches']]}"),
        ],
    )
    return record, {"contract-unsigned.pdf": unsigned, "contract-signed.pdf": signed}, section


# The bundle


def _actor_record(actor: Actor) -> dict[str, Any]:
    return {"kind": actor.kind, "id": actor.id, "label": actor.label}


class _SummaryPdf(FPDF):
    def __init__(self, title: str):
        super().__init__(orientation="P", unit="mm", format="A4")
        self.title_text = title

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", size=7)
        self.set_text_color(110, 110, 110)
        self.cell(0, 5, f"{self.title_text} · {self.page_no()}/{{nb}}", align="C")
        self.set_text_color(0, 0, 0)


def render_summary(title: str, sections: Sequence[Section], *, now: datetime) -> bytes:
    """The summary as a PDF with the core fonts in cp1252 (Spanish accents print; anything
    outside it is transliterated, as in the contract)."""
    pdf = _SummaryPdf(_pdf_text(title))
    pdf.core_fonts_encoding = PDF_ENCODING
    pdf.set_margins(15, 15, 15)
    pdf.set_auto_page_break(True, margin=18)
    pdf.set_creation_date(now)
    pdf.set_title(_pdf_text(title))
    pdf.set_creator("Ventanilla")
    pdf.alias_nb_pages("{nb}")
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=14)
    pdf.multi_cell(0, 7, _pdf_text(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    for section in sections:
        pdf.ln(3)
        pdf.set_font("Helvetica", style="B", size=11)
        pdf.multi_cell(0, 6, _pdf_text(section.title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", size=8.5)
        with pdf.table(col_widths=(55, 125), first_row_as_headings=False, text_align="LEFT") as table:
            for label, value in section.rows or [("—", _("Nothing recorded."))]:
                row = table.row()
                row.cell(_pdf_text(label))
                row.cell(_pdf_text(value or "—"))
    return bytes(pdf.output())


def _zip(members: Mapping[str, bytes], now: datetime) -> bytes:
    moment = now.astimezone(UTC)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=moment.timetuple()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, members[name])
    return buffer.getvalue()


def build_bundle(
    *,
    filename: str,
    title: str,
    subject_type: str,
    subject_id: str,
    sections: Sequence[Section],
    records: Mapping[str, Any],
    files: Mapping[str, bytes],
    actor: Actor,
    now: datetime,
) -> Bundle:
    """The ZIP: the records as JSON, the files, the PDF summary (the given sections, then the
    bundle's contents with their hashes) and the manifest of every other member."""
    members = {f"records/{name}.json": to_json(value) for name, value in records.items()}
    members.update({f"files/{name}": data for name, data in files.items()})
    generated = [
        (_("Record"), f"{subject_type} {subject_id}"),
        (_("Generated at"), stamp(now)),
        (_("Generated by"), f"{actor.label or actor.kind} ({actor.kind} {actor.id or '—'})"),
        (_("Times"), _("All times are UTC; the records use ISO 8601.")),
    ]
    contents = [
        (name, f"SHA-256 {_sha256(data)} · {len(data)} bytes") for name, data in sorted(members.items())
    ]
    members[SUMMARY] = render_summary(
        title,
        [
            Section(_("Evidence bundle"), generated),
            *sections,
            Section(_("Contents (also in manifest.json)"), contents),
        ],
        now=now,
    )
    manifest = {
        "format": FORMAT,
        "subject": {"type": subject_type, "id": subject_id},
        "generated_at": now,
        "generated_by": _actor_record(actor),
        "files": [
            {"name": name, "sha256": _sha256(data), "size": len(data)}
            for name, data in sorted(members.items())
        ],
    }
    members[MANIFEST] = to_json(manifest)
    data = _zip(members, now)
    return Bundle(filename=filename, data=data, sha256=_sha256(data))


def record_download(bundle: Bundle, *, subject_type: str, subject_id: str, actor: Actor) -> None:
    """Handing evidence out is itself evidence: the event names the exact ZIP by its hash."""
    audit.record(
        DOWNLOADED,
        actor=actor,
        subject_type=subject_type,
        subject_id=subject_id,
        after={"filename": bundle.filename, "sha256": bundle.sha256, "size": len(bundle.data)},
    )


def account_record(account_id: int | None) -> tuple[dict[str, Any] | None, Section]:
    """The portal account the sign-up created or completed, and the record it is linked to."""
    account = db.session.get(CustomerAccount, account_id) if account_id else None
    if account is None:
        return None, Section(_("Account"), [(_("Account"), _("No account yet."))])
    record = {
        "id": account.id,
        "username": account.username,
        "email": account.email,
        "created_at": account.created_at,
        "email_verified_at": account.email_verified_at,
        "terms_accepted_at": account.terms_accepted_at,
        "association_status": account.association_status.value,
        "policyholder_id": account.policyholder_id,
        "linked_at": account.linked_at,
    }
    return record, Section(
        _("Account"),
        [
            (_("Account"), f"#{account.id} {account.username}"),
            (
                _("Association"),
                f"{account.association_status.value}; policyholder #{account.policyholder_id or '—'}; "
                f"{stamp(account.linked_at)}",
            ),
        ],
    )

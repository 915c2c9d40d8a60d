"""Policyholder CSV import: idempotent upsert, bad rows reported by line, the CLI around it."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from flask_babel import force_locale
from sqlalchemy import event, func, select, text
from stdnum.es import cif, dni

from backoffice.audit.models import AuditEvent
from backoffice.customers.importing import (
    ImportFileError,
    ImportReport,
    import_policyholders,
    rejection_message,
)
from backoffice.customers.models import HolderKind, Policy, Policyholder
from backoffice.extensions import db
from tests.conftest import requires_postgres
from tests.factories import TEST_ACTOR

HEADER = "tax_id,kind,name,email,phone,policy_number,product,policy_status,coverage"
MARIA = "12345678Z,person,María García López,Maria.Garcia@Correo.Example,612 34 56 12,AUT-1,auto,active,Todo riesgo"
JOHN = "x-1234567-l,person,John Smith,john@mail.example,+34 622 000 111,VID-1,life,active,"
TRANSPORTES = (
    "B12345674,company,Transportes Ejemplo S.L.,flota@transportes.example,911222333,FLO-1,fleet,active,"
)


def _run(*rows: str, header: str = HEADER, **kwargs) -> ImportReport:
    text = "\n".join([header, *rows]) + "\n"
    return import_policyholders(io.StringIO(text, newline=""), actor=TEST_ACTOR, **kwargs)


def _holder(tax_id: str) -> Policyholder:
    return db.session.execute(select(Policyholder).where(Policyholder.tax_id == tax_id)).scalar_one()


def _policy(number: str) -> Policy:
    return db.session.execute(select(Policy).where(Policy.number == number)).scalar_one()


def _count(model) -> int:
    return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def _import_events() -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.action == "policyholders.imported")
    return list(db.session.execute(query).scalars())


# --- the import function ----------------------------------------------------------------------


def test_import_creates_holders_and_policies(app):
    report = _run(MARIA, JOHN, TRANSPORTES)

    assert report.counts() == {
        "rows_read": 3,
        "holders_created": 3,
        "holders_updated": 0,
        "holders_unchanged": 0,
        "policies_created": 3,
        "policies_updated": 0,
        "policies_unchanged": 0,
        "rejected": 0,
    }
    assert (_count(Policyholder), _count(Policy)) == (3, 3)


def test_import_stores_normalised_identity_data(app):
    _run(MARIA, JOHN)

    maria, john = _holder("12345678Z"), _holder("X1234567L")
    assert (maria.email, maria.phone, maria.kind) == (
        "maria.garcia@correo.example",
        "+34612345612",
        HolderKind.PERSON,
    )
    assert (john.email, john.phone) == ("john@mail.example", "+34622000111")


def test_import_stores_a_company_as_company(app):
    _run(TRANSPORTES)

    assert _holder("B12345674").kind is HolderKind.COMPANY


def test_import_stores_policy_details(app):
    _run(MARIA)

    policy = _policy("AUT-1")
    assert (policy.holder.tax_id, policy.product, policy.status, policy.coverage) == (
        "12345678Z",
        "auto",
        "active",
        "Todo riesgo",
    )


def test_empty_email_phone_and_coverage_are_stored_as_none(app):
    _run("12345678Z,person,María García,,,AUT-1,auto,active,")

    holder = _holder("12345678Z")
    assert (holder.email, holder.phone, holder.policies[0].coverage) == (None, None, None)


def test_second_identical_import_changes_nothing(app):
    _run(MARIA, JOHN, TRANSPORTES)
    db.session.commit()

    report = _run(MARIA, JOHN, TRANSPORTES)

    assert report.counts() == {
        "rows_read": 3,
        "holders_created": 0,
        "holders_updated": 0,
        "holders_unchanged": 3,
        "policies_created": 0,
        "policies_updated": 0,
        "policies_unchanged": 3,
        "rejected": 0,
    }


def test_second_identical_import_does_not_touch_updated_at(app):
    _run(MARIA)
    db.session.commit()
    before = _holder("12345678Z").updated_at

    _run(MARIA)
    db.session.commit()

    assert _holder("12345678Z").updated_at == before


def test_changed_email_updates_the_holder(app):
    _run(MARIA)
    db.session.commit()

    report = _run(MARIA.replace("Maria.Garcia@Correo.Example", "maria@nuevo.example"))

    assert (report.holders_updated, report.policies_unchanged) == (1, 1)
    assert _holder("12345678Z").email == "maria@nuevo.example"


def test_emptied_phone_is_removed_from_the_holder(app):
    _run(MARIA)
    db.session.commit()

    _run(MARIA.replace("612 34 56 12", ""))

    assert _holder("12345678Z").phone is None


def test_changed_policy_status_updates_the_policy(app):
    _run(MARIA)
    db.session.commit()

    report = _run(MARIA.replace(",active,", ",lapsed,"))

    assert (report.holders_unchanged, report.policies_updated) == (1, 1)
    assert _policy("AUT-1").status == "lapsed"


def test_several_policies_of_one_holder_make_one_holder(app):
    report = _run(
        MARIA,
        MARIA.replace("AUT-1,auto", "HOG-1,home"),
        MARIA.replace("AUT-1,auto", "VID-7,life"),
    )

    assert (report.holders_created, report.policies_created) == (1, 3)
    assert [policy.number for policy in _holder("12345678Z").policies] == ["AUT-1", "HOG-1", "VID-7"]


def test_a_holder_whose_rows_span_batches_is_created_once(app):
    rows = [MARIA.replace("AUT-1", f"AUT-{number}") for number in range(5)]

    report = _run(*rows, batch_size=2)

    assert (report.holders_created, report.policies_created, report.rejected) == (1, 5, [])
    assert len(_holder("12345678Z").policies) == 5


def test_product_and_status_codes_are_lower_cased(app):
    _run(MARIA.replace(",auto,active,", ", Auto , ACTIVE ,"))

    policy = _policy("AUT-1")
    assert (policy.product, policy.status) == ("auto", "active")


def test_header_may_list_the_columns_in_another_order_and_case(app):
    header = "Name,TAX_ID,kind,email,phone,policy_number,product,policy_status,coverage"
    row = "María García,12345678Z,person,,,AUT-1,auto,active,"

    _run(row, header=header)

    assert _holder("12345678Z").name == "María García"


def test_quoted_fields_may_hold_commas(app):
    _run('12345678Z,person,"García López, María",,,AUT-1,auto,active,"Todo riesgo, sin franquicia"')

    assert _holder("12345678Z").name == "García López, María"


LONG = "x" * 300
BAD_ROWS = [
    ("12345678A,person,Ana,,,P-9,auto,active,", "tax_id_invalid"),
    (",person,Ana,,,P-9,auto,active,", "tax_id_required"),
    ("87654321X,individual,Ana,,,P-9,auto,active,", "kind_invalid"),
    ("87654321X,,Ana,,,P-9,auto,active,", "kind_required"),
    ("87654321X,person,,,,P-9,auto,active,", "name_required"),
    ("87654321X,person,Ana,ana@,,P-9,auto,active,", "email_invalid"),
    ("87654321X,person,Ana,,12345,P-9,auto,active,", "phone_invalid"),
    ("87654321X,person,Ana,,,,auto,active,", "policy_number_required"),
    ("87654321X,person,Ana,,,P-9,,active,", "product_required"),
    ("87654321X,person,Ana,,,P-9,auto,,", "policy_status_required"),
    ("87654321X,person,Ana,,,P-9,auto,active", "columns"),
    ("87654321X,person,Ana,,,P-9,auto,active,,extra", "columns"),
    (f"87654321X,person,{LONG},,,P-9,auto,active,", "name_too_long"),
    (f"87654321X,person,Ana,,,{LONG},auto,active,", "policy_number_too_long"),
    (f"87654321X,person,Ana,,,P-9,{LONG},active,", "product_too_long"),
]


@pytest.mark.parametrize(("row", "code"), BAD_ROWS)
def test_bad_row_is_reported_by_line_and_the_good_rows_still_import(app, row, code):
    report = _run(MARIA, row, JOHN)

    assert [(line, reason) for line, reason, _ in report.rejected] == [(3, code)]
    assert (report.rows_read, report.holders_created, report.policies_created) == (3, 2, 2)
    assert {holder.tax_id for holder in db.session.execute(select(Policyholder)).scalars()} == {
        "12345678Z",
        "X1234567L",
    }


@pytest.mark.parametrize(
    "row",
    [
        "12345678Z,company,María García,,,AUT-1,auto,active,",  # NIF as a company
        "X1234567L,company,John Smith,,,VID-1,life,active,",  # NIE as a company
        "B12345674,person,Transportes,,,FLO-1,fleet,active,",  # CIF as a person
    ],
)
def test_kind_that_disagrees_with_the_tax_id_is_rejected(app, row):
    report = _run(row)

    assert [code for _, code, _ in report.rejected] == ["kind_mismatch"]
    assert _count(Policyholder) == 0


@pytest.mark.parametrize(("row", "code"), BAD_ROWS)
def test_every_rejection_has_a_message(app, row, code):
    report = _run(row)

    with force_locale("en"):
        assert report.rejected[0].message not in ("", code)


def test_rejection_keeps_the_offending_value_as_a_detail(app):
    report = _run("12345678A,person,Ana,,,P-9,auto,active,")

    assert report.rejected[0].details == {"value": "12345678A"}


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("en", "tax ID '12345678A' is not a valid NIF, NIE or CIF"),
        ("es", "«12345678A» no es un NIF, NIE ni CIF válido"),
    ],
)
def test_rejection_message_says_what_is_wrong_in_the_current_language(app, language, message):
    report = _run("12345678A,person,Ana,,,P-9,auto,active,")

    with force_locale(language):
        assert report.rejected[0].message == message


def test_a_holder_conflict_names_the_differing_details_in_the_current_language(app):
    details = {"tax_id": "12345678Z", "fields": ["name", "email"], "first_line": 2}

    with force_locale("es"):
        message = rejection_message("holder_conflict", details)

    assert message.startswith(
        "el titular 12345678Z tiene otros datos (nombre, correo electrónico) en la línea 2"
    )


def test_line_numbers_count_blank_lines_as_a_spreadsheet_does(app):
    report = _run(MARIA, "", "12345678A,person,Ana,,,P-9,auto,active,")

    assert [line for line, _, _ in report.rejected] == [4]
    assert report.rows_read == 2


def test_line_numbers_follow_rows_when_a_quoted_field_spans_lines(app):
    report = _run(
        '12345678Z,person,María,,,AUT-1,auto,active,"two\nlines"', "12345678A,person,Ana,,,P-9,auto,active,"
    )

    assert [line for line, _, _ in report.rejected] == [3]


def test_rejections_are_listed_in_line_order_across_batches(app):
    bad_tax_id = "12345678A,person,Ana,,,P-9,auto,active,"
    duplicate = MARIA.replace("AUT-1", "AUT-2")

    report = _run(MARIA, duplicate, bad_tax_id, duplicate, batch_size=2)

    assert [(line, code) for line, code, _ in report.rejected] == [
        (4, "tax_id_invalid"),
        (5, "policy_duplicate"),
    ]


def test_policy_number_that_moves_to_another_holder_is_rejected(app):
    _run(MARIA)
    db.session.commit()

    report = _run(JOHN.replace("VID-1", "AUT-1"))

    assert [(line, code) for line, code, _ in report.rejected] == [(2, "policy_taken")]
    assert _policy("AUT-1").holder.tax_id == "12345678Z"


def test_rejected_row_does_not_change_its_holder(app):
    _run(MARIA, JOHN)
    db.session.commit()

    report = _run(JOHN.replace("VID-1", "AUT-1").replace("John Smith", "Johnny Smith"))

    assert report.rejected[0].code == "policy_taken"
    assert _holder("X1234567L").name == "John Smith"


def test_policy_number_repeated_in_the_file_is_rejected(app):
    report = _run(MARIA, JOHN.replace("VID-1", "AUT-1"))

    assert [(line, code) for line, code, _ in report.rejected] == [(3, "policy_duplicate")]
    assert _policy("AUT-1").holder.tax_id == "12345678Z"


def test_rows_of_one_holder_with_different_details_are_rejected(app):
    report = _run(MARIA, MARIA.replace("AUT-1", "HOG-1").replace("María García López", "María García"))

    assert [(line, code) for line, code, _ in report.rejected] == [(3, "holder_conflict")]
    assert _holder("12345678Z").name == "María García López"


def test_the_same_tax_id_written_differently_is_one_holder(app):
    report = _run(MARIA, MARIA.replace("12345678Z", "12.345.678-z").replace("AUT-1", "HOG-1"))

    assert (report.holders_created, report.policies_created, report.rejected) == (1, 2, [])


def test_missing_header_is_fatal(app):
    with pytest.raises(ImportFileError) as caught:
        _run(JOHN, header=MARIA)

    assert caught.value.code == "bad_header"


def test_header_without_a_column_is_fatal(app):
    with pytest.raises(ImportFileError) as caught:
        _run(MARIA, header=HEADER.removesuffix(",coverage"))

    assert (caught.value.code, caught.value.details["missing"]) == ("bad_header", ["coverage"])


def test_header_with_an_unknown_column_is_fatal(app):
    with pytest.raises(ImportFileError) as caught:
        _run(MARIA + ",x", header=HEADER + ",broker")

    assert (caught.value.code, caught.value.details["unexpected"]) == ("bad_header", ["broker"])


@pytest.mark.parametrize(
    ("language", "message"),
    [
        ("en", f"Line 1 must be the header {HEADER} (missing: coverage)."),
        ("es", f"La línea 1 debe ser la cabecera {HEADER} (faltan: coverage)."),
    ],
)
def test_a_bad_header_is_said_in_the_current_language(app, language, message):
    with pytest.raises(ImportFileError) as caught:
        _run(MARIA, header=HEADER.removesuffix(",coverage"))

    with force_locale(language):
        assert str(caught.value) == message


def test_empty_file_is_fatal(app):
    with pytest.raises(ImportFileError) as caught:
        import_policyholders([], actor=TEST_ACTOR)

    assert caught.value.code == "empty_file"


def test_byte_order_mark_before_the_header_is_tolerated(app):
    report = _run(MARIA, header="\ufeff" + HEADER)

    assert report.holders_created == 1


def test_import_writes_one_audit_event_with_the_counts(app):
    report = _run(MARIA, JOHN, "12345678A,person,Ana,,,P-9,auto,active,", source="core-export.csv")

    [event] = _import_events()
    assert (event.actor_kind, event.subject_type) == ("system", "import")
    assert event.after == {"source": "core-export.csv", **report.counts()}


def test_import_leaves_the_commit_to_the_caller(app):
    _run(MARIA)

    db.session.rollback()

    assert (_count(Policyholder), _count(Policy), _import_events()) == (0, 0, [])


def test_progress_is_reported_after_each_batch(app):
    done: list[int] = []

    _run(*(MARIA.replace("AUT-1", f"AUT-{n}") for n in range(5)), batch_size=2, progress=done.append)

    assert done == [2, 4, 5]


def test_progress_is_not_reported_twice_when_the_last_batch_is_full(app):
    done: list[int] = []

    _run(*(MARIA.replace("AUT-1", f"AUT-{n}") for n in range(4)), batch_size=2, progress=done.append)

    assert done == [2, 4]


def test_existing_records_are_looked_up_per_batch_not_per_row(app):
    rows = [MARIA.replace("AUT-1", f"AUT-{n}").replace("12345678Z", _dni(n)) for n in range(1, 1001)]
    _run(*rows)
    db.session.commit()
    statements: list[str] = []

    def listener(connection, cursor, statement, *args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", listener)
    try:
        report = _run(*rows, batch_size=500)
    finally:
        event.remove(db.engine, "before_cursor_execute", listener)

    assert report.holders_unchanged == 1000
    assert len(statements) < 20, statements  # one per row would be over a thousand


@requires_postgres
def test_every_batch_is_planned_for_the_tables_as_they_are_now(app):
    """The import job commits per batch and fills the tables it looks up: a generic plan cached
    while they were empty would scan them whole for every batch."""
    modes: list[str] = []

    def progress(rows_done: int) -> None:
        modes.append(db.session.execute(text("SHOW plan_cache_mode")).scalar_one())
        db.session.commit()

    _run(*(MARIA.replace("AUT-1", f"AUT-{n}") for n in range(3)), batch_size=1, progress=progress)

    assert modes == ["force_custom_plan"] * 3


def _dni(number: int) -> str:
    digits = f"{number:08d}"
    return digits + dni.calc_check_digit(digits)


def _generated_file(holders: int, policies_each: int) -> str:
    """A realistic export: nine people (DNI) to every company (CIF), several policies each."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(HEADER.split(","))
    for number in range(1, holders + 1):
        if number % 10:
            tax_id, kind = _dni(number), "person"
        else:
            body = f"B{number:07d}"
            tax_id, kind = body + cif.calc_check_digits(body)[0], "company"
        for policy in range(policies_each):
            writer.writerow(
                [
                    tax_id,
                    kind,
                    f"Holder {number}",
                    f"Holder{number}@Example.COM",
                    f"6{number:08d}",
                    f"POL-{number:06d}-{policy}",
                    "auto",
                    "active",
                    "Terceros",
                ]
            )
    return out.getvalue()


def test_ten_thousand_rows_import(app):
    text = _generated_file(holders=5_000, policies_each=2)

    report = import_policyholders(io.StringIO(text, newline=""), actor=TEST_ACTOR)

    assert (report.rows_read, report.holders_created, report.policies_created, report.rejected) == (
        10_000,
        5_000,
        10_000,
        [],
    )
    assert (_count(Policyholder), _count(Policy)) == (5_000, 10_000)


# --- the CLI ----------------------------------------------------------------------------------


def _cli(app, *args: str):
    return app.test_cli_runner().invoke(args=["policyholders", "import", *args])


def _file(tmp_path: Path, *rows: str, header: str = HEADER, encoding: str = "utf-8") -> Path:
    path = tmp_path / "export.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding=encoding)
    return path


def test_cli_imports_and_commits(app, tmp_path):
    result = _cli(app, str(_file(tmp_path, MARIA, JOHN)))

    assert result.exit_code == 0, result.output
    db.session.rollback()  # only committed rows are left to see
    assert _count(Policyholder) == 2


def test_cli_prints_a_summary(app, tmp_path):
    result = _cli(app, str(_file(tmp_path, MARIA, MARIA.replace("AUT-1", "HOG-1"), JOHN)))

    assert "Rows read: 3" in result.output
    assert "Policyholders: 2 created, 0 updated, 0 unchanged" in result.output
    assert "Policies: 3 created, 0 updated, 0 unchanged" in result.output


def test_cli_lists_rejected_rows_and_still_exits_zero(app, tmp_path):
    result = _cli(app, str(_file(tmp_path, MARIA, "12345678A,person,Ana,,,P-9,auto,active,")))

    assert result.exit_code == 0, result.output
    assert "Rejected rows: 1" in result.output
    assert "line 3: tax_id_invalid" in result.output


def test_cli_lists_the_first_fifty_rejections_then_how_many_more(app, tmp_path):
    bad = [f"12345678A,person,Ana,,,P-{n},auto,active," for n in range(60)]

    result = _cli(app, str(_file(tmp_path, *bad)))

    assert "line 51: tax_id_invalid" in result.output
    assert "line 52:" not in result.output
    assert "... and 10 more" in result.output


def test_cli_writes_every_rejected_row_to_the_rejects_file(app, tmp_path):
    bad = [f"12345678A,person,Ana,,,P-{n},auto,active," for n in range(60)]
    rejects = tmp_path / "rejects.csv"

    _cli(app, str(_file(tmp_path, MARIA, *bad)), "--rejects-file", str(rejects))

    rows = list(csv.reader(io.StringIO(rejects.read_text(encoding="utf-8"), newline="")))
    assert rows[0] == ["line", "code", "message"]
    assert [row[0] for row in rows[1:]] == [str(line) for line in range(3, 63)]


def test_cli_says_why_rows_were_rejected_in_english(app, tmp_path):
    rejects = tmp_path / "rejects.csv"

    result = _cli(
        app, str(_file(tmp_path, "12345678A,person,Ana,,,P-9,auto,active,")), "--rejects-file", str(rejects)
    )

    message = "tax ID '12345678A' is not a valid NIF, NIE or CIF"
    assert f"line 2: tax_id_invalid: {message}" in result.output
    rows = list(csv.reader(io.StringIO(rejects.read_text(encoding="utf-8"), newline="")))
    assert rows[1] == ["2", "tax_id_invalid", message]


def test_cli_bad_header_exits_non_zero_and_imports_nothing(app, tmp_path):
    result = _cli(app, str(_file(tmp_path, MARIA, header="tax_id,name")))

    assert result.exit_code != 0
    assert "Line 1 must be the header" in result.output
    db.session.rollback()
    assert (_count(Policyholder), _import_events()) == (0, [])


def test_cli_missing_file_exits_non_zero(app, tmp_path):
    result = _cli(app, str(tmp_path / "nowhere.csv"))

    assert result.exit_code != 0


def test_cli_file_that_is_not_utf8_exits_non_zero(app, tmp_path):
    result = _cli(app, str(_file(tmp_path, MARIA, encoding="latin-1")))

    assert result.exit_code != 0
    assert "not UTF-8" in result.output


def test_cli_tolerates_a_byte_order_mark(app, tmp_path):
    result = _cli(app, str(_file(tmp_path, MARIA, encoding="utf-8-sig")))

    assert result.exit_code == 0, result.output
    assert "Policyholders: 1 created" in result.output


def test_cli_records_the_import_as_the_import_system_actor(app, tmp_path):
    _cli(app, str(_file(tmp_path, MARIA)))

    db.session.rollback()
    [event] = _import_events()
    assert (event.actor_kind, event.actor_label, event.after["source"]) == (
        "system",
        "policyholders-import",
        "export.csv",
    )

"""Identity data rules: tax IDs (NIF, NIE, CIF), phones in E.164, emails lower-cased."""

import dataclasses

import pytest

from backoffice.identity import IdentityError, TaxId, normalise_email, normalise_phone, normalise_tax_id


@pytest.mark.parametrize("raw", ["12345678Z", "12345678z", "12 345 678 Z", "12.345.678-Z", " 12345678-z "])
def test_nif_is_stored_upper_case_without_spaces_dashes_or_dots(raw):
    assert normalise_tax_id(raw) == TaxId("12345678Z", "nif")


@pytest.mark.parametrize("raw", ["K1234567L", "l-1234567-l", "m.1234567.l"])
def test_nif_for_people_without_dni_starting_k_l_m_is_a_nif(raw):
    assert normalise_tax_id(raw).kind == "nif"


@pytest.mark.parametrize(
    ("raw", "value"), [("X1234567L", "X1234567L"), ("y-1234567-x", "Y1234567X"), ("z 1234567 r", "Z1234567R")]
)
def test_nie_is_a_nie_not_a_nif(raw, value):
    assert normalise_tax_id(raw) == TaxId(value, "nie")


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("B12345674", "B12345674"),
        ("b-1234567-4", "B12345674"),
        ("A58818501", "A58818501"),
        ("q.2826000.h", "Q2826000H"),
    ],
)
def test_cif_is_a_cif_not_a_nif(raw, value):
    assert normalise_tax_id(raw) == TaxId(value, "cif")


@pytest.mark.parametrize(
    ("raw", "is_person"), [("12345678Z", True), ("X1234567L", True), ("B12345674", False)]
)
def test_nif_and_nie_identify_people_and_cif_companies(raw, is_person):
    assert normalise_tax_id(raw).is_person is is_person


@pytest.mark.parametrize(
    "raw",
    [
        "12345678A",  # NIF, wrong check letter
        "1234567Z",  # NIF, too short
        "X1234567A",  # NIE, wrong check letter
        "B12345675",  # CIF, wrong check digit
        "I1234567L",  # no register starts with I
        "12345678",  # no check letter
        "ABCDEFGHI",
        "--..",
    ],
)
def test_invalid_tax_id_is_refused(raw):
    with pytest.raises(IdentityError) as error:
        normalise_tax_id(raw)

    assert (error.value.field, error.value.code) == ("tax_id", "invalid")


@pytest.mark.parametrize("raw", ["", "   "])
def test_empty_tax_id_is_required(raw):
    with pytest.raises(IdentityError) as error:
        normalise_tax_id(raw)

    assert (error.value.field, error.value.code) == ("tax_id", "required")


def test_tax_id_is_immutable():
    tax_id = normalise_tax_id("12345678Z")

    with pytest.raises(dataclasses.FrozenInstanceError):
        tax_id.value = "X1234567L"  # type: ignore[misc]


def test_identity_error_is_a_value_error():
    with pytest.raises(ValueError, match="phone: invalid"):
        normalise_phone("12345")


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("612345678", "+34612345678"),
        ("612 34 56 78", "+34612345678"),
        ("612-345-678", "+34612345678"),
        ("91 123 45 67", "+34911234567"),
    ],
)
def test_national_phone_is_read_as_spanish_and_stored_in_e164(raw, e164):
    assert normalise_phone(raw) == e164


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+34 612 34 56 78", "+34612345678"),
        ("0034 612 345 678", "+34612345678"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_international_phone_is_stored_in_e164(raw, e164):
    assert normalise_phone(raw) == e164


def test_national_phone_is_read_in_the_given_region():
    assert normalise_phone("020 7946 0958", region="GB") == "+442079460958"


@pytest.mark.parametrize("raw", ["12345", "612 34 56 78 9", "+34 112 34 56 78", "not a phone", "+"])
def test_invalid_phone_is_refused(raw):
    with pytest.raises(IdentityError) as error:
        normalise_phone(raw)

    assert (error.value.field, error.value.code) == ("phone", "invalid")


def test_empty_phone_is_required():
    with pytest.raises(IdentityError) as error:
        normalise_phone(" ")

    assert (error.value.field, error.value.code) == ("phone", "required")


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("Ana.Garcia@Example.COM", "ana.garcia@example.com"),
        ("  ana.garcia@example.com ", "ana.garcia@example.com"),
        ("JOSÉ@Correo.ES", "josé@correo.es"),
    ],
)
def test_email_is_stored_lower_case(raw, normalised):
    assert normalise_email(raw) == normalised


@pytest.mark.parametrize(
    "raw", ["ana.garcia", "ana@", "@example.com", "ana garcia@example.com", "ana@example"]
)
def test_invalid_email_is_refused(raw):
    with pytest.raises(IdentityError) as error:
        normalise_email(raw)

    assert (error.value.field, error.value.code) == ("email", "invalid")


def test_empty_email_is_required():
    with pytest.raises(IdentityError) as error:
        normalise_email("")

    assert (error.value.field, error.value.code) == ("email", "required")

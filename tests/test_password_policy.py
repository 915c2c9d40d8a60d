"""The password policy of the Spanish guide, each rule alone, plus our additions."""

import pytest

from backoffice.passwords import common_passwords, password_problems

GOOD = "Bastante-Segura-42"


def test_a_password_meeting_every_rule_has_no_problems():
    assert password_problems(GOOD) == []


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("Abc-def-12", "min_length"),
        ("Abcdefghij-1" + "xyz" * 39, "max_length"),
        ("ABCDEFGHIJ-1z", "lowercase"),
        ("abcdefghij-12", "uppercase"),
        ("Abcdefghij-xy", "digit"),
        ("Abcdefghij12", "special"),
        ("Abcdeffffg-12", "repeated_char"),
    ],
)
def test_each_rule_is_reported_alone_by_its_code(password, code):
    assert password_problems(password) == [code]


def test_three_repeated_characters_are_allowed():
    assert password_problems("Abcdefffgh-12") == []


def test_exactly_twelve_characters_is_enough():
    assert password_problems("Abcdefgh-123") == []


def test_exactly_three_lower_case_letters_is_enough():
    assert password_problems("ABCDEFabc-123") == []


def test_any_non_alphanumeric_character_counts_as_special():
    assert password_problems("Abcdefghij 12") == []
    assert password_problems("Abcdefghij€12") == []


def test_every_failed_rule_is_reported_at_once():
    assert password_problems("aaaa") == ["min_length", "uppercase", "digit", "special", "repeated_char"]


def test_password_must_not_contain_the_email_local_part():
    assert password_problems("Maria.Garcia-2026", email="maria.garcia@correo.example") == [
        "contains_identity"
    ]


def test_password_must_not_contain_the_tax_id():
    assert password_problems("Clave-12345678Z", tax_id="12345678Z") == ["contains_identity"]


def test_identity_check_ignores_case():
    assert password_problems("xyMARIAGARCIAz-1", email="mariagarcia@correo.example") == ["contains_identity"]


def test_the_ten_thousand_most_common_passwords_are_refused():
    assert len(common_passwords()) == 10_000
    assert "common" in password_problems("qwerty123456")
    assert "common" in password_problems("QWERTY123456")

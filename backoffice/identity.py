"""Identity data rules: the one place that says what a valid tax ID, phone and email look like.

Every flow (imports, registration, e-Customer matching, representative applications) normalises
through these functions, so a value typed by a customer and the same value imported from the
core insurance system always compare equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from stdnum.es import cif, dni, nie, nif
from stdnum.exceptions import ValidationError

TaxIdKind = Literal["nif", "nie", "cif"]
PERSON_KINDS: frozenset[str] = frozenset({"nif", "nie"})

_TAX_ID_SEPARATORS = re.compile(r"[\s.\-]+")


class IdentityError(ValueError):
    """A value broke an identity rule; `field` and `code` ("required" or "invalid") are stable for callers."""

    def __init__(self, field: str, code: str) -> None:
        super().__init__(f"{field}: {code}")
        self.field = field
        self.code = code


@dataclass(frozen=True)
class TaxId:
    """A validated Spanish tax ID: `value` is the stored form, `kind` says which register it is from."""

    value: str
    kind: TaxIdKind

    @property
    def is_person(self) -> bool:
        """NIF and NIE identify people; a CIF identifies a company or other legal entity."""
        return self.kind in PERSON_KINDS

    def __str__(self) -> str:
        return self.value


def _required(value: str | None, field: str) -> str:
    if value is None or not value.strip():
        raise IdentityError(field, "required")
    return value.strip()


def normalise_tax_id(value: str) -> TaxId:
    """Validate a NIF/DNI, NIE or CIF and return it without spaces, dashes or dots, upper-cased.

    The kind is decided by the first character, not by `stdnum.es.nif.is_valid`, because that
    function accepts NIEs and CIFs too and so cannot tell a person from a company:
    a digit, K, L or M is a NIF (people; K/L/M use the DNI check letter), X/Y/Z is a NIE
    (foreign people), and any other letter is a CIF (companies and other entities).
    """
    compact = _TAX_ID_SEPARATORS.sub("", _required(value, "tax_id")).upper()
    try:
        if compact[:1].isdigit():
            return TaxId(dni.validate(compact), "nif")
        if compact[:1] in ("K", "L", "M"):
            return TaxId(nif.validate(compact), "nif")
        if compact[:1] in ("X", "Y", "Z"):
            return TaxId(nie.validate(compact), "nie")
        return TaxId(cif.validate(compact), "cif")
    except ValidationError as exc:
        raise IdentityError("tax_id", "invalid") from exc


def normalise_phone(value: str, region: str = "ES") -> str:
    """Parse a national or international number and return it in E.164, the one stored form.

    National numbers are read in `region` (Spain by default); the number must be a real,
    assignable number for its country, not only the right length.
    """
    text = _required(value, "phone")
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise IdentityError("phone", "invalid") from exc
    if not phonenumbers.is_valid_number(number):
        raise IdentityError("phone", "invalid")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(value: str) -> str:
    """Check the syntax (no DNS look-up: imports and tests must not touch the network) and
    return the address lower-cased, since we compare emails case-insensitively."""
    text = _required(value, "email")
    try:
        result = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise IdentityError("email", "invalid") from exc
    return result.normalized.lower()


def mask_phone(e164: str) -> str:
    """`+34 6** *** *12`: enough for the customer to recognise the number, no more."""
    number = phonenumbers.parse(e164)
    national = str(number.national_number)
    masked = national[0] + "*" * (len(national) - 3) + national[-2:]
    groups = " ".join(masked[i : i + 3] for i in range(0, len(masked), 3))
    return f"+{number.country_code} {groups}"

"""Password hashing (argon2id, OWASP parameters) and the password policy shared by every flow."""

from __future__ import annotations

import re
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)

MIN_LENGTH = 12
MAX_LENGTH = 128
MIN_LOWERCASE = 3
MAX_RUN = 3
COMMON_PASSWORDS_COUNT = 10_000
_RUN_TOO_LONG = re.compile(rf"(.)\1{{{MAX_RUN},}}", re.DOTALL)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


_DUMMY_HASH: list[str] = []


def spend_a_verification(password: str) -> None:
    """Verify against a throwaway hash, so an unknown username costs the same time as a known one."""
    if not _DUMMY_HASH:
        _DUMMY_HASH.append(hash_password("not a real password, only a timing decoy"))
    verify_password(_DUMMY_HASH[0], password)


@cache
def common_passwords() -> frozenset[str]:
    """The 10,000 most common passwords (zxcvbn's frequency list, most common first), as OWASP
    ASVS asks us to refuse them."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(FREQUENCY_LISTS["passwords"][:COMMON_PASSWORDS_COUNT])


def password_problems(password: str, *, email: str | None = None, tax_id: str | None = None) -> list[str]:
    """Every rule the password breaks, by stable code, in the order the policy lists them."""
    problems = []
    if len(password) < MIN_LENGTH:
        problems.append("min_length")
    if len(password) > MAX_LENGTH:
        problems.append("max_length")
    if sum(1 for c in password if c.islower()) < MIN_LOWERCASE:
        problems.append("lowercase")
    if not any(c.isupper() for c in password):
        problems.append("uppercase")
    if not any(c.isdigit() for c in password):
        problems.append("digit")
    if all(c.isalnum() for c in password):
        problems.append("special")
    if _RUN_TOO_LONG.search(password):
        problems.append("repeated_char")
    folded = password.casefold()
    identities = [email.split("@", 1)[0] if email else None, tax_id]
    if any(identity and len(identity) >= 3 and identity.casefold() in folded for identity in identities):
        problems.append("contains_identity")
    if folded in common_passwords():
        problems.append("common")
    return problems

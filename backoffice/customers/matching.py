"""The matching engine: which policyholder record is this portal account?

Candidates are found by blocking keys, so no query ever scans the whole table:

* tax ID (the account's username for e-Customers, or the one declared in the profile);
* the email, compared as a canonical local part (lower case, plus-tag and dots removed) and
  the exact domain; on PostgreSQL also a pg_trgm search of the local part *within the same
  domain* (trigrams over whole addresses degenerate on shared domains such as gmail.com);
* the phone in E.164;
* the folded name (`name_key`): on PostgreSQL the pg_trgm index (`name_key % :q`, ordered by
  `<->`), on SQLite the exact folded key (accents, case and token order do not matter there
  either, but typos do).

Each candidate is then scored field by field and the evidence kept, so a clerk sees *why*:
which fields agree and how similar the names are. The score is a logistic of summed
per-field weights (agreement adds, contradiction subtracts), in 0..1.

Linking automatically is deliberately narrow. Only the account's email is proven (the
customer clicked the link we sent), and its phone once the customer typed back an SMS code
sent to it (`customers/phone.py`); its name, an unproven phone and the declared tax ID are
typed by the customer and anyone can type someone else's. So a candidate is *sure* only when
nothing contradicts it, its score reaches `MATCH_AUTO_LINK_SCORE`, and one of these proofs holds:

* the verified email is the record's mailbox;
* unless `MATCH_LINK_WITH_PROVEN_PHONE` is off, the proven phone is the record's and the
  typed name agrees (families share numbers: the name tells them apart);
* the verified email is one slip away from the record's (`one_edit_apart`: the record was
  mistyped in the core system) and two of the typed name, phone and tax ID agree;
* unless `MATCH_LINK_WITHOUT_EMAIL` is off, all three typed identifiers (tax ID, phone and
  name) agree: the knowledge the e-Customer sign-up asks for.

The account is linked only when exactly one candidate is sure, no
other candidate has the same email (families share addresses: that is a case for a clerk) and
its odds are at least `MATCH_MARGIN` times the runner-up's. Everything else opens (or refreshes) an
association case with the ranked candidates and their evidence.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from flask import current_app, has_app_context
from rapidfuzz import fuzz
from rapidfuzz.distance import OSA
from sqlalchemy import Select, bindparam, event, func, literal, select, union_all

from backoffice.audit import Actor
from backoffice.customers.models import (
    AssociationCase,
    AssociationStatus,
    CaseStatus,
    CustomerAccount,
    Policyholder,
)
from backoffice.db import utcnow
from backoffice.extensions import db

SYSTEM = Actor.system("association")
# Case reasons the engine writes; a case another flow opened (e.g. a representative whose
# company has no record) is the clerk's, and the engine leaves that account alone.
ENGINE_REASONS = frozenset({"no_match", "several_matches", "not_sure"})
OPEN_CASE_STATUSES = (CaseStatus.OPEN, CaseStatus.WAITING_CUSTOMER)
KEY_LENGTH = 255

# Settings (percentages, so they fit the integer settings): see backoffice/config.py.
DEFAULT_SETTINGS = {
    "MATCH_AUTO_LINK_SCORE": 95,  # a candidate's score must reach this to be sure
    "MATCH_MARGIN": 50,  # ... and be this many times likelier (odds ratio) than the runner-up
    "MATCH_TRGM_LIMIT": 45,  # pg_trgm `%` threshold for the name and email-local searches
    "MATCH_LINK_WITHOUT_EMAIL": True,  # tax ID + phone + name all agreeing may stand in for the email
    "MATCH_LINK_WITH_PROVEN_PHONE": True,  # a phone proven by SMS + name may stand in for the email
}

# Per-field weights (log-odds points). The score is the logistic of their sum minus OFFSET:
# a verified email alone gives ~0.99, name + phone alone ~0.99 (but never sure: no email).
W_TAX_AGREE = 8.0
W_TAX_DISAGREE = -10.0  # both are checksummed IDs: different ones are different people
W_EMAIL_EXACT = 10.0
W_EMAIL_FUZZY = 6.0  # scaled by how close the local parts are (same domain only)
EMAIL_FUZZY_FLOOR = 0.75
W_PHONE_AGREE = 4.0
W_PHONE_PROVEN = W_EMAIL_EXACT  # the customer read an SMS sent to it: as good as the clicked email link
W_PHONE_DISAGREE = -1.0  # people change numbers: only a weak hint
W_NAME_AGREE = 5.0
W_NAME_CONTRADICT = -6.0
NAME_AGREES = 0.8  # folded similarity from which the names are said to agree
NAME_NEUTRAL = 0.75  # from here up the name adds weight; below it subtracts
NAME_CONTRADICTS = 0.6  # at or below this the names are different people
OFFSET = 5.0

MIN_NEAR_LOCAL = 6  # a local part this long or longer may be one slip from the record's

BLOCK_LIMIT = 10  # rows per blocking key
PHONE_BLOCK_LIMIT = 20  # a shared (family, office) phone can be on many records

# Providers that ignore dots in the local part (the canonical key drops them everywhere, for
# blocking; agreement is only claimed where the mailbox is really the same).
DOTLESS_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


# Keys ---------------------------------------------------------------------------------------


def fold_name(name: str | None) -> str | None:
    """Case- and accent-folded name with its tokens sorted: `"Peña García, José"` and
    `"jose GARCIA pena"` both give `"garcia jose pena"`. Letters only (NFKD, combining marks
    dropped, casefolded, anything else a separator), so token order and punctuation never matter."""
    if not name:
        return None
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()
    plain = "".join(char if char.isalpha() else " " for char in plain)
    tokens = sorted(plain.split())
    return " ".join(tokens)[:KEY_LENGTH] or None


def email_parts(email: str | None) -> tuple[str | None, str | None]:
    """(canonical local part, domain): lower case, the `+tag` dropped, dots removed from the
    local part. The domain is only lower-cased: it is compared exactly."""
    if not email or "@" not in email:
        return None, None
    local, _, domain = email.strip().lower().rpartition("@")
    local = local.split("+", 1)[0].replace(".", "")
    return (local[:KEY_LENGTH] or None), (domain[:KEY_LENGTH] or None)


def same_mailbox(a: str, b: str) -> bool:
    """Whether two addresses with the same canonical key reach the same mailbox: dots in the
    local part are ignored only by providers known to ignore them (Gmail); elsewhere
    `ana.gil@` and `anagil@` are two people. Case and plus-tags never matter."""
    a_local, _, a_domain = a.strip().lower().rpartition("@")
    b_local, _, b_domain = b.strip().lower().rpartition("@")
    if a_domain != b_domain:
        return False
    a_local, b_local = a_local.split("+", 1)[0], b_local.split("+", 1)[0]
    if a_domain in DOTLESS_DOMAINS:
        return a_local.replace(".", "") == b_local.replace(".", "")
    return a_local == b_local


def holder_keys(name: str | None, email: str | None, phone: str | None = None) -> dict[str, str | None]:
    """The blocking keys stored on a policyholder: `name_key`, `email_local`, `email_domain`.

    `phone` is accepted so callers can pass a holder's identity fields in one go; it is
    already stored in E.164 and is its own key."""
    local, domain = email_parts(email)
    return {"name_key": fold_name(name), "email_local": local, "email_domain": domain}


def fill_keys(holder: Policyholder) -> None:
    """Set the holder's keys from its name and email (only the ones that changed)."""
    for name, value in holder_keys(holder.name, holder.email, holder.phone).items():
        if getattr(holder, name) != value:
            setattr(holder, name, value)


@event.listens_for(Policyholder, "before_insert")
@event.listens_for(Policyholder, "before_update")
def _keep_keys_in_step(_mapper: Any, _connection: Any, holder: Policyholder) -> None:
    """Whoever writes a holder through the ORM (importer, clerk, tests), the keys follow its
    name and email. Rows loaded by raw SQL are filled by the nightly backfill."""
    fill_keys(holder)


def account_name(account: CustomerAccount) -> str | None:
    parts = [part for part in (account.first_name, account.last_name) if part]
    return " ".join(parts) or None


def account_tax_id(account: CustomerAccount) -> str | None:
    return account.tax_id or account.declared_tax_id


# Evidence -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldEvidence:
    field: str  # "tax_id", "email", "phone", "name"
    account_value: str | None
    holder_value: str | None
    agrees: bool | None  # None when either side is missing
    similarity: float  # 0..1 (1 for exact); for name the folded token-order-free ratio

    def as_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "account_value": self.account_value,
            "holder_value": self.holder_value,
            "agrees": self.agrees,
            "similarity": round(self.similarity, 3),
        }


@dataclass(frozen=True)
class Candidate:
    policyholder_id: int
    score: float  # 0..1
    sure: bool  # would be auto-linked if it were the only sure one
    evidence: tuple[FieldEvidence, ...]
    # The account's own details rule this holder out: another tax ID, or a typed name token
    # with no counterpart in the holder's name (another first name).
    contradicted: bool = False

    def as_json(self) -> dict[str, Any]:
        """What goes into `AssociationCase.evidence` (one entry per ranked candidate)."""
        return {
            "policyholder_id": self.policyholder_id,
            "score": round(self.score, 4),
            "sure": self.sure,
            "contradicted": self.contradicted,
            "evidence": [item.as_json() for item in self.evidence],
        }

    def field(self, name: str) -> FieldEvidence | None:
        return next((item for item in self.evidence if item.field == name), None)

    @property
    def email_agrees(self) -> bool:
        item = self.field("email")
        return bool(item and item.agrees)


def _name_parts(account_key: str, holder_key: str) -> tuple[float, float]:
    """(worst, overall): how well the worst-matched typed token is found in the holder's name,
    and the average of rapidfuzz's token-set and token-sort ratios, both 0..100.

    Typed tokens are paired one-to-one with the holder's (best pairs first), so a mistyped
    first name cannot hide behind a shared surname ("Paericia García Sanz" is not "José García
    Sanz" just because "paericia" resembles "garcia"). Typed tokens left over when the holder's
    name is shorter are compared with any of its tokens."""
    typed_tokens, holder_tokens = account_key.split(), holder_key.split()
    pairs = sorted(
        (
            (fuzz.ratio(typed, other), i, j)
            for i, typed in enumerate(typed_tokens)
            for j, other in enumerate(holder_tokens)
        ),
        reverse=True,
    )
    best: dict[int, float] = {}
    taken: set[int] = set()
    for ratio, i, j in pairs:
        if i not in best and j not in taken:
            best[i] = ratio
            taken.add(j)
    for i, typed in enumerate(typed_tokens):
        best.setdefault(i, max(fuzz.ratio(typed, other) for other in holder_tokens))
    worst = min(best.values())
    overall = (fuzz.token_set_ratio(account_key, holder_key) + fuzz.ratio(account_key, holder_key)) / 2
    return worst, overall


def name_similarity(account_key: str | None, holder_key: str | None) -> float:
    """Folded, token-order-free similarity of two folded names (`fold_name`), 0..1.

    The average of rapidfuzz's token-set and token-sort ratios (a missing second surname
    costs a little, a swapped order nothing), capped by the worst-matched token the customer
    typed: "Ana García López" against "Juan García López" shares two surnames but not the
    first name, and families share surnames."""
    if not account_key or not holder_key:
        return 0.0
    worst, overall = _name_parts(account_key, holder_key)
    return min(worst, overall) / 100


def one_edit_apart(account_email: str | None, holder_email: str | None) -> bool:
    """Whether the record's address is the verified one with a single slip (a character
    missing, added, swapped or wrong, or a dot) in the local part and the same domain: the
    shape of a typing error in the core system. Short local parts are excluded, where one
    character makes another person's address."""
    if not account_email or not holder_email or "@" not in account_email or "@" not in holder_email:
        return False
    a_local, _, a_domain = account_email.strip().lower().rpartition("@")
    h_local, _, h_domain = holder_email.strip().lower().rpartition("@")
    a_local, h_local = a_local.split("+", 1)[0], h_local.split("+", 1)[0]
    if a_domain != h_domain or min(len(a_local), len(h_local)) < MIN_NEAR_LOCAL:
        return False
    return OSA.distance(a_local, h_local) <= 1


def _local_similarity(a: str | None, b: str | None) -> float:
    if not a or not b:
        return 0.0
    return fuzz.ratio(a, b) / 100


def _evidence(account: CustomerAccount, holder: Policyholder) -> tuple[list[FieldEvidence], float, bool]:
    """The four fields' evidence, the summed weight, and whether anything contradicts."""
    items: list[FieldEvidence] = []
    weight = 0.0
    contradiction = False

    tax = account_tax_id(account)
    if tax and holder.tax_id:
        agrees = tax == holder.tax_id
        weight += W_TAX_AGREE if agrees else W_TAX_DISAGREE
        contradiction |= not agrees
        items.append(FieldEvidence("tax_id", tax, holder.tax_id, agrees, 1.0 if agrees else 0.0))
    else:
        items.append(FieldEvidence("tax_id", tax, holder.tax_id, None, 0.0))

    a_local, a_domain = email_parts(account.email)
    h_local, h_domain = email_parts(holder.email)
    if a_local and h_local:
        exact = (a_local, a_domain) == (h_local, h_domain) and same_mailbox(account.email, holder.email)
        similarity = 1.0 if exact else (_local_similarity(a_local, h_local) if a_domain == h_domain else 0.0)
        if exact:
            weight += W_EMAIL_EXACT
        elif similarity >= EMAIL_FUZZY_FLOOR:
            weight += W_EMAIL_FUZZY * (similarity - EMAIL_FUZZY_FLOOR) / (1 - EMAIL_FUZZY_FLOOR)
        items.append(FieldEvidence("email", account.email, holder.email, exact, similarity))
    else:
        items.append(FieldEvidence("email", account.email, holder.email, None, 0.0))

    if account.phone and holder.phone:
        agrees = account.phone == holder.phone
        if agrees:
            weight += W_PHONE_PROVEN if account.phone_verified else W_PHONE_AGREE
        else:
            weight += W_PHONE_DISAGREE
        items.append(FieldEvidence("phone", account.phone, holder.phone, agrees, 1.0 if agrees else 0.0))
    else:
        items.append(FieldEvidence("phone", account.phone, holder.phone, None, 0.0))

    typed_name = account_name(account)
    typed_key, holder_key = fold_name(typed_name), fold_name(holder.name)
    if typed_key and holder_key:
        worst, overall = _name_parts(typed_key, holder_key)
        similarity = min(worst, overall) / 100
        weight += _name_weight(similarity)
        # A typed token with no counterpart (another first name) is another person; a missing
        # token (second surname left out) is not.
        contradiction |= worst / 100 <= NAME_CONTRADICTS
        items.append(FieldEvidence("name", typed_name, holder.name, similarity >= NAME_AGREES, similarity))
    else:
        items.append(FieldEvidence("name", typed_name, holder.name, None, 0.0))
    return items, weight, contradiction


def _name_weight(similarity: float) -> float:
    """Piecewise linear: contradiction at or below NAME_CONTRADICTS, neutral at NAME_NEUTRAL,
    full agreement from 0.95."""
    if similarity >= 0.95:
        return W_NAME_AGREE
    if similarity >= NAME_NEUTRAL:
        return W_NAME_AGREE * (similarity - NAME_NEUTRAL) / (0.95 - NAME_NEUTRAL)
    if similarity > NAME_CONTRADICTS:
        return W_NAME_CONTRADICT * (NAME_NEUTRAL - similarity) / (NAME_NEUTRAL - NAME_CONTRADICTS)
    return W_NAME_CONTRADICT


def _setting(name: str) -> int:
    if has_app_context():
        return int(current_app.config.get(name, DEFAULT_SETTINGS[name]))
    return int(DEFAULT_SETTINGS[name])


def explain(account: CustomerAccount, holder: Policyholder) -> Candidate:
    """Score one account/holder pair, with the evidence (the clerk page shows it for any holder
    a clerk looks up, not only for the engine's candidates)."""
    items, weight, contradiction = _evidence(account, holder)
    score = 1 / (1 + math.exp(-(weight - OFFSET)))
    agrees = {item.field for item in items if item.agrees}
    proven = (
        "email" in agrees
        or (
            bool(_setting("MATCH_LINK_WITH_PROVEN_PHONE"))
            and account.phone_verified
            and {"phone", "name"} <= agrees
        )
        or (one_edit_apart(account.email, holder.email) and len(agrees & {"name", "phone", "tax_id"}) >= 2)
        or (bool(_setting("MATCH_LINK_WITHOUT_EMAIL")) and {"tax_id", "phone", "name"} <= agrees)
    )
    sure = proven and not contradiction and score * 100 >= _setting("MATCH_AUTO_LINK_SCORE")
    return Candidate(holder.id, score, sure, tuple(items), contradiction)


# Candidates ---------------------------------------------------------------------------------


def _is_postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


class Block(NamedTuple):
    """One blocking look-up: a query for holder ids and how many rows it may bring."""

    query: Select
    limit: int
    identifying: bool = True  # holders behind its limit could share a tax ID, email or phone


def _exact_blocks(account: CustomerAccount, postgres: bool) -> list[Block]:
    """The cheap look-ups, each index-backed and limited. Every holder that could be a *sure*
    match or share the account's email is among them, unless an identifying look-up came back
    full."""
    ph = Policyholder
    blocks: list[Block] = []
    tax_ids = {value for value in (account.tax_id, account.declared_tax_id) if value}
    if tax_ids:
        blocks.append(Block(select(ph.id).where(ph.tax_id.in_(tax_ids)), BLOCK_LIMIT))
    local, domain = email_parts(account.email)
    if account.email:
        blocks.append(Block(select(ph.id).where(ph.email == account.email.lower()), BLOCK_LIMIT))
    if local and domain:
        same_local = select(ph.id).where(ph.email_domain == domain, ph.email_local == local)
        blocks.append(Block(same_local, BLOCK_LIMIT))
        if not postgres and len(local) >= 4:
            # SQLite: no trigrams; same domain and same first four characters (index range).
            prefix = select(ph.id).where(
                ph.email_domain == domain,
                ph.email_local >= local[:4],
                ph.email_local < local[:4] + "\uffff",
                ph.email_local != local,
            )
            blocks.append(Block(prefix, BLOCK_LIMIT, identifying=False))
    if account.phone:
        blocks.append(Block(select(ph.id).where(ph.phone == account.phone), PHONE_BLOCK_LIMIT))
    name_key = fold_name(account_name(account))
    if name_key:
        # A common name fills this look-up; the holders behind its limit agree on the name
        # only, which `_unseen_holder_log_odds` already allows for.
        blocks.append(Block(select(ph.id).where(ph.name_key == name_key), BLOCK_LIMIT, identifying=False))
    return blocks


def _fuzzy_blocks(account: CustomerAccount) -> list[Block]:
    """PostgreSQL only: the nearest email local parts within the same domain, and the nearest
    names, by trigram distance (typos, a missing surname, a slip in the record's address).
    The costly look-ups: on a million holders, tens to hundreds of milliseconds each. Neither
    can find a *sure* match the exact look-ups miss: every proof needs an exact email, or a
    phone or tax ID that agrees."""
    ph = Policyholder
    blocks: list[Block] = []
    local, domain = email_parts(account.email)
    if local and domain:
        near_local = (
            select(ph.id)
            .where(ph.email_local.op("%")(local), ph.email_domain == domain)
            .order_by(ph.email_local.op("<->")(local))
        )
        blocks.append(Block(near_local, BLOCK_LIMIT, identifying=False))
    name_key = fold_name(account_name(account))
    if name_key:
        near_name = (
            select(ph.id).where(ph.name_key.op("%")(name_key)).order_by(ph.name_key.op("<->")(name_key))
        )
        blocks.append(Block(near_name, BLOCK_LIMIT, identifying=False))
    return blocks


def _run_blocks(blocks: list[Block]) -> tuple[set[int], bool]:
    """All look-ups in one round trip: the holder ids, and whether an identifying look-up came
    back full (more holders sharing a tax ID, email or phone may lie behind its limit)."""
    if not blocks:
        return set(), False
    # Each part is a subquery so its LIMIT / ORDER BY stay its own on both backends; the tag
    # says which look-up a row came from.
    parts = [
        select(literal(number).label("block"), query.limit(limit).subquery().c.id)
        for number, (query, limit, _identifying) in enumerate(blocks)
    ]
    rows = db.session.execute(union_all(*parts) if len(parts) > 1 else parts[0]).all()
    per_block = Counter(row.block for row in rows)
    full = any(block.identifying and per_block[number] >= block.limit for number, block in enumerate(blocks))
    return {row.id for row in rows}, full


def _set_trgm_limits() -> None:
    """pg_trgm's `%` thresholds, for this transaction only."""
    limit = str(_setting("MATCH_TRGM_LIMIT") / 100)
    db.session.execute(select(func.set_config("pg_trgm.similarity_threshold", literal(limit), True)))


def _load(ids: Iterable[int]) -> list[Policyholder]:
    ids = set(ids)
    if not ids:
        return []
    return list(db.session.execute(select(Policyholder).where(Policyholder.id.in_(ids))).scalars())


def candidate_holders(account: CustomerAccount) -> list[Policyholder]:
    """Every holder the blocking keys bring up, fuzzy name search included (unscored)."""
    postgres = _is_postgres()
    blocks = _exact_blocks(account, postgres)
    if postgres:
        _set_trgm_limits()
        blocks.extend(_fuzzy_blocks(account))
    return _load(_run_blocks(blocks)[0])


def rank(account: CustomerAccount, holders: Iterable[Policyholder]) -> list[Candidate]:
    """Score every holder and sort best first (ties by id, so the order is stable)."""
    scored = [explain(account, holder) for holder in holders]
    return sorted(scored, key=lambda candidate: (-candidate.score, candidate.policyholder_id))


def candidates(account: CustomerAccount, *, limit: int = 5) -> list[Candidate]:
    """The best `limit` candidates for the account, ranked best first, with their evidence."""
    return rank(account, candidate_holders(account))[:limit]


@dataclass(frozen=True)
class Decision:
    """What the engine concluded: the holder to link (if any) and, otherwise, the case reason."""

    link_to: int | None
    reason: str | None  # "no_match", "several_matches", "not_sure"


def _log_odds(score: float) -> float:
    score = min(max(score, 1e-12), 1 - 1e-12)
    return math.log(score / (1 - score))


def decide(ranked: list[Candidate]) -> Decision:
    """Link only to a unique sure candidate that shares its email with no other candidate and
    is clear of the runner-up by the margin."""
    if not ranked:
        return Decision(None, "no_match")
    sure = [candidate for candidate in ranked if candidate.sure]
    # Relatives sharing an address are ambiguous unless the account's own details rule them
    # out (another first name, another tax ID): then they are not candidates at all.
    same_email = [c for c in ranked if c.email_agrees and not c.contradicted]
    if len(sure) > 1 or len(same_email) > 1:
        return Decision(None, "several_matches")
    if not sure:
        return Decision(None, "not_sure")
    best = sure[0]
    runner_up = max((c.score for c in ranked if c is not best), default=None)
    if runner_up is not None and _log_odds(best.score) - _log_odds(runner_up) < math.log(
        _setting("MATCH_MARGIN")
    ):
        return Decision(None, "several_matches")
    return Decision(best.policyholder_id, None)


def _unseen_holder_log_odds(account: CustomerAccount) -> float:
    """The most a holder the exact look-ups did not bring up can score, as log-odds: it shares
    no tax ID, email or phone with the account, so at best its name agrees fully (if the account
    typed one) and its email is the closest fuzzy one."""
    return (W_NAME_AGREE if fold_name(account_name(account)) else 0.0) + W_EMAIL_FUZZY - OFFSET


def assess(account: CustomerAccount) -> tuple[list[Candidate], Decision]:
    """The ranked candidates and the decision, searching names fuzzily only when it matters.

    The exact look-ups come first. When they already give a link that no unseen holder could
    overturn (`_unseen_holder_log_odds`, and no identifying look-up came back full), the costly trigram
    searches are skipped; otherwise it runs and the decision is taken again on everything.
    The result is the decision `decide(rank(account, candidate_holders(account)))` gives."""
    postgres = _is_postgres()
    if postgres:
        _set_trgm_limits()
    seen, full = _run_blocks(_exact_blocks(account, postgres))
    holders = _load(seen)
    ranked = rank(account, holders)
    decision = decide(ranked)
    fuzzy = _fuzzy_blocks(account) if postgres else []
    if not fuzzy:
        return ranked, decision
    if decision.link_to is not None and not full:
        best = next(c for c in ranked if c.policyholder_id == decision.link_to)
        if _log_odds(best.score) - _unseen_holder_log_odds(account) >= math.log(_setting("MATCH_MARGIN")):
            return ranked, decision
    more = _run_blocks(fuzzy)[0] - seen
    if not more:
        return ranked, decision
    ranked = rank(account, [*holders, *_load(more)])
    return ranked, decide(ranked)


# Acting on it -------------------------------------------------------------------------------


def open_case_for(account: CustomerAccount) -> AssociationCase | None:
    """The account's case a clerk is still working on (open or waiting for the customer)."""
    return db.session.execute(
        select(AssociationCase)
        .where(AssociationCase.account_id == account.id, AssociationCase.status.in_(OPEN_CASE_STATUSES))
        .order_by(AssociationCase.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def _rejected_ids(account: CustomerAccount) -> set[int] | None:
    """Holders a clerk already ruled out for this account (cases closed as no match), or None
    when no clerk has closed a case as no match."""
    rows = db.session.execute(
        select(AssociationCase.candidate_ids).where(
            AssociationCase.account_id == account.id, AssociationCase.status == CaseStatus.NO_MATCH
        )
    ).scalars()
    rejected: set[int] | None = None
    for ids in rows:
        rejected = (rejected or set()) | {int(value) for value in ids or []}
    return rejected


def match_account(
    account: CustomerAccount, *, actor: Actor, now: datetime | None = None
) -> AssociationStatus:
    """Link the account to its policyholder, or open (or refresh) its association case.

    Idempotent: an account already linked is left alone; an open case is refreshed in place
    (and audited only if its candidates or reason changed), never duplicated. An account whose
    email is not verified is never matched: the email is the only proof we hold. After a clerk
    closed a case as "no match", a new case is opened only for holders not already ruled out.
    Linking writes `customer.linked` (by `actor`) and closes an open case. The caller commits.
    """
    from backoffice.customers.association import close_case_linked, link, open_case, refresh_case

    if account.association_status == AssociationStatus.LINKED or account.email_verified_at is None:
        return account.association_status
    if _is_postgres():  # one matcher per account at a time (verification vs nightly run)
        db.session.execute(
            select(CustomerAccount.id).where(CustomerAccount.id == account.id).with_for_update()
        )
    now = now or utcnow()
    case = open_case_for(account)
    if case is not None and case.reason not in ENGINE_REASONS:
        return account.association_status
    ranked, decision = assess(account)
    if decision.link_to is not None:
        holder = db.session.get(Policyholder, decision.link_to)
        link(account, holder, actor=actor, now=now)
        if case is not None:
            close_case_linked(case, holder, actor=actor, now=now)
        return account.association_status
    top = ranked[:5]
    if case is not None:
        refresh_case(case, decision.reason, top, actor=actor)
        account.association_status = AssociationStatus.PENDING
    else:
        rejected = _rejected_ids(account)
        if rejected is not None and not {c.policyholder_id for c in top} - rejected:
            return account.association_status  # nothing new since the clerk's "no match"
        open_case(account, decision.reason, top, actor=actor, now=now)
    return account.association_status


def rematch_pending(*, now: datetime | None = None, limit: int | None = None) -> int:
    """Re-match verified accounts that are not linked: status `pending` (their open case is
    refreshed, or closed when a sure match appears) and status `none` (e.g. after a clerk's
    "no match", in case a new import brought their record). Oldest accounts first; returns how
    many accounts were re-matched. Called after each import and nightly; the caller commits."""
    now = now or utcnow()
    query = (
        select(CustomerAccount.id)
        .where(
            CustomerAccount.association_status.in_([AssociationStatus.NONE, AssociationStatus.PENDING]),
            CustomerAccount.email_verified_at.is_not(None),
        )
        .order_by(CustomerAccount.id)
    )
    if limit is not None:
        query = query.limit(limit)
    ids = list(db.session.execute(query).scalars())
    for account_id in ids:
        account = db.session.get(CustomerAccount, account_id)
        match_account(account, actor=SYSTEM, now=now)
    db.session.flush()
    return len(ids)


def backfill_keys(*, batch_size: int = 1000) -> int:
    """Fill the blocking keys of holders that have none (rows loaded around the ORM); returns
    how many were filled. Batched by id so memory stays flat on millions of rows."""
    filled = 0
    last_id = 0
    while True:
        rows = db.session.execute(
            select(Policyholder.id, Policyholder.name, Policyholder.email, Policyholder.phone)
            .where(Policyholder.name_key.is_(None), Policyholder.id > last_id)
            .order_by(Policyholder.id)
            .limit(batch_size)
        ).all()
        if not rows:
            return filled
        db.session.execute(
            Policyholder.__table__.update()
            .where(Policyholder.__table__.c.id == bindparam("holder_id"))
            .values(
                name_key=bindparam("name_key"),
                email_local=bindparam("email_local"),
                email_domain=bindparam("email_domain"),
            ),
            [{"holder_id": row.id, **holder_keys(row.name, row.email, row.phone)} for row in rows],
        )
        filled += len(rows)
        last_id = rows[-1].id

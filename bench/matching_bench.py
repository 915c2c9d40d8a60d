"""Benchmark the matching engine's quality (and, on PostgreSQL, its speed) on synthetic data.

    python bench/matching_bench.py [--holders 200000] [--accounts 20000] [--seed 1]
                                   [--database-url postgresql://...] [--speed [--speed-holders 1000000]]

The database is a fresh SQLite file by default. With `--database-url` the public schema of
THAT database is dropped and rebuilt by the migrations: give it a private, throw-away database.

Population (seeded, deterministic), with the truth kept aside:

* holders: Spanish people (valid DNI, first name + two surnames drawn from skewed name lists,
  so homonyms happen; 20 % stored the legacy way, "GARCIA LOPEZ, MARIA" upper case without
  accents), 3 % companies (CIF). 92 % have an email, 85 % a mobile. 6 % are relatives of an
  earlier holder: same surnames, and half share that holder's email, 60 % a landline.
* accounts: 90 % belong to a person holder (people whose record has no email register less
  often: weight 0.3), 10 % to nobody (6 % of those use a relative's email that is on record).
  Email of a holder's account: 88 % the mailbox on record, written differently (case changes;
  on gmail dots moved; plus-tags on gmail/outlook), 4 % one character different from the
  record (a typo in the core system), 8 % another address. Profile: 85 % give their name
  (accents dropped 40 %, case changed 20 %, surnames swapped 8 %, one typo 10 %, second
  surname left out 10 %), 70 % a phone (typed in assorted national/international formats; 15 %
  a number not on record), 30 % their tax ID. Of the accounts with a phone, `--phone-proven-share`
  (default 70 %) typed back the SMS code sent to it (drawn from its own seeded stream, so the
  population is the same whatever the share; the phone an account proves is the one it typed,
  which for a stranger using a relative's address is that family's shared number).

Metrics, engine next to an exact-email-only baseline (the rule before the engine: exactly one
holder with the lower-cased email links): auto-link precision (correct links / links), recall
(correct links / accounts that have a true holder), candidate recall@5 (true holder among the
top five / accounts that have a true holder), and the best recall@5 this population allows
(`report_findable`: accounts sharing nothing with their holder, and names shared by many
holders, bound it from above whatever the engine does). Evaluation does not write: it runs the engine's
`assess` per account, exactly what `match_account` decides on.

`--speed` (PostgreSQL): loads `--speed-holders` holders with COPY, then prints, on a sample of
accounts, the median time of the raw pg_trgm top-10 name query next to the engine's decision for
one account (`assess`: exact look-ups in one round trip, the trigram searches when they can
matter, scoring) and `match_account` (with its writes, rolled back); then it re-matches all
accounts with `rematch_pending` (links, cases and audit written and committed, as nightly),
prints the time, and scores the quality from what was written.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import phonenumbers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, insert, select, text  # noqa: E402
from stdnum.es import cif  # noqa: E402

from backoffice import create_app  # noqa: E402
from backoffice.config import normalise_database_url  # noqa: E402
from backoffice.customers import matching  # noqa: E402
from backoffice.customers.models import (  # noqa: E402
    AssociationCase,
    AssociationStatus,
    CustomerAccount,
    Policyholder,
)
from backoffice.extensions import db  # noqa: E402
from backoffice.identity import normalise_phone  # noqa: E402

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"

FIRST_NAMES = [
    "María",
    "Carmen",
    "José",
    "Antonio",
    "Manuel",
    "Francisco",
    "Ana",
    "Isabel",
    "David",
    "Juan",
    "Javier",
    "Laura",
    "Cristina",
    "Daniel",
    "Marta",
    "Carlos",
    "Jesús",
    "Lucía",
    "Alejandro",
    "Miguel",
    "Dolores",
    "Pilar",
    "Rafael",
    "Paula",
    "Pablo",
    "Sara",
    "Elena",
    "Ángel",
    "Raquel",
    "Sergio",
    "Fernando",
    "Rosa",
    "Luis",
    "Jorge",
    "Alberto",
    "Concepción",
    "Mercedes",
    "Álvaro",
    "Andrea",
    "Irene",
    "Adrián",
    "Diego",
    "Iván",
    "Julia",
    "Rubén",
    "Beatriz",
    "Óscar",
    "Nuria",
    "Silvia",
    "Ramón",
    "Enrique",
    "Patricia",
    "Inés",
    "Vicente",
    "Joaquín",
    "Alicia",
    "Susana",
    "Yolanda",
    "Gonzalo",
    "Iñaki",
    "Begoña",
    "Nerea",
    "Aitor",
    "Íñigo",
    "Ainhoa",
    "Mónica",
    "Noelia",
    "Víctor",
    "Héctor",
    "Ignacio",
    "Guillermo",
    "Emilio",
    "Roberto",
    "Santiago",
    "Eva",
    "Teresa",
    "Agustín",
    "Rocío",
    "Montserrat",
    "Jordi",
    "Núria",
    "Xavier",
    "Mireia",
    "Raúl",
    "Lorena",
    "Sonia",
    "Verónica",
    "Marina",
    "Clara",
    "Tomás",
    "Sebastián",
]
COMPOUND_FIRST = [
    "María del Carmen",
    "José Luis",
    "José Antonio",
    "Juan Carlos",
    "María José",
    "Francisco Javier",
    "Ana María",
    "Miguel Ángel",
    "José Manuel",
    "María Ángeles",
]
SURNAMES = [
    "García",
    "Rodríguez",
    "González",
    "Fernández",
    "López",
    "Martínez",
    "Sánchez",
    "Pérez",
    "Gómez",
    "Martín",
    "Jiménez",
    "Ruiz",
    "Hernández",
    "Díaz",
    "Moreno",
    "Muñoz",
    "Álvarez",
    "Romero",
    "Alonso",
    "Gutiérrez",
    "Navarro",
    "Torres",
    "Domínguez",
    "Vázquez",
    "Ramos",
    "Gil",
    "Ramírez",
    "Serrano",
    "Blanco",
    "Molina",
    "Morales",
    "Suárez",
    "Ortega",
    "Delgado",
    "Castro",
    "Ortiz",
    "Rubio",
    "Marín",
    "Sanz",
    "Núñez",
    "Iglesias",
    "Medina",
    "Garrido",
    "Cortés",
    "Castillo",
    "Santos",
    "Lozano",
    "Guerrero",
    "Cano",
    "Prieto",
    "Méndez",
    "Cruz",
    "Calvo",
    "Gallego",
    "Vidal",
    "León",
    "Márquez",
    "Herrera",
    "Peña",
    "Flores",
    "Cabrera",
    "Campos",
    "Vega",
    "Fuentes",
    "Carrasco",
    "Diez",
    "Caballero",
    "Reyes",
    "Nieto",
    "Aguilar",
    "Pascual",
    "Santana",
    "Herrero",
    "Lorenzo",
    "Montero",
    "Hidalgo",
    "Giménez",
    "Ibáñez",
    "Ferrer",
    "Durán",
    "Santiago",
    "Benítez",
    "Mora",
    "Vicente",
    "Vargas",
    "Arias",
    "Carmona",
    "Crespo",
    "Román",
    "Pastor",
    "Soto",
    "Sáez",
    "Velasco",
    "Moya",
    "Soler",
    "Parra",
    "Esteban",
    "Bravo",
    "Gallardo",
    "Rojas",
    "Pardo",
    "Merino",
    "Franco",
    "Espinosa",
    "Izquierdo",
    "Lara",
    "Rivas",
    "Silva",
    "Rivera",
    "Casado",
    "Arroyo",
    "Redondo",
    "Camacho",
    "Rey",
    "Vera",
    "Otero",
    "Luque",
    "Galán",
    "Montes",
    "Ríos",
    "Sierra",
    "Segura",
    "Carrillo",
    "Marcos",
    "Marti",
    "Soriano",
    "Mendoza",
    "Robles",
    "Bernal",
    "Vila",
    "Valero",
    "Palacios",
    "Pereira",
    "Benito",
    "Andrés",
    "Vallejo",
    "Macías",
    "Herranz",
    "Heredia",
    "Quintana",
    "Beltrán",
    "Miranda",
    "Villar",
    "Salazar",
    "Aguirre",
    "Echevarría",
    "Zubiri",
    "Goikoetxea",
    "Etxeberria",
    "Urquijo",
    "Oliveira",
    "Puig",
    "Roig",
    "Ferrándiz",
    "Llorente",
    "Bosch",
]
DOMAINS = [
    ("gmail.com", 40),
    ("hotmail.com", 18),
    ("yahoo.es", 7),
    ("outlook.com", 9),
    ("telefonica.net", 4),
    ("movistar.es", 3),
    ("icloud.com", 3),
    ("hotmail.es", 5),
    ("correo.es", 2),
    ("live.com", 2),
    ("yahoo.com", 2),
    ("orange.es", 2),
    ("vodafone.es", 1),
    ("protonmail.com", 1),
    ("ono.com", 1),
]
PLUS_DOMAINS = {"gmail.com", "outlook.com", "hotmail.com", "hotmail.es", "live.com", "icloud.com"}


def plain(value: str) -> str:
    decomposed = unicodedata.normalize("NFKD", value)
    return "".join(char for char in decomposed if not unicodedata.combining(char))


@dataclass
class Person:
    first: str
    surname1: str
    surname2: str


@dataclass
class Holder:
    id: int
    tax_id: str
    kind: str
    name: str
    email: str | None
    phone: str | None
    person: Person | None


@dataclass
class Account:
    email: str
    first_name: str | None
    last_name: str | None
    phone: str | None
    declared_tax_id: str | None
    truth: int | None  # the holder id, or None
    scenario: str


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.surname_weights = [1 / (rank + 1) ** 0.9 for rank in range(len(SURNAMES))]
        self.first_weights = [1 / (rank + 1) ** 0.7 for rank in range(len(FIRST_NAMES))]
        self.domains = [domain for domain, _ in DOMAINS]
        self.domain_weights = [weight for _, weight in DOMAINS]
        self.emails: set[str] = set()
        self.phones: set[str] = set()

    # pieces
    def first_name(self) -> str:
        if self.rng.random() < 0.12:
            return self.rng.choice(COMPOUND_FIRST)
        return self.rng.choices(FIRST_NAMES, self.first_weights)[0]

    def surname(self) -> str:
        return self.rng.choices(SURNAMES, self.surname_weights)[0]

    def person(self) -> Person:
        return Person(self.first_name(), self.surname(), self.surname())

    def email_for(self, person: Person) -> str:
        rng = self.rng
        first = plain(person.first).lower().replace(" ", "")
        s1, s2 = plain(person.surname1).lower(), plain(person.surname2).lower()
        pattern = rng.randrange(6)
        local = [
            f"{first}.{s1}",
            f"{first}{s1}",
            f"{first[0]}{s1}{s2[:1]}",
            f"{first}_{s1}{rng.randrange(100)}",
            f"{first}.{s1}.{s2}",
            f"{first}{rng.randrange(1950, 2008)}",
        ][pattern]
        domain = rng.choices(self.domains, self.domain_weights)[0]
        email = f"{local}@{domain}"
        attempts = 0
        while self.mailbox(email) in self.emails:  # popular names need longer suffixes at 1M
            attempts += 1
            email = f"{local}{rng.randrange(10 ** (3 + attempts // 20))}@{domain}"
        self.emails.add(self.mailbox(email))
        return email

    @staticmethod
    def mailbox(email: str) -> str:
        """Gmail ignores dots: two people cannot hold ana.gil@ and anagil@ there."""
        local, domain = email.split("@")
        return f"{local.replace('.', '') if domain == 'gmail.com' else local}@{domain}"

    def phone(self, landline: bool = False) -> str:
        while True:
            number = f"+34{'9' if landline else self.rng.choice('67')}{self.rng.randrange(10**8):08d}"
            if number[3] == "7" and number[4] not in "1234":
                continue
            if number not in self.phones and phonenumbers.is_valid_number(phonenumbers.parse(number)):
                self.phones.add(number)
                return number

    def holder_name(self, person: Person) -> str:
        if self.rng.random() < 0.2:  # legacy core system format
            return plain(f"{person.surname1} {person.surname2}, {person.first}").upper()
        return f"{person.first} {person.surname1} {person.surname2}"

    # population
    def holders(self, count: int) -> list[Holder]:
        rng = self.rng
        numbers = rng.sample(range(10**8), count)
        holders: list[Holder] = []
        for index in range(count):
            holder_id = index + 1
            if rng.random() < 0.03:
                digits = f"{index % 10**7:07d}"
                tax_id = cif.compact("B" + digits + cif.calc_check_digits("B" + digits)[1])
                name = f"{rng.choice(['Transportes', 'Construcciones', 'Talleres', 'Distribuciones'])} {self.surname()} S.L."
                email = f"info@{plain(name.split()[1]).lower()}{index}.es"
                holders.append(Holder(holder_id, tax_id, "company", name, email, self.phone(True), None))
                continue
            tax_id = f"{numbers[index]:08d}{DNI_LETTERS[numbers[index] % 23]}"
            relative = holders[rng.randrange(len(holders))] if holders and rng.random() < 0.06 else None
            if relative is not None and relative.person is not None:
                person = Person(self.first_name(), relative.person.surname1, relative.person.surname2)
                email = (
                    relative.email
                    if rng.random() < 0.5
                    else (self.email_for(person) if rng.random() < 0.92 else None)
                )
                phone = (
                    relative.phone
                    if rng.random() < 0.6 and relative.phone
                    else (self.phone() if rng.random() < 0.85 else None)
                )
            else:
                person = self.person()
                email = self.email_for(person) if rng.random() < 0.92 else None
                phone = self.phone(rng.random() < 0.15) if rng.random() < 0.85 else None
            holders.append(
                Holder(holder_id, tax_id, "person", self.holder_name(person), email, phone, person)
            )
        return holders

    def typo(self, word: str) -> str:
        if len(word) < 4:
            return word
        rng = self.rng
        at = rng.randrange(1, len(word) - 1)
        kind = rng.randrange(3)
        if kind == 0:
            return word[:at] + word[at + 1] + word[at] + word[at + 2 :]
        if kind == 1:
            return word[:at] + word[at + 1 :]
        return word[:at] + rng.choice("aeiourlnst") + word[at + 1 :]

    def noisy_email(self, email: str) -> str:
        rng = self.rng
        local, domain = email.split("@")
        if domain == "gmail.com" and rng.random() < 0.3:
            local = (
                local.replace(".", "")
                if "." in local
                else local[: len(local) // 2] + "." + local[len(local) // 2 :]
            )
        if domain in PLUS_DOMAINS and rng.random() < 0.1:
            local += "+" + rng.choice(["seguros", "portal", "web", "poliza"])
        if rng.random() < 0.3:
            local = local.capitalize() if rng.random() < 0.5 else local.upper()
        return f"{local}@{domain}"

    def typed_phone(self, number: str) -> str:
        national = number[3:]
        return self.rng.choice(
            [
                number,
                national,
                f"{national[:3]} {national[3:6]} {national[6:]}",
                f"+34 {national[:3]}-{national[3:5]}-{national[5:7]}-{national[7:]}",
                f"0034{national}",
            ]
        )

    def profile_name(self, person: Person) -> tuple[str | None, str | None]:
        rng = self.rng
        if rng.random() >= 0.85:
            return None, None
        first, s1, s2 = person.first, person.surname1, person.surname2
        if rng.random() < 0.4:
            first, s1, s2 = plain(first), plain(s1), plain(s2)
        if rng.random() < 0.08:
            s1, s2 = s2, s1
        if rng.random() < 0.1:
            which = rng.randrange(3)
            if which == 0:
                first = self.typo(first)
            elif which == 1:
                s1 = self.typo(s1)
            else:
                s2 = self.typo(s2)
        last = s1 if rng.random() < 0.1 else f"{s1} {s2}"
        if rng.random() < 0.2:
            first, last = (
                (first.lower(), last.lower()) if rng.random() < 0.5 else (first.upper(), last.upper())
            )
        return first, last

    def accounts(self, holders: list[Holder], count: int) -> list[Account]:
        rng = self.rng
        people = [holder for holder in holders if holder.kind == "person"]
        weights = [1.0 if holder.email else 0.3 for holder in people]
        with_holder = int(count * 0.9)
        chosen: dict[int, Holder] = {}
        while len(chosen) < with_holder:
            for holder in rng.choices(people, weights, k=with_holder - len(chosen)):
                chosen.setdefault(holder.id, holder)
        used: set[str] = set()
        accounts: list[Account] = []
        for holder in chosen.values():
            roll = rng.random()
            if holder.email and roll < 0.88:
                email, scenario = self.noisy_email(holder.email), "same_mailbox"
            elif holder.email and roll < 0.92:
                local, domain = holder.email.split("@")
                email, scenario = (
                    f"{self.typo(local) if len(local) >= 4 else local + 'x'}@{domain}",
                    "email_typo_on_record",
                )
            else:
                email, scenario = self.email_for(holder.person), "other_email"
            if email.lower() in used:
                email, scenario = self.email_for(holder.person), "other_email"
            used.add(email.lower())
            first, last = self.profile_name(holder.person)
            phone = None
            if rng.random() < 0.7:
                number = holder.phone if holder.phone and rng.random() < 0.85 else self.phone()
                phone = self.typed_phone(number)
            tax = holder.tax_id if rng.random() < 0.3 else None
            accounts.append(Account(email, first, last, phone, tax, holder.id, scenario))
        with_email = [holder for holder in people if holder.email]
        for _ in range(count - with_holder):
            person, phone, scenario = self.person(), None, "no_holder"
            email = self.email_for(person)
            if rng.random() < 0.06:
                relative = rng.choice(with_email)
                person = Person(self.first_name(), relative.person.surname1, relative.person.surname2)
                if relative.email.lower() not in used:
                    email, scenario = relative.email, "no_holder_family_email"
                if relative.phone and rng.random() < 0.5:
                    phone = relative.phone
            used.add(email.lower())
            first, last = self.profile_name(person)
            if phone is None and rng.random() < 0.6:
                phone = self.phone()
            accounts.append(
                Account(email, first, last, self.typed_phone(phone) if phone else None, None, None, scenario)
            )
        rng.shuffle(accounts)
        return accounts


# Loading ------------------------------------------------------------------------------------


def holder_rows(holders: list[Holder]):
    for holder in holders:
        keys = matching.holder_keys(holder.name, holder.email, holder.phone)
        yield (
            holder.id,
            holder.tax_id,
            holder.kind,
            holder.name,
            holder.email,
            holder.phone,
            NOW,
            NOW,
            keys["name_key"],
            keys["email_local"],
            keys["email_domain"],
        )


HOLDER_COLUMNS = (
    "id",
    "tax_id",
    "kind",
    "name",
    "email",
    "phone",
    "created_at",
    "updated_at",
    "name_key",
    "email_local",
    "email_domain",
)


def load_holders(holders: list[Holder], postgres: bool) -> None:
    if postgres:
        connection = db.session.connection().connection.driver_connection
        statement = f"COPY policyholders ({', '.join(HOLDER_COLUMNS)}) FROM STDIN"
        with connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in holder_rows(holders):
                copy.write_row(row)
        db.session.execute(text("SELECT setval('policyholders_id_seq', (SELECT max(id) FROM policyholders))"))
        db.session.commit()
        db.session.execute(text("ANALYZE policyholders"))
    else:
        batch = []
        for row in holder_rows(holders):
            batch.append(dict(zip(HOLDER_COLUMNS, row, strict=True)))
            if len(batch) == 5000:
                db.session.execute(insert(Policyholder.__table__), batch)
                batch = []
        if batch:
            db.session.execute(insert(Policyholder.__table__), batch)
    db.session.commit()


def load_accounts(accounts: list[Account], *, phone_proven_share: float = 0.0, seed: int = 1) -> list[int]:
    proving = random.Random(f"phone-proven-{seed}")
    rows = []
    for number, account in enumerate(accounts, start=1):
        proven = proving.random() < phone_proven_share and account.phone is not None
        rows.append(
            {
                "id": number,
                "email": account.email,
                "password_hash": "x",
                "language": "es",
                "created_at": NOW,
                "email_verified_at": NOW,
                "first_name": account.first_name,
                "last_name": account.last_name,
                "phone": normalise_phone(account.phone) if account.phone else None,
                "phone_verified_at": NOW if proven else None,
                "declared_tax_id": account.declared_tax_id,
                "association_status": AssociationStatus.NONE.value,
            }
        )
    for start in range(0, len(rows), 5000):
        db.session.execute(insert(CustomerAccount.__table__), rows[start : start + 5000])
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(
            text("SELECT setval('customer_accounts_id_seq', (SELECT max(id) FROM customer_accounts))")
        )
        db.session.execute(text("ANALYZE customer_accounts"))
    db.session.commit()
    return [row["id"] for row in rows]


# Quality ------------------------------------------------------------------------------------


@dataclass
class Score:
    links: int = 0
    correct: int = 0
    found_at_5: int = 0
    wrong_by_scenario: dict[str, int] | None = None
    missed_by_scenario: dict[str, int] | None = None

    def add_wrong(self, scenario: str) -> None:
        self.wrong_by_scenario = self.wrong_by_scenario or {}
        self.wrong_by_scenario[scenario] = self.wrong_by_scenario.get(scenario, 0) + 1

    def add_missed(self, why: str) -> None:
        self.missed_by_scenario = self.missed_by_scenario or {}
        self.missed_by_scenario[why] = self.missed_by_scenario.get(why, 0) + 1


def evaluate(accounts: list[Account], holders: list[Holder]) -> tuple[Score, Score, int, float]:
    engine, baseline = Score(), Score()
    with_truth = sum(1 for account in accounts if account.truth is not None)
    started = time.perf_counter()
    records = db.session.execute(select(CustomerAccount).order_by(CustomerAccount.id)).scalars().all()
    for account, record in zip(accounts, records, strict=True):
        ranked, decision = matching.assess(record)
        if account.truth is not None and account.truth in [c.policyholder_id for c in ranked[:5]]:
            engine.found_at_5 += 1
        if decision.link_to is not None:
            engine.links += 1
            if decision.link_to == account.truth:
                engine.correct += 1
            else:
                engine.add_wrong(account.scenario)
        elif account.truth is not None:
            engine.add_missed(f"{account.scenario}/{decision.reason}")
        db.session.expunge(record)
    seconds = time.perf_counter() - started
    _score_baseline(accounts, holders, baseline)
    return engine, baseline, with_truth, seconds


def _score_baseline(accounts: list[Account], holders: list[Holder], baseline: Score) -> None:
    """The rule before the engine: exactly one holder with the lower-cased email links."""
    by_email: dict[str, list[int]] = {}
    for holder in holders:
        if holder.email:
            by_email.setdefault(holder.email.lower(), []).append(holder.id)
    for account in accounts:
        exact = by_email.get(account.email.lower(), [])
        if account.truth is not None and account.truth in exact[:5]:
            baseline.found_at_5 += 1
        if len(exact) == 1:
            baseline.links += 1
            if exact[0] == account.truth:
                baseline.correct += 1
            else:
                baseline.add_wrong(account.scenario)


def report_findable(accounts: list[Account], holders: list[Holder]) -> None:
    """What candidate recall@5 can reach on this population at best, from the truth: an account
    that shares nothing with its holder (another email, and no name, no phone on record, no tax
    ID) cannot be found by anyone; one that shares only a name with n holders of that same name
    is among the top five at best 5/n of the time (nothing tells them apart)."""
    by_id = {holder.id: holder for holder in holders}
    homonyms = Counter(matching.fold_name(holder.name) for holder in holders)
    with_truth = nothing = name_only = crowded = 0
    expected_found = 0.0
    for account in accounts:
        if account.truth is None:
            continue
        with_truth += 1
        holder = by_id[account.truth]
        shares_email = account.scenario != "other_email"
        shares_phone = (
            account.phone is not None
            and holder.phone is not None
            and normalise_phone(account.phone) == holder.phone
        )
        if shares_email or shares_phone or account.declared_tax_id:
            expected_found += 1
        elif not account.first_name:
            nothing += 1
        else:
            name_only += 1
            same_name = homonyms[matching.fold_name(holder.name)]
            crowded += same_name > 5
            expected_found += min(1.0, 5 / same_name)
    print(
        f"findable at best: {nothing} accounts share nothing with their holder; {name_only} share only "
        f"the name ({crowded} of them with more than 5 holders of that name): recall@5 <= "
        f"{100 * expected_found / with_truth:.2f}%"
    )


def report_quality(engine: Score, baseline: Score, with_truth: int, seconds: float, count: int) -> bool:
    def pct(part: int, whole: int) -> float:
        return 100 * part / whole if whole else 0.0

    rows = [
        (
            "auto-link precision",
            pct(engine.correct, engine.links),
            pct(baseline.correct, baseline.links),
            99.9,
        ),
        ("auto-link recall", pct(engine.correct, with_truth), pct(baseline.correct, with_truth), 90.0),
        (
            "candidate recall@5",
            pct(engine.found_at_5, with_truth),
            pct(baseline.found_at_5, with_truth),
            99.0,
        ),
    ]
    print(
        f"accounts {count} (with a true holder {with_truth}); engine {seconds:.1f} s, "
        f"{1000 * seconds / count:.2f} ms/account"
    )
    print(f"{'metric':<22}{'engine':>10}{'exact email':>14}{'target':>10}")
    ok = True
    for label, mine, theirs, target in rows:
        print(f"{label:<22}{mine:9.2f}%{theirs:13.2f}%{target:9.1f}%")
    print(
        f"links: engine {engine.links} ({engine.links - engine.correct} wrong: {engine.wrong_by_scenario or {}}), "
        f"baseline {baseline.links} ({baseline.links - baseline.correct} wrong: {baseline.wrong_by_scenario or {}})"
    )
    missed = sorted((engine.missed_by_scenario or {}).items(), key=lambda item: -item[1])
    print(
        "engine: accounts with a true holder left to a clerk, by scenario/reason: "
        + ", ".join(f"{k} {v}" for k, v in missed)
    )
    for label, mine, _, target in rows:
        passed = mine >= target
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'}  {label} {mine:.2f}% >= {target}%")
    return ok


# Speed --------------------------------------------------------------------------------------

RAW_NAME_QUERY = text("SELECT id FROM policyholders WHERE name_key % :q ORDER BY name_key <-> :q LIMIT 10")


def median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def speed(sample_ids: list[int]) -> None:
    """Median times on a sample of accounts, nothing written: the raw name query, the engine's
    decision (`assess`) and `match_account` with its writes rolled back."""
    from flask import current_app

    limit = str(current_app.config["MATCH_TRGM_LIMIT"] / 100)
    db.session.execute(text("SELECT set_config('pg_trgm.similarity_threshold', :v, false)"), {"v": limit})
    accounts = [db.session.get(CustomerAccount, account_id) for account_id in sample_ids]
    keys = [(a, matching.fold_name(matching.account_name(a))) for a in accounts]
    keys = [(a, key) for a, key in keys if key]
    plan = db.session.execute(text("EXPLAIN " + RAW_NAME_QUERY.text), {"q": keys[0][1]}).scalars().all()
    print("EXPLAIN name query:\n  " + "\n  ".join(plan))
    for account, key in keys[:50]:  # warm the caches for both
        db.session.execute(RAW_NAME_QUERY, {"q": key}).all()
        matching.assess(account)
    raw, engine, full = [], [], []
    for account, key in keys:
        started = time.perf_counter()
        db.session.execute(RAW_NAME_QUERY, {"q": key}).all()
        raw.append(time.perf_counter() - started)
        started = time.perf_counter()
        matching.assess(account)
        engine.append(time.perf_counter() - started)
    for account, _ in keys[:200]:
        started = time.perf_counter()
        with db.session.begin_nested():
            matching.match_account(account, actor=matching.SYSTEM, now=NOW)
            db.session.flush()
            db.session.rollback()
        full.append(time.perf_counter() - started)
    db.session.rollback()
    ratio = statistics.median(engine) / statistics.median(raw)
    print(
        f"raw pg_trgm top-10 name query   median {median_ms(raw):7.2f} ms  ({len(raw)} accounts with a name)"
    )
    print(f"match one account (assess)      median {median_ms(engine):7.2f} ms  ratio {ratio:.2f}x")
    print(f"match_account() with its writes median {median_ms(full):7.2f} ms  (rolled back)")
    print(
        f"{'PASS' if ratio <= 1.5 else 'FAIL'}  match one account <= 1.5x the raw name query ({ratio:.2f}x)"
    )


def rematch_all(accounts: list[Account], holders: list[Holder]) -> tuple[Score, Score, int, float]:
    """Re-match every account with `rematch_pending` (links, cases and audit written and
    committed, as the nightly job does), timed; then score what it wrote."""
    started = time.perf_counter()
    count = matching.rematch_pending(now=NOW)
    db.session.commit()
    seconds = time.perf_counter() - started
    print(
        f"rematch_pending: {count} accounts in {seconds:.1f} s ({1000 * seconds / count:.1f} ms/account, committed)"
    )
    links = dict(db.session.execute(select(CustomerAccount.id, CustomerAccount.policyholder_id)).all())
    cases = {
        row.account_id: (row.reason, row.candidate_ids or [])
        for row in db.session.execute(
            select(AssociationCase.account_id, AssociationCase.reason, AssociationCase.candidate_ids)
        )
    }
    engine, baseline = Score(), Score()
    for number, account in enumerate(accounts, start=1):
        linked = links.get(number)
        reason, ranked = cases.get(number, (None, []))
        if account.truth is not None and (linked == account.truth or account.truth in ranked[:5]):
            engine.found_at_5 += 1
        if linked is not None:
            engine.links += 1
            if linked == account.truth:
                engine.correct += 1
            else:
                engine.add_wrong(account.scenario)
        elif account.truth is not None:
            engine.add_missed(f"{account.scenario}/{reason}")
    _score_baseline(accounts, holders, baseline)
    return engine, baseline, sum(1 for a in accounts if a.truth is not None), seconds


# Main ---------------------------------------------------------------------------------------


def build_database(url: str | None) -> tuple[str, bool]:
    from flask_migrate import upgrade

    if url is None:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='matching-bench-')}/bench.db"
    postgres = url.startswith("postgres")
    app = create_app(
        {
            "APP_ENV": "testing",
            "DATABASE_URL": url,
            "SECRET_KEY": "bench",
            "REDIS_URL": None,
            "STORAGE_URL": Path(tempfile.mkdtemp()).as_uri(),
        }
    )
    with app.app_context():
        if postgres:
            with db.engine.begin() as connection:
                connection.execute(text("DROP SCHEMA public CASCADE"))
                connection.execute(text("CREATE SCHEMA public"))
        upgrade()
        db.engine.dispose()
    return url, postgres


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holders", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--phone-proven-share",
        type=float,
        default=0.7,
        help="of the accounts with a phone, the share that proved it by SMS code",
    )
    parser.add_argument("--database-url", default=None, help="a PRIVATE database: its schema is rebuilt")
    parser.add_argument("--speed", action="store_true", help="PostgreSQL: time the engine on --speed-holders")
    parser.add_argument("--speed-holders", type=int, default=1_000_000)
    parser.add_argument("--speed-sample", type=int, default=300)
    args = parser.parse_args(argv)
    if args.speed and not (args.database_url or "").startswith("postgres"):
        parser.error("--speed needs --database-url postgresql://...")
    holders_count = args.speed_holders if args.speed else args.holders

    url, postgres = build_database(args.database_url)
    app = create_app(
        {
            "APP_ENV": "testing",
            "DATABASE_URL": url,
            "SECRET_KEY": "bench",
            "REDIS_URL": None,
            "STORAGE_URL": Path(tempfile.mkdtemp()).as_uri(),
        }
    )
    print(
        f"database {normalise_database_url(url).split('@')[-1]}; seed {args.seed}; "
        f"holders {holders_count}; accounts {args.accounts}"
    )
    with app.app_context():
        started = time.perf_counter()
        generator = Generator(args.seed)
        holders = generator.holders(holders_count)
        accounts = generator.accounts(holders, args.accounts)
        print(f"generated in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        load_holders(holders, postgres)
        ids = load_accounts(accounts, phone_proven_share=args.phone_proven_share, seed=args.seed)
        proven = db.session.scalar(
            select(func.count())
            .select_from(CustomerAccount)
            .where(CustomerAccount.phone_verified_at.is_not(None))
        )
        print(
            f"accounts with a phone proven by SMS: {proven} "
            f"({args.phone_proven_share:.0%} of those that typed one)"
        )
        print(f"loaded in {time.perf_counter() - started:.1f} s")
        if args.speed:
            sample = random.Random(args.seed).sample(ids, min(args.speed_sample, len(ids)))
            speed(sample)
            engine, baseline, with_truth, seconds = rematch_all(accounts, holders)
        else:
            engine, baseline, with_truth, seconds = evaluate(accounts, holders)
        ok = report_quality(engine, baseline, with_truth, seconds, len(accounts))
        report_findable(accounts, holders)
        db.session.remove()
        db.engine.dispose()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

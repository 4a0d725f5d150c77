"""A synthetic, seeded checkout stream with the identity structure real traffic has.

* Customers own one to three emails and one or two phones, and buy repeatedly (a few buy often).
* Households of two to four customers share a family phone, each member with their first email: a
  family phone links two to four emails, as in real data, and their clusters join through it.
* Emails and phones are namespaced by the seed: streams of different seeds share no identifier, so
  repeated runs with new seeds add customers instead of merging everyone into one identity.
* With probability `merge_rate` an event bridges two unrelated customers: one's email with another's phone.
* With probability `late_rate` an event arrives late: its time is earlier than events already emitted.
* Raw values vary the way checkout forms do (letter case, spaces, phone separators); their normalized
  forms are stable, so the stream exercises the normalizer too.

The same arguments always give the same records.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from producer_tools.records import CheckoutRecord

START = datetime(2026, 1, 1, tzinfo=UTC)
_FIRST = ("ada", "alan", "grace", "linus", "margaret", "ken", "barbara", "dennis", "frances", "edsger")
_LAST = ("lovelace", "turing", "hopper", "torvalds", "hamilton", "thompson", "liskov", "ritchie", "allen")
_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "shop.example")
_FAMILY_SHARE = 0.3
"""About this share of customers lives in a household of two to four with a family phone."""


@dataclass(frozen=True, slots=True)
class SyntheticCustomer:
    index: int
    emails: tuple[str, ...]
    phones: tuple[str, ...]
    """Normalized; a family phone, if any, is the last one and is shared with the household."""
    household: int


@dataclass(slots=True)
class StreamStats:
    records: int = 0
    bridging: int = 0
    late: int = 0
    email_only: int = 0
    phone_only: int = 0
    family_phone_events: int = 0


@dataclass(slots=True)
class SyntheticStream:
    """The customers behind a synthetic stream, and what `records()` has emitted so far."""

    customers: int
    events: int
    seed: int = 0
    merge_rate: float = 0.02
    late_rate: float = 0.05
    population: list[SyntheticCustomer] = field(init=False)
    family_phones: set[str] = field(init=False)
    stats: StreamStats = field(init=False)

    def __post_init__(self) -> None:
        if self.customers < 1 or self.events < 0 or self.seed < 0:
            raise ValueError("customers must be >= 1, events and seed >= 0")
        if not (0 <= self.merge_rate <= 1 and 0 <= self.late_rate <= 1):
            raise ValueError("merge_rate and late_rate are probabilities, between 0 and 1")
        self.stats = StreamStats()
        people = random.Random(f"{self.seed}/people")
        self.population, self.family_phones = _population(people, self.customers, self.seed)
        if self.merge_rate > 0 and self.population[-1].household == 0:
            raise ValueError("bridging events need customers from at least two households")

    def records(self) -> Iterator[CheckoutRecord]:
        rng = random.Random(f"{self.seed}/events")
        rand, bits, people, n = rng.random, rng.getrandbits, self.population, self.customers
        stats, family, merge_rate, late_rate = self.stats, self.family_phones, self.merge_rate, self.late_rate
        order_prefix = f"ord-{self.seed}-"
        clock = START.timestamp()
        for i in range(self.events):
            # Squaring skews choices towards low indexes: a few customers buy often, most rarely.
            buyer = people[int(n * rand() ** 2)]
            clock += 1 + 60 * rand()
            if rand() < late_rate:
                # Five minutes to three days before the newest event so far.
                time = datetime.fromtimestamp(clock - 300 - 259_200 * rand(), UTC)
                stats.late += 1
            else:
                time = datetime.fromtimestamp(clock, UTC)
            shape = rand()
            if rand() < merge_rate:
                other = people[int(n * rand())]
                while other.household == buyer.household:
                    other = people[int(n * rand())]
                email: str | None = _pick(buyer.emails, rand())
                phone: str | None = other.phones[0]
                stats.bridging += 1
            elif shape < 0.6:
                phone = _pick(buyer.phones, rand())
                # With the family phone, only the member's first email: the phone's links stay 2-4.
                email = buyer.emails[0] if phone in family else _pick(buyer.emails, rand())
            elif shape < 0.85:
                email, phone = _pick(buyer.emails, rand()), None
                stats.email_only += 1
            else:
                email, phone = None, _pick(buyer.phones, rand())
                stats.phone_only += 1
            if phone in family:
                stats.family_phone_events += 1
            stats.records += 1
            yield CheckoutRecord(
                None if email is None else _raw_email(email, rand()),
                None if phone is None else _raw_phone(phone, rand()),
                f"{order_prefix}{i:09d}",
                _uuid4(bits(128)),
                time,
            )


def synthetic_records(
    customers: int, events: int, seed: int = 0, merge_rate: float = 0.02, late_rate: float = 0.05
) -> Iterator[CheckoutRecord]:
    """`events` synthetic checkouts by `customers` customers; the same arguments give the same records."""
    return SyntheticStream(customers, events, seed, merge_rate, late_rate).records()


def _population(rng: random.Random, customers: int, seed: int) -> tuple[list[SyntheticCustomer], set[str]]:
    people: list[SyntheticCustomer] = []
    family_phones: set[str] = set()
    next_phone = 0
    household = 0
    while len(people) < customers:
        size = 1 if rng.random() >= _FAMILY_SHARE else rng.randint(2, 4)
        size = min(size, customers - len(people))
        family: tuple[str, ...] = ()
        if size > 1:
            family = (_phone(seed, next_phone),)
            family_phones.add(family[0])
            next_phone += 1
        for _ in range(size):
            index = len(people)
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            emails = tuple(
                f"{first}.{last}{'' if k == 0 else k}.{index}.s{seed}@{rng.choice(_DOMAINS)}"
                for k in range(rng.randint(1, 3))
            )
            own = tuple(_phone(seed, next_phone + k) for k in range(rng.randint(1, 2)))
            next_phone += len(own)
            people.append(SyntheticCustomer(index, emails, own + family, household))
        household += 1
    return people, family_phones


def _phone(seed: int, n: int) -> str:
    """Unique per seed (the seed's digits, then n in a fixed width), with a leading `+` so every raw
    spelling normalizes to the same value."""
    return f"+1555{seed}{n:08d}"


def _pick(values: tuple[str, ...], r: float) -> str:
    return values[int(r * len(values))]


def _uuid4(bits: int) -> str:
    """A version-4 UUID string from seeded bits; three times faster than `uuid.UUID(int=..., version=4)`."""
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


def _raw_email(email: str, r: float) -> str:
    if r < 0.1:
        return email.title()
    if r < 0.15:
        return f"  {email} "
    return email


def _raw_phone(phone: str, r: float) -> str:
    if r < 0.2:
        return f"{phone[:2]} ({phone[2:5]}) {phone[5:9]}-{phone[9:]}"
    if r < 0.3:
        return f"{phone[:2]}-{phone[2:5]}-{phone[5:9]}.{phone[9:]}"
    return phone

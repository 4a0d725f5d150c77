"""Rules 3-8 applied to the clusters a transaction has locked, held in memory.

Pure code, no I/O: `reconcile` loads the clusters an input can touch, lets `IdentityGraph.apply` decide
what changes, then writes the inserted and changed rows back in bulk.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime

from consumer.contract import Outcome
from consumer.core.links import AGE as _AGE
from consumer.core.links import Kind, values_of


@dataclass(slots=True)
class Contact:
    id: int
    email: str | None
    phone_number: str | None
    linked_id: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def primary_id(self) -> int:
        return self.id if self.linked_id is None else self.linked_id

    @property
    def link_precedence(self) -> str:
        return "primary" if self.linked_id is None else "secondary"

    def values(self) -> list[tuple[Kind, str]]:
        """The row's email and phone, each with its kind."""
        return values_of(self.email, self.phone_number)


@dataclass(frozen=True, slots=True)
class ContactView:
    """The consolidated identity (rule 9)."""

    primary_id: int
    emails: tuple[str, ...]
    phone_numbers: tuple[str, ...]
    secondary_ids: tuple[int, ...]

    def document(self) -> dict[str, object]:
        """The JSON object of rule 9 (`ContactPayload`'s shape), built directly: it is on every hot path."""
        return {
            "primaryContatctId": self.primary_id,
            "primaryContactId": self.primary_id,
            "emails": list(self.emails),
            "phoneNumbers": list(self.phone_numbers),
            "secondaryContactIds": list(self.secondary_ids),
        }


@dataclass(frozen=True, slots=True)
class Merge:
    surviving_primary_id: int
    merged_primary_ids: tuple[int, ...]
    relinked_contact_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Applied:
    outcome: Outcome
    contact_id: int | None
    contact: ContactView
    merge: Merge | None


@dataclass(slots=True)
class IdentityGraph:
    """Non-deleted rows of some whole clusters, indexed by email, phone and primary."""

    rows: dict[int, Contact] = field(default_factory=dict)
    inserted: list[Contact] = field(default_factory=list)
    changed: set[int] = field(default_factory=set)
    _by_email: defaultdict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    _by_phone: defaultdict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    _members: defaultdict[int, set[int]] = field(default_factory=lambda: defaultdict(set))

    @classmethod
    def of(cls, rows: Iterable[Contact]) -> IdentityGraph:
        graph = cls()
        for row in rows:
            graph._add(row)
        return graph

    def apply(
        self, email: str | None, phone: str | None, at: datetime, now: datetime, next_id: Callable[[], int]
    ) -> Applied:
        """Apply one input (rules 4-8); `at` is the creation time of a row it inserts, `now` of updates."""
        matched = self._index_lookup(self._by_email, email) | self._index_lookup(self._by_phone, phone)
        clusters = {self.rows[i].primary_id for i in matched}
        if not clusters:
            row = Contact(next_id(), email, phone, None, at, now)
            self._insert(row)
            return Applied(Outcome.CREATED_PRIMARY, row.id, self.view(row.id), None)

        members = [self.rows[i] for p in clusters for i in self._members[p]]
        created: Contact | None = None
        if (
            (email is not None and all(r.email != email for r in members))
            or (phone is not None and all(r.phone_number != phone for r in members))
            # Rule 8: an event older than every row it matches keeps its row, so that an identity's
            # primary is its oldest event's row whatever the delivery order.
            or all(at < self.rows[i].created_at for i in matched)
        ):
            created = Contact(next_id(), email, phone, None, at, now)
            self._insert(created)
            members.append(created)

        winner = min(members, key=_AGE)
        merge = self._relink(winner, members, created, now)
        if merge is not None:
            outcome = Outcome.MERGED
        elif created is not None:
            outcome = Outcome.CREATED_SECONDARY
        else:
            outcome = Outcome.MATCHED
        return Applied(outcome, created.id if created else None, self.view(winner.id), merge)

    def holders(self, kind: Kind, value: str) -> Set[int]:
        """The ids of the rows holding `value`."""
        return self._index_lookup(self._by_email if kind == "email" else self._by_phone, value)

    def members(self, primary_id: int) -> list[Contact]:
        return [self.rows[i] for i in self._members[primary_id]]

    def size(self, primary_id: int) -> int:
        """How many rows the identity holds."""
        return len(self._members.get(primary_id, ()))

    def regroup(self, groups: Iterable[Sequence[Contact]], now: datetime) -> None:
        """Make each group (oldest row first) an identity of its own: its rows link straight to its first."""
        for group in groups:
            winner = group[0]
            for row in group:
                target = None if row is winner else winner.id
                if row.linked_id != target:
                    row.updated_at = now
                    self.changed.add(row.id)
                    self._move(row, target)

    def remove(self, row_id: int) -> None:
        """Drop a row (erased, rule 17); its identity's other rows still name its primary until regrouped."""
        row = self.rows.pop(row_id)
        for index, value in ((self._by_email, row.email), (self._by_phone, row.phone_number)):
            if value is not None:
                index[value].discard(row_id)
                if not index[value]:
                    del index[value]
        self._members[row.primary_id].discard(row_id)
        if not self._members[row.primary_id]:
            del self._members[row.primary_id]

    def join(self, primary_ids: Iterable[int], now: datetime) -> Merge | None:
        """Merge whole identities into their oldest primary (rule 7 without an input)."""
        members = [self.rows[i] for p in set(primary_ids) for i in self._members[p]]
        return self._relink(min(members, key=_AGE), members, None, now) if members else None

    def view(self, primary_id: int) -> ContactView:
        primary = self.rows[primary_id]
        members = self._members[primary_id]
        if len(members) == 1:  # most customers: one row
            return ContactView(
                primary_id,
                () if primary.email is None else (primary.email,),
                () if primary.phone_number is None else (primary.phone_number,),
                (),
            )
        others = sorted((self.rows[i] for i in members if i != primary_id), key=_AGE)
        ordered = [primary, *others]
        return ContactView(
            primary_id=primary_id,
            emails=tuple(dict.fromkeys(r.email for r in ordered if r.email is not None)),
            phone_numbers=tuple(dict.fromkeys(r.phone_number for r in ordered if r.phone_number is not None)),
            secondary_ids=tuple(r.id for r in others),
        )

    def _relink(
        self, winner: Contact, members: list[Contact], created: Contact | None, now: datetime
    ) -> Merge | None:
        """Point every row of the joined clusters straight at `winner` (rules 3 and 7)."""
        demoted: list[int] = []
        relinked: list[int] = []
        for row in members:
            target = None if row is winner else winner.id
            if row.linked_id == target:
                continue
            if row is not created:
                (demoted if row.linked_id is None else relinked).append(row.id)
                row.updated_at = now
                self.changed.add(row.id)
            self._move(row, target)
        if not demoted and not relinked:
            return None
        return Merge(winner.id, tuple(sorted(demoted)), tuple(sorted(relinked)))

    def _move(self, row: Contact, linked_id: int | None) -> None:
        self._members[row.primary_id].discard(row.id)
        if not self._members[row.primary_id]:
            del self._members[row.primary_id]
        row.linked_id = linked_id
        self._members[row.primary_id].add(row.id)

    def _insert(self, row: Contact) -> None:
        self._add(row)
        self.inserted.append(row)

    def _add(self, row: Contact) -> None:
        self.rows[row.id] = row
        if row.email is not None:
            self._by_email[row.email].add(row.id)
        if row.phone_number is not None:
            self._by_phone[row.phone_number].add(row.id)
        self._members[row.primary_id].add(row.id)

    @staticmethod
    def _index_lookup(index: dict[str, set[int]], value: str | None) -> Set[int]:
        return index.get(value, _NONE) if value is not None else _NONE


_NONE: frozenset[int] = frozenset()

"""The link graph (DESIGN.md, rules 12-18): which live rows belong together, and why.

Nodes are live rows. Two rows are linked when they share a value that is not blocked, or when a
recorded rule-7 merge bridged an email of one to a phone of the other (no row holds that pair) and
neither bridged value is blocked. Every identity is exactly one connected component of this graph:
splits regroup rows by component, `identity check` verifies it, and explanations walk it.

Pure code over rows already loaded; each value contributes a star around its oldest holder rather than
every pair, so the graph stays linear in the number of rows.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Literal, Protocol, TypeVar

Kind = Literal["email", "phone"]
IsBlocked = Callable[[Kind, str], bool]


class Row(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def email(self) -> str | None: ...
    @property
    def phone_number(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class Link:
    """Why two rows are linked: a shared email or phone, or a recorded merge of an email and a phone."""

    kind: Literal["email", "phone", "merge"]
    email: str | None
    phone: str | None


Adjacency = dict[int, list[tuple[int, Link]]]
R = TypeVar("R", bound=Row)

# Rule 3's order, (created_at, id): the oldest row of a set.
AGE = attrgetter("created_at", "id")


def values_of(email: str | None, phone: str | None) -> list[tuple[Kind, str]]:
    """The values present, each with its kind."""
    values: list[tuple[Kind, str]] = []
    if email is not None:
        values.append(("email", email))
    if phone is not None:
        values.append(("phone", phone))
    return values


def link_graph(rows: Iterable[Row], blocked: IsBlocked, bridges: Iterable[tuple[str, str]] = ()) -> Adjacency:
    """Each row's neighbours, with the link to each; every row is a key, isolated rows included."""
    by_email: defaultdict[str, list[Row]] = defaultdict(list)
    by_phone: defaultdict[str, list[Row]] = defaultdict(list)
    adjacency: Adjacency = {}
    for row in sorted(rows, key=AGE):
        adjacency[row.id] = []
        if row.email is not None and not blocked("email", row.email):
            by_email[row.email].append(row)
        if row.phone_number is not None and not blocked("phone", row.phone_number):
            by_phone[row.phone_number].append(row)

    def link(a: Row, b: Row, why: Link) -> None:
        if a.id != b.id:
            adjacency[a.id].append((b.id, why))
            adjacency[b.id].append((a.id, why))

    for email, holders in by_email.items():
        for row in holders[1:]:
            link(holders[0], row, Link("email", email, None))
    for phone, holders in by_phone.items():
        for row in holders[1:]:
            link(holders[0], row, Link("phone", None, phone))
    for email, phone in bridges:
        if email in by_email and phone in by_phone:
            link(by_email[email][0], by_phone[phone][0], Link("merge", email, phone))
    return adjacency


def components(rows: Sequence[R], adjacency: Adjacency) -> list[list[R]]:
    """The connected components, each oldest row first, ordered by their oldest rows."""
    by_id = {row.id: row for row in rows}
    seen: set[int] = set()
    found = []
    for row in sorted(rows, key=AGE):
        if row.id not in seen:
            tree = spanning_tree(adjacency, row.id)
            seen.update(tree)
            found.append(sorted((by_id[i] for i in tree), key=AGE))
    return found


def spanning_tree(adjacency: Adjacency, root: int) -> dict[int, tuple[int, Link] | None]:
    """Breadth first from `root`: each reachable row's parent and the link to it (None for the root)."""
    tree: dict[int, tuple[int, Link] | None] = {root: None}
    queue = deque([root])
    while queue:
        node = queue.popleft()
        for neighbour, why in adjacency[node]:
            if neighbour not in tree:
                tree[neighbour] = (node, why)
                queue.append(neighbour)
    return tree


def path(adjacency: Adjacency, start: int, goal: int) -> list[tuple[int, int, Link]] | None:
    """A shortest chain of links from `start` to `goal` as (from, to, link) steps, or None if unlinked."""
    tree = spanning_tree(adjacency, goal)
    if start not in tree:
        return None
    steps = []
    node = start
    while (parent := tree[node]) is not None:
        steps.append((node, parent[0], parent[1]))
        node = parent[0]
    return steps

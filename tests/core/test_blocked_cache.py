"""An API process's cache of blocked values (docs/guardrails.md): a call holding a value known to be
blocked skips that value's locks; the block is still read under the call's row locks, so a stale entry
changes no answer."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from consumer.contract import Outcome
from consumer.core import Guardrails, IdentifiersBlocked, Resolution, check_invariants, reconcile
from consumer.core.blocking import block_value, list_blocks, unblock_value
from consumer.core.blocklist import CACHE_MAX_ENTRIES, BlockedCache, lock_key, value_hash
from consumer.core.links import Kind
from tests.core.helpers import contacts, request, run_concurrently, start_until_it_waits

HUB = "5550100"
EXACT = Guardrails()
"""What the worker and the CLI use, and here another API process: no cache."""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cached(ttl_s: float = 60, clock: Clock | None = None) -> tuple[Guardrails, BlockedCache]:
    cache = BlockedCache(ttl_s, clock or Clock())
    return Guardrails(blocked_cache=cache), cache


def digest(kind: Kind, value: str) -> bytes:
    return value_hash(kind, value, EXACT.hash_key)


@pytest.fixture
def hub(db: psycopg.Connection[Any]) -> int:
    """The block of the hub phone, which one row (contact 1, doc's) stored before the block."""
    reconcile(db, request("doc@hillvalley.edu", HUB, event="before"))
    return block_value(db, "phone", HUB, EXACT, added_by="test").block_id


@pytest.fixture
def other(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A second session, for the call under test to run in while the first one watches."""
    with psycopg.connect(database_url) as conn:
        yield conn


def hold_the_hub(holder: psycopg.Connection[Any]) -> None:
    """What a transaction writing the hub phone holds: its advisory lock, and the row lock of the
    identity holding it."""
    holder.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key("phone", HUB)])
    holder.execute("SELECT id FROM contact WHERE id = 1 FOR NO KEY UPDATE")


def test_a_call_skips_the_locks_of_a_value_known_blocked(
    db: psycopg.Connection[Any], other: psycopg.Connection[Any], database_url: str, hub: int
) -> None:
    guard, cache = cached()
    reconcile(db, request("marty@hillvalley.edu", HUB, event="learns"), guard)
    assert digest("phone", HUB) in cache

    with psycopg.connect(database_url) as holder, ThreadPoolExecutor(1) as pool:
        hold_the_hub(holder)
        try:
            call = pool.submit(reconcile, other, request("biff@hillvalley.edu", HUB, event="skips"), guard)
            answer = call.result(timeout=20)
        finally:
            holder.rollback()

    assert (answer.contact.emails, answer.contact.phone_numbers) == (("biff@hillvalley.edu",), ())
    assert check_invariants(db) == []


def call_while_the_hub_is_held(
    db: psycopg.Connection[Any],
    other: psycopg.Connection[Any],
    database_url: str,
    event: str,
    guard: Guardrails,
) -> list[Resolution]:
    """Biff's call with the hub phone on `other`, which must wait while another transaction holds the
    hub's lock; its answers once that transaction lets go."""
    answers: list[Resolution] = []
    with psycopg.connect(database_url) as holder:
        hold_the_hub(holder)
        call = request("biff@hillvalley.edu", HUB, event=event)
        thread = start_until_it_waits(
            db, other, lambda: answers.append(reconcile(other, call, guard)), "the call should wait"
        )
        holder.rollback()
        thread.join(30)
    return answers


def test_without_the_cache_a_call_waits_for_the_blocked_values_lock(
    db: psycopg.Connection[Any], other: psycopg.Connection[Any], database_url: str, hub: int
) -> None:
    answers = call_while_the_hub_is_held(db, other, database_url, "waits", EXACT)
    assert [a.contact.emails for a in answers] == [("biff@hillvalley.edu",)]


def test_a_junk_value_is_never_locked(
    db: psycopg.Connection[Any], other: psycopg.Connection[Any], database_url: str
) -> None:
    with psycopg.connect(database_url) as holder, ThreadPoolExecutor(1) as pool:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [lock_key("email", "test@test.com")])
        try:
            answer = pool.submit(reconcile, other, request("test@test.com", HUB, event="junk")).result(20)
        finally:
            holder.rollback()
    assert (answer.contact.emails, answer.contact.phone_numbers) == ((), (HUB,))


def test_an_unblock_in_this_process_forgets_the_value_at_once(db: psycopg.Connection[Any], hub: int) -> None:
    guard, cache = cached()
    reconcile(db, request("marty@hillvalley.edu", HUB, event="learns"), guard)

    unblock_value(db, hub, guard, removed_by="test")

    assert digest("phone", HUB) not in cache
    answer = reconcile(db, request("biff@hillvalley.edu", HUB, event="after"), guard)
    assert answer.contact.primary_id == 1, "linked through the phone again"


def test_a_stale_entry_is_read_again_and_the_call_takes_the_lock(
    db: psycopg.Connection[Any], other: psycopg.Connection[Any], database_url: str, hub: int
) -> None:
    """Another process unblocks the phone: this one's entry is stale. The call skips the phone's locks,
    finds the block gone under its row locks, and starts again with the locks, as without a cache."""
    guard, cache = cached()
    reconcile(db, request("marty@hillvalley.edu", HUB, event="learns"), guard)
    unblock_value(db, hub, EXACT, removed_by="another process")
    assert digest("phone", HUB) in cache

    answers = call_while_the_hub_is_held(db, other, database_url, "stale", guard)

    assert [(a.contact.primary_id, a.contact.phone_numbers) for a in answers] == [(1, (HUB,))]
    assert digest("phone", HUB) not in cache
    assert check_invariants(db) == []


def test_a_stale_entry_never_counts_as_a_block(db: psycopg.Connection[Any]) -> None:
    """Rule 14 counts the identity's unblocked values from the table, not from the cache: trusting a
    stale entry here would take the identity past the cap."""
    reconcile(db, request("doc@hillvalley.edu", HUB, event="doc"))
    reconcile(db, request("marty@hillvalley.edu", HUB, event="marty"))
    blocked = block_value(db, "phone", HUB, EXACT, added_by="test")
    unblock_value(db, blocked.block_id, EXACT, removed_by="test")  # doc, marty, the phone: one identity
    cache = BlockedCache(60)
    cache.add(digest("phone", HUB))  # as if this process had not heard of the unblock yet
    capped = Guardrails(max_identifiers_per_identity=3, blocked_cache=cache)

    reconcile(db, request("doc@hillvalley.edu", "5550199", event="fourth"), capped)

    assert [(b.value, b.reason) for b in list_blocks(db)] == [(HUB, "identity_cap")]
    assert check_invariants(db, Guardrails(max_identifiers_per_identity=3)) == []


def test_the_block_is_read_again_once_the_row_locks_are_held(
    db: psycopg.Connection[Any], other: psycopg.Connection[Any], database_url: str
) -> None:
    """An unblock in another process has removed the block but not committed yet, holding the row locks
    of the identities holding the phone. A call the cache lets skip the phone waits for those row locks
    (its email is in one of them), and only then reads the block: gone, so it merges through the phone."""
    reconcile(db, request("doc@hillvalley.edu", HUB, event="doc"))
    reconcile(db, request("marty@hillvalley.edu", HUB, event="marty"))
    blocked = block_value(db, "phone", HUB, EXACT, added_by="test")  # contacts 1 and 2 apart
    guard, cache = cached()
    cache.add(digest("phone", HUB))

    answers: list[Resolution] = []
    with psycopg.connect(database_url) as unblock:
        hold_the_hub(unblock)
        unblock.execute("SELECT id FROM contact WHERE id = 2 FOR NO KEY UPDATE")
        unblock.execute("UPDATE blocked_value SET removed_at = now() WHERE id = %s", [blocked.block_id])
        call = request("doc@hillvalley.edu", HUB, event="call")
        thread = start_until_it_waits(
            db, other, lambda: answers.append(reconcile(other, call, guard)), "the call should wait"
        )
        unblock.commit()  # what the unblock would have merged, the call merges
        thread.join(30)

    assert [(a.outcome, a.contact.primary_id, a.contact.secondary_ids) for a in answers] == [
        (Outcome.MERGED, 1, (2,))
    ]


def test_calls_racing_an_unblock_elsewhere_keep_the_invariants(
    db: psycopg.Connection[Any], database_url: str
) -> None:
    """Each round another process unblocks the hub while this process's threads still hold it as
    blocked; they all find out, and the first re-blocks it (rule 13) as it would without a cache."""
    links = Guardrails(max_links_per_value=3)
    for n in range(4):  # the fourth email blocks the phone
        reconcile(db, request(f"buyer{n}@x.io", HUB, event=f"buyer{n}"), links)
    cache = BlockedCache(60)
    guard = Guardrails(max_links_per_value=3, blocked_cache=cache)
    threads, rounds = 4, 5

    def work(n: int, conn: psycopg.Connection[Any], start: threading.Barrier) -> None:
        for r in range(rounds):
            if n == 0:  # another process, which unblocks the hub
                cache.add(digest("phone", HUB))
                (block,) = list_blocks(db)
                unblock_value(db, block.id, links, removed_by="another process")
            start.wait()  # the calls go
            if n > 0:
                reconcile(conn, request(f"t{n}r{r}@x.io", HUB, event=f"t{n}r{r}"), guard)
            start.wait()  # and are done
            if n == 0:
                assert [b.reason for b in list_blocks(db)] == ["fan_out"], "blocked again by the first call"

    run_concurrently(threads + 1, work, database_url)
    assert {row.email for row in contacts(db) if row.phone_number == HUB} == {
        f"buyer{n}@x.io" for n in range(3)
    }, "no call stored the phone"
    assert check_invariants(db, guard) == []


def test_entries_expire_after_the_ttl() -> None:
    clock = Clock()
    cache = BlockedCache(5, clock)
    cache.add(b"hash")
    clock.now += 4.9
    assert b"hash" in cache
    clock.now += 0.1
    assert b"hash" not in cache


def test_an_expired_entry_no_longer_skips_the_lock(
    db: psycopg.Connection[Any], other: psycopg.Connection[Any], database_url: str, hub: int
) -> None:
    clock = Clock()
    guard, cache = cached(5, clock)
    reconcile(db, request("marty@hillvalley.edu", HUB, event="learns"), guard)
    clock.now += 5

    answers: list[Resolution] = []
    with psycopg.connect(database_url) as holder:
        hold_the_hub(holder)
        call = request("biff@hillvalley.edu", HUB, event="expired")
        thread = start_until_it_waits(
            db, other, lambda: answers.append(reconcile(other, call, guard)), "the call should wait"
        )
        holder.rollback()
        thread.join(30)
    assert [a.contact.phone_numbers for a in answers] == [()]
    assert digest("phone", HUB) in cache, "found blocked again, and remembered"


def test_the_cache_starts_afresh_past_its_size() -> None:
    cache = BlockedCache(60)
    for n in range(CACHE_MAX_ENTRIES):
        cache.add(n.to_bytes(4, "big"))
    cache.add(b"one too many")
    assert b"one too many" in cache
    assert (0).to_bytes(4, "big") not in cache


def test_the_cache_holds_keyed_hashes_never_values(db: psycopg.Connection[Any], hub: int) -> None:
    guard, cache = cached()
    block_value(db, "email", "till@shop.io", EXACT, added_by="test")
    with pytest.raises(IdentifiersBlocked):
        reconcile(db, request("till@shop.io", HUB, event="learns"), guard)

    held = reachable(cache)
    hashes = {digest("phone", HUB), digest("email", "till@shop.io")}
    assert {o for o in held if isinstance(o, bytes)} == hashes
    assert not [o for o in held if isinstance(o, str) and ("till" in o or HUB in o)]


def reachable(root: object) -> list[object]:
    """Everything the cache refers to, through its attributes and containers."""
    found, todo = [], [root]
    while todo:
        obj = todo.pop()
        found.append(obj)
        if obj is root or isinstance(obj, dict | list | tuple | set | frozenset):
            todo.extend(gc.get_referents(obj))
    return found

"""Event ids (SPEC.md, "Words"): assigned at acceptance, time-sortable and unique (UUIDv7, RFC 9562)."""
from __future__ import annotations

import os
import random
import re
import threading
import time
import uuid

import pytest

from bus.events import id_time, new_id

CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_id_is_a_canonical_lowercase_uuid_string():
    event_id = new_id()
    assert CANONICAL.fullmatch(event_id), event_id
    assert str(uuid.UUID(event_id)) == event_id


@pytest.mark.parametrize("now_ms", [0, 1, 1_700_000_000_000, 2**48 - 1, None])
def test_id_is_a_valid_uuid_version_7_with_rfc_4122_variant(now_ms):
    for _ in range(200):
        u = uuid.UUID(new_id(now_ms))
        assert u.version == 7
        assert u.variant == uuid.RFC_4122


def test_ids_are_unique_over_10k():
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == 10_000


def test_ids_made_in_the_same_millisecond_are_unique():
    ids = [new_id(1_700_000_000_000) for _ in range(10_000)]
    assert len(set(ids)) == 10_000


def test_ids_carry_random_bits_in_both_random_fields():
    ids = [uuid.UUID(new_id(1_700_000_000_000)).int for _ in range(2000)]
    rand_a = {(i >> 64) & 0xFFF for i in ids}
    rand_b = {i & ((1 << 62) - 1) for i in ids}
    assert len(rand_a) > 1000  # 12 bits: 4096 values
    assert len(rand_b) == 2000


def test_ids_sort_by_time():
    times = sorted(random.Random(1).sample(range(1_600_000_000_000, 1_900_000_000_000), 2000))
    ids = [new_id(ms) for ms in times]
    shuffled = ids[:]
    random.Random(2).shuffle(shuffled)
    assert sorted(shuffled) == ids


def test_ids_one_millisecond_apart_sort_in_order():
    for ms in (0, 1_700_000_000_000, 2**48 - 2):
        for _ in range(200):
            assert new_id(ms) < new_id(ms + 1)


def test_ids_sort_by_time_as_uuid_objects_too():
    a, b = new_id(1_700_000_000_000), new_id(1_700_000_000_001)
    assert uuid.UUID(a) < uuid.UUID(b)


def test_id_time_round_trips_the_millisecond():
    for ms in (0, 1, 999, 1_000, 1_700_000_000_123, 2**48 - 1):
        assert id_time(new_id(ms)) == ms / 1000


def test_id_time_of_a_fresh_id_is_now():
    before = time.time()
    event_id = new_id()
    after = time.time()
    assert before - 0.002 <= id_time(event_id) <= after + 0.002


def test_id_embeds_unix_milliseconds_in_its_first_48_bits():
    event_id = new_id(0x0123456789AB)
    assert event_id.startswith("01234567-89ab-7")


def test_a_forked_child_makes_ids_of_its_own_not_the_parents_next_ones():
    new_id(1_700_000_000_000)  # the parent's pool of random digits is drawn
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, in the same millisecond as the parent's
        os.write(write, " ".join(new_id(1_700_000_000_000) for _ in range(20)).encode())
        os._exit(0)
    os.close(write)
    parents = {new_id(1_700_000_000_000) for _ in range(20)}
    with os.fdopen(read, "rb") as f:
        childs = set(f.read().decode().split())
    os.waitpid(pid, 0)
    assert len(childs) == 20 and not parents & childs


def test_ids_drawn_from_many_threads_at_once_are_each_made_once():
    made: list[list[str]] = [[] for _ in range(8)]

    def draw(t: int) -> None:
        made[t].extend(new_id(1_700_000_000_000) for _ in range(5000))

    workers = [threading.Thread(target=draw, args=(t,)) for t in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    ids = [i for part in made for i in part]
    assert len(ids) == 40_000 and len(set(ids)) == len(ids)

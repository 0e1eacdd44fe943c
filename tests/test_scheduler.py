"""The in-memory fair order against the whole-queue rule it replaces (bot.fairness.fair_order)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from bot.renderers.base import Capabilities
from bot.scheduler import BATCH_SCAN, FairQueue, Ticket
from tests.fairness_reference import fair_order

Job3 = tuple[int, int, int]  # (job id, guild, member)


def ticket(job: Job3, key: int = 0, images: int = 1) -> Ticket:
    return Ticket(job[0], job[1], job[2], (key,), 64, 64, images)


def random_queue(rng: random.Random, jobs: int, guilds: int, members: int) -> list[Job3]:
    return [(i, rng.randrange(guilds) + 1, rng.randrange(members) + 1) for i in range(1, jobs + 1)]


def random_turns(rng: random.Random, queue: Sequence[Job3]) -> dict[tuple[int, int], int]:
    """Turns as a store that served some of these guilds and members before would hold them."""
    turns: dict[tuple[int, int], int] = {}
    for _, guild, member in rng.sample(list(queue), k=len(queue) // 2):
        turn = rng.randrange(1, 10 * len(queue))
        turns[(guild, 0)] = max(turns.get((guild, 0), 0), turn)
        turns[(guild, member)] = turn
    return turns


def reference_take(turns: dict[tuple[int, int], int], job: Job3) -> None:
    """How the store's claim updated turns before the index existed."""
    turn = max(turns.values(), default=0) + 1
    turns[(job[1], 0)] = turn
    turns[(job[1], job[2])] = turn


@pytest.mark.parametrize("seed", range(40))
def test_draining_follows_the_fair_order_exactly(seed: int) -> None:
    rng = random.Random(seed)
    queue = random_queue(rng, rng.randrange(1, 120), rng.randrange(1, 12), rng.randrange(1, 6))
    turns = random_turns(rng, queue) if seed % 2 else {}
    fq = FairQueue(turns)
    for job in queue:
        fq.add(ticket(job))
    expected = fair_order(queue, turns)

    assert [t.job_id for t in fq.walk()] == expected
    assert {job_id: fq.place(job_id) for job_id, _, _ in queue} == {
        job_id: place for place, job_id in enumerate(expected, start=1)
    }
    drained = []
    while (head := fq.head()) is not None:
        fq.take([head])
        drained.append(head.job_id)
    assert drained == expected
    assert len(fq) == 0


@pytest.mark.parametrize("seed", range(30))
def test_submits_cancels_and_claims_in_any_mix_keep_order_and_places_right(seed: int) -> None:
    rng = random.Random(1000 + seed)
    turns: dict[tuple[int, int], int] = {}
    fq = FairQueue()
    queued: dict[int, Job3] = {}
    next_id = 1
    for _ in range(300):
        action = rng.random()
        if action < 0.5 or not queued:
            job = (next_id, rng.randrange(6) + 1, rng.randrange(4) + 1)
            next_id += 1
            queued[job[0]] = job
            fq.add(ticket(job))
        elif action < 0.65:
            job_id = rng.choice(list(queued))
            del queued[job_id]
            assert fq.remove(job_id) is not None
        else:
            head = fq.head()
            assert head is not None
            reference_take(turns, queued.pop(head.job_id))
            fq.take([head])
        expected = fair_order(queued.values(), turns)
        assert [t.job_id for t in fq.walk()] == expected
        probe = rng.choice(expected) if expected else None
        if probe is not None:
            assert fq.place(probe) == expected.index(probe) + 1


def test_a_restart_rebuilds_the_same_order_from_stored_turns() -> None:
    rng = random.Random(7)
    queue = random_queue(rng, 60, 5, 4)
    live = FairQueue()
    for job in queue:
        live.add(ticket(job))
    stored: dict[tuple[int, int], int] = {}
    for _ in range(20):
        head = live.head()
        assert head is not None
        for guild, member, turn in live.turns_for([head]):
            stored[(guild, member)] = turn
        live.take([head])
    rebuilt = FairQueue(stored)
    for job_id in (t.job_id for t in live.walk()):
        rebuilt.add(next(ticket(j) for j in queue if j[0] == job_id))
    assert [t.job_id for t in rebuilt.walk()] == [t.job_id for t in live.walk()]


BATCH_OF_4 = Capabilities(sizes=((64, 64),), max_batch=4)


@pytest.mark.parametrize("seed", range(20))
def test_a_batch_is_the_head_plus_compatible_jobs_in_fair_order(seed: int) -> None:
    rng = random.Random(2000 + seed)
    queue = random_queue(rng, 80, 8, 3)
    keys = {job[0]: rng.randrange(3) for job in queue}
    counts = {job[0]: rng.randrange(1, 3) for job in queue}
    fq = FairQueue()
    for job in queue:
        fq.add(ticket(job, keys[job[0]], counts[job[0]]))
    order = fair_order(queue, {})
    expected = [order[0]]
    for job_id in order[1:]:
        if keys[job_id] == keys[order[0]] and sum(counts[j] for j in expected) + counts[job_id] <= 4:
            expected.append(job_id)

    batch = fq.pick(BATCH_OF_4)
    assert [t.job_id for t in batch] == expected
    fq.take(batch)
    rest = [job for job in queue if job[0] not in expected]
    turns: dict[tuple[int, int], int] = {}
    for job_id in expected:
        reference_take(turns, next(j for j in queue if j[0] == job_id))
    assert [t.job_id for t in fq.walk()] == fair_order(rest, turns)


def test_a_batch_looks_only_so_far_back_in_line() -> None:
    fq = FairQueue()
    for job_id in range(1, BATCH_SCAN + 3):
        fq.add(ticket((job_id, job_id, 1), key=0 if job_id in (1, BATCH_SCAN + 2) else 1))
    assert [t.job_id for t in fq.pick(BATCH_OF_4)] == [1]


def test_upscales_never_share_a_call_and_unknown_jobs_have_no_place() -> None:
    fq = FairQueue()
    fq.add(Ticket(1, 1, 1, None, 64, 64, 1))
    fq.add(Ticket(2, 1, 2, None, 64, 64, 1))
    assert fq.place(3) is None
    assert fq.remove(3) is None
    assert [t.job_id for t in fq.pick(BATCH_OF_4)] == [1]

"""Property tests of the fair order against a reference model written for clarity, not speed."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fairness_reference import fair_order

Jobs = list[tuple[int, int, int]]
Turns = dict[tuple[int, int], int]
# No example database: runs stay independent of earlier ones and leave nothing in the work tree.
QUICK = settings(database=None, deadline=None, max_examples=300)


def reference(jobs: Jobs, turns: Turns) -> list[int]:
    """The rule as written: least recently served guild, its least recently served member, their oldest job.

    Ties between never-served (or equally served) guilds and members go to the oldest waiting job.
    """
    waiting = sorted(jobs)
    turns = dict(turns)
    turn = max(turns.values(), default=0)
    order: list[int] = []

    def oldest(guild: int, member: int | None = None) -> int:
        return min(j for j, g, m in waiting if g == guild and member in (None, m))

    while waiting:
        guild = min({g for _, g, _ in waiting}, key=lambda g: (turns.get((g, 0), 0), oldest(g)))
        members = {m for _, g, m in waiting if g == guild}
        member = min(members, key=lambda m: (turns.get((guild, m), 0), oldest(guild, m)))
        job = oldest(guild, member)
        turn += 1
        turns[(guild, 0)] = turns[(guild, member)] = turn
        waiting = [entry for entry in waiting if entry[0] != job]
        order.append(job)
    return order


@st.composite
def queues(draw: st.DrawFn) -> Jobs:
    """Up to 40 waiting jobs over a few guilds and members, with unique ids in any arrival mix."""
    owners = draw(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4)), max_size=40))
    ids = draw(st.lists(st.integers(1, 10_000), min_size=len(owners), max_size=len(owners), unique=True))
    return [(job_id, guild, member) for job_id, (guild, member) in zip(ids, owners, strict=True)]


# Turns may name guilds and members with nothing waiting (served earlier, queue since emptied).
past_turns = st.dictionaries(st.tuples(st.integers(1, 5), st.integers(0, 5)), st.integers(0, 60), max_size=12)


@QUICK
@given(queues(), past_turns)
def test_fair_order_matches_the_reference_model(jobs: Jobs, turns: Turns) -> None:
    assert fair_order(jobs, turns) == reference(jobs, turns)


@QUICK
@given(queues(), past_turns)
def test_every_job_comes_once_and_each_member_in_arrival_order(jobs: Jobs, turns: Turns) -> None:
    order = fair_order(jobs, turns)
    assert sorted(order) == sorted(j for j, _, _ in jobs)
    owner = {j: (g, m) for j, g, m in jobs}
    for who in set(owner.values()):
        mine = [j for j in order if owner[j] == who]
        assert mine == sorted(mine)


@QUICK
@given(queues())
def test_from_a_fresh_start_guilds_and_members_take_strict_turns(jobs: Jobs) -> None:
    # No guild is served twice while another guild that still waits has not been served once
    # more; likewise for the members of one guild.
    order = fair_order(jobs, {})
    owner = {j: (g, m) for j, g, m in jobs}
    left = Counter(owner.values())
    guilds_left = Counter(g for g, _ in owner.values())
    served_guild: Counter[int] = Counter()
    served_member: Counter[tuple[int, int]] = Counter()
    for job in order:
        guild, member = owner[job]
        for other, waiting in guilds_left.items():
            if waiting and other != guild:
                assert served_guild[guild] <= served_guild[other], (guild, other, order)
        for (g, m), waiting in left.items():
            if waiting and g == guild and m != member:
                assert served_member[(guild, member)] <= served_member[(g, m)], (member, m, order)
        served_guild[guild] += 1
        served_member[(guild, member)] += 1
        guilds_left[guild] -= 1
        left[(guild, member)] -= 1

"""The fairness rule: guilds take turns, then members within a guild, then each member's oldest job."""

from __future__ import annotations

import heapq
from collections import defaultdict, deque
from collections.abc import Iterable


def fair_order(jobs: Iterable[tuple[int, int, int]], turns: dict[tuple[int, int], int]) -> list[int]:
    """Return job ids in the order the store's ``claim`` hands them out.

    ``jobs`` are (job id, guild id, member id); ``turns`` maps (guild, 0) and (guild, member)
    to the turn each was last served at. The rule: the least recently served guild, then its
    least recently served member, then that member's oldest job. Heaps make a full queue cost
    O(n log n). The store claims by this order and /queue shows it, so the places members see
    are the order they are served in.
    """
    queues: dict[int, dict[int, deque[int]]] = defaultdict(lambda: defaultdict(deque))
    for job_id, guild, member in sorted(jobs):
        queues[guild][member].append(job_id)
    turn = max(turns.values(), default=0)

    # Both heaps key on (last turn, oldest waiting job id): never-served entries have turn 0
    # and fall back to their oldest job.
    guild_heap = [
        (turns.get((g, 0), 0), min(q[0] for q in members.values()), g) for g, members in queues.items()
    ]
    heapq.heapify(guild_heap)
    member_heaps: dict[int, list[tuple[int, int, int]]] = {}
    for g, members in queues.items():
        heap = [(turns.get((g, m), 0), q[0], m) for m, q in members.items()]
        heapq.heapify(heap)
        member_heaps[g] = heap

    order: list[int] = []
    while guild_heap:
        _, _, guild = heapq.heappop(guild_heap)
        _, _, member = heapq.heappop(member_heaps[guild])
        queue = queues[guild][member]
        order.append(queue.popleft())
        turn += 1
        if queue:
            heapq.heappush(member_heaps[guild], (turn, queue[0], member))
        if member_heaps[guild]:
            heapq.heappush(guild_heap, (turn, min(e[1] for e in member_heaps[guild]), guild))
    return order

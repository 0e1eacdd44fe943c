"""The fair order, kept in memory: what each decision costs follows the active guilds and members.

The rule (unchanged from the first wave, and the one ``bot.fairness.fair_order`` states over a
whole queue): the guild served least recently goes first, then its member served least recently,
then that member's oldest job; entries never served (turn 0) go by their oldest waiting job.

Because a served guild or member takes the newest turn, the order is a ring: the active guilds,
sorted once by (last turn, oldest job), then visited round after round in that same order, each
dropping out when it has no job left; inside a guild its members form the same kind of ring. So:

- claiming the head is a few sorted-list operations (O(log guilds + log members)),
- the fair order can be walked lazily from the head (a batch takes compatible jobs from it),
- a job's place in line follows from the rings without walking the queue: a job in round ``s``
  of its ring is preceded by ``sum(min(size, s))`` over the ring plus the entries before it that
  still have more than ``s`` jobs (see ``_Ring.before``).

The index is rebuilt from SQLite at start (queued jobs and the ``turns`` table); the lifecycle
updates it only after the transaction that made a change has committed.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from sortedcontainers import SortedList

from bot.jobs import Job
from bot.renderers.base import Capabilities, Operation

# How many queued jobs a batch claim looks at, in fair order, for jobs that may join the head.
# Without a bound a batch would cost O(queue); a join further back than this only waits its turn.
BATCH_SCAN = 512

BatchKey = tuple[object, ...]


@dataclass(frozen=True, slots=True)
class Ticket:
    """A queued job as the scheduler sees it: who asked, and what a batch must share with it."""

    job_id: int
    guild_id: int
    user_id: int
    key: BatchKey | None  # None: the job never shares a pipeline call (upscales)
    width: int
    height: int
    images: int

    @classmethod
    def of(cls, job: Job) -> Ticket:
        """Describe a stored job."""
        return cls(
            job.id,
            job.guild_id,
            job.user_id,
            batch_key(job),
            job.params.width,
            job.params.height,
            job.params.count,
        )


def batch_key(job: Job) -> BatchKey | None:
    """What jobs must share to go into one pipeline call (model, steps and scheduler are the backend's)."""
    p = job.params
    operation = job.kind.operation
    if operation is Operation.UPSCALE:
        return None
    return (operation, p.width, p.height, p.strength if operation is Operation.VARY else None)


class _Ring:
    """Entries (guilds, or the members of one guild) in ring order, with their job counts."""

    __slots__ = ("_by_size", "_keys", "_order")

    def __init__(self) -> None:
        self._order: SortedList[tuple[int, int, int]] = SortedList()  # (turn, oldest job, id)
        self._keys: dict[int, tuple[tuple[int, int, int], int]] = {}  # id -> (key, size)
        # Entries by job count: the distinct counts are few (bounded by the queue limits), so
        # sums over them stay cheap however many jobs wait.
        self._by_size: defaultdict[int, set[int]] = defaultdict(set)

    def __len__(self) -> int:
        return len(self._keys)

    def put(self, entry: int, turn: int, oldest: int, size: int) -> None:
        """Insert or move ``entry``; a size of 0 removes it."""
        self.drop(entry)
        if size == 0:
            return
        key = (turn, oldest, entry)
        self._order.add(key)
        self._keys[entry] = (key, size)
        self._by_size[size].add(entry)

    def drop(self, entry: int) -> None:
        """Remove ``entry`` if present."""
        known = self._keys.pop(entry, None)
        if known is None:
            return
        key, size = known
        self._order.remove(key)
        bucket = self._by_size[size]
        bucket.discard(entry)
        if not bucket:
            del self._by_size[size]

    def first(self) -> int:
        """The entry served next."""
        return int(self._order[0][2])

    def entries(self) -> Iterator[int]:
        """Entries in ring order, lazily."""
        return (int(key[2]) for key in self._order)

    def before(self, entry: int, round_: int) -> int:
        """How many jobs of this ring come before ``entry``'s job of round ``round_`` (0-based)."""
        key = self._keys[entry][0]
        if round_ == 0:
            return int(self._order.index(key))
        earlier_rounds = bigger = 0
        for size, entries in self._by_size.items():
            earlier_rounds += min(size, round_) * len(entries)
            if size > round_:
                bigger += len(entries)
        # Entries before ``entry`` still holding a job in this round: count whichever side of
        # the size split is smaller, so a skewed queue costs the few, not the many.
        count_bigger = bigger <= len(self._keys) - bigger
        ahead = sum(
            1
            for size, entries in self._by_size.items()
            if (size > round_) is count_bigger
            for other in entries
            if self._keys[other][0] < key
        )
        if not count_bigger:
            ahead = int(self._order.index(key)) - ahead
        return earlier_rounds + ahead


class _Member:
    __slots__ = ("jobs", "turn")

    def __init__(self, turn: int) -> None:
        self.turn = turn
        self.jobs: list[int] = []  # ascending job ids


class _Guild:
    __slots__ = ("ids", "members", "ring", "turn")

    def __init__(self, turn: int) -> None:
        self.turn = turn
        self.members: dict[int, _Member] = {}
        self.ring = _Ring()
        self.ids: SortedList[int] = SortedList()


class FairQueue:
    """One backend's queued jobs in fair order. Plain data and no I/O: the lifecycle persists."""

    def __init__(self, turns: Mapping[tuple[int, int], int] | None = None) -> None:
        # (guild, 0) is a guild's last turn, (guild, member) a member's: the ``turns`` table.
        self._turns: dict[tuple[int, int], int] = dict(turns or {})
        self._turn = max(self._turns.values(), default=0)
        self._tickets: dict[int, Ticket] = {}
        self._guilds: dict[int, _Guild] = {}
        self._ring = _Ring()

    def __len__(self) -> int:
        return len(self._tickets)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._tickets

    def count(self, guild_id: int, user_id: int | None = None) -> int:
        """How many jobs a guild (or one of its members) has in this queue."""
        guild = self._guilds.get(guild_id)
        if guild is None:
            return 0
        if user_id is None:
            return len(guild.ids)
        member = guild.members.get(user_id)
        return 0 if member is None else len(member.jobs)

    def add(self, ticket: Ticket) -> None:
        """Queue a job (jobs arrive in id order; an older id is also placed correctly)."""
        if ticket.job_id in self._tickets:
            return
        self._tickets[ticket.job_id] = ticket
        guild = self._guilds.get(ticket.guild_id)
        if guild is None:
            guild = self._guilds[ticket.guild_id] = _Guild(self._turns.get((ticket.guild_id, 0), 0))
        member = guild.members.get(ticket.user_id)
        if member is None:
            turn = self._turns.get((ticket.guild_id, ticket.user_id), 0)
            member = guild.members[ticket.user_id] = _Member(turn)
        bisect.insort(member.jobs, ticket.job_id)
        guild.ids.add(ticket.job_id)
        self._reindex(ticket.guild_id, guild, ticket.user_id, member)

    def remove(self, job_id: int) -> Ticket | None:
        """Take a job out of the queue without it counting as a turn (cancelled, failed)."""
        ticket = self._tickets.pop(job_id, None)
        if ticket is not None:
            self._unlink(ticket)
        return ticket

    def head(self) -> Ticket | None:
        """The job served next, or None when the queue is empty."""
        if not self._ring:
            return None
        guild = self._guilds[self._ring.first()]
        return self._tickets[guild.members[guild.ring.first()].jobs[0]]

    def walk(self) -> Iterator[Ticket]:
        """Yield every queued job in the order it will be served, lazily and without changing anything."""
        visited = []
        for guild_id in self._ring.entries():
            jobs = self._guild_walk(self._guilds[guild_id])
            yield self._tickets[next(jobs)]
            visited.append(jobs)
        while visited:
            still = []
            for jobs in visited:
                job_id = next(jobs, None)
                if job_id is not None:
                    yield self._tickets[job_id]
                    still.append(jobs)
            visited = still

    def pick(self, caps: Capabilities | None = None) -> list[Ticket]:
        """The head and, for a batching backend, the jobs after it in fair order that share its call.

        The walk stops when the call is full or after BATCH_SCAN jobs, so a batch only ever
        takes jobs ahead of incompatible older ones by one call, and costs no more than that.
        """
        head = self.head()
        if head is None:
            return []
        taken = [head]
        if caps is None or head.key is None:
            return taken
        room = caps.batch_limit(head.width, head.height)
        images = head.images
        order = self.walk()
        next(order)
        for seen, ticket in enumerate(order, start=1):
            if images >= room or seen > BATCH_SCAN:
                break
            if ticket.key == head.key and images + ticket.images <= room:
                taken.append(ticket)
                images += ticket.images
        return taken

    def turns_for(self, tickets: Iterable[Ticket]) -> list[tuple[int, int, int]]:
        """The (guild, member, turn) rows taking ``tickets`` in this order will write (member 0: the guild)."""
        rows = []
        turn = self._turn
        for ticket in tickets:
            turn += 1
            rows += [(ticket.guild_id, 0, turn), (ticket.guild_id, ticket.user_id, turn)]
        return rows

    def take(self, tickets: Iterable[Ticket]) -> None:
        """Record that ``tickets`` were claimed in this order: each is a turn for its guild and member."""
        for ticket in tickets:
            if self._tickets.pop(ticket.job_id, None) is None:
                continue
            self._turn += 1
            self._turns[(ticket.guild_id, 0)] = self._turn
            self._turns[(ticket.guild_id, ticket.user_id)] = self._turn
            guild = self._guilds[ticket.guild_id]
            guild.turn = self._turn
            guild.members[ticket.user_id].turn = self._turn
            self._unlink(ticket)

    def place(self, job_id: int) -> int | None:
        """A queued job's 1-based place in line, or None if it is not queued here."""
        ticket = self._tickets.get(job_id)
        if ticket is None:
            return None
        guild = self._guilds[ticket.guild_id]
        member = guild.members[ticket.user_id]
        in_member = bisect.bisect_left(member.jobs, job_id)
        in_guild = guild.ring.before(ticket.user_id, in_member)
        return self._ring.before(ticket.guild_id, in_guild) + 1

    def _guild_walk(self, guild: _Guild) -> Iterator[int]:
        members = []
        for user_id in guild.ring.entries():
            member = guild.members[user_id]
            yield member.jobs[0]
            members.append(member)
        round_ = 1
        members = [m for m in members if len(m.jobs) > round_]
        while members:
            for member in members:
                yield member.jobs[round_]
            round_ += 1
            members = [m for m in members if len(m.jobs) > round_]

    def _unlink(self, ticket: Ticket) -> None:
        guild = self._guilds[ticket.guild_id]
        member = guild.members[ticket.user_id]
        member.jobs.remove(ticket.job_id)
        guild.ids.remove(ticket.job_id)
        if not member.jobs:
            del guild.members[ticket.user_id]
        self._reindex(ticket.guild_id, guild, ticket.user_id, member)
        if not guild.ids:
            del self._guilds[ticket.guild_id]

    def _reindex(self, guild_id: int, guild: _Guild, user_id: int, member: _Member) -> None:
        guild.ring.put(user_id, member.turn, member.jobs[0] if member.jobs else 0, len(member.jobs))
        self._ring.put(guild_id, guild.turn, guild.ids[0] if guild.ids else 0, len(guild.ids))

"""The challenge service: starts challenges, takes entries and votes, and runs their deadlines.

The rules live in ``bot.challenges`` and the state in the store; this module decides when things
happen. Messages go out through a ``Board`` (Discord in the bot, a recorder in tests), so the
service holds no Discord objects. Every deadline is processed from stored state: a challenge
whose deadline passed while Easel was down moves on at the next start, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from bot import challenges
from bot.challenges import Challenge, Entry, Phase, Ranked, Standing, VoteAction
from bot.errors import NotFound
from bot.jobs import Requester, utcnow
from bot.moderation import Moderation
from bot.store import Store
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)

# The runner sleeps until the next deadline, but wakes at least this often, so a clock that
# jumps (a suspended host) or a missed poke delays a phase change by a minute at most.
MAX_SLEEP_S = 60.0
# On stop, a pass under way may finish for this long: a post whose message id is not stored yet
# would be posted again after the restart, and Discord drops a repeated nonce for minutes only.
STOP_GRACE_S = 10.0


class Board(Protocol):
    """Where a challenge's messages appear. A failed post is retried on the next pass."""

    async def announce(self, challenge: Challenge) -> int:
        """Post the announcement (theme, rules, deadlines); return its message id."""
        ...

    async def show_entry(self, challenge: Challenge, entry: Entry, number: int) -> int:
        """Post entry ``number`` of the gallery with its vote button; return its message id."""
        ...

    async def announce_results(self, challenge: Challenge, ranked: Sequence[Ranked]) -> int:
        """Post the winners (podium image, ranked list, tiebreak rule); return its message id."""
        ...

    async def update_announcement(self, challenge: Challenge) -> None:
        """Show changed deadlines, or the end, on the announcement."""
        ...


class ChallengeService:
    """Prompt challenges: moderators run them, members enter and vote, deadlines move them on."""

    def __init__(
        self,
        store: Store,
        moderation: Moderation,
        board: Board,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._store = store
        self._moderation = moderation
        self._board = board
        self._clock = clock
        self._tasks = TaskGroup("challenges")
        self._wake = asyncio.Event()
        self._stopping = False

    # -- moderators ----------------------------------------------------------------------------

    async def start(
        self,
        who: Requester,
        *,
        theme: str,
        submit_for: str,
        vote_for: str,
        channel_id: int | None = None,
        entries_per_member: int = 1,
        anonymous: bool = False,
        votes_per_member: int | None = None,
        shuffle: bool = False,
    ) -> Challenge:
        """Start a challenge in ``channel_id`` (default: where the command was used) and announce it."""
        await self._moderation.require_moderator(who)
        now = self._clock()
        new = challenges.new_challenge(
            guild_id=who.guild_id,
            channel_id=channel_id or who.channel_id,
            theme=theme,
            submit_for=submit_for,
            vote_for=vote_for,
            created_by=who.user_id,
            season_id=await self._store.current_season(who.guild_id, now),
            now=now,
            entries_per_member=entries_per_member,
            anonymous=anonymous,
            votes_per_member=votes_per_member,
            shuffle=shuffle,
        )
        challenge = await self._store.start_challenge(new)
        log.info("challenge %d started in guild %d", challenge.id, who.guild_id)
        await self._moderation.audit(
            who.guild_id,
            f"🏆 <@{who.user_id}> started challenge #{challenge.id} in <#{challenge.channel_id}>",
        )
        self.poke()
        return challenge

    async def extend(self, who: Requester, challenge_id: int, duration: str) -> Challenge:
        """Move the current phase's deadline (and voting's with it) later."""
        await self._moderation.require_moderator(who)
        extra = challenges.parse_duration(duration)
        challenge = await self._store.extend_challenge(challenge_id, who.guild_id, extra, self._clock())
        self.poke()
        await self._refresh(challenge)
        return challenge

    async def cancel(self, who: Requester, challenge_id: int) -> Challenge:
        """End a challenge without results or points."""
        await self._moderation.require_moderator(who)
        challenge = await self._store.cancel_challenge(challenge_id, who.guild_id)
        await self._moderation.audit(who.guild_id, f"🏆 <@{who.user_id}> cancelled challenge #{challenge_id}")
        self.poke()
        await self._refresh(challenge)
        return challenge

    async def disqualify(self, who: Requester, entry_id: int) -> Entry:
        """Remove an entry from a challenge (its votes stop counting)."""
        await self._moderation.require_moderator(who)
        entry = await self._store.disqualify_entry(entry_id, who.guild_id)
        await self._moderation.audit(
            who.guild_id,
            f"🏆 <@{who.user_id}> disqualified entry #{entry_id} of challenge #{entry.challenge_id}",
        )
        return entry

    async def new_season(self, who: Requester) -> int:
        """Start a new season; the leaderboard starts again from zero. Returns its number."""
        await self._moderation.require_moderator(who)
        season = await self._store.start_season(who.guild_id, who.user_id, self._clock())
        return await self._store.season_number(season)

    # -- members -------------------------------------------------------------------------------

    async def submit(self, who: Requester, channel_id: int, job_id: int, image_index: int = 1) -> Entry:
        """Enter image ``image_index`` of a result in the challenge open in ``channel_id``."""
        await self._moderation.screen(who)
        challenge = await self._store.open_challenge_in(who.guild_id, channel_id)
        if challenge is None:
            raise NotFound("No challenge is taking entries in that channel right now.")
        return await self._store.submit_entry(
            challenge.id, who.guild_id, who.user_id, job_id, image_index, self._clock()
        )

    async def submit_link(self, who: Requester, link: str, image_index: int = 1) -> Entry:
        """Enter a result by its message link, in the challenge open in the result's channel."""
        guild_id, _channel_id, message_id = challenges.parse_message_link(link)
        if guild_id != who.guild_id:
            raise NotFound("That message is not an Easel result in this server. Copy the link of a result.")
        job = await self._store.job_by_message(who.guild_id, message_id)
        return await self.submit(who, job.posted_in, job.id, image_index)

    async def withdraw(self, who: Requester, entry_id: int) -> Entry:
        """Take back one's own entry before submissions close."""
        return await self._store.withdraw_entry(entry_id, who.guild_id, who.user_id, self._clock())

    async def vote(self, who: Requester, entry_id: int) -> VoteAction:
        """Vote for an entry, or take the vote back when the member already voted for it."""
        return await self._store.toggle_vote(entry_id, who.guild_id, who.user_id, self._clock())

    async def status(self, who: Requester, challenge_id: int | None = None) -> str:
        """The phase, deadlines and counts of one challenge, or of every running one in the guild."""
        if challenge_id is not None:
            shown = [await self._store.challenge(challenge_id, who.guild_id)]
        else:
            shown = await self._store.guild_challenges(who.guild_id, running_only=True)
        if not shown:
            return "No challenge is running in this server. Moderators start one with `/challenge start`."
        parts = []
        for challenge in shown:
            entries = [e for e in await self._store.entries(challenge.id) if e.valid]
            votes = sum((await self._store.vote_counts(challenge.id)).values())
            parts.append(challenges.status_text(challenge, len(entries), votes, self._clock()))
        return "\n\n".join(parts)

    async def leaderboard(self, who: Requester) -> tuple[int, list[Standing]]:
        """The current season's number and standings."""
        season = await self._store.current_season(who.guild_id, self._clock())
        standings = await self._store.season_leaderboard(who.guild_id, season)
        return await self._store.season_number(season), standings

    # -- deadlines -----------------------------------------------------------------------------

    def run(self) -> None:
        """Start processing deadlines in the background (first the ones missed while Easel was down)."""
        self._stopping = False
        self._tasks.spawn(self._runner(), name="challenge-deadlines")

    async def stop(self) -> None:
        """Stop processing deadlines after the post under way; anything unfinished is resumed by the next start."""
        self._stopping = True
        self._wake.set()
        await self._tasks.wait(STOP_GRACE_S)
        await self._tasks.cancel_all()

    def poke(self) -> None:
        """Look at the deadlines again now (a challenge was started, extended or cancelled)."""
        self._wake.set()

    async def process_due(self) -> float:
        """Move every challenge whose deadline passed, post what each phase needs; return seconds to sleep."""
        now = self._clock()
        running = await self._store.running_challenges()
        for challenge in running:
            if self._stopping:
                break
            try:
                await self._catch_up(challenge, now)
            except Exception:
                log.exception("challenge %d: deadline processing failed; will retry", challenge.id)
        handled = {challenge.id for challenge in running}
        for challenge in await self._store.finished_without_results():
            if self._stopping:
                break
            if challenge.id in handled:
                continue  # it finished in this pass, and its results were just tried
            try:
                await self._post_results(challenge)
            except Exception:
                log.exception("challenge %d: posting the results failed; will retry", challenge.id)
        deadlines = [c.deadline for c in await self._store.running_challenges() if c.deadline is not None]
        if not deadlines:
            return MAX_SLEEP_S
        return min(MAX_SLEEP_S, max(0.0, (min(deadlines) - now).total_seconds()))

    async def _runner(self) -> None:
        while not self._stopping:
            # Cleared before the pass, so a poke that arrives during it is not lost.
            self._wake.clear()
            delay = await self.process_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.05))

    async def _catch_up(self, challenge: Challenge, now: datetime) -> None:
        if challenge.announcement_message_id is None:
            message_id = await self._board.announce(challenge)
            await self._store.set_announcement(challenge.id, message_id)
        while True:
            entries = await self._store.entries(challenge.id)
            to = challenges.due_transition(challenge, now, valid_entries=sum(e.valid for e in entries))
            if to is None:
                break
            challenge = await self._store.set_challenge_phase(challenge.id, to, now=now)
            log.info("challenge %d -> %s", challenge.id, challenge.phase.value)
        if challenge.phase is Phase.VOTING:
            await self._post_gallery(challenge)
        elif challenge.phase is Phase.FINISHED:
            await self._post_results(challenge)

    async def _post_gallery(self, challenge: Challenge) -> None:
        entries = challenges.gallery_order(
            await self._store.entries(challenge.id), challenge.shuffle, seed=challenge.id
        )
        for number, entry in enumerate(entries, start=1):
            if self._stopping:
                return  # the next start posts the rest
            if entry.gallery_message_id is None:
                message_id = await self._board.show_entry(challenge, entry, number)
                await self._store.set_gallery_message(entry.id, message_id)

    async def _post_results(self, challenge: Challenge) -> None:
        if await self._store.results_message(challenge.id) is not None:
            return
        ranked = await self._store.finish_challenge(challenge.id)
        message_id = await self._board.announce_results(challenge, ranked)
        await self._store.set_results_message(challenge.id, message_id)
        await self._refresh(await self._store.challenge(challenge.id, challenge.guild_id))

    async def _refresh(self, challenge: Challenge) -> None:
        """Bring the announcement up to date; a failure leaves it stale, which only costs accuracy."""
        try:
            await self._board.update_announcement(challenge)
        except Exception:
            log.warning("challenge %d: could not update the announcement", challenge.id, exc_info=True)

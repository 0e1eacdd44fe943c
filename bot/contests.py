"""The challenge service: starts challenges, takes entries and votes, and runs their deadlines.

The rules live in ``bot.challenges`` and the state in the store; this module applies the rules
inside store transactions and decides when things happen. Messages go out through a ``Board``
(Discord in the bot, a recorder in tests), so the service holds no Discord objects. Every
deadline is processed from stored state: a challenge whose deadline passed while Easel was down
moves on at the next start, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from bot import challenges
from bot.challenges import Challenge, Entry, Phase, Ranked, Standing, SubmittedImage, VoteAction
from bot.errors import NotAllowed, NotFound
from bot.jobs import JobStatus, Requester, utcnow
from bot.moderation import Moderation
from bot.store import RowMissing, Store
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)

# The runner sleeps until the next deadline or reminder, but wakes at least this often: its sleep
# runs on the loop's monotonic clock, so a wall clock that jumps (a suspended host, an NTP step)
# or a missed poke delays a phase change by this much at most, small beside a 1-minute phase.
MAX_SLEEP_S = 10.0
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
        """Show changed deadlines, the countdown of the current phase, or the end, on the announcement."""
        ...

    async def remind(self, challenge: Challenge) -> int:
        """Post that the current phase has a tenth of its time left; return the message id."""
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
        # One pass at a time: a second pass reading state the first has posted but not yet stored
        # (a reminder sent, its id not written) would post it again.
        self._pass = asyncio.Lock()

    # Every operation below loads what a rule in ``bot.challenges`` needs, asks it and writes the
    # answer inside one ``store.transaction()``, so two requests at once cannot both pass a check.

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
        async with self._store.transaction():
            new = challenges.new_challenge(
                guild_id=who.guild_id,
                channel_id=channel_id or who.channel_id,
                theme=theme,
                submit_for=submit_for,
                vote_for=vote_for,
                created_by=who.user_id,
                season_id=await self._store.challenges.current_season(who.guild_id, now),
                now=now,
                entries_per_member=entries_per_member,
                anonymous=anonymous,
                votes_per_member=votes_per_member,
                shuffle=shuffle,
            )
            challenges.check_start(
                new.channel_id, await self._store.challenges.running(new.guild_id, new.channel_id)
            )
            challenge = await self._store.challenges.add(new)
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
        async with self._store.transaction():
            found = await self._challenge(challenge_id, who.guild_id)
            challenge = await self._store.challenges.set_deadlines(
                challenges.extend(found, extra, self._clock())
            )
        log.info("challenge %d extended by %s", challenge_id, extra)
        self.poke()
        await self._refresh(challenge)
        return challenge

    async def cancel(self, who: Requester, challenge_id: int) -> Challenge:
        """End a challenge without results or points."""
        await self._moderation.require_moderator(who)
        async with self._store.transaction():
            found = await self._challenge(challenge_id, who.guild_id)
            challenges.check_cancel(found)
            challenge = await self._set_phase(found, Phase.CANCELLED)
        await self._moderation.audit(who.guild_id, f"🏆 <@{who.user_id}> cancelled challenge #{challenge_id}")
        self.poke()
        await self._refresh(challenge)
        return challenge

    async def disqualify(self, who: Requester, entry_id: int) -> Entry:
        """Remove an entry from a challenge (its votes stop counting)."""
        await self._moderation.require_moderator(who)
        async with self._store.transaction():
            found, challenge = await self._entry(entry_id, who.guild_id)
            challenges.check_disqualify(challenge, found)
            entry = await self._store.challenges.disqualify_entry(entry_id)
        await self._moderation.audit(
            who.guild_id,
            f"🏆 <@{who.user_id}> disqualified entry #{entry_id} of challenge #{entry.challenge_id}",
        )
        return entry

    async def new_season(self, who: Requester) -> int:
        """Start a new season; the leaderboard starts again from zero. Returns its number."""
        await self._moderation.require_moderator(who)
        season = await self._store.challenges.start_season(who.guild_id, who.user_id, self._clock())
        return await self._store.challenges.season_number(season)

    # -- members -------------------------------------------------------------------------------

    async def submit(self, who: Requester, channel_id: int, job_id: int, image_index: int = 1) -> Entry:
        """Enter image ``image_index`` of a result in the challenge open in ``channel_id``."""
        await self._moderation.screen(who)
        now = self._clock()
        async with self._store.transaction():
            challenge = await self._store.challenges.open_in(who.guild_id, channel_id)
            if challenge is None:
                raise NotFound("No challenge is taking entries in that channel right now.")
            mine = await self._store.challenges.entries(challenge.id, who.user_id)
            image = await self._submitted_image(job_id, image_index, who.guild_id)
            if image is None:
                # A missing job and another guild's job get the answer for an image not made here,
                # as NotFound: ids reveal nothing across guilds.
                raise NotFound(challenges.not_made_here(challenge))
            challenges.check_submission(challenge, mine, job=image, user_id=who.user_id, now=now)
            return await self._store.challenges.add_entry(challenge.id, who.user_id, job_id, image_index, now)

    async def submit_link(self, who: Requester, link: str, image_index: int = 1) -> Entry:
        """Enter a result by its message link, in the challenge open in the result's channel."""
        guild_id, _channel_id, message_id = challenges.parse_message_link(link)
        job = None if guild_id != who.guild_id else await self._store.jobs.by_message(guild_id, message_id)
        if job is None:
            raise NotFound("That message is not an Easel result in this server. Copy the link of a result.")
        return await self.submit(who, job.posted_in, job.id, image_index)

    async def withdraw(self, who: Requester, entry_id: int) -> Entry:
        """Take back one's own entry before submissions close."""
        now = self._clock()
        async with self._store.transaction():
            entry, challenge = await self._entry(entry_id, who.guild_id)
            challenges.check_withdraw(challenge, entry, who.user_id, now)
            return await self._store.challenges.withdraw_entry(entry_id, now)

    async def vote(self, who: Requester, entry_id: int) -> VoteAction:
        """Vote for an entry, or take the vote back when the member already voted for it."""
        now = self._clock()
        async with self._store.transaction():
            entry, challenge = await self._entry(entry_id, who.guild_id)
            mine = await self._store.challenges.votes(challenge.id, who.user_id)
            action = challenges.vote_action(challenge, entry, who.user_id, mine, now)
            if action is VoteAction.ADD:
                await self._store.challenges.add_vote(entry_id, who.user_id, now)
            else:
                await self._store.challenges.remove_vote(entry_id, who.user_id)
        return action

    async def status(self, who: Requester, challenge_id: int | None = None) -> str:
        """The phase, deadlines and counts of one challenge, or of every running one in the guild."""
        if challenge_id is not None:
            shown = [await self._challenge(challenge_id, who.guild_id)]
        else:
            shown = await self._store.challenges.running(who.guild_id)
        if not shown:
            return "No challenge is running in this server. Moderators start one with `/challenge start`."
        parts = []
        for challenge in shown:
            entries = [e for e in await self._store.challenges.entries(challenge.id) if e.valid]
            votes = sum((await self._store.challenges.vote_counts(challenge.id)).values())
            parts.append(challenges.status_text(challenge, len(entries), votes, self._clock()))
        return "\n\n".join(parts)

    async def leaderboard(self, who: Requester) -> tuple[int, list[Standing]]:
        """The current season's number and standings."""
        season = await self._store.challenges.current_season(who.guild_id, self._clock())
        rows = await self._store.challenges.season_points(who.guild_id, season)
        standings = challenges.leaderboard((user, gained, int(won), 1) for user, gained, won in rows)
        return await self._store.challenges.season_number(season), standings

    # -- phases --------------------------------------------------------------------------------

    async def move(self, challenge_id: int, to: Phase, *, now: datetime | None = None) -> Challenge:
        """Move a challenge to ``to``; a challenge already there is returned unchanged.

        With ``now``, the move must be the one ``due_transition`` says is due, so a deadline runner
        acting on a stale read (a moderator extended or cancelled meanwhile) changes nothing.
        Finishing awards season points, exactly as ``finish`` does.
        """
        async with self._store.transaction():
            challenge = await self._store.challenges.get(challenge_id)
            if challenge.phase is to:
                return challenge
            if now is not None:
                valid = await self._store.challenges.valid_entry_count(challenge_id)
                if challenges.due_transition(challenge, now, valid_entries=valid) is not to:
                    raise NotAllowed(
                        f"Challenge #{challenge_id} is {challenge.phase.value} and not due to become {to.value}."
                    )
            if to is Phase.FINISHED:
                await self._finish(challenge)
                return await self._store.challenges.get(challenge_id)
            return await self._set_phase(challenge, to)

    async def finish(self, challenge_id: int, now: datetime | None = None) -> list[Ranked]:
        """End voting, award season points and return the final standings.

        Finishing a finished challenge again (a crash between this and posting the results)
        returns the same standings and awards nothing more. With ``now``, voting must be over.
        """
        async with self._store.transaction():
            challenge = await self._store.challenges.get(challenge_id)
            if challenge.phase is Phase.FINISHED:
                return await self._standings(challenge_id)
            if now is not None:
                valid = await self._store.challenges.valid_entry_count(challenge_id)
                if challenges.due_transition(challenge, now, valid_entries=valid) is not Phase.FINISHED:
                    raise NotAllowed(
                        f"Challenge #{challenge_id} is {challenge.phase.value} and not due to finish."
                    )
            return await self._finish(challenge)

    async def _finish(self, challenge: Challenge) -> list[Ranked]:
        """Move ``challenge`` to finished and award its season points; return the standings."""
        await self._set_phase(challenge, Phase.FINISHED)
        ranked = await self._standings(challenge.id)
        won = challenges.winner(ranked)
        await self._store.challenges.award(challenge, challenges.points(ranked), won)
        log.info("challenge %d: %d entries ranked, winner %s", challenge.id, len(ranked), won)
        return ranked

    async def _standings(self, challenge_id: int) -> list[Ranked]:
        return challenges.tally(
            await self._store.challenges.entries(challenge_id),
            await self._store.challenges.votes(challenge_id),
        )

    async def _set_phase(self, challenge: Challenge, to: Phase) -> Challenge:
        try:
            challenges.advance(challenge, to)
        except ValueError:
            raise NotAllowed(
                f"Challenge #{challenge.id} is {challenge.phase.value} and cannot become {to.value}."
            ) from None
        return await self._store.challenges.set_phase(challenge.id, to)

    async def _challenge(self, challenge_id: int, guild_id: int) -> Challenge:
        try:
            challenge = await self._store.challenges.get(challenge_id)
        except RowMissing:
            raise NotFound.row("challenge", challenge_id) from None
        if challenge.guild_id != guild_id:
            # Another guild's challenge is reported exactly like a missing one.
            raise NotFound.row("challenge", challenge_id)
        return challenge

    async def _entry(self, entry_id: int, guild_id: int) -> tuple[Entry, Challenge]:
        try:
            entry = await self._store.challenges.entry(entry_id)
            challenge = await self._store.challenges.get(entry.challenge_id)
        except RowMissing:
            raise NotFound.row("entry", entry_id) from None
        if challenge.guild_id != guild_id:
            raise NotFound.row("entry", entry_id)
        return entry, challenge

    async def _submitted_image(self, job_id: int, image_index: int, guild_id: int) -> SubmittedImage | None:
        """Read an image's provenance from the jobs table; None for a missing job or another guild's."""
        try:
            job = await self._store.jobs.find(job_id, guild_id)
        except RowMissing:
            return None
        return SubmittedImage(
            job_id=job.id,
            guild_id=job.guild_id,
            channel_id=job.posted_in,
            user_id=job.user_id,
            status_posted=job.status is JobStatus.POSTED,
            image_count=len(job.images),
            image_index=image_index,
        )

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
        """Move every challenge whose deadline passed, post what each phase needs; return seconds to sleep.

        The sleep ends at the next deadline or reminder, counted from the clock after the pass (a
        pass that posted a gallery may have taken seconds, which a 1-minute phase notices).
        """
        async with self._pass:
            return await self._process_due()

    async def _process_due(self) -> float:
        now = self._clock()
        running = await self._store.challenges.running()
        for challenge in running:
            if self._stopping:
                break
            try:
                await self._catch_up(challenge, now)
            except Exception:
                log.exception("challenge %d: deadline processing failed; will retry", challenge.id)
        handled = {challenge.id for challenge in running}
        for challenge in await self._store.challenges.finished_without_results():
            if self._stopping:
                break
            if challenge.id in handled:
                continue  # it finished in this pass, and its results were just tried
            try:
                await self._post_results(challenge)
            except Exception:
                log.exception("challenge %d: posting the results failed; will retry", challenge.id)
        wakeups = [
            moment
            for c in await self._store.challenges.running()
            if (moment := challenges.next_wakeup(c, now)) is not None
        ]
        if not wakeups:
            return MAX_SLEEP_S
        return min(MAX_SLEEP_S, max(0.0, (min(wakeups) - self._clock()).total_seconds()))

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
            await self._store.challenges.set_announcement(challenge.id, message_id)
        while True:
            entries = await self._store.challenges.entries(challenge.id)
            to = challenges.due_transition(challenge, now, valid_entries=sum(e.valid for e in entries))
            if to is None:
                break
            challenge = await self.move(challenge.id, to, now=now)
            log.info("challenge %d -> %s", challenge.id, challenge.phase.value)
        if challenge.phase is Phase.VOTING:
            await self._post_gallery(challenge)
        elif challenge.phase is Phase.FINISHED:
            await self._post_results(challenge)
        if not self._stopping and challenges.reminder_due(challenge, now):
            message_id = await self._board.remind(challenge)
            await self._store.challenges.set_reminder(challenge.id, challenge.phase, message_id)

    async def _post_gallery(self, challenge: Challenge) -> None:
        entries = challenges.gallery_order(
            await self._store.challenges.entries(challenge.id), challenge.shuffle, seed=challenge.id
        )
        missing = [(number, e) for number, e in enumerate(entries, start=1) if e.gallery_message_id is None]
        if missing:
            # Voting has just begun, or a restart resumes its beginning: the announcement's
            # countdown now runs to the end of voting.
            await self._refresh(challenge)
        for number, entry in missing:
            if self._stopping:
                return  # the next start posts the rest
            message_id = await self._board.show_entry(challenge, entry, number)
            await self._store.challenges.set_gallery_message(entry.id, message_id)

    async def _post_results(self, challenge: Challenge) -> None:
        if await self._store.challenges.results_message(challenge.id) is not None:
            return
        ranked = await self.finish(challenge.id)
        message_id = await self._board.announce_results(challenge, ranked)
        await self._store.challenges.set_results_message(challenge.id, message_id)
        await self._refresh(await self._store.challenges.get(challenge.id))

    async def _refresh(self, challenge: Challenge) -> None:
        """Bring the announcement up to date; a failure leaves it stale, which only costs accuracy."""
        try:
            await self._board.update_announcement(challenge)
        except Exception:
            log.warning("challenge %d: could not update the announcement", challenge.id, exc_info=True)

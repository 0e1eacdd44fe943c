"""/challenge and /leaderboard, and the Submit, Vote and Withdraw buttons: prompt challenges on Discord.

Moderator subcommands share the /challenge group with members' ones (Discord sets default
permissions per top-level command), so the service checks the moderator on every call.
"""

from __future__ import annotations

import contextlib

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import EaselBot, EaselButton, reply, requester
from bot.buttons import Action, template, withdraw_view
from bot.challenges import (
    ENTRIES_PER_MEMBER_MAX,
    THEME_MAX,
    VOTES_PER_MEMBER_MAX,
    VoteAction,
    parse_message_link,
)
from bot.contests import ChallengeService
from bot.delivery import NO_MENTIONS
from bot.errors import NotFound
from bot.generation import Generation

DURATION_HELP = "How long, e.g. 90m, 2h, 3d or 1w"
LEADERBOARD_ROWS = 15


class Challenges(commands.GroupCog, group_name="challenge", group_description="Prompt challenges."):
    """Runs prompt challenges: a theme, entries, votes and winners."""

    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot
        self.contests: ChallengeService = bot.services.contests
        self.generation: Generation = bot.services.generation
        super().__init__()

    @app_commands.command(name="start", description="Start a challenge (moderators).")
    @app_commands.guild_only()
    @app_commands.describe(
        theme="The theme members draw",
        submit_for=f"Submissions stay open for: {DURATION_HELP}",
        vote_for=f"Then voting stays open for: {DURATION_HELP}",
        channel="Where the challenge runs (default: here)",
        entries_per_member="Images each member may enter (default 1)",
        anonymous="Hide who made each entry and the vote counts until the results (default off)",
        votes_per_member="Votes each member has in all (default: one per entry, any number of entries)",
        shuffle="Show the gallery in a shuffled order instead of submission order",
    )
    async def start(
        self,
        interaction: discord.Interaction[EaselBot],
        theme: app_commands.Range[str, 1, THEME_MAX],
        submit_for: str,
        vote_for: str,
        channel: discord.TextChannel | None = None,
        entries_per_member: app_commands.Range[int, 1, ENTRIES_PER_MEMBER_MAX] = 1,
        anonymous: bool = False,
        votes_per_member: app_commands.Range[int, 1, VOTES_PER_MEMBER_MAX] | None = None,
        shuffle: bool = False,
    ) -> None:
        challenge = await self.contests.start(
            requester(interaction),
            theme=theme,
            submit_for=submit_for,
            vote_for=vote_for,
            channel_id=channel.id if channel else None,
            entries_per_member=entries_per_member,
            anonymous=anonymous,
            votes_per_member=votes_per_member,
            shuffle=shuffle,
        )
        await reply(
            interaction,
            f"🏆 Challenge #{challenge.id} started in <#{challenge.channel_id}>; its announcement follows.",
        )

    @app_commands.command(
        name="submit", description="Enter a result in this channel's challenge by its link."
    )
    @app_commands.guild_only()
    @app_commands.describe(
        link="The result's message link (Copy Message Link)", image="Which image of a grid (1–4)"
    )
    async def submit(
        self, interaction: discord.Interaction[EaselBot], link: str, image: app_commands.Range[int, 1, 4] = 1
    ) -> None:
        who = requester(interaction)
        with contextlib.suppress(NotFound):  # answered by the challenge's own rules just below
            # An entry re-posts the image in the gallery: the rule of /show and the buttons applies.
            await self.generation.usable_message(who, parse_message_link(link)[2])
        entry = await self.contests.submit_link(who, link, image)
        await self._entered(interaction, entry.id)

    @app_commands.command(
        name="withdraw", description="Take back one of your entries before submissions close."
    )
    @app_commands.guild_only()
    @app_commands.describe(entry="The entry number (#) from the confirmation or the gallery")
    async def withdraw(
        self, interaction: discord.Interaction[EaselBot], entry: app_commands.Range[int, 1]
    ) -> None:
        await self.contests.withdraw(requester(interaction), entry)
        await reply(interaction, f"↩️ Entry #{entry} was withdrawn.")

    @app_commands.command(name="status", description="A challenge's phase, deadlines and counts.")
    @app_commands.guild_only()
    @app_commands.describe(challenge="The challenge number (default: every running one)")
    async def status(
        self, interaction: discord.Interaction[EaselBot], challenge: app_commands.Range[int, 1] | None = None
    ) -> None:
        await reply(interaction, await self.contests.status(requester(interaction), challenge))

    @app_commands.command(name="extend", description="Give the current phase more time (moderators).")
    @app_commands.guild_only()
    @app_commands.describe(challenge="The challenge number", duration=f"Extra time: {DURATION_HELP}")
    async def extend(
        self, interaction: discord.Interaction[EaselBot], challenge: app_commands.Range[int, 1], duration: str
    ) -> None:
        extended = await self.contests.extend(requester(interaction), challenge, duration)
        deadline = extended.deadline
        when = f" It now ends <t:{int(deadline.timestamp())}:R>." if deadline else ""
        await reply(interaction, f"⏳ Challenge #{challenge} extended.{when}")

    @app_commands.command(name="cancel", description="End a challenge without results (moderators).")
    @app_commands.guild_only()
    @app_commands.describe(challenge="The challenge number")
    async def cancel(
        self, interaction: discord.Interaction[EaselBot], challenge: app_commands.Range[int, 1]
    ) -> None:
        await self.contests.cancel(requester(interaction), challenge)
        await reply(interaction, f"✖️ Challenge #{challenge} was cancelled. No points were awarded.")

    @app_commands.command(name="disqualify", description="Remove an entry from its challenge (moderators).")
    @app_commands.guild_only()
    @app_commands.describe(entry="The entry number (#) shown in the gallery")
    async def disqualify(
        self, interaction: discord.Interaction[EaselBot], entry: app_commands.Range[int, 1]
    ) -> None:
        await self.contests.disqualify(requester(interaction), entry)
        await reply(interaction, f"🚫 Entry #{entry} was disqualified; its votes no longer count.")

    @app_commands.command(
        name="new-season", description="Start a new season: the leaderboard begins at zero (moderators)."
    )
    @app_commands.guild_only()
    async def new_season(self, interaction: discord.Interaction[EaselBot]) -> None:
        number = await self.contests.new_season(requester(interaction))
        await reply(interaction, f"🌱 Season {number} has begun. The leaderboard starts again from zero.")

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*BUTTONS)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(*BUTTONS)

    async def _entered(self, interaction: discord.Interaction[EaselBot], entry_id: int) -> None:
        await entered(interaction, entry_id)


class Leaderboard(commands.Cog):
    """The season's standings."""

    def __init__(self, bot: EaselBot) -> None:
        self.contests: ChallengeService = bot.services.contests

    @app_commands.command(name="leaderboard", description="This season's challenge standings.")
    @app_commands.guild_only()
    async def leaderboard(self, interaction: discord.Interaction[EaselBot]) -> None:
        season, standings = await self.contests.leaderboard(requester(interaction))
        lines = [
            f"{s.place}. <@{s.user_id}> — **{s.points}** points "
            f"({_count(s.wins, 'win')}, {_count(s.entries, 'challenge')})"
            for s in standings[:LEADERBOARD_ROWS]
        ]
        embed = discord.Embed(
            title=f"🏆 Season {season} leaderboard",
            description="\n".join(lines) or "No challenge has finished this season yet.",
            colour=discord.Colour.gold(),
        )
        embed.set_footer(
            text="Points: 10 / 6 / 3 for the top three (with at least one vote), 1 for taking part"
        )
        await interaction.response.send_message(embed=embed, allowed_mentions=NO_MENTIONS)


async def entered(interaction: discord.Interaction[EaselBot], entry_id: int) -> None:
    """Confirm an entry privately, with its Withdraw button."""
    text = f"🏆 Entered as entry #{entry_id}. You can withdraw it until submissions close."
    await interaction.response.send_message(
        text, view=withdraw_view(entry_id), ephemeral=True, allowed_mentions=NO_MENTIONS
    )


class SubmitButton(EaselButton, template=template(Action.SUBMIT)):
    """🏆 Submit under a single-image result: enter it in the channel's challenge."""

    async def run(self, interaction: discord.Interaction[EaselBot]) -> None:
        """Enter the image, if the member may use it here and the challenge's rules allow."""
        services, who = interaction.client.services, requester(interaction)
        assert interaction.channel_id is not None
        with contextlib.suppress(NotFound):  # a result not made here: the challenge answers
            await services.generation.usable(who, self.target.target)
        entry = await services.contests.submit(who, interaction.channel_id, self.target.target)
        await entered(interaction, entry.id)


class VoteButton(EaselButton, template=template(Action.VOTE)):
    """⭐ Vote under a gallery entry: adds the member's vote, or takes it back."""

    async def run(self, interaction: discord.Interaction[EaselBot]) -> None:
        """Toggle the vote and say which way it went."""
        action = await interaction.client.services.contests.vote(requester(interaction), self.target.target)
        text = "⭐ Your vote is counted." if action is VoteAction.ADD else "Your vote was taken back."
        await reply(interaction, f"{text} You can change it until voting closes.")


class WithdrawButton(EaselButton, template=template(Action.WITHDRAW)):
    """↩️ Withdraw under an entry's confirmation."""

    async def run(self, interaction: discord.Interaction[EaselBot]) -> None:
        """Withdraw the member's own entry."""
        await interaction.client.services.contests.withdraw(requester(interaction), self.target.target)
        await reply(interaction, f"↩️ Entry #{self.target.target} was withdrawn.")


BUTTONS = (SubmitButton, VoteButton, WithdrawButton)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


async def setup(bot: EaselBot) -> None:
    """Add /challenge, /leaderboard and the challenge buttons."""
    await bot.add_cog(Challenges(bot))
    await bot.add_cog(Leaderboard(bot))

"""/quota for every member and /usage for moderators: what generating here costs, and what it cost."""

from __future__ import annotations

import asyncio
import io
from datetime import datetime

import discord
from discord import app_commands
from discord.ext import commands

from bot import quotas
from bot.app import EaselBot, requester
from bot.delivery import NO_MENTIONS
from bot.moderation import USAGE_DAYS, Moderation, QuotaView, UsageReport


class Quota(commands.Cog):
    """Shows members their quota and moderators the server's usage."""

    def __init__(self, bot: EaselBot) -> None:
        self.moderation: Moderation = bot.services.moderation

    @app_commands.command(
        name="quota", description="How many images you have left here, and when that resets."
    )
    @app_commands.guild_only()
    async def quota(self, interaction: discord.Interaction[EaselBot]) -> None:
        view = await self.moderation.quota_view(requester(interaction))
        await interaction.response.send_message(
            quota_text(view), ephemeral=True, allowed_mentions=NO_MENTIONS
        )

    @app_commands.command(
        name="usage", description="Images made here over the last 30 days, as a chart (moderators)."
    )
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    async def usage(self, interaction: discord.Interaction[EaselBot]) -> None:
        # Drawing takes a moment: acknowledge first. The service checks the moderator on every call.
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await self.moderation.usage_report(requester(interaction))
        guild = interaction.guild
        names = await display_names(guild, [user for user, _ in report.top]) if guild else {}
        title = f"Images per day in {guild.name if guild else 'this server'}, last {USAGE_DAYS} days"
        png = await self.moderation.usage_chart(report, names, title)
        await interaction.edit_original_response(
            content=usage_text(report),
            attachments=[discord.File(io.BytesIO(png), filename="easel-usage.png")],
            allowed_mentions=NO_MENTIONS,
        )


def quota_text(view: QuotaView) -> str:
    """What /quota tells a member: images left today and this week, the resets, and any refusal here."""
    if view.limits.exempt:
        lines = ["You are exempt from quotas here (a staff role): no daily or weekly limit, no cooldown."]
    else:
        day, week = quotas.remaining(view.limits, view.usage)
        lines = [
            _left("Today", day, view.limits.daily, view.windows.day.end),
            _left("This week", week, view.limits.weekly, view.windows.week.end),
        ]
    if view.refusal:
        lines.append(f"⛔ You cannot generate here right now: {view.refusal}")
    return "\n".join(lines)


def _left(period: str, left: int | None, limit: int | None, resets: datetime) -> str:
    if left is None or limit is None:
        return f"**{period}:** unlimited"
    return f"**{period}:** **{left}** of {_images(limit)} left · resets {quotas.relative_time(resets)}"


def _images(count: int) -> str:
    return "1 image" if count == 1 else f"{count} images"


def usage_text(report: UsageReport) -> str:
    """Totals, images by backend, estimated spend and the top members, as text beside the chart."""
    lines = [
        f"**Last {USAGE_DAYS} days:** {_images(report.total_images)} · estimated OpenAI spend "
        f"**${report.spend_usd:,.2f}**",
    ]
    if report.by_backend:
        lines.append("By backend: " + " · ".join(f"`{name}` {images}" for name, images in report.by_backend))
    if report.top:
        lines.append(
            "Top members: "
            + " · ".join(f"{rank}. <@{user}> {images}" for rank, (user, images) in enumerate(report.top, 1))
        )
    else:
        lines.append("Nobody has made images here in that time.")
    return "\n".join(lines)


async def display_names(guild: discord.Guild, user_ids: list[int]) -> dict[int, str]:
    """Members' display names for the chart: cached, else fetched, else the id (a member who left)."""

    async def name(user_id: int) -> str:
        member = guild.get_member(user_id)
        if member is None:
            # Without the members intent few members are cached; ten fetches at most, moderators only.
            try:
                member = await guild.fetch_member(user_id)
            except discord.HTTPException:
                return str(user_id)
        return member.display_name

    found = await asyncio.gather(*(name(user_id) for user_id in user_ids))
    return dict(zip(user_ids, found, strict=True))


async def setup(bot: EaselBot) -> None:
    """Add /quota and /usage."""
    await bot.add_cog(Quota(bot))

"""/imagine, /variation and /show: the commands that make and show images."""

from __future__ import annotations

import asyncio
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import images
from bot.app import EaselBot, acknowledge, requester
from bot.delivery import NO_MENTIONS
from bot.errors import InvalidInput
from bot.generation import ASPECTS, NEGATIVE_MAX, PROMPT_MAX, SEED_MAX, Hidden
from bot.prompt_params import parse_prompt

ASPECT_CHOICES = [app_commands.Choice(name=name, value=name) for name in ASPECTS]
IMAGINE_OPTIONS = {
    "prompt": "What to draw; inline parameters work too: --ar 16:9 --no text --seed 7",
    "negative": "What to keep out of the image",
    "aspect": "Image shape (default square)",
    "count": "How many images, 1 to 4",
    "seed": "Seed for repeatable results (backends that take one)",
    "quality": "Render quality (default: the backend's)",
}
QUALITY_CHOICES = [app_commands.Choice(name=q, value=q) for q in ("auto", "low", "medium", "high")]
# The content types Discord declares for the uploads /variation accepts (checked again by content).
UPLOAD_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
# Why a member's own result is shown to them alone (a private /show says so above the image).
PRIVATE_NOTES = {
    Hidden.UNSEEN: "Only you can see this: it was made in a channel you cannot see now.",
    Hidden.DELETED: "Only you can see this: the result was deleted, so it cannot be posted again.",
    Hidden.FLAGGED: (
        "Only you can see this: the safety checker flagged it, so it can only be posted in "
        "age-restricted channels."
    ),
}


class _Generate(commands.Cog):
    """The commands that do not depend on how many backends there are."""

    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot
        self.services = bot.services

    async def run_imagine(
        self,
        interaction: discord.Interaction[EaselBot],
        prompt: str,
        negative: str | None,
        aspect: app_commands.Choice[str] | None,
        count: int | None,
        seed: int | None,
        quality: app_commands.Choice[str] | None,
        backend: str | None,
    ) -> None:
        """Acknowledge, queue the job, and show the member their place in line."""
        # A malformed inline parameter is answered privately, before the public "thinking…".
        parse_prompt(prompt)
        job = await self.services.generation.imagine(
            await acknowledge(interaction),
            prompt,
            negative=negative or "",
            aspect=aspect.value if aspect else None,
            count=count,
            seed=seed,
            quality=quality.value if quality else "",
            backend=backend,
        )
        await self.services.worker.announce(job)

    @app_commands.command(description="Make variations of an image you upload.")
    @app_commands.guild_only()
    @app_commands.describe(
        image="A PNG, JPEG, WebP or GIF image",
        prompt="Optional: what to change or emphasise",
        strength="How far to move from the original: 0.05 (close) to 1.0 (free)",
        count="How many variations, 1 to 4",
    )
    async def variation(
        self,
        interaction: discord.Interaction[EaselBot],
        image: discord.Attachment,
        prompt: app_commands.Range[str, 0, PROMPT_MAX] | None = None,
        strength: app_commands.Range[float, 0.05, 1.0] | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
    ) -> None:
        parse_prompt(prompt or "")
        limits = self.services.settings.images
        # What the interaction payload declares is checked before anything is downloaded; the
        # file itself is checked by its content once the request passed every other check.
        if image.size > limits.max_upload_bytes:
            raise InvalidInput(
                f"That file is {image.size / 1048576:.1f} MB; upload an image of at most {limits.max_upload_mb:g} MB."
            )
        if (image.content_type or "").split(";")[0].strip().lower() not in UPLOAD_TYPES:
            raise InvalidInput("That file is not an image. Upload a PNG, JPEG, WebP or GIF image.")
        if image.width and image.height and image.width * image.height > limits.max_input_pixels:
            raise InvalidInput(
                f"That image is {image.width}×{image.height} pixels; upload one of at most "
                f"{limits.max_input_pixels:,} pixels."
            )
        who = await acknowledge(interaction)

        async def upload() -> images.SourceImage:
            data = await image.read()
            return await asyncio.to_thread(
                images.validate_upload,
                data,
                max_bytes=limits.max_upload_bytes,
                max_pixels=limits.max_input_pixels,
            )

        job = await self.services.generation.variation(
            who, upload, prompt=prompt or "", strength=strength, count=count
        )
        await self.services.worker.announce(job)

    @app_commands.command(
        description="Post a result again, with working buttons (or see your own privately)."
    )
    @app_commands.guild_only()
    @app_commands.describe(
        job="The id after /show job: in a result's footer (or the number of a job of yours)",
        private="Show it only to you, without buttons",
    )
    async def show(
        self,
        interaction: discord.Interaction[EaselBot],
        job: app_commands.Range[str, 1, 32],
        private: bool = False,
    ) -> None:
        shown = await self.services.generation.show(requester(interaction), job, private=private)
        await interaction.response.defer(thinking=True, ephemeral=shown.private)
        result = await self.services.delivery.result_message(shown.job)
        await interaction.edit_original_response(
            content=PRIVATE_NOTES[shown.hidden] if shown.hidden else None,
            embed=result.embed,
            attachments=[result.file()],
            view=None if shown.private else result.view,
            allowed_mentions=NO_MENTIONS,
        )


class Imagine(_Generate):
    """Image generation commands for a single-backend install."""

    @app_commands.command(description="Generate images from a text prompt.")
    @app_commands.guild_only()
    @app_commands.describe(**IMAGINE_OPTIONS)
    @app_commands.choices(aspect=ASPECT_CHOICES, quality=QUALITY_CHOICES)
    async def imagine(
        self,
        interaction: discord.Interaction[EaselBot],
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        negative: app_commands.Range[str, 0, NEGATIVE_MAX] | None = None,
        aspect: app_commands.Choice[str] | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
        quality: app_commands.Choice[str] | None = None,
    ) -> None:
        await self.run_imagine(interaction, prompt, negative, aspect, count, seed, quality, None)


class ImagineWithBackends(_Generate):
    """The same commands, with a ``backend`` choice because more than one backend is configured."""

    @app_commands.command(description="Generate images from a text prompt.")
    @app_commands.guild_only()
    @app_commands.describe(**IMAGINE_OPTIONS, backend="Which renderer to use")
    @app_commands.choices(aspect=ASPECT_CHOICES, quality=QUALITY_CHOICES)
    async def imagine(
        self,
        interaction: discord.Interaction[EaselBot],
        prompt: app_commands.Range[str, 1, PROMPT_MAX],
        negative: app_commands.Range[str, 0, NEGATIVE_MAX] | None = None,
        aspect: app_commands.Choice[str] | None = None,
        count: app_commands.Range[int, 1, 4] | None = None,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
        quality: app_commands.Choice[str] | None = None,
        backend: str | None = None,
    ) -> None:
        await self.run_imagine(interaction, prompt, negative, aspect, count, seed, quality, backend)

    @imagine.autocomplete("backend")
    async def backend_autocomplete(
        self, interaction: discord.Interaction[Any], current: str
    ) -> list[app_commands.Choice[str]]:
        """Offer the configured backends."""
        return [
            app_commands.Choice(name=name, value=name)
            for name in self.services.generation.backends
            if current.lower() in name
        ]


async def setup(bot: EaselBot) -> None:
    """Add the imagine commands, with a backend option only when there is a choice to make."""
    many = len(bot.services.generation.backends) > 1
    await bot.add_cog(ImagineWithBackends(bot) if many else Imagine(bot))

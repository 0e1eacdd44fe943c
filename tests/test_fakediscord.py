"""The fake Discord server is real enough for the unmodified discord.py client: gateway, commands, files, faults."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import re
import warnings
from collections.abc import AsyncIterator

import aiohttp
import pytest
from PIL import Image

with warnings.catch_warnings():
    # discord.py 2.7 imports the stdlib audioop, deprecated since 3.11, and pytest runs with -W error.
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord
    from discord import app_commands
    from discord.ext import commands

from tests.fakediscord import FakeDiscord, Message

GUILD_ID = 700_000_000_000_000_001
CHANNEL_ID = 700_000_000_000_000_002
NSFW_CHANNEL_ID = 700_000_000_000_000_003
SMALL_GUILD_ID = 700_000_000_000_000_004
SMALL_CHANNEL_ID = 700_000_000_000_000_005
USER_ID = 700_000_000_000_000_010
OTHER_USER_ID = 700_000_000_000_000_011
SMALL_LIMIT = 1024
PRIVILEGED = discord.Intents(members=True, presences=True, message_content=True).value


def make_png() -> bytes:
    """Return a tiny 4x3 PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), "red").save(buffer, format="PNG")
    return buffer.getvalue()


PNG = make_png()


class DemoButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=r"demo:(?P<n>\d+)"):
    """A persistent button whose state lives in its custom id."""

    def __init__(self, n: int) -> None:
        button: discord.ui.Button[discord.ui.View] = discord.ui.Button(
            label=f"Again #{n}", emoji="🔁", style=discord.ButtonStyle.primary, custom_id=f"demo:{n}"
        )
        super().__init__(button)
        self.n = n

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[discord.ui.View], match: re.Match[str]
    ) -> DemoButton:
        """Rebuild the button from its custom id."""
        return cls(int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        if self.n == 7:
            await interaction.response.send_message(f"clicked {self.n}", ephemeral=True)
            return
        view = discord.ui.View(timeout=None)
        view.add_item(DemoButton(self.n + 1))
        await interaction.response.edit_message(content=f"count {self.n + 1}", view=view)


@app_commands.command(name="ping", description="Answer with a file and a button")
async def ping(interaction: discord.Interaction[DemoBot]) -> None:
    await interaction.response.defer(thinking=True)
    view = discord.ui.View(timeout=None)
    view.add_item(DemoButton(7))
    await interaction.edit_original_response(
        content="pong", attachments=[discord.File(io.BytesIO(PNG), "pong.png")], view=view
    )


@app_commands.command(name="inspect", description="Read an attached image")
async def inspect(interaction: discord.Interaction[DemoBot], image: discord.Attachment) -> None:
    data = await image.read()
    digest = hashlib.sha256(data).hexdigest()[:12]
    await interaction.response.send_message(
        f"{image.filename} {len(data)} {digest} {image.width}x{image.height}"
    )


@app_commands.command(name="slow", description="Defer, then answer when the test says so")
async def slow(interaction: discord.Interaction[DemoBot]) -> None:
    await asyncio.sleep(interaction.client.delay_ack)
    await interaction.response.defer(thinking=True)
    await interaction.client.release.wait()
    await interaction.edit_original_response(content="finally")


@app_commands.command(name="gallery", description="Defer ephemerally, then answer with followups")
async def gallery(interaction: discord.Interaction[DemoBot]) -> None:
    await interaction.response.defer(thinking=True, ephemeral=True)
    await interaction.followup.send("first", file=discord.File(io.BytesIO(PNG), "a.png"), wait=True)
    view = discord.ui.View(timeout=None)
    view.add_item(DemoButton(8))
    second = await interaction.followup.send(
        "second", file=discord.File(io.BytesIO(b"bee"), "b.txt"), view=view, wait=True
    )
    await second.edit(attachments=[*second.attachments, discord.File(io.BytesIO(b"sea"), "c.txt")])


art = app_commands.Group(name="art", description="Art commands")


@art.command(name="make", description="Echo typed options")
async def art_make(
    interaction: discord.Interaction[DemoBot],
    prompt: str,
    steps: app_commands.Range[int, 1, 50] = 20,
    who: discord.Member | None = None,
) -> None:
    mention = who.mention if who is not None else "nobody"
    await interaction.response.send_message(f"{prompt} x{steps} for {mention}")


class DemoBot(commands.AutoShardedBot):
    """The smallest bot using what Easel uses: sharding, guild commands, dynamic buttons, files."""

    def __init__(self, intents: discord.Intents | None = None) -> None:
        if intents is None:
            intents = discord.Intents.none()
            intents.guilds = True
        # A short guild_ready_timeout keeps on_ready (and bot shutdown) fast.
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            guild_ready_timeout=0.05,
        )
        self.errors: list[Exception] = []
        self.release = asyncio.Event()
        self.delay_ack = 0.0
        for command in (ping, inspect, slow, gallery, art):
            self.tree.add_command(command, guild=discord.Object(GUILD_ID))
        self.tree.error(self.record_error)

    async def setup_hook(self) -> None:
        """Register the dynamic button so clicks after a restart still work."""
        self.add_dynamic_items(DemoButton)

    async def record_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """Keep app command errors for the test to inspect."""
        self.errors.append(error.original if isinstance(error, app_commands.CommandInvokeError) else error)


async def start_bot(fake: FakeDiscord, bot: DemoBot | None = None) -> tuple[DemoBot, asyncio.Task[None]]:
    """Start a bot on the fake and wait until its shard got READY and the guilds."""
    bot = bot or DemoBot()
    task = asyncio.create_task(bot.start(fake.token))
    connected = asyncio.create_task(fake.wait_connected())
    await asyncio.wait({task, connected}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        connected.cancel()
        await bot.close()
        task.result()  # surfaces why the bot died
    await connected
    return bot, task


async def stop_bot(bot: DemoBot, task: asyncio.Task[None]) -> None:
    """Close the bot and wait for its start() task to end."""
    await bot.close()
    await task


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """A started fake with two guilds, discord.py pointed at it."""
    server = FakeDiscord()
    server.add_guild(
        GUILD_ID,
        name="Easel Test",
        channels=[(CHANNEL_ID, "general"), (NSFW_CHANNEL_ID, "nsfw-art")],
        nsfw_channels={NSFW_CHANNEL_ID},
    )
    server.add_guild(SMALL_GUILD_ID, channels=[(SMALL_CHANNEL_ID, "tiny")], filesize_limit=SMALL_LIMIT)
    await server.start()
    original_base = discord.http.Route.BASE
    discord.http.Route.BASE = server.api_base
    try:
        yield server
    finally:
        discord.http.Route.BASE = original_base
        await server.close()


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[DemoBot]:
    """A connected DemoBot whose commands are synced to the main guild."""
    client, task = await start_bot(fake)
    try:
        await client.tree.sync(guild=discord.Object(GUILD_ID))
        yield client
    finally:
        await stop_bot(client, task)


async def ping_result(fake: FakeDiscord) -> Message:
    """Run /ping and return its edited response."""
    interaction = await fake.slash(guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_ID, name="ping")
    await fake.wait_for(lambda: interaction.original is not None and interaction.original.edits == 1)
    assert interaction.original is not None
    return interaction.original


async def test_bot_connects_with_unprivileged_intents(fake: FakeDiscord, bot: DemoBot) -> None:
    await asyncio.wait_for(bot.wait_until_ready(), 5)

    assert fake.identify_intents == [discord.Intents(guilds=True).value]
    assert not fake.identify_intents[0] & PRIVILEGED
    assert fake.gateway_queries[0]["v"] == "10"
    assert fake.gateway_queries[0]["compress"] in {"zlib-stream", "zstd-stream"}
    assert bot.user is not None
    assert bot.user.id == fake.bot_user_id
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(GUILD_ID)
    assert guild is not None
    assert guild.me is not None
    assert guild.name == "Easel Test"
    assert guild.default_role.id == GUILD_ID
    nsfw, general = bot.get_channel(NSFW_CHANNEL_ID), bot.get_channel(CHANNEL_ID)
    assert isinstance(nsfw, discord.TextChannel)
    assert isinstance(general, discord.TextChannel)
    assert (nsfw.is_nsfw(), general.is_nsfw()) == (True, False)
    assert {g.id for g in bot.guilds} == {GUILD_ID, SMALL_GUILD_ID}


async def test_commands_sync_to_the_guild_and_keep_their_ids(fake: FakeDiscord, bot: DemoBot) -> None:
    first = fake.commands[GUILD_ID]
    again = await bot.tree.sync(guild=discord.Object(GUILD_ID))

    assert sorted(c["name"] for c in first) == ["art", "gallery", "inspect", "ping", "slow"]
    assert {c.name: c.id for c in again} == {c["name"]: int(c["id"]) for c in first}
    assert None not in fake.commands
    inspect_options = next(c for c in fake.commands[GUILD_ID] if c["name"] == "inspect")["options"]
    assert inspect_options[0]["type"] == 11


async def test_ping_defers_in_time_then_edits_with_file_and_button(fake: FakeDiscord, bot: DemoBot) -> None:
    interaction = await fake.slash(guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_ID, name="ping")
    callback = await interaction.wait_callback()
    await fake.wait_for(lambda: interaction.original is not None and interaction.original.edits == 1)

    assert callback.type == 5
    assert callback.received_at - interaction.sent_at < 3
    message = interaction.original
    assert message is not None
    assert (message.content, message.created_via, message.flags, message.type) == (
        "pong",
        "interaction",
        0,
        20,
    )
    assert not interaction.ephemeral
    assert [(f.filename, f.data, f.content_type) for f in message.attachments] == [
        ("pong.png", PNG, "image/png")
    ]
    assert message.buttons() == [("Again #7", "🔁", "demo:7", False)]
    assert fake.visible_messages(CHANNEL_ID) == [message]
    assert fake.channel_messages(CHANNEL_ID) == []
    async with aiohttp.ClientSession() as session, session.get(message.attachments[0].url) as response:
        assert await response.read() == PNG


async def test_clicking_the_button_answers_ephemerally(fake: FakeDiscord, bot: DemoBot) -> None:
    message = await ping_result(fake)

    click = await fake.click(message, "demo:7", user_id=OTHER_USER_ID)
    callback = await click.wait_callback()

    assert callback.type == 4
    assert click.ephemeral
    assert click.original is not None
    assert click.original.content == "clicked 7"
    assert fake.visible_messages(CHANNEL_ID) == [message]


async def test_subcommand_with_typed_options(fake: FakeDiscord, bot: DemoBot) -> None:
    interaction = await fake.slash(
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
        user_id=USER_ID,
        name="art make",
        options={"prompt": "a cat", "steps": 5, "who": OTHER_USER_ID},
    )
    await interaction.wait_callback()

    assert interaction.original is not None
    assert interaction.original.content == f"a cat x5 for <@{OTHER_USER_ID}>"
    with pytest.raises(ValueError, match="required options missing"):
        await fake.slash(guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_ID, name="art make")


async def test_attachment_option_round_trips(fake: FakeDiscord, bot: DemoBot) -> None:
    upload = fake.attachment(PNG, "in.png")

    interaction = await fake.slash(
        guild_id=GUILD_ID,
        channel_id=CHANNEL_ID,
        user_id=USER_ID,
        name="inspect",
        attachments={"image": upload},
    )
    await interaction.wait_callback()

    digest = hashlib.sha256(PNG).hexdigest()[:12]
    assert interaction.original is not None
    assert interaction.original.content == f"in.png {len(PNG)} {digest} 4x3"
    assert [r.status for r in fake.cdn_requests] == [200]


async def test_repeated_nonce_creates_one_message(fake: FakeDiscord, bot: DemoBot) -> None:
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)

    first = await channel.send("exactly once", nonce=4242)
    second = await channel.send("exactly once", nonce=4242)

    assert first.id == second.id
    assert [m.content for m in fake.channel_messages(CHANNEL_ID)] == ["exactly once"]
    assert len(fake.find_requests("POST", rf"^/channels/{CHANNEL_ID}/messages$")) == 2


async def test_expired_tokens_answer_401_and_discord_py_raises(fake: FakeDiscord, bot: DemoBot) -> None:
    old = discord.utils.utcnow() - dt.timedelta(minutes=20)
    stale = await fake.slash(
        guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_ID, name="ping", created_at=old
    )
    fresh = await fake.slash(guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_ID, name="slow")
    await stale.wait_callback()
    await fresh.wait_callback()
    fake.expire_token(fresh.token)
    bot.release.set()
    await fake.wait_for(lambda: len(bot.errors) == 2)

    for error in bot.errors:
        assert isinstance(error, discord.HTTPException)
        assert (error.status, error.code) == (401, 50027)
    assert [stale.callback and stale.callback.type, fresh.callback and fresh.callback.type] == [5, 5]


async def test_late_and_repeated_callbacks_are_refused(fake: FakeDiscord, bot: DemoBot) -> None:
    fake.ack_deadline = 0.1
    bot.delay_ack = 0.2
    late = await fake.slash(guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_ID, name="slow")
    await fake.wait_for(lambda: len(bot.errors) == 1)

    error = bot.errors[0]
    assert isinstance(error, discord.NotFound)
    assert error.code == 10062
    assert late.callback is None

    fake.ack_deadline = 3.0
    bot.delay_ack = 0.0
    done = await fake.slash(guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_ID, name="ping")
    url = f"{fake.api_base}/interactions/{done.id}/{done.token}/callback"
    async with aiohttp.ClientSession() as session:
        await done.wait_callback()
        async with session.post(url, json={"type": 4, "data": {"content": "again"}}) as response:
            assert response.status == 400
            assert (await response.json())["code"] == 40060


async def test_oversized_file_gets_413(fake: FakeDiscord, bot: DemoBot) -> None:
    channel = bot.get_channel(SMALL_CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)

    with pytest.raises(discord.HTTPException) as caught:
        await channel.send(file=discord.File(io.BytesIO(b"x" * (SMALL_LIMIT + 1)), "big.bin"))
    fitted = await channel.send(file=discord.File(io.BytesIO(b"x" * SMALL_LIMIT), "fits.bin"))

    assert (caught.value.status, caught.value.code) == (413, 40005)
    assert [m.id for m in fake.channel_messages(SMALL_CHANNEL_ID)] == [fitted.id]
    assert fake.channel_messages(SMALL_CHANNEL_ID)[0].attachments[0].size == SMALL_LIMIT


async def test_429_is_retried_by_discord_py(fake: FakeDiscord, bot: DemoBot) -> None:
    channel = bot.get_channel(CHANNEL_ID)
    assert isinstance(channel, discord.TextChannel)
    fake.fail_next("POST", r"^/channels/\d+/messages$", 429, {"retry_after": 0.05})

    await channel.send("after a rate limit")

    assert [r.status for r in fake.find_requests("POST", r"^/channels/\d+/messages$")] == [429, 200]
    assert [m.content for m in fake.channel_messages(CHANNEL_ID)] == ["after a rate limit"]


async def test_unknown_routes_are_named_in_the_404(fake: FakeDiscord, bot: DemoBot) -> None:
    guild = bot.get_guild(GUILD_ID)
    assert guild is not None

    with pytest.raises(discord.NotFound, match=rf"no route for GET /guilds/{GUILD_ID}/emojis"):
        await guild.fetch_emojis()
    assert [r.path for r in fake.unhandled] == [f"/guilds/{GUILD_ID}/emojis"]


async def test_resume_after_disconnect_and_restart_with_a_new_bot(fake: FakeDiscord) -> None:
    first, task = await start_bot(fake)
    try:
        await first.tree.sync(guild=discord.Object(GUILD_ID))
        await fake.disconnect_bot()
        await fake.wait_for(lambda: fake.resumes == 1)
        await fake.wait_connected()
        assert (await ping_result(fake)).content == "pong"
    finally:
        await stop_bot(first, task)

    second, task = await start_bot(fake)
    try:
        assert len(fake.identify_intents) == 2
        assert (await ping_result(fake)).content == "pong"
    finally:
        await stop_bot(second, task)


async def test_followups_replace_the_thinking_message_and_keep_attachments(
    fake: FakeDiscord, bot: DemoBot
) -> None:
    interaction = await fake.slash(guild_id=GUILD_ID, channel_id=CHANNEL_ID, user_id=USER_ID, name="gallery")
    await fake.wait_for(lambda: len(interaction.followups) == 2 and interaction.followups[1].edits == 1)

    first, second = interaction.followups
    assert first is interaction.original
    assert (first.content, first.ephemeral, [f.filename for f in first.attachments]) == (
        "first",
        True,
        ["a.png"],
    )
    assert (second.content, second.ephemeral, second.created_via) == ("second", False, "followup")
    assert [(f.filename, f.data) for f in second.attachments] == [("b.txt", b"bee"), ("c.txt", b"sea")]
    assert fake.visible_messages(CHANNEL_ID) == [second]

    click = await fake.click(second, "demo:8", user_id=OTHER_USER_ID)
    await click.wait_callback()

    assert click.callback is not None
    assert click.callback.type == 7
    assert (second.content, second.custom_ids(), second.edits) == ("count 9", ["demo:9"], 2)
    assert [f.filename for f in second.attachments] == ["b.txt", "c.txt"]


async def test_guild_messages_intent_gets_message_events(fake: FakeDiscord) -> None:
    intents = discord.Intents(guilds=True, guild_messages=True)
    bot, task = await start_bot(fake, DemoBot(intents))
    try:
        channel = bot.get_channel(CHANNEL_ID)
        assert isinstance(channel, discord.TextChannel)
        seen = asyncio.ensure_future(bot.wait_for("message", timeout=5))
        sent = await channel.send("echo")
        received = await seen
    finally:
        await stop_bot(bot, task)

    assert received.id == sent.id
    assert received.author.id == fake.bot_user_id


async def test_privileged_intents_are_refused_with_4014(fake: FakeDiscord) -> None:
    bot = DemoBot(discord.Intents(guilds=True, members=True))

    with pytest.raises(discord.PrivilegedIntentsRequired):
        await asyncio.wait_for(bot.start(fake.token), 5)
    await bot.close()


async def test_discord_body_and_auth_rules(fake: FakeDiscord) -> None:
    url = f"{fake.api_base}/channels/{CHANNEL_ID}/messages"
    auth = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"content": "hi"}) as response:
            unauthorized = response.status
        async with session.post(url, json={"content": ""}, headers=auth) as response:
            empty = (response.status, (await response.json())["code"])
        async with session.post(url, json={"content": "x" * 2001}, headers=auth) as response:
            too_long = (response.status, (await response.json())["code"])
        async with session.post(
            f"{fake.api_base}/channels/1/messages", json={"content": "hi"}, headers=auth
        ) as response:
            unknown_channel = (response.status, (await response.json())["code"])
        uuid_nonce = {"content": "hi", "nonce": "0" * 36, "enforce_nonce": True}
        async with session.post(url, json=uuid_nonce, headers=auth) as response:
            long_nonce = (response.status, (await response.json())["code"])

    assert unauthorized == 401
    assert empty == (400, 50006)
    assert too_long == (400, 50035)
    assert unknown_channel == (404, 10003)
    assert long_nonce == (400, 50035)
    assert fake.messages == {}

"""Languages: the catalogs against the code, Discord's limits in every language, and Easel end to end in
a pseudo-locale (which shows any text that skipped the catalogs) and in Simplified Chinese."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import discord
import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.frontend import CommandLineInterface
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from bot import i18n
from bot.buttons import cancel_view, result_view, vote_view, withdraw_view
from bot.jobs import Job, JobKind, JobParams, JobStatus, utcnow
from bot.translator import DESCRIPTION_MAX, CatalogTranslator, valid_name
from tests.fakediscord import Message as Posted
from tests.harness import ALICE, BOB, CHANNEL_A, GUILD_A, Harness, command, running

REPO = Path(__file__).resolve().parents[1]
LOCALES = i18n.LOCALES_DIR
TEMPLATE = LOCALES / "easel.pot"
# The languages Easel ships, as catalog directories (Discord's locale with "_").
SHIPPED = ("zh_CN", "zh_TW", "ja", "ko", "es_ES", "pt_BR", "fr", "de", "ru")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
NAME_CONTEXTS = ("command name", "option name")
BUTTON_LABEL_MAX = 80
PSEUDO = "en-GB"  # a locale Easel ships no catalog for; the pseudo catalog takes its place in a test
OPEN, CLOSE = "⟦", "⟧"


def messages(catalog: Catalog) -> Iterator[Message]:
    yield from (m for m in catalog if m.id)


def read(path: Path) -> Catalog:
    with path.open("rb") as f:
        return read_po(f)


def forms(message: Message) -> list[str]:
    return list(message.string) if isinstance(message.string, (list, tuple)) else [message.string]


def ids(message: Message) -> list[str]:
    return list(message.id) if isinstance(message.id, (list, tuple)) else [message.id]


def key(message: Message) -> tuple[str | None, str]:
    return message.context, ids(message)[0]


def test_the_template_lists_every_text_the_code_has(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Extract again (as scripts/i18n does): a text added without updating the catalogs fails here."""
    monkeypatch.chdir(REPO)
    fresh = tmp_path / "easel.pot"
    with contextlib.redirect_stderr(io.StringIO()):
        CommandLineInterface().run(
            [
                "pybabel",
                "-q",
                "extract",
                "-F",
                "babel.cfg",
                "-o",
                str(fresh),
                "--no-location",
                "-k",
                "N_",
                "-k",
                "ngettext:1,2",
                "-k",
                "pgettext:1c,2",
                ".",
            ]
        )
    extracted = {key(m) for m in messages(read(fresh))}
    committed = {key(m) for m in messages(read(TEMPLATE))}
    assert extracted == committed, "run scripts/i18n all"
    assert (None, "Generate images from a text prompt.") in committed
    assert ("command name", "imagine") in committed
    assert ("choice", "portrait") in committed


@pytest.mark.parametrize("locale", SHIPPED)
def test_every_text_is_translated_with_the_same_placeholders(locale: str) -> None:
    catalog = read(LOCALES / locale / "LC_MESSAGES" / "easel.po")
    template = {key(m): m for m in messages(read(TEMPLATE))}
    translated = {key(m): m for m in messages(catalog)}
    assert translated.keys() == template.keys(), "run scripts/i18n update"
    for k, message in translated.items():
        wanted = set().union(*(PLACEHOLDER.findall(text) for text in ids(message)))
        assert len(forms(message)) == (catalog.num_plurals if message.pluralizable else 1), k
        for text in forms(message):
            assert text.strip(), f"{locale}: {k} is not translated"
            assert set(PLACEHOLDER.findall(text)) == wanted, f"{locale}: {k} -> {text!r}"
            assert not message.fuzzy, f"{locale}: {k} is fuzzy"


@pytest.mark.parametrize("locale", SHIPPED)
def test_the_compiled_catalog_is_the_po_file(locale: str) -> None:
    """The .mo files are committed (the package ships them): they must not drift from the .po."""
    folder = LOCALES / locale / "LC_MESSAGES"
    out = io.BytesIO()
    write_mo(out, read(folder / "easel.po"))
    assert (folder / "easel.mo").read_bytes() == out.getvalue(), "run scripts/i18n compile"


@pytest.mark.parametrize("locale", SHIPPED)
def test_discord_limits_hold_in_every_language(locale: str) -> None:
    for message in messages(read(LOCALES / locale / "LC_MESSAGES" / "easel.po")):
        for text in forms(message):
            if message.context in NAME_CONTEXTS:
                assert valid_name(text), f"{locale}: {text!r} is no valid command or option name"
            elif message.context == "choice" or any(
                "Discord: at most 100" in c for c in message.auto_comments
            ):
                assert len(text) <= DESCRIPTION_MAX, f"{locale}: {text!r}"


@pytest.mark.parametrize("locale", [lc.replace("_", "-") for lc in SHIPPED])
def test_button_labels_fit_in_every_language(locale: str) -> None:
    grid = Job(
        id=10**18,
        guild_id=GUILD_A,
        channel_id=CHANNEL_A,
        user_id=ALICE,
        kind=JobKind.IMAGINE,
        backend="openai",
        status=JobStatus.POSTED,
        params=JobParams(prompt="a fox", width=1024, height=1024, count=4),
        created_at=utcnow(),
        images=("a", "b", "c", "d"),
    )
    single = replace(grid, images=("a",))
    with i18n.speaking(locale):
        views = [result_view(grid), result_view(single, submit=True), cancel_view(10**18)]
        views += [vote_view(10**18), withdraw_view(10**18)]
        labels = [i18n._("Cancel #{id}", id=10**18), i18n._("Previous"), i18n._("Next")]
    labels += [
        item.label or "" for view in views for item in view.children if isinstance(item, discord.ui.Button)
    ]
    assert all(1 <= len(label) <= BUTTON_LABEL_MAX for label in labels), labels
    if locale == "zh-CN":
        assert "删除" in labels


async def test_the_translator_keeps_english_where_a_catalog_is_silent() -> None:
    translator = CatalogTranslator()
    where = discord.app_commands.TranslationContext(
        discord.app_commands.TranslationContextLocation.other, None
    )
    text = discord.app_commands.locale_str("Generate images from a text prompt.")
    assert await translator.translate(text, discord.Locale.finnish, where) is None
    assert await translator.translate(text, discord.Locale.chinese, where) not in (None, text.message)


# --------------------------------------------------------------------------- end to end


def pseudo(text: str) -> str:
    return f"{OPEN}{text}{CLOSE}"


@pytest.fixture
def pseudo_locale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every text of the template, wrapped in ⟦…⟧ with its placeholders kept, as the en-GB catalog."""
    catalog = Catalog(locale="en_GB")
    for message in messages(read(TEMPLATE)):
        if message.context in NAME_CONTEXTS:
            wrapped: str | tuple[str, ...] = message.id + "ψ"  # a name must stay a valid name
        elif message.pluralizable:
            wrapped = tuple(pseudo(text) for text in ids(message))
        else:
            wrapped = pseudo(message.id)
        catalog.add(message.id, wrapped, context=message.context)
    folder = tmp_path / "locales" / "en_GB" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    with (folder / "easel.mo").open("wb") as f:
        write_mo(f, catalog)
    monkeypatch.setattr(i18n, "LOCALES_DIR", tmp_path / "locales")
    i18n.catalog.cache_clear()
    yield
    i18n.catalog.cache_clear()


def untranslated(text: str, *allowed: str) -> list[str]:
    """The words of ``text`` outside every ⟦…⟧ (nested ones too), less the values and member text allowed."""
    while True:
        stripped = re.sub(f"{OPEN}[^{OPEN}{CLOSE}]*{CLOSE}", " ", text)
        if stripped == text:
            break
        text = stripped
    for value in allowed:
        text = text.replace(value, " ")
    text = re.sub(r"<[@#&!:a-zA-Z]*\d+(?::[a-zA-Z])?>", " ", text)  # mentions and timestamps
    text = re.sub(r"`[^`]*`", " ", text)  # code: commands, setting keys, backends
    return re.findall(r"[A-Za-z]{2,}", text)


def visible(message: Posted) -> Iterator[str]:
    """Everything a member reads in a message: each content it had, embeds, button labels."""
    yield message.content
    yield from (edit.content for edit in message.history)
    for embed in message.embeds:
        yield from (embed.get("title") or "", embed.get("description") or "")
        yield (embed.get("footer") or {}).get("text") or ""
        for field in embed.get("fields") or []:
            yield from (field["name"], field["value"])
    yield from (label or "" for label, _emoji, _cid, _disabled in message.buttons())


@pytest.fixture
async def pseudo_easel(tmp_path: Path, pseudo_locale: None) -> AsyncIterator[Harness]:
    async with running(tmp_path, guild_locale=PSEUDO) as harness:
        yield harness


async def test_a_pseudo_locale_run_shows_no_text_outside_the_catalogs(pseudo_easel: Harness) -> None:
    easel = pseudo_easel
    prompt = "a lighthouse in a storm"
    grid = await easel.result_of(await easel.imagine(prompt, count=4, locale=PSEUDO))
    reroll = await easel.discord.click(grid, grid.custom_ids()[-2], user_id=BOB, locale=PSEUDO)
    await easel.result_of(reroll)
    for name, options in (
        ("help", {}),
        ("queue", {}),
        ("quota", {}),
        ("prefer show", {}),
        ("history", {}),
        ("show", {"job": "nothere123"}),  # a refusal
        ("challenge status", {}),
        ("leaderboard", {}),
        ("settings show", {}),
    ):
        await command(easel, name, locale=PSEUDO, **options)
    posted = [m for m in easel.discord.messages.values() if not m.deleted]
    assert len(posted) >= 11
    values = ("OpenAI", "openai", "gpt-image-1-mini", "UTC", "age_restricted")  # names and values
    for message in posted:
        for text in visible(message):
            assert not untranslated(text, prompt, *values), (text, message)
    assert any(OPEN in text for m in posted for text in visible(m))


async def test_easel_in_simplified_chinese(tmp_path: Path) -> None:
    async with running(tmp_path, guild_locale="zh-CN") as easel:
        synced = {c["name"]: c for c in easel.discord.commands[GUILD_A]}
        imagine = synced["imagine"]
        with i18n.speaking("zh-CN"):
            assert imagine["description_localizations"]["zh-CN"] == i18n._(
                "Generate images from a text prompt."
            )
            assert imagine["name_localizations"]["zh-CN"] == i18n.pgettext("command name", "imagine")
        prompt_option = next(o for o in imagine["options"] if o["name"] == "prompt")
        assert prompt_option["description_localizations"]["zh-CN"] != prompt_option["description"]
        assert set(synced["help"]["description_localizations"]) >= {"zh-CN", "zh-TW", "ja", "ko", "de", "ru"}

        result = await easel.result_of(await easel.imagine("一只雪中的红狐狸", count=4, locale="zh-CN"))
        embed = result.embeds[0]
        assert embed["title"] == "想象"
        assert "作业" in embed["footer"]["text"]
        labels = [label for label, _emoji, _cid, _disabled in result.buttons()]
        assert labels[-2:] == ["重新生成", "删除"]

        reroll = await easel.discord.click(result, result.custom_ids()[-2], user_id=BOB, locale="zh-CN")
        assert (await easel.result_of(reroll)).embeds[0]["title"] == "重新生成"

        refusal = await command(easel, "show", locale="zh-CN", job="nothere123")
        assert refusal.original is not None
        assert refusal.original.ephemeral
        assert "该结果不存在" in refusal.original.content

        help_text = await command(easel, "help", locale="zh-CN")
        assert help_text.original is not None
        assert "**Easel** 根据你的提示词绘制图像" in help_text.original.content


async def test_private_answers_speak_the_member_and_public_posts_the_server(tmp_path: Path) -> None:
    async with running(tmp_path) as easel:
        result = await easel.result_of(await easel.imagine("a fox", locale="fr"))
        assert result.embeds[0]["title"] == "Imagine"  # the server speaks English
        refusal = await command(easel, "show", locale="fr", job="nothere123")
        assert refusal.original is not None
        with i18n.speaking("fr"):
            assert refusal.original.content == i18n._(
                "That result does not exist, or is not one you can see. "
                "Copy the id after `/show job:` in a result's footer."
            )
        assert "Copy the id" not in refusal.original.content

"""A Babel extractor for the cogs: their gettext calls, plus the command tree the Translator localises.

Command and option names are extracted with the context ``command name`` / ``option name`` and
choices with ``choice`` (bot.translator looks them up with the same contexts); descriptions are
plain messages. The cog module is imported to read its commands, as discord.py builds them.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from babel.messages.extract import extract_python
from discord import app_commands
from discord.ext import commands

NAME_NOTE = "Discord: lowercase letters, digits, - and _ only (no spaces), at most 32 characters."
TEXT_NOTE = "Discord: at most 100 characters."

Found = tuple[int, str, str | tuple[str, ...], list[str]]


def extract(
    fileobj: IO[bytes], keywords: Collection[str], comment_tags: Collection[str], options: Mapping[str, Any]
) -> Iterator[Found]:
    """Yield the module's gettext calls, then every text of the commands its cogs define."""
    yield from extract_python(fileobj, keywords, comment_tags, options)
    path = Path(getattr(fileobj, "name", "")).resolve().relative_to(Path.cwd())
    module = importlib.import_module(".".join(path.with_suffix("").parts))
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, commands.Cog)
            and value.__module__ == module.__name__
        ):
            yield from _cog(value)


def _cog(cog: type[commands.Cog]) -> Iterator[Found]:
    if getattr(cog, "__cog_is_app_commands_group__", False):
        yield _name(str(cog.__cog_group_name__), "command name")
        yield _text(str(cog.__cog_group_description__))
    for command in cog.__cog_app_commands__:
        yield from _command(command)


def _command(command: app_commands.Command[Any, ..., Any] | app_commands.Group) -> Iterator[Found]:
    yield _name(command.name, "command name")
    yield _text(command.description)
    if isinstance(command, app_commands.Group):
        for child in command.commands:
            yield from _command(child)
        return
    for parameter in command.parameters:
        yield _name(parameter.name, "option name")
        if parameter.description and parameter.description != "…":
            yield _text(parameter.description)
        for choice in parameter.choices:
            yield 0, "pgettext", ("choice", choice.name), [TEXT_NOTE]


def _name(name: str, context: str) -> Found:
    return 0, "pgettext", (context, name), [NAME_NOTE]


def _text(text: str) -> Found:
    return 0, "gettext", text, [TEXT_NOTE]

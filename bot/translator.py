"""Command names, descriptions, options and choices in every language the catalogs speak."""

from __future__ import annotations

import logging

import discord
import regex
from discord import app_commands
from discord.app_commands import TranslationContextLocation as Where

from bot import i18n

log = logging.getLogger(__name__)

# Discord's rule for command and option names (CHAT_INPUT): lowercase where the script has case.
NAME_RULE = regex.compile(r"^[-_\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$")
DESCRIPTION_MAX = 100  # descriptions and choice names
# The catalogs' contexts: a command's name is not the same word in a sentence.
CONTEXTS = {
    Where.command_name: "command name",
    Where.group_name: "command name",
    Where.parameter_name: "option name",
    Where.choice_name: "choice",
}


def valid_name(name: str) -> bool:
    """Whether Discord accepts ``name`` for a command or option."""
    return bool(NAME_RULE.match(name)) and name == name.lower()


class CatalogTranslator(app_commands.Translator):
    """Localises the command tree from the same gettext catalogs as every other text."""

    async def translate(
        self,
        string: app_commands.locale_str,
        locale: discord.Locale,
        context: app_commands.TranslationContextTypes,
    ) -> str | None:
        """Return the catalog's text for ``locale``, or None where there is none (Discord shows the English)."""
        where = CONTEXTS.get(context.location)
        with i18n.speaking(locale.value):
            text = i18n.pgettext(where, string.message) if where else i18n._(string.message)
        if text == string.message:
            return None
        if where and where != "choice" and not valid_name(text):
            # Discord would refuse the whole sync: keep the English name rather than lose every command.
            log.warning(
                "catalog %s: %r is no valid command name; using %r", locale.value, text, string.message
            )
            return None
        if len(text) > DESCRIPTION_MAX:
            log.warning(
                "catalog %s: %r is over %d characters; using the English", locale.value, text, DESCRIPTION_MAX
            )
            return None
        return text

"""Member-facing text in the reader's language: gettext catalogs under ``bot/locales``.

Every string a member reads goes through :func:`_` (or :func:`ngettext`), which looks the text up in
the catalog of the locale being spoken and fills in its ``{name}`` placeholders. The locale is a
context variable: the Discord edge sets it (the member's locale for private answers, the server's
for posts many members see) with :func:`speaking`, and the domain code below never passes it.
Texts defined at import time are marked with :func:`N_` and translated where they are shown.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from babel.support import NullTranslations, Translations

DOMAIN = "easel"
LOCALES_DIR = Path(__file__).parent / "locales"
FALLBACK = "en-US"

_speaking: ContextVar[str] = ContextVar("easel_locale", default=FALLBACK)


@functools.cache
def catalog(locale: str) -> NullTranslations:
    """Return the compiled catalog for a Discord locale (``zh-CN``), or the identity when none exists."""
    return Translations.load(str(LOCALES_DIR), [locale.replace("-", "_")], DOMAIN)


def current() -> str:
    """Return the locale being spoken."""
    return _speaking.get()


@contextmanager
def speaking(locale: str | None) -> Iterator[None]:
    """Speak ``locale`` (a Discord locale such as ``zh-CN``; None means the fallback) inside the block."""
    token = _speaking.set(locale or FALLBACK)
    try:
        yield
    finally:
        _speaking.reset(token)


def _(message: str, /, **params: object) -> str:
    """Translate ``message`` into the locale being spoken and fill in its ``{name}`` placeholders."""
    text = catalog(_speaking.get()).gettext(message)
    return text.format(**params) if params else text


def ngettext(singular: str, plural: str, count: int, /, **params: object) -> str:
    """Translate the form of a message that fits ``count`` (available as ``{count}``)."""
    text = catalog(_speaking.get()).ngettext(singular, plural, count)
    return text.format(count=count, **params)


def N_(message: str, /) -> str:
    """Mark a text defined at import time for the catalogs; translate it with :func:`_` where shown."""
    return message

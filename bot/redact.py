"""Redaction: the one function that removes tokens and keys from text Easel logs or shows.

It removes two things. The configured secrets (the bot token, the OpenAI key) in every form a
library or server may echo them: as is, cut (without the ``sk-`` prefix, the first or last
part), URL-encoded; any run of at least ``WINDOW`` characters of one of them goes. And secrets
Easel never sees in the config, by their shape: interaction tokens in webhook and callback URLs
and in ``"token": ...`` fields, bearer and bot credentials, OpenAI-style keys and the masked keys
OpenAI echoes in errors.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
# Any 8 characters of a secret give it away in part; shorter runs (an OpenAI "…abcd" hint,
# four characters) are kept, and a random 8-character run in ordinary text is vanishingly rare.
WINDOW = 8
# Shorter secrets are test placeholders; matching them would blank ordinary words.
MIN_SECRET = 4

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Discord interaction tokens in REST paths: /webhooks/<app id>/<token>/…, /interactions/<id>/<token>/…
    (re.compile(r"(/(?:webhooks|interactions)/\d+/)[^/\s?#'\"]+"), rf"\1{REDACTED}"),
    # Fields named token (JSON, Python reprs, query strings): the gateway's INTERACTION_CREATE and
    # IDENTIFY payloads, webhook objects. Not ``input_tokens`` and the like.
    (re.compile(r"(?i)(\b\w*token[\"']?\s*[:=]\s*[\"']?)[^\s\"',}&)]+"), rf"\1{REDACTED}"),
    # An interaction token starts with base64("interaction"), wherever it appears (a query's arguments).
    (re.compile(r"aW50ZXJhY3Rpb24[A-Za-z0-9_\-=]*"), REDACTED),
    # A Discord bot token: base64(user id) . timestamp . HMAC.
    # Starting only where a run of such characters starts keeps this linear on long base64 blobs.
    (re.compile(r"(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]{23,}\.[A-Za-z0-9_\-]{6}\.[A-Za-z0-9_\-]{27,}"), REDACTED),
    (re.compile(r"(?i)\b((?:Bot|Bearer)\s+)[A-Za-z0-9_.\-]{20,}"), rf"\1{REDACTED}"),
    # OpenAI's 401 text: "Incorrect API key provided: sk-proj-****abcd".
    (re.compile(r"(?i)(api key provided:\s*)\S+"), rf"\1{REDACTED}"),
    (re.compile(r"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-*.]+"), REDACTED),
    # A masked key ("abc***xyz"): the whole word. Anchored at the word's start: unanchored, a long
    # word without "***" costs quadratic time (minutes for an image's base64).
    (re.compile(r"(?<!\S)\S*\*{3,}\S*"), REDACTED),
)


class _Known:
    """Finds every run of ``WINDOW`` or more characters of the given secrets, in any of their forms."""

    def __init__(self, secrets: Iterable[str]) -> None:
        pieces: set[str] = set()
        for secret in secrets:
            if len(secret) < MIN_SECRET:
                continue
            for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
                size = min(WINDOW, len(form))  # a secret shorter than a window matches only in full
                pieces.update(form[i : i + size] for i in range(len(form) - size + 1))
        self._pieces = tuple(pieces)

    def scrub(self, text: str) -> str:
        # str.find per piece (C speed, ~40 ms for a 400 kB payload) rather than one regex
        # alternation, which sre tries piece by piece at every position (~7× slower).
        spans: list[tuple[int, int]] = []
        for piece in self._pieces:
            at = text.find(piece)
            while at != -1:
                spans.append((at, at + len(piece)))
                at = text.find(piece, at + 1)
        if not spans:
            return text
        spans.sort()
        parts: list[str] = []
        start, end = spans[0]
        last = 0
        # Pieces overlap: merge them, so the whole run goes, not every eighth character of it.
        for s, e in spans[1:]:
            if s > end:
                parts += [text[last:start], REDACTED]
                last, start = end, s
            end = max(end, e)
        parts += [text[last:start], REDACTED, text[end:]]
        return "".join(parts)


@functools.lru_cache(maxsize=16)
def _known(secrets: tuple[str, ...]) -> _Known:
    return _Known(secrets)


def scrub_secrets(text: str, *secrets: str) -> str:
    """Return ``text`` without the given secrets (in any form) and without anything shaped like a token or key."""
    text = _known(secrets).scrub(text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """A handler filter that scrubs every record's message, traceback and stack before it is written.

    Installed on a handler, it sees the records of every library, not only Easel's. It rewrites
    the record itself (the formatted message replaces ``msg`` and ``args``), so handlers after it
    see the scrubbed text too.
    """

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # Arguments that do not fit the format (or fail to print): keep them, scrubbed, since
            # the handler would otherwise print them raw in its error report.
            message = f"{record.msg} {record.args!r}"
        record.msg, record.args = scrub_secrets(message, *self._secrets), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub_secrets(record.exc_text, *self._secrets)
        if record.stack_info:
            record.stack_info = scrub_secrets(record.stack_info, *self._secrets)
        return True

"""A guild's blocked terms and patterns: fold look-alike text, then match it. No Discord, no SQL.

Both the moderator's rules and the member's prompt go through :func:`normalize`, so "ＦＵСК"
(fullwidth, with a Cyrillic С), "f\u200buck" (a zero-width space inside), "fück", "ʜᴇʟʟ" and "sh1t"
meet the rules the moderator wrote in plain letters. What a member reads when refused never repeats
the matched text: a slur must not be echoed back (issue 4).

Terms are matched with the standard library's ``re``: Easel builds those expressions itself, they
do not backtrack, and ``re`` runs them far faster (30 µs against 2 ms with ``regex``, for 500 terms
on a 1,000-character prompt). Moderators' own patterns run on ``regex``, whose ``timeout=`` bounds
one that would backtrack. What no timeout bounds is refused before compiling: recursion, and
counted repeats that ``regex`` copies out into millions of nodes.
"""

from __future__ import annotations

import enum
import functools
import logging
import re
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import regex

from bot.errors import InvalidInput

log = logging.getLogger(__name__)

TERM_MAX = 100  # characters in one blocked term
PATTERN_MAX = 200  # characters in one pattern: long alternations are where slow patterns hide
TERMS_MAX = 1000
PATTERNS_MAX = 50
# One pattern gets this long on one text, and one check (every pattern, both fields) CHECK_BUDGET
# in all. Checking runs on the event loop, so a hostile pattern stalls it at most that long.
PATTERN_TIMEOUT = 0.05
CHECK_BUDGET = 0.1
# ``regex`` compiles a group once per count of a counted repeat, with no timeout: "(?:a{1000}){1000}"
# took 0.75 s and 270 MB to compile, "(?:|a){100000000}" more memory than the machine had. A pattern
# is refused when its length times the product of all its counts (a bound on the copies, whatever
# nests in what) passes this; 100,000 nodes compile in about 0.05 s and 40 MB.
EXPANSION_MAX = 100_000

# Characters nobody sees, dropped after NFKD: category Cf (zero-width space and joiners, word
# joiner, BOM, soft hyphen, bidi controls, tag characters), every combining mark (accents split off
# by NFKD, variation selectors, the grapheme joiner), controls other than whitespace, and fillers
# that render blank although Unicode calls them letters or symbols (Hangul fillers, braille blank).
_INVISIBLE = regex.compile(
    r"[\p{Cf}\p{M}\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\u115f\u1160\u3164\uffa0\u2800]+"
)
_ASCII_INVISIBLE = re.compile(r"[\x00-\x08\x0e-\x1b\x7f]+")

# Letters that look like ASCII ones but that NFKD leaves alone. Capitals are mapped before
# casefolding because a look-alike capital's lowercase often looks like another letter (Greek Η
# looks like H, its lowercase η like n).
_LOOKALIKE_PAIRS = (
    ("АВЕЅІЈКМНОРСТХУҮҺԀԌԚԜӀ", "ABESIJKMHOPCTXYYHDGQWI"),  # Cyrillic capitals
    ("аеѕіјкморстхуүһԁԍԛԝӏвн", "aesijkmopctxyyhdgqwlbh"),  # Cyrillic small letters
    ("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧϹϿ", "ABEZHIKMNOPTYXCJ"),  # Greek capitals
    ("αοριτυχκνεηϲϳμ", "aopituxkvencju"),  # Greek small letters
    ("օոսհցզ", "onuhgq"),  # Armenian
    ("ıȷɑɡɩøØđĐħłŁŧƀɨʉ", "ijagioOdDhlLtbiu"),  # Latin letters with no decomposition
    ("ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ", "abcdefghijklmnoprstuvwyz"),  # "small caps" text generators
    ("’‘ʼ", "'''"),  # apostrophes, so "he’ll" keeps its apostrophe (see _IN_WORD_GAP)
)
_LOOKALIKES = str.maketrans("".join(a for a, _ in _LOOKALIKE_PAIRS), "".join(b for _, b in _LOOKALIKE_PAIRS))

# Leetspeak: 0→o, 1→i (not l: "sh1t"), 3→e, 4→a, 5→s, 7→t, @→a, $→s. Undone in each run of
# letters, digits, @ and $ except numbers (digits and no letter), so "455 hp", "Boeing 717" and "$5" stay.
_LEET = str.maketrans("013457@$", "oieastas")
_LEET_TOKEN = re.compile(r"(?<![\w@$])[\w@$]*?[013457@$][\w@$]*+")
_LEET_CHAR = re.compile(r"[013457@$]")  # most prompts have none: skip the token scan (30 µs)


def _unleet(match: re.Match[str]) -> str:
    token = match[0]
    is_number = any(c.isdigit() for c in token) and not any(c.isalpha() for c in token)
    return token if is_number else token.translate(_LEET)


def normalize(text: str, *, leet: bool = True) -> str:
    """Fold ``text`` the way blocked terms and patterns see it."""
    if text.isascii():
        text = _ASCII_INVISIBLE.sub("", text)
    else:
        # NFKD does NFKC's compatibility folding (fullwidth, ligatures, 𝐛𝐨𝐥𝐝, ⓒⓘⓡⓒⓛⓔⓓ) and also
        # splits accents off as combining marks, which _INVISIBLE then drops ("é" → "e").
        text = unicodedata.normalize("NFKD", text)
        text = _INVISIBLE.sub("", text).translate(_LOOKALIKES)
    text = text.casefold()
    if leet and _LEET_CHAR.search(text):
        text = _LEET_TOKEN.sub(_unleet, text)
    return " ".join(text.split())


# Term matching. After normalize() a word character is a letter or digit ([^\W_]: no marks are
# left); anything else, underscore included, separates words.
_BEFORE = r"(?<![^\W_])"
_AFTER = r"(?![^\W_])"
# Up to three separators between a term's letters, possessive so matching never backtracks:
# - inside a word, punctuation only ("f.u.c.k", "f-uck"; "f*ck" is not covered, a letter is gone):
#   not spaces, so "an al dente" is not "anal", and not apostrophes, so "he'll" is not "hell";
_IN_WORD_GAP = r"(?:_|[^\w\s']){0,3}+"
# - between a phrase's words, anything or nothing ("blow job", "blowjob", "blow-job");
_WORD_GAP = r"[\W_]{0,3}+"
# - or one to three of anything between every two letters of the term ("f u c k", "f. u. c. k").
_SPACED_GAP = r"[\W_]{1,3}+"
_GAPS = {"\x00": _IN_WORD_GAP, "\x01": _WORD_GAP, "\x02": _SPACED_GAP}
_TERM_SHAPE = re.compile(r"[^\W_]+(?:[\s\-'.]+[^\W_]+)*")
_LETTERS = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class _Term:
    words: tuple[str, ...]
    open_start: bool  # "*term": may be the end of a longer word
    open_end: bool  # "term*": may be the start of a longer word

    @property
    def letters(self) -> str:
        return "".join(self.words)

    def spellings(self) -> Iterator[tuple[str, ...]]:
        """Yield the term as letters and gap units: as written, then spaced out letter by letter."""
        units: list[str] = []
        for word in self.words:
            if units:
                units.append("\x01")
            units.extend("\x00".join(word))
        yield tuple(units)
        if len(self.letters) > 1:
            yield tuple("\x02".join(self.letters))


@functools.lru_cache(maxsize=4096)
def _parse_term(term: str) -> _Term | str:
    """Return the parsed term, or the end of a sentence saying what to change."""
    if len(term) > TERM_MAX:
        return f"is {len(term)} characters long; shorten it to {TERM_MAX} or fewer."
    folded = normalize(term)
    core = folded.strip("*").strip()
    if not core:
        return "is empty: give a word or phrase to block."
    if "*" in core:
        return "has a * in the middle: put * only at the start or end (e.g. *word*)."
    if not _TERM_SHAPE.fullmatch(core):
        return (
            "may contain only letters, digits, spaces, hyphens, apostrophes and full stops "
            "(with * at either end); use a pattern to block symbols."
        )
    return _Term(tuple(_LETTERS.findall(core)), folded.startswith("*"), folded.endswith("*"))


class _Node:
    """One trie node: the units that may follow, and whether (and how) a term ends here."""

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        # None: no term ends here; False: one ends here at a word boundary; True: one ends here
        # with a trailing "*" and may run on into a longer word.
        self.end: bool | None = None

    def regex(self) -> str:
        """Return the regex for whatever may follow this node to complete a term."""
        if self.end is True:
            return ""  # a term may stop here whatever follows, so the longer ones add nothing
        alternatives = [
            _GAPS.get(unit, re.escape(unit)) + child.regex() for unit, child in sorted(self.children.items())
        ]
        if self.end is False:
            alternatives.append(_AFTER)
        return alternatives[0] if len(alternatives) == 1 else f"(?:{'|'.join(alternatives)})"


def _compile_terms(terms: Iterable[_Term]) -> re.Pattern[str]:
    """Compile ``terms`` into one regex, their spellings merged into a trie."""
    # Hundreds of terms side by side would each be tried at every position of the prompt; a trie
    # tries only the branches whose letters are there (27 µs instead of 250 µs for 500 terms).
    roots = {False: _Node(), True: _Node()}  # by open_start
    for term in terms:
        for units in term.spellings():
            node = roots[term.open_start]
            for unit in units:
                node = node.children.setdefault(unit, _Node())
            node.end = bool(node.end) or term.open_end
    parts = []
    if roots[False].children:
        parts.append(_BEFORE + roots[False].regex())
    if roots[True].children:
        parts.append(roots[True].regex())
    return re.compile("|".join(parts) or r"(?!)")  # (?!) never matches: no terms


@functools.lru_cache(maxsize=256)
def _terms_regex(terms: tuple[_Term, ...]) -> re.Pattern[str]:
    """Compile a guild's terms, memoized: equal rules built again (reloaded from the store) reuse them."""
    return _compile_terms(terms)


@functools.lru_cache(maxsize=4096)
def _term_regex(term: _Term) -> re.Pattern[str]:
    """Compile one term on its own, to tell which term the combined regex found."""
    return _compile_terms((term,))


def validate_term(term: str) -> str | None:
    """Return why ``term`` cannot be a blocked term (a message naming what to change), or None."""
    parsed = _parse_term(term)
    return f"This blocked term {parsed}" if isinstance(parsed, str) else None


# Recursion ((?R), (?0), (?1), (?-1), (?&name), (?P>name)) nests a new match at every level: "(?R)"
# on an empty text took seconds and up to 1 GB before a MemoryError. Looked for in the text before
# compiling, so also where it would be literal ("\(?R") or in a set: rare, and cheaper than parsing.
_RECURSION = re.compile(r"\(\?(?:R|[+-]?\d|&|P>)")
# Every {m}, {m,}, {m,n} and {,n}, wherever it is (in a set it is literal: counting it only errs
# on the safe side). A fuzzy constraint such as {e<=1} is no count.
_COUNT = re.compile(r"\{(\d*),?(\d*)\}")


def _expansion(pattern: str) -> int:
    """Return a bound on the nodes ``regex`` compiles ``pattern`` into."""
    bound = len(pattern)
    for numbers in _COUNT.findall(pattern):
        bound *= max(1, *(int(n) for n in numbers if n))
        if bound > EXPANSION_MAX:
            break  # refused already
    return bound


def _unsafe(pattern: str) -> str | None:
    """Return why ``pattern`` must not even be compiled (a message naming what to change), or None."""
    if len(pattern) > PATTERN_MAX:
        return f"This pattern is {len(pattern)} characters long; shorten it to {PATTERN_MAX} or fewer."
    if _RECURSION.search(pattern):
        return (
            "This pattern uses recursion ((?R), (?1), (?&name) or (?P>name)), which Easel does not run; "
            "write it without recursion."
        )
    if _expansion(pattern) > EXPANSION_MAX:
        return (
            "This pattern repeats too much for Easel to run: its counted repeats ({n}, {m,n}) multiply "
            "into too many copies; use smaller counts, or + and * instead."
        )
    return None


def validate_pattern(pattern: str) -> str | None:
    """Return why ``pattern`` cannot be a blocked pattern (a message naming what to change), or None.

    Compiles and runs the pattern (up to PATTERN_TIMEOUT): call it off the event loop.
    """
    problem = _unsafe(pattern)
    if problem is not None:
        return problem
    try:
        # The same timeout a prompt check gives one pattern.
        matches_empty = _compile_pattern(pattern).search("", timeout=PATTERN_TIMEOUT) is not None
    except regex.error as exc:
        # str() names the problem and where: "missing ) at position 2".
        return f"This pattern is not a valid regular expression ({exc}); fix it or remove it."
    except (TimeoutError, MemoryError, RecursionError):
        return "This pattern is too slow or too complex to check prompts with; simplify it."
    if matches_empty:
        return (
            "This pattern matches an empty prompt, so it would block everything; make it require some text."
        )
    return None


def _compile_pattern(pattern: str) -> regex.Pattern[str]:
    # Patterns see casefolded text; IGNORECASE lets "Badword" still match it.
    return regex.compile(pattern, regex.IGNORECASE)


class RuleKind(enum.Enum):
    """Which list the rule that refused a prompt is in."""

    TERM = "term"
    PATTERN = "pattern"


@dataclass(frozen=True)
class Verdict:
    """Why a prompt was refused: ``rule`` is for moderators' audit only, ``message`` for the member."""

    kind: RuleKind
    index: int  # position in ContentRules.terms or .patterns
    rule: str  # the term or pattern as configured: may be a slur, never show it to the member
    source: str  # "prompt" or "negative prompt"
    timed_out: bool = False  # the pattern could not be checked in time: refused all the same

    @property
    def message(self) -> str:
        """Return the member-facing refusal, which never repeats the matched text."""
        if self.timed_out:
            return (
                f"Easel could not check your {self.source} against this server's rules in time. "
                "Please rephrase it, or make it shorter."
            )
        return f"Your {self.source} contains a term this server has blocked. Please rephrase it."


@dataclass(frozen=True)
class ContentRules:
    """A guild's blocked terms and patterns, validated and compiled once; ``check`` a prompt against them.

    A term matches whole words of the normalized text, ``*`` at either end letting it match inside a
    longer word, also with separators between its letters. A pattern is searched in the normalized
    text and, when that differs, in it with leetspeak left as typed (so a moderator's ``\\d`` still
    sees digits). A pattern that runs out of time refuses the prompt: fail closed. So does a stored
    pattern that today's checks would refuse: it is never compiled.
    """

    terms: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    # Rules read back from the store: a pattern refused there would lock the guild out of every
    # command, unblocking included, so one that fails checks made since it was written is kept
    # (uncompiled, refusing every prompt) for a moderator to remove.
    stored: bool = field(default=False, repr=False, compare=False)
    _parsed: tuple[_Term, ...] = field(init=False, repr=False, compare=False)
    _terms: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _compiled: tuple[regex.Pattern[str] | None, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.terms) > TERMS_MAX:
            raise InvalidInput(f"A server can block at most {TERMS_MAX} terms; remove some.")
        if len(self.patterns) > PATTERNS_MAX:
            raise InvalidInput(f"A server can block at most {PATTERNS_MAX} patterns; remove some.")
        parsed = []
        for i, term in enumerate(self.terms, 1):
            result = _parse_term(term)
            if isinstance(result, str):
                raise InvalidInput(f"Blocked term {i} {result}")
            parsed.append(result)
        compiled: list[regex.Pattern[str] | None] = []
        for i, pattern in enumerate(self.patterns, 1):
            # Stored patterns were compiled and tried when written; not again on every load.
            problem = _unsafe(pattern) if self.stored else validate_pattern(pattern)
            if problem is None:
                compiled.append(_compile_pattern(pattern))
            elif self.stored:
                log.warning("stored blocked pattern %d refuses every prompt until removed: %s", i, problem)
                compiled.append(None)
            else:
                raise InvalidInput(f"Blocked pattern {i}: {problem}")
        # Frozen, so set once here; compiling 500 terms takes about 90 ms, hence the memo too.
        object.__setattr__(self, "_parsed", tuple(parsed))
        object.__setattr__(self, "_terms", _terms_regex(self._parsed))
        object.__setattr__(self, "_compiled", tuple(compiled))

    def check(self, prompt: str, negative: str = "") -> Verdict | None:
        """Return why the prompt or the negative prompt is refused, or None when both are allowed."""
        deadline = time.monotonic() + CHECK_BUDGET
        for name, text in (("prompt", prompt), ("negative prompt", negative)):
            if not text:
                continue
            folded = normalize(text)
            verdict = self._check_terms(name, folded) or self._check_patterns(name, text, folded, deadline)
            if verdict is not None:
                return verdict
        return None

    def _check_terms(self, name: str, folded: str) -> Verdict | None:
        # No timeout: Easel builds these regexes, and their possessive gaps make them linear.
        match = self._terms.search(folded)
        if match is None:
            return None
        # Name the term for the audit: the match's letters are one term's letters; when several
        # terms share them ("ass", "*ass*"), the first that matches on its own is the one.
        letters = "".join(_LETTERS.findall(match[0]))
        for i, term in enumerate(self._parsed):
            if term.letters == letters and _term_regex(term).search(folded):
                return Verdict(RuleKind.TERM, i, self.terms[i], name)
        raise AssertionError("the terms' regex matched text that no single term matches")

    def _check_patterns(self, name: str, text: str, folded: str, deadline: float) -> Verdict | None:
        if not self._compiled:
            return None
        variants = [folded]
        plain = normalize(text, leet=False)
        if plain != folded:
            variants.append(plain)
        for i, compiled in enumerate(self._compiled):
            if compiled is None:
                return Verdict(RuleKind.PATTERN, i, self.patterns[i], name, timed_out=True)
            for variant in variants:
                timeout = min(PATTERN_TIMEOUT, deadline - time.monotonic())
                try:
                    if timeout <= 0:
                        raise TimeoutError("the check's time budget is spent")
                    matched = compiled.search(variant, timeout=timeout) is not None
                except TimeoutError:
                    return Verdict(RuleKind.PATTERN, i, self.patterns[i], name, timed_out=True)
                if matched:
                    return Verdict(RuleKind.PATTERN, i, self.patterns[i], name)
        return None

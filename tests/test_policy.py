"""Blocked terms and patterns: what a member's prompt is folded to, what is refused, and what they read."""

from __future__ import annotations

import time

import pytest

from bot.errors import InvalidInput
from bot.policy import (
    PATTERN_MAX,
    TERM_MAX,
    ContentRules,
    RuleKind,
    Verdict,
    normalize,
    validate_pattern,
    validate_term,
)

RULES = ContentRules(terms=("fuck", "ass", "hell", "cunt", "tit", "anal", "blow job", "*shit*", "nazi*"))


def refused(rules: ContentRules, prompt: str, negative: str = "") -> Verdict:
    """Check the prompt, expecting a refusal that does not repeat the rule to the member."""
    verdict = rules.check(prompt, negative)
    assert verdict is not None, f"{prompt!r} / {negative!r} was allowed"
    assert verdict.rule.strip("*").casefold() not in verdict.message.casefold()
    return verdict


def blocked_by(prompt: str) -> str:
    """Return the term of RULES that refuses ``prompt``."""
    return refused(RULES, prompt).rule


# normalize()


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Hello   WORLD\n\tagain ", "hello world again"),
        ("Ünïcödé café", "unicode cafe"),
        ("ＦＵＬＬｗｉｄｔｈ", "fullwidth"),
        ("𝐛𝐨𝐥𝐝 ⓒⓘⓡⓒⓛⓔⓓ ﬁne", "bold circled fine"),
        ("раssword ΗΕΛΛΟ", "password heλλo"),  # Cyrillic р, а; Greek Η, Ε, Ο (Λ looks like no Latin letter)
        ("ʜᴇʟʟᴏ", "hello"),
        ("z\u200be\u200cr\u200do\u2060w\ufeffi\u00add\u202et\u2066h\ufe0f", "zerowidth"),
        ("sh1t 4ll th3 7h1ng5 @ $cale", "shit all the things a scale"),
        ("455 horsepower, 1080 px, a $5 fee", "455 horsepower, 1080 px, a $5 fee"),
        ("he’ll", "he'll"),
        ("", ""),
    ],
)
def test_normalize_folds_case_accents_lookalikes_invisibles_and_leetspeak(text: str, folded: str) -> None:
    assert normalize(text) == folded


def test_normalize_can_leave_leetspeak_as_typed() -> None:
    assert normalize("Ｓh1t 4 U", leet=False) == "sh1t 4 u"


# Terms


@pytest.mark.parametrize(
    "prompt",
    [
        "FUCK this",  # case
        "fück",  # accents
        "fúçk",
        "ＦＵＣＫ",  # fullwidth
        "fuсk",  # Cyrillic с
        "FUСΚ",  # Cyrillic С, Greek Κ
        "f\u200buck",  # zero-width space
        "f\u200cu\u200dc\u2060k",  # ZWNJ, ZWJ, word joiner
        "fu\ufeffck",  # BOM
        "fu\u00adck",  # soft hyphen
        "f\u202eu\u202cck",  # bidi override and pop
        "fu\ufe0fck",  # variation selector
        "f.u.c.k",  # separators
        "f u c k",
        "f-u-c-k",
        "f_u_c_k",
        "f . u . c . k",
        "fu-ck",
        "Fu.Ck",
        "𝐟𝐮𝐜𝐤",
        "an ugly fuck.",
    ],
)
def test_disguised_terms_are_refused(prompt: str) -> None:
    assert blocked_by(prompt) == "fuck"


@pytest.mark.parametrize(
    ("prompt", "term"),
    [
        ("ΗΕLL yes", "hell"),  # Greek capitals Η and Ε
        ("ʜᴇʟʟ", "hell"),  # small capitals
        ("kiss my a55", "ass"),  # leetspeak
        ("@$$", "ass"),
        ("sh1t", "*shit*"),
        ("t1t", "tit"),
        ("blowjob", "blow job"),  # a phrase, written joined or apart
        ("BLOW  JOB", "blow job"),
        ("blow-job", "blow job"),
        ("b l o w j o b", "blow job"),
    ],
)
def test_lookalikes_leetspeak_and_phrases_are_refused(prompt: str, term: str) -> None:
    assert blocked_by(prompt) == term


@pytest.mark.parametrize(
    "prompt",
    [
        "a class of students",  # "ass" inside a word
        "the assassin's passage",
        "Scunthorpe United",  # "cunt" inside a word
        "a sea shell, hello",  # "hell" inside words
        "he'll come back",  # an apostrophe is not a separator
        "he’ll come back",
        "pasta an al dente",  # spaces between words are not separators inside one
        "a titanic constitution",
        "Boeing 717, 455 horsepower",  # numbers stay numbers
        "canal analysis",
        "blow jobsite",  # a phrase ends at a word boundary too
        "",
    ],
)
def test_whole_word_terms_do_not_match_inside_other_words(prompt: str) -> None:
    assert RULES.check(prompt) is None


@pytest.mark.parametrize(
    ("rules", "prompt", "allowed"),
    [
        (("*shit*",), "bullshitting", False),
        (("*shit*",), "shitty", False),
        (("nazi*",), "nazism", False),
        (("nazi*",), "neonazi", True),
        (("*nazi",), "neonazi", False),
        (("*nazi",), "nazism", True),
        (("*ass",), "badass", False),
        (("*ass",), "assassin", True),
        (("ass",), "badass", True),
    ],
)
def test_a_star_lets_a_term_match_inside_longer_words(
    rules: tuple[str, ...], prompt: str, allowed: bool
) -> None:
    assert (ContentRules(terms=rules).check(prompt) is None) is allowed


def test_the_verdict_names_the_rule_for_the_audit_but_the_member_never_reads_it() -> None:
    verdict = refused(RULES, "a fluffy cat", "ugly, f.u.c.k, blurry")
    assert verdict == Verdict(RuleKind.TERM, 0, "fuck", "negative prompt")
    assert (
        verdict.message == "Your negative prompt contains a term this server has blocked. Please rephrase it."
    )
    assert "fuck" not in refused(RULES, "FUCK").message.casefold()


def test_the_first_term_found_in_the_prompt_is_named() -> None:
    rules = ContentRules(terms=("ass", "*ass*", "hell"))
    assert refused(rules, "hell, a class").index == 2
    assert refused(rules, "a class").index == 1  # "ass" cannot match inside "class", "*ass*" can
    assert refused(rules, "an ass").index == 0


def test_rules_without_terms_or_patterns_allow_everything() -> None:
    rules = ContentRules()
    for prompt in ("fuck", "(a|aa)+$", "\u200b", "ＦＵＬＬ", "a" * 1000):
        assert rules.check(prompt, prompt) is None


@pytest.mark.parametrize(
    ("term", "problem"),
    [
        ("", "is empty"),
        ("* *", "is empty"),
        ("\u200b", "is empty"),
        ("a*b", "* in the middle"),
        ("c++", "use a pattern"),
        ("x" * (TERM_MAX + 1), f"shorten it to {TERM_MAX}"),
    ],
)
def test_invalid_terms_say_what_to_change(term: str, problem: str) -> None:
    message = validate_term(term)
    assert message is not None
    assert problem in message
    with pytest.raises(InvalidInput, match=r"Blocked term 2 ") as caught:
        ContentRules(terms=("fine", term))
    assert problem in str(caught.value)


def test_a_moderators_term_is_folded_like_the_prompt() -> None:
    rules = ContentRules(terms=("ＦÜСК", "курва"))  # fullwidth with a Cyrillic С; a Cyrillic word
    assert refused(rules, "fuck").index == 0
    assert refused(rules, "КУРВА").index == 1
    assert rules.check("kurva") is None  # look-alikes are folded, not transliterated


@pytest.mark.parametrize("term", ["fuck", "*shit*", "blow job", "rock'n'roll", "f.u.c.k", "Ｈ3LL", "nazi*"])
def test_valid_terms_pass_validation(term: str) -> None:
    assert validate_term(term) is None


# Patterns


def test_a_pattern_matches_the_normalized_text() -> None:
    rules = ContentRules(patterns=(r"kill\s+(him|her|them)", r"\d{3}\b"))
    verdict = refused(rules, "K1LL   Ｈｉｍ")
    assert (verdict.kind, verdict.index, verdict.timed_out) == (RuleKind.PATTERN, 0, False)
    assert verdict.message == "Your prompt contains a term this server has blocked. Please rephrase it."
    # A pattern also sees digits as typed where leetspeak folding reads letters ("agent007" → "agentoot").
    assert refused(rules, "Agent007 in a tux").index == 1
    assert rules.check("a killer whale with them") is None


def test_an_uppercase_pattern_still_matches_the_casefolded_text() -> None:
    assert refused(ContentRules(patterns=("BadWord",)), "a BADWORD here").index == 0


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(abc", "not a valid regular expression (missing ) at position 4)"),
        ("[a-", "not a valid regular expression"),
        ("a{2,1}", "not a valid regular expression"),
        ("x" * (PATTERN_MAX + 1), f"{PATTERN_MAX + 1} characters long; shorten it to {PATTERN_MAX}"),
        ("a*", "matches an empty prompt"),
        ("", "matches an empty prompt"),
    ],
)
def test_invalid_patterns_say_what_to_change(pattern: str, problem: str) -> None:
    message = validate_pattern(pattern)
    assert message is not None
    assert problem in message
    with pytest.raises(InvalidInput, match=r"^Blocked pattern 1: This pattern"):
        ContentRules(patterns=(pattern,))


def test_valid_patterns_pass_validation() -> None:
    assert validate_pattern(r"\bnazi\w*") is None
    assert validate_pattern("x" * PATTERN_MAX) is None


def test_a_pattern_that_runs_out_of_time_refuses_the_prompt() -> None:
    rules = ContentRules(patterns=(r"(a|aa)+$",))  # exponential backtracking on a run of a's
    start = time.monotonic()
    verdict = refused(rules, "a" * 60 + "!")
    assert time.monotonic() - start < 2  # the timeout is 50 ms; this bound only catches a hang
    assert (verdict.kind, verdict.index, verdict.timed_out) == (RuleKind.PATTERN, 0, True)
    assert "could not check your prompt" in verdict.message
    assert "(a|aa)" not in verdict.message


def test_a_classic_catastrophic_pattern_returns_in_bounded_time() -> None:
    # The regex module recognises (a+)+$ and does not backtrack on it; were it ever to, the
    # timeout would refuse the prompt instead of hanging.
    rules = ContentRules(patterns=(r"(a+)+$",))
    start = time.monotonic()
    verdict = rules.check("a" * 36 + "!")
    assert time.monotonic() - start < 2
    assert verdict is None or verdict.timed_out


def test_the_first_slow_pattern_refuses_without_waiting_on_the_rest() -> None:
    rules = ContentRules(patterns=("zzz", *[rf"(a|aa)+{i}$" for i in range(10)]))
    start = time.monotonic()
    verdict = refused(rules, "a" * 60 + "!", "a" * 60 + "!")
    assert time.monotonic() - start < 2
    assert (verdict.index, verdict.source, verdict.timed_out) == (1, "prompt", True)


def test_terms_are_checked_before_patterns_and_both_prompts_are_checked() -> None:
    rules = ContentRules(terms=("hell",), patterns=("hell",))
    assert refused(rules, "hell").kind is RuleKind.TERM
    assert refused(rules, "fine", "hello").kind is RuleKind.PATTERN
    assert refused(rules, "fine", "hello").source == "negative prompt"
    assert rules.check("fine", "fine too") is None


def test_rules_compare_by_their_terms_and_patterns() -> None:
    assert ContentRules(("a",), ("b",)) == ContentRules(("a",), ("b",))
    assert hash(ContentRules(("a",))) == hash(ContentRules(("a",)))
    assert ContentRules(("a",)) != ContentRules(("b",))

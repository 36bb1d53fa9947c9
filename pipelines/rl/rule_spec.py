"""Declarative rule rewards: rules written as data in a run's config (`ppo.rules`), no user code.

    ppo:
      reward: my-rm/final                 # may be empty when rules are given
      rules:
        - {ends_with: "Hope this helps!"}
        - {regex: "^- ", per_line: true, weight: 0.5}
        - {max_words: 80}

A rule is a mapping with exactly one kind (below) and the options `weight` (a number from -10 to 10, default 1),
`per_line` (score each non-empty line and take the share that match) and `ignore_case`. Each rule scores an answer
in [0, 1]; a run's rule score is the weighted sum, added to the reward model's and the reward-function file's.

Text kinds (per_line and ignore_case apply): contains, not_contains (one text or a list: 1 if none occurs),
contains_any (1 if any occurs), contains_all (the share of the texts that occur), starts_with and ends_with (on the
answer, or the line, with surrounding whitespace stripped), regex (Python `re.search`).
Counting kinds, 1 when met, otherwise the share of the way there (min_words: 80 scores an answer of 40 words 0.5;
max_words: 80 scores one of 160 words 0.5): min_words, max_words, min_chars, max_chars, min_lines, max_lines
(words are split at whitespace, characters counted with the answer stripped, lines only when not blank).
Others: json_valid (1 if the whole answer, or the one ```json block it is, parses as JSON), language (en or ko: the
share of the answer's letters that are Latin letters A-Z, or Hangul), no_repeats (1 minus the share of repeated word
3-grams, the run page's answers/repeated_3grams).

Everything is checked when a config is read (prepare time), with one sentence naming the rule by its position, and
bounded: at most MAX_RULES rules, texts of MAX_TEXT characters, lists of MAX_ITEMS. Rules run in the training
process, never in the app's server. Python's `re` has no timeout, so a pattern is at most MAX_PATTERN characters,
compiled when the config is read, and refused if it repeats a part that itself repeats by a varying count (`(a+)+`,
the shape of catastrophic backtracking); answers are short (the stage's response_length), which bounds the rest.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

from pipelines.errors import StudioError, quote

MAX_RULES = 32
MAX_TEXT = 1000
MAX_ITEMS = 100
MAX_PATTERN = 200
MAX_COUNT = 100_000
MAX_WEIGHT = 10.0
LANGUAGES = ("en", "ko")

TEXT_KINDS = ("contains", "starts_with", "ends_with", "regex")            # one text
LIST_KINDS = ("contains_any", "contains_all", "not_contains")              # a list of texts (or one)
COUNT_KINDS = ("min_words", "max_words", "min_chars", "max_chars", "min_lines", "max_lines")
TRUE_KINDS = ("json_valid", "no_repeats")                                  # take only `true`
KINDS = (*TEXT_KINDS, *LIST_KINDS, *COUNT_KINDS, *TRUE_KINDS, "language")
LINE_KINDS = (*TEXT_KINDS, *LIST_KINDS)                                    # where per_line and ignore_case apply
OPTIONS = ("weight", "per_line", "ignore_case")


@dataclass(frozen=True)
class Rule:
    kind: str
    value: Any                      # text, tuple of texts, whole number, True, or a language code
    weight: float = 1.0
    per_line: bool = False
    ignore_case: bool = False

    def __post_init__(self):
        object.__setattr__(self, "_score_text", _scorer(self))

    def score(self, answer: str) -> float:
        """This rule's score of one answer, in [0, 1] (before its weight)."""
        if not self.per_line:
            return self._score_text(answer)
        lines = [line for line in answer.splitlines() if line.strip()]
        return sum(map(self._score_text, lines)) / len(lines) if lines else 0.0


def parse_rules(rules: Any, path: str = "rules") -> list[Rule]:
    """A config's rule list (plain data) → Rule objects; StudioError naming the rule's position on the first problem.
    `path` names the setting in messages (ppo.rules)."""
    if rules is None or rules == "":
        return []
    if not isinstance(rules, list):
        raise StudioError("rules.not_list", path=path, value=quote(rules))
    if len(rules) > MAX_RULES:
        raise StudioError("rules.too_many", path=path, count=len(rules), limit=MAX_RULES)
    return [_parse_rule(rule, index + 1, path) for index, rule in enumerate(rules)]


def rules_score(rules: list[Rule], completions: list[str]) -> list[float]:
    """Each completion's weighted sum of rule scores."""
    return [sum(rule.weight * rule.score(text) for rule in rules) for text in completions]


def _parse_rule(rule: Any, n: int, path: str) -> Rule:
    where = {"n": n, "path": path}
    if not isinstance(rule, dict) or not rule:
        raise StudioError("rules.not_mapping", **where, value=quote(rule))
    unknown = [k for k in rule if k not in KINDS and k not in OPTIONS]
    if unknown:
        raise StudioError("rules.unknown_key", **where, key=quote(unknown[0]), kinds=", ".join(KINDS))
    kinds = [k for k in rule if k in KINDS]
    if not kinds:
        raise StudioError("rules.no_kind", **where, kinds=", ".join(KINDS))
    if len(kinds) > 1:
        raise StudioError("rules.two_kinds", **where, kinds=", ".join(kinds))
    kind = kinds[0]
    weight = rule.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) \
            or abs(weight) > MAX_WEIGHT:
        raise StudioError("rules.bad_weight", **where, limit=MAX_WEIGHT, value=quote(weight))
    flags = {}
    for option in ("per_line", "ignore_case"):
        value = rule.get(option, False)
        if not isinstance(value, bool):
            raise StudioError("rules.not_flag", **where, option=option, value=quote(value))
        if value and kind not in LINE_KINDS:
            raise StudioError("rules.option_not_for", **where, option=option, kind=kind, kinds=", ".join(LINE_KINDS))
        flags[option] = value
    value = _parse_value(kind, rule[kind], where, flags["ignore_case"])
    return Rule(kind, value, float(weight), **flags)


def _as_text(value: Any) -> Any:
    """A whole number where a text is wanted is its digits (YAML reads `contains: 42` as a number)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _parse_value(kind: str, value: Any, where: dict, ignore_case: bool) -> Any:
    if kind in TEXT_KINDS:
        value = _as_text(value)
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
            raise StudioError("rules.not_text", **where, kind=kind, limit=MAX_TEXT, value=quote(value))
        if kind == "regex":
            _check_pattern(value, where, ignore_case)
        return value
    if kind in LIST_KINDS:
        items = [value] if isinstance(_as_text(value), str) else value
        items = [_as_text(item) for item in items] if isinstance(items, list) else items
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS or \
                not all(isinstance(i, str) and i.strip() and len(i) <= MAX_TEXT for i in items):
            raise StudioError("rules.not_texts", **where, kind=kind, items=MAX_ITEMS, limit=MAX_TEXT,
                              value=quote(value))
        return tuple(items)
    if kind in COUNT_KINDS:
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        if isinstance(value, bool) or not whole or not 1 <= value <= MAX_COUNT:
            raise StudioError("rules.not_count", **where, kind=kind, limit=MAX_COUNT, value=quote(value))
        return int(value)
    if kind in TRUE_KINDS:
        if value is not True:
            raise StudioError("rules.only_true", **where, kind=kind, value=quote(value))
        return True
    if value not in LANGUAGES:   # language
        raise StudioError("rules.bad_language", **where, languages=", ".join(LANGUAGES), value=quote(value))
    return value


def _check_pattern(pattern: str, where: dict, ignore_case: bool) -> None:
    if len(pattern) > MAX_PATTERN:
        raise StudioError("rules.long_regex", **where, length=len(pattern), limit=MAX_PATTERN)
    try:
        re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except (re.error, OverflowError, RecursionError) as exc:
        raise StudioError("rules.bad_regex", **where, value=quote(pattern), problem=str(exc)) from None
    if _nested_repeat(pattern):
        raise StudioError("rules.nested_repeat", **where, value=quote(pattern))


def _nested_repeat(pattern: str) -> bool:
    """Whether a part repeated more than once holds a part that repeats a varying number of times: `(a+)+`,
    `(\\w*\\s)*`, `(x{1,3})+`; `(ab){2}` or `(\\d{3}-)+` are fine."""
    try:
        from re import _constants as c, _parser as parser   # Python 3.11+
    except ImportError:   # pragma: no cover - older Pythons
        import sre_constants as c
        import sre_parse as parser

    repeats = {c.MAX_REPEAT, c.MIN_REPEAT} | ({c.POSSESSIVE_REPEAT} if hasattr(c, "POSSESSIVE_REPEAT") else set())

    def walk(items, inside_repeat: bool) -> bool:
        for op, av in items:
            if op in repeats:
                low, high, body = av
                if inside_repeat and low != high:
                    return True
                if walk(body, inside_repeat or high > 1):
                    return True
            elif op == c.BRANCH:
                if any(walk(branch, inside_repeat) for branch in av[1]):
                    return True
            elif op == c.SUBPATTERN:
                if walk(av[-1], inside_repeat):
                    return True
            elif op in (c.ASSERT, c.ASSERT_NOT) or getattr(c, "ATOMIC_GROUP", None) == op:
                if walk(av[-1] if isinstance(av, tuple) else av, inside_repeat):
                    return True
            elif op == c.GROUPREF_EXISTS:
                if any(part is not None and walk(part, inside_repeat) for part in av[1:]):
                    return True
        return False

    return walk(parser.parse(pattern), False)


# ---- scoring: each kind's score of one text (the answer, or a line of it)

HANGUL = ((0xAC00, 0xD7A3), (0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))


def language_share(text: str, language: str) -> float:
    """The share of the text's letters (str.isalpha) that are Hangul (ko) or Latin A-Z (en); 0 without letters."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    if language == "ko":
        hits = sum(any(lo <= ord(ch) <= hi for lo, hi in HANGUL) for ch in letters)
    else:
        hits = sum(ch.isascii() for ch in letters)
    return hits / len(letters)


def _json_valid(text: str) -> float:
    text = text.strip()
    fence = re.fullmatch(r"```[A-Za-z]*\n(.*)\n?```", text, re.DOTALL)   # one fenced block, the whole answer
    try:
        json.loads(fence[1] if fence else text)
    except (ValueError, RecursionError):
        return 0.0
    return 1.0


def _repeated_share(text: str) -> float:
    words = text.split()
    grams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def _at_least(count: int, bound: int) -> float:
    return min(1.0, count / bound)


def _at_most(count: int, bound: int) -> float:
    return 1.0 if count <= bound else bound / count


COUNTS: dict[str, Callable[[str], int]] = {
    "words": lambda text: len(text.split()),
    "chars": lambda text: len(text.strip()),
    "lines": lambda text: sum(1 for line in text.splitlines() if line.strip()),
}


def _scorer(rule: Rule) -> Callable[[str], float]:
    """The function that scores one text for this rule (the value already checked by parse_rules)."""
    kind, value = rule.kind, rule.value
    fold = str.casefold if rule.ignore_case else (lambda s: s)
    if kind == "regex":
        compiled = re.compile(value, re.IGNORECASE if rule.ignore_case else 0)
        return lambda text: 1.0 if compiled.search(text) else 0.0
    if kind == "contains":
        return lambda text: float(fold(value) in fold(text))
    if kind == "starts_with":
        return lambda text: float(fold(text.strip()).startswith(fold(value.strip())))
    if kind == "ends_with":
        return lambda text: float(fold(text.strip()).endswith(fold(value.strip())))
    if kind == "contains_any":
        return lambda text: float(any(fold(item) in fold(text) for item in value))
    if kind == "contains_all":
        return lambda text: sum(fold(item) in fold(text) for item in value) / len(value)
    if kind == "not_contains":
        return lambda text: float(not any(fold(item) in fold(text) for item in value))
    if kind in COUNT_KINDS:
        side, unit = kind.split("_")
        count, bounded = COUNTS[unit], _at_least if side == "min" else _at_most
        return lambda text: bounded(count(text), value)
    if kind == "json_valid":
        return _json_valid
    if kind == "no_repeats":
        return lambda text: 1.0 - _repeated_share(text)
    if kind == "language":
        return lambda text: language_share(text, value)
    raise ValueError(f"no scorer for rule kind {kind!r}")   # KINDS and this function disagree: a bug

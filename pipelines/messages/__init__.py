"""Every sentence a user reads, once, in English and Korean: one catalog per language (en.py, ko.py), keyed by code.

A message is a code and its parameters (`text("run.not_found", run_id=...)`); the template for the language
of the visitor being served is filled in where the text is needed. The language is a context variable: the
studio sets it for each visitor's request (studio/errors.py), and everything else (the CLI, the API without a
browser, the training processes) speaks English. Templates use str.format placeholders, `{name}` or
`{size:.1f}`; both catalogs hold the same codes with the same placeholders (tests/test_messages.py).
"""

from __future__ import annotations

import string
from contextlib import contextmanager
from contextvars import ContextVar

from pipelines.messages import en, ko

LANGUAGES = ("en", "ko")
DEFAULT_LANGUAGE = "en"
_CATALOGS = {"en": en.MESSAGES, "ko": ko.MESSAGES}
_language: ContextVar[str] = ContextVar("language", default=DEFAULT_LANGUAGE)


class Message:
    """A code and its parameters, rendered in whichever language is asked (a parameter may be a Message too)."""

    def __init__(self, code: str, /, **params):
        if code not in en.MESSAGES:
            raise KeyError(f"no message {code!r} in the English catalog")
        self.code, self.params = code, params

    def text(self, language: str | None = None) -> str:
        return render(self.code, language, **self.params)

    def to_dict(self) -> dict:
        """Plain data for status.json and API results: {"code": ..., "params": {...}}, nested messages included."""
        return {"code": self.code,
                "params": {k: v.to_dict() if isinstance(v, Message) else v for k, v in self.params.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> "Message":
        params = {k: cls.from_dict(v) if _is_message_dict(v) else v for k, v in (data.get("params") or {}).items()}
        return cls(data["code"], **params)

    def __str__(self) -> str:
        return self.text(DEFAULT_LANGUAGE)

    def __repr__(self) -> str:
        return f"Message({self.code!r}, **{self.params!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Message) and (self.code, self.params) == (other.code, other.params)


def _is_message_dict(value) -> bool:
    return isinstance(value, dict) and set(value) == {"code", "params"} and value.get("code") in en.MESSAGES


def has_message(code: str) -> bool:
    return isinstance(code, str) and code in en.MESSAGES


def current_language() -> str:
    return _language.get()


@contextmanager
def speaking(language: str | None):
    """Render every message inside the block in `language` (an unknown one falls back to English)."""
    token = _language.set(language if language in LANGUAGES else DEFAULT_LANGUAGE)
    try:
        yield
    finally:
        _language.reset(token)


def render(code: str, language: str | None = None, /, **params) -> str:
    """The template of `code` in `language` (default: the current one; English where a catalog lacks it), filled in."""
    language = language or current_language()
    template = _CATALOGS.get(language, en.MESSAGES).get(code) or en.MESSAGES[code]
    values = {k: v.text(language) if isinstance(v, Message) else v for k, v in params.items()}
    return template.format(**values)   # every template is a format string: a literal brace is written {{ or }}


def text(code: str, /, **params) -> str:
    """The message `code` in the language of the visitor being served."""
    return render(code, None, **params)


def placeholders(template: str) -> set[str]:
    """The names a template fills in: {"rows", "name"} for "{rows} rows in {name}"."""
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}


def catalog(language: str) -> dict[str, str]:
    return _CATALOGS[language]


def language_of(accept_language: str | None) -> str:
    """The first catalog language a browser's Accept-Language asks for ("ko-KR,ko;q=0.9,en;q=0.8" → "ko")."""
    wanted = []
    for part in (accept_language or "").split(",")[:20]:
        tag, _, weight = part.strip().partition(";q=")
        try:
            wanted.append((float(weight) if weight else 1.0, tag.split("-")[0].lower()))
        except ValueError:
            continue
    for _, tag in sorted(wanted, key=lambda pair: -pair[0]):
        if tag in LANGUAGES:
            return tag
    return DEFAULT_LANGUAGE

"""The one exception type for mistakes a user can make."""


class StudioError(Exception):
    """A problem the user caused and can fix: the message says what is wrong and how to fix it.

    The UI shows the message as it is (no traceback), the CLI prints it and exits with 2,
    and the API returns it as the error of the call.
    """


QUOTE_CHARS = 80   # enough to recognise a value; a message never echoes a megabyte of input back


def shorten(text: str) -> str:
    """The first line of `text`, cut to QUOTE_CHARS characters: for text that may carry input (a parser's complaint)."""
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= QUOTE_CHARS else line[:QUOTE_CHARS - 1] + "…"


def quote(value) -> str:
    """repr(value) for a message, cut to QUOTE_CHARS characters."""
    return shorten(repr(value))

"""The one exception type for mistakes a user can make."""

from pipelines.messages import Message, has_message


class StudioError(Exception):
    """A problem the user caused and can fix: the message says what is wrong and how to fix it.

    Raised with a catalog code and its parameters, `StudioError("run.not_found", run_id=...)`: `str(error)` is the
    English sentence (the CLI prints it and exits with 2), `error.text()` the sentence in the visitor's language (the
    UI and the API show it), and `error.catalog_message` the code and parameters a run's status.json keeps.
    A sentence not yet in the catalog may still be given as it is; it is shown in English only.
    """

    def __init__(self, message, /, **params):
        if isinstance(message, Message):
            self.catalog_message = message
        elif params or has_message(message):
            self.catalog_message = Message(message, **params)
        else:
            self.catalog_message = None
            super().__init__(message)
            return
        super().__init__(str(self.catalog_message))

    @property
    def code(self) -> str | None:
        return self.catalog_message.code if self.catalog_message else None

    def text(self, language: str | None = None) -> str:
        return self.catalog_message.text(language) if self.catalog_message else str(self)


QUOTE_CHARS = 80   # enough to recognise a value; a message never echoes a megabyte of input back


def shorten(text: str) -> str:
    """The first line of `text`, cut to QUOTE_CHARS characters: for text that may carry input (a parser's complaint)."""
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= QUOTE_CHARS else line[:QUOTE_CHARS - 1] + "…"


def quote(value) -> str:
    """repr(value) for a message, cut to QUOTE_CHARS characters."""
    return shorten(repr(value))

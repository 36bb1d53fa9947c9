"""Recognise an instruction dataset's format and normalise every row to TRL's conversational shape.

Every row becomes `{"messages": [{"role": ..., "content": ...}, ...]}`. A row that cannot be
normalised becomes a RowError naming its 1-based row number and the field at fault: nothing is
dropped silently. What is wrong with a row is a catalog message (data.row.*), told in the visitor's language.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.errors import quote
from pipelines.messages import Message

ROLES = ("system", "user", "assistant")


@dataclass
class RowError:
    row: int        # 1-based, as a person counts rows in a file
    field: str
    problem: Message

    @property
    def message(self) -> str:
        return self.problem.text()

    def as_message(self) -> Message:
        return Message("data.row_error", row=self.row, field=self.field, problem=self.problem)

    def __str__(self) -> str:
        return str(self.as_message())


@dataclass
class Normalised:
    format: str
    rows: list[dict] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    warnings: list[Message] = field(default_factory=list)
    sources: list[int] = field(default_factory=list)   # the file row each normalised row came from

    def add(self, source_row: int, *rows: dict) -> None:
        self.rows.extend(rows)
        self.sources.extend([source_row] * len(rows))

    def report(self) -> dict:
        """Plain data in the visitor's language: errors as {row, field, message}, warnings as sentences."""
        return {"format": self.format, "rows": len(self.rows),
                "errors": [{"row": e.row, "field": e.field, "message": e.message} for e in self.errors],
                "warnings": [w.text() for w in self.warnings]}


def detect_format(records: list[dict]) -> str:
    """Name the format from the keys of the first rows (most rows win, so one odd row does not decide)."""
    votes: dict[str, int] = {}
    for record in records[:50]:
        if not isinstance(record, dict):
            continue
        keys = set(record)
        if "messages" in keys:
            kind = "messages"
        elif "conversations" in keys:
            kind = "sharegpt"
        elif "instruction" in keys and "output" in keys:
            kind = "alpaca"
        elif "prompt" in keys and ("completion" in keys or "response" in keys):
            kind = "prompt_completion"
        else:
            continue
        votes[kind] = votes.get(kind, 0) + 1
    if not votes:
        return "unknown"
    return max(votes, key=votes.get)


def normalise_instruction(records: list) -> Normalised:
    """Normalise instruction data (Alpaca, chat messages, ShareGPT, prompt/completion) for SFT."""
    kind = detect_format(records)
    result = Normalised(kind)
    if kind == "unknown":
        keys = sorted(records[0]) if records and isinstance(records[0], dict) else []
        result.errors.append(RowError(1, ",".join(keys) or "-", Message("data.row.unknown_format")))
        return result
    convert = {"alpaca": _from_alpaca, "messages": _from_messages, "sharegpt": _from_sharegpt,
               "prompt_completion": _from_prompt_completion}[kind]
    for index, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            result.errors.append(RowError(index, "-", Message("data.row.not_object", type=type(record).__name__)))
            continue
        try:
            result.add(index, {"messages": convert(record)})
        except _Bad as bad:
            result.errors.append(RowError(index, bad.field, bad.problem))
    return result


class _Bad(Exception):
    """A row's field at fault, and what is wrong with it (a data.row.* message)."""
    def __init__(self, field_name: str, code: str, **params):
        self.field, self.problem = field_name, Message(code, **params)
        super().__init__(str(self.problem))


def _text(record: dict, name: str, required: bool = True) -> str:
    value = record.get(name)
    if value is None or value == "":
        if required:
            raise _Bad(name, "data.row.missing")
        return ""
    if not isinstance(value, str):
        raise _Bad(name, "data.row.not_text", type=type(value).__name__)
    if required and not value.strip():
        raise _Bad(name, "data.row.whitespace")
    return value


def _from_alpaca(record: dict) -> list[dict]:
    instruction = _text(record, "instruction")
    extra = _text(record, "input", required=False)
    output = _text(record, "output")
    system = _text(record, "system", required=False)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _from_prompt_completion(record: dict) -> list[dict]:
    """Strings, or message lists (TRL's conversational prompt-completion: prompt turns, then the answer turn)."""
    answer_key = "completion" if "completion" in record else "response"
    prompt, answer = record.get("prompt"), record.get(answer_key)
    if isinstance(prompt, list) or isinstance(answer, list):
        prompt_turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": _text(record, "prompt")}]
        answer_turns = answer if isinstance(answer, list) else [{"role": "assistant", "content": _text(record, answer_key)}]
        return _checked_turns(prompt_turns + answer_turns, "prompt+" + answer_key)
    return [{"role": "user", "content": _text(record, "prompt")}, {"role": "assistant", "content": _text(record, answer_key)}]


def _from_messages(record: dict) -> list[dict]:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Bad("messages", "data.row.bad_messages")
    return _checked_turns(messages, "messages")


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bard": "assistant", "bing": "assistant", "system": "system"}


def _from_sharegpt(record: dict) -> list[dict]:
    """ShareGPT: `conversations` of {from: human|gpt|system, value: ...}."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise _Bad("conversations", "data.row.bad_conversations")
    converted = []
    for index, turn in enumerate(turns, start=1):
        where = f"conversations[{index}]"
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise _Bad(where, "data.row.turn_from_value")
        if turn["from"] not in SHAREGPT_ROLES:
            raise _Bad(f"{where}.from", "data.row.unknown_speaker", speaker=quote(turn["from"]))
        converted.append({"role": SHAREGPT_ROLES[turn["from"]], "content": turn["value"]})
    return _checked_turns(converted, "conversations")


def _checked_turns(turns: list, field_name: str) -> list[dict]:
    """A conversation a chat template can render and SFT can learn from: known roles, text, user first, an answer."""
    clean = []
    for turn_index, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            raise _Bad(f"{field_name}[{turn_index}]", "data.row.turn_role_content")
        role, content = turn["role"], turn["content"]
        if role not in ROLES:
            raise _Bad(f"{field_name}[{turn_index}].role", "data.row.unknown_role", role=quote(role))
        if not isinstance(content, str):
            raise _Bad(f"{field_name}[{turn_index}].content", "data.row.not_text", type=type(content).__name__)
        clean.append({"role": role, "content": content})
    speakers = [t["role"] for t in clean if t["role"] != "system"]
    if not speakers or speakers[0] != "user":
        raise _Bad(field_name, "data.row.user_first")
    if "assistant" not in speakers:
        raise _Bad(field_name, "data.row.no_answer")
    if any(not t["content"].strip() for t in clean if t["role"] == "assistant"):
        raise _Bad(field_name, "data.row.empty_answer")
    return clean

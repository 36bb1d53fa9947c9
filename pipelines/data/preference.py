"""Preference, unpaired-preference and prompt-only data, normalised to TRL's conversational shapes.

    preference   {"prompt": [turns…], "chosen": [assistant turn], "rejected": [assistant turn]}
    unpaired     {"prompt": [turns…], "completion": [assistant turn], "label": bool}      (KTO)
    prompt_only  {"prompt": [turns…]}                                                    (PPO, GRPO, best-of-N)

Shapes read: prompt/chosen/rejected as strings or message lists, including UltraFeedback-binarized rows
whose chosen and rejected repeat the prompt; Anthropic HH-RLHF transcripts with no prompt column (the
shared prefix is the prompt); ranked answers (one prompt, several answers with a rank or score) made
into every ordered pair; prompt/completion/label; a `prompt` column or messages ending with a user turn.

A preference dataset's format names the shape its rows came in (most rows win), so the Data tab can say
"read as HH-RLHF" rather than "preference": PREFERENCE_FORMATS, each with its name in the catalog (data.format.*).
"""

from __future__ import annotations

import re
from itertools import combinations

from pipelines.data.formats import Normalised, RowError, _Bad, _checked_turns, _text

HH_TURN = re.compile(r"\n\n(Human|Assistant): ")
PREFERENCE_FORMATS = ("chosen_rejected",            # TRL's prompt / chosen / rejected columns, as text
                      "chosen_rejected_messages",   # the same as message lists (TRL's conversational preference)
                      "ultrafeedback",              # chosen and rejected are whole conversations repeating the prompt
                      "hh_rlhf",                    # Anthropic HH-RLHF: two transcripts, no prompt column
                      "ranked")                     # one prompt, several answers with a rank or score


# The columns some other kind reads: a file with a `text` column and none of these holds raw documents (kind text);
# other columns beside it (id, url, source, meta: what pretraining corpora carry) are left out of its rows.
OTHER_KINDS_COLUMNS = frozenset({"prompt", "chosen", "rejected", "completion", "response", "label", "answers",
                                 "responses", "messages", "conversations", "instruction", "input", "output"})


def is_text_columns(keys: set) -> bool:
    return "text" in keys and not keys & OTHER_KINDS_COLUMNS


def detect_kind(records: list[dict]) -> str:
    keys = set().union(*(r.keys() for r in records[:50] if isinstance(r, dict))) if records else set()
    if is_text_columns(keys):
        return "text"
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if "answers" in keys or "responses" in keys:
        return "ranked"
    if "label" in keys and "completion" in keys:
        return "unpaired"
    if keys == {"prompt"} or (keys and keys <= {"prompt", "system", "id"}):
        return "prompt_only"
    return "instruction"


def normalise_preference(records: list) -> Normalised:
    result = Normalised("ranked" if detect_kind(records) == "ranked" else "chosen_rejected")
    for index, record in enumerate(records, start=1):
        try:
            if not isinstance(record, dict):
                raise _Bad("-", "data.row.not_object", type=type(record).__name__)
            pairs = _ranked_pairs(record) if result.format == "ranked" else [_pair(record)]
            result.add(index, *pairs)
        except _Bad as bad:
            result.errors.append(RowError(index, bad.field, bad.problem))
    if result.format != "ranked":
        result.format = pair_format(records)
    return result


def pair_format(records: list) -> str:
    """The shape most of the first rows of a pair dataset come in (one of PREFERENCE_FORMATS but ranked)."""
    votes: dict[str, int] = {}
    for record in records[:50]:
        if isinstance(record, dict):
            shape = _pair_shape(record)
            votes[shape] = votes.get(shape, 0) + 1
    return max(votes, key=votes.get) if votes else "chosen_rejected"


def _pair_shape(record: dict) -> str:
    chosen, rejected, prompt = record.get("chosen"), record.get("rejected"), record.get("prompt")
    if _is_hh(record):
        return "hh_rlhf"
    if isinstance(chosen, list) or isinstance(rejected, list):
        turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        repeats = isinstance(chosen, list) and len(chosen) > len(turns) and chosen[:len(turns)] == turns
        return "ultrafeedback" if repeats else "chosen_rejected_messages"
    return "chosen_rejected_messages" if isinstance(prompt, list) else "chosen_rejected"


def _is_hh(record: dict) -> bool:
    chosen, rejected = record.get("chosen"), record.get("rejected")
    return "prompt" not in record and isinstance(chosen, str) and isinstance(rejected, str) and "\n\nHuman: " in chosen


def _pair(record: dict) -> dict:
    chosen, rejected = record.get("chosen"), record.get("rejected")
    if _is_hh(record):
        prompt, chosen_text, rejected_text = _split_hh(chosen, rejected)
    else:
        prompt = _prompt_turns(record)
        chosen_text = _answer(record, "chosen", prompt)
        rejected_text = _answer(record, "rejected", prompt)
    if chosen_text.strip() == rejected_text.strip():
        raise _Bad("rejected", "data.row.identical")
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen_text}],
            "rejected": [{"role": "assistant", "content": rejected_text}]}


def _prompt_turns(record: dict) -> list[dict]:
    prompt = record.get("prompt")
    if isinstance(prompt, list):
        return _checked_prompt(prompt)
    return [{"role": "user", "content": _text(record, "prompt")}]


def _checked_prompt(turns: list) -> list[dict]:
    """Prompt turns end with the user's: check them by checking them with a placeholder answer."""
    checked = _checked_turns(list(turns) + [{"role": "assistant", "content": "·"}], "prompt")
    if checked[-2]["role"] != "user":
        raise _Bad("prompt", "data.row.prompt_ends_user")
    return checked[:-1]


def _answer(record: dict, key: str, prompt: list[dict]) -> str:
    value = record.get(key)
    if isinstance(value, list):  # a whole conversation (UltraFeedback) or just the answer turn(s)
        turns = value[len(prompt):] if value[:len(prompt)] == prompt else value
        answers = [t for t in turns if isinstance(t, dict) and t.get("role") == "assistant"]
        if len(answers) != 1 or not isinstance(answers[0].get("content"), str) or not answers[0]["content"].strip():
            raise _Bad(key, "data.row.one_answer")
        return answers[0]["content"]
    return _text(record, key)


def _split_hh(chosen: str, rejected: str) -> tuple[list[dict], str, str]:
    """HH-RLHF: both transcripts share every turn but the last Assistant answer; that prefix is the prompt."""
    def turns(text: str, field_name: str) -> list[dict]:
        parts = HH_TURN.split(text)
        if parts[0].strip() or len(parts) < 5:
            raise _Bad(field_name, "data.row.not_hh")
        return [{"role": "user" if who == "Human" else "assistant", "content": said.strip()}
                for who, said in zip(parts[1::2], parts[2::2])]
    chosen_turns, rejected_turns = turns(chosen, "chosen"), turns(rejected, "rejected")
    if chosen_turns[:-1] != rejected_turns[:-1] or chosen_turns[-1]["role"] != "assistant":
        raise _Bad("rejected", "data.row.hh_differs")
    return _checked_prompt(chosen_turns[:-1]), chosen_turns[-1]["content"], rejected_turns[-1]["content"]


def _ranked_pairs(record: dict) -> list[dict]:
    """One prompt, several answers with a `rank` (1 = best) or a `score` (higher = better): every ordered pair."""
    key = "answers" if "answers" in record else "responses"
    answers = record.get(key)
    if not isinstance(answers, list) or len(answers) < 2:
        raise _Bad(key, "data.row.two_answers")
    ranked = []
    for index, answer in enumerate(answers, start=1):
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str) or not answer["text"].strip():
            raise _Bad(f"{key}[{index}]", "data.row.answer_text")
        if isinstance(answer.get("rank"), (int, float)):
            ranked.append((-answer["rank"], answer["text"]))
        elif isinstance(answer.get("score"), (int, float)):
            ranked.append((answer["score"], answer["text"]))
        else:
            raise _Bad(f"{key}[{index}]", "data.row.answer_rank")
    prompt = _prompt_turns(record)
    ranked.sort(key=lambda item: item[0], reverse=True)
    return [{"prompt": prompt, "chosen": [{"role": "assistant", "content": better}],
             "rejected": [{"role": "assistant", "content": worse}]}
            for (better_value, better), (worse_value, worse) in combinations(ranked, 2) if better_value > worse_value]


def normalise_unpaired(records: list) -> Normalised:
    result = Normalised("unpaired")
    for index, record in enumerate(records, start=1):
        try:
            label = record.get("label")
            if isinstance(label, str) and label.lower() in ("true", "false"):
                label = label.lower() == "true"  # CSV has no booleans
            if not isinstance(label, bool):
                raise _Bad("label", "data.row.bad_label")
            result.add(index, {"prompt": _prompt_turns(record),
                                "completion": [{"role": "assistant", "content": _answer(record, "completion", [])}],
                                "label": label})
        except _Bad as bad:
            result.errors.append(RowError(index, bad.field, bad.problem))
    return result


def normalise_prompt_only(records: list) -> Normalised:
    result = Normalised("prompt_only")
    for index, record in enumerate(records, start=1):
        try:
            if "messages" in record:
                messages = record["messages"]
                if not isinstance(messages, list) or not messages:
                    raise _Bad("messages", "data.row.bad_turns")
                result.add(index, {"prompt": _checked_prompt(messages)})
            else:
                result.add(index, {"prompt": _prompt_turns(record)})
        except _Bad as bad:
            result.errors.append(RowError(index, bad.field, bad.problem))
    return result

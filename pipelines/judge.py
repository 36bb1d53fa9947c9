"""An AI judge (RLAIF): which of two answers to a prompt is better, asked in both orders.

A judge is named by one string (or a list of rules):

    my-sft/final, HuggingFaceTB/SmolLM2-135M-Instruct, ./local-model   a chat model, asked through a judging prompt
    my-rm/final                                                        a reward checkpoint: reward(first) − reward(second)
    rules.py, my-rm/final + rules.py                                   a reward-function file (in its own process), added
    rules: [{max_words: 80}, {language: ko}]                           declarative rules (pipelines/rl/rule_spec.py)

A chat judge works in one of two modes, each one forward pass per judging prompt, deterministic, no generated text
to parse:

- "single" (the default): each answer is graded alone ({criteria} {prompt} {answer} filled in), its grade the
  log-odds of the next token "Yes" over "No"; p(first) = sigmoid(grade(first) − grade(second)). No answer has a
  position to be favoured for. Measured: the bundled SmolLM2-135M-Instruct picks the chosen answer of 33 of the
  first 40 pairs of preference-en-sample this way.
- "pairwise": both answers in one prompt ({answer_1} {answer_2}), p(first) = p("1") / (p("1") + p("2")). Every
  pair is asked twice, swapped the second time, and a verdict stands only when both orders name the same answer, so
  a judge that merely likes the first position gives no verdicts instead of wrong ones. The bundled model is such
  a judge (p("1") 0.86–0.93 whichever answer is first: 0 verdicts in 100 pairs); a larger chat model is not.

Reward and rule judges score each answer alone, as "single" does.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from pipelines.compare import MAX_PROMPT_CHARS
from pipelines.errors import StudioError, quote
from pipelines.messages import render, text

MAX_CRITERIA_CHARS = 2000
MAX_TEMPLATE_CHARS = 4000
PLACEHOLDERS = ("criteria", "prompt", "answer_1", "answer_2", "answer")
MODES = ("single", "pairwise")
REQUIRED = {"single": ("prompt", "answer"), "pairwise": ("prompt", "answer_1", "answer_2")}
RULES_PREFIX = "rules:"
LABELS = {"single": ("Yes", "No"), "pairwise": ("1", "2")}
BATCH = 8   # judging prompts per forward pass: both orders of four pairs
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")


class Judge:
    """prefer(prompt, first, second) → the probability (or a score in [0, 1]) that `first` is the better answer."""

    def prefer(self, prompt: str, first: str, second: str) -> float:
        raise NotImplementedError

    def prefer_many(self, items: list[tuple[str, str, str]]) -> list[float]:
        """prefer() of many (prompt, first, second) at once; judges that can batch do."""
        return [self.prefer(*item) for item in items]

    def describe(self) -> str:
        return type(self).__name__

    def close(self) -> None:
        """Free what the judge holds (a rule file's process)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_criteria(criteria) -> str:
    if criteria is None:
        return ""
    if not isinstance(criteria, str) or len(criteria) > MAX_CRITERIA_CHARS:
        raise StudioError("judge.bad_criteria", limit=MAX_CRITERIA_CHARS)
    return criteria.strip()


def check_mode(mode) -> str:
    if mode is None or mode == "":
        return MODES[0]
    if mode not in MODES:
        raise StudioError("judge.bad_mode", modes=", ".join(MODES), value=quote(mode))
    return mode


def default_template(language: str | None = None, mode: str = MODES[0]) -> str:
    return render("judge.template" if mode == "pairwise" else "judge.single_template", language)


def check_template(template, criteria: str = "", language: str | None = None, mode: str = MODES[0]) -> str:
    """The judging prompt's template ("" → the mode's default in `language`): text with {prompt} and {answer}
    ("single") or {answer_1} {answer_2} ("pairwise"), and {criteria} when criteria are given, or they would be
    dropped unread."""
    mode = check_mode(mode)
    if template is None or (isinstance(template, str) and not template.strip()):
        return default_template(language, mode)
    if not isinstance(template, str) or len(template) > MAX_TEMPLATE_CHARS:
        raise StudioError("judge.bad_template", limit=MAX_TEMPLATE_CHARS)
    needed = REQUIRED[mode] + (("criteria",) if criteria else ())
    missing = [name for name in needed if "{" + name + "}" not in template]
    if missing:
        raise StudioError("judge.template_missing", missing=", ".join("{" + m + "}" for m in missing))
    return template


def fill_template(template: str, criteria: str, prompt: str, first: str, second: str = "") -> str:
    """The template with its placeholders filled in one pass: braces inside the answers are never filled again."""
    values = {"criteria": criteria, "prompt": prompt, "answer_1": first, "answer_2": second, "answer": first}
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template)


def check_texts(prompt, answers) -> None:
    """A prompt and exactly two answers, each text within compare's limit."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise StudioError("compare.empty_prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise StudioError("compare.long_prompt", length=len(prompt), limit=MAX_PROMPT_CHARS)
    if not isinstance(answers, (list, tuple)) or len(answers) != 2 or not all(isinstance(a, str) for a in answers):
        raise StudioError("judge.two_answers")
    for answer in answers:
        if len(answer) > MAX_PROMPT_CHARS:
            raise StudioError("judge.long_answer", length=len(answer), limit=MAX_PROMPT_CHARS)


# ---- the kinds of judge

class ChatJudge(Judge):
    """A chat model asked of each answer "good, Yes or No?" (mode "single"; p(first) = sigmoid of the difference of
    the answers' log-odds of Yes), or of both "which is better, 1 or 2?" ("pairwise"; p(first) = p("1") / (p("1")
    + p("2"))), at the next token."""

    def __init__(self, source, template: str, criteria: str, mode: str = MODES[0]):
        from pipelines.inference import load_for_generation
        from pipelines.models import check_chat_template

        self.source, self.template, self.mode = source, template, mode
        self.criteria = criteria or text("judge.default_criteria")
        self.loaded, self.adapter = load_for_generation(source)
        tokenizer = self.loaded.tokenizer
        check_chat_template(tokenizer, source.spec)
        self.label_ids = [tokenizer(label, add_special_tokens=False)["input_ids"][0] for label in LABELS[mode]]
        if self.label_ids[0] == self.label_ids[1]:
            raise StudioError("judge.labels_one_token", model=quote(source.spec), labels=" / ".join(LABELS[mode]))
        config = getattr(self.loaded.model, "config", None)
        self.context = getattr(config, "max_position_embeddings", None)

    def describe(self) -> str:
        return self.source.spec

    def encode(self, prompt: str, first: str, second: str = "") -> list[int]:
        from pipelines.inference import encode_chat

        question = fill_template(self.template, self.criteria, prompt, first, second)
        ids = encode_chat(self.loaded.tokenizer, [{"role": "user", "content": question}])
        if self.context and len(ids) > self.context:
            raise StudioError("judge.beyond_context", tokens=len(ids), limit=self.context, model=quote(self.source.spec))
        return ids

    def prefer(self, prompt: str, first: str, second: str) -> float:
        return self.prefer_many([(prompt, first, second)])[0]

    def prefer_many(self, items: list[tuple[str, str, str]]) -> list[float]:
        if self.mode == "pairwise":
            return [float(p) for p in self._label_odds([self.encode(*item) for item in items], softmax=True)]
        graded = list(dict.fromkeys((prompt, answer) for prompt, first, second in items for answer in (first, second)))
        grades = dict(zip(graded, self._label_odds([self.encode(prompt, answer) for prompt, answer in graded])))
        return [_sigmoid(grades[(prompt, first)] - grades[(prompt, second)]) for prompt, first, second in items]

    def _label_odds(self, rows: list[list[int]], softmax: bool = False) -> list[float]:
        """Per judging prompt: logit(label 1) − logit(label 2) at the next token, or with softmax p(label 1) of the
        two. Every prompt is checked (encoded) before the model is held."""
        import torch

        from pipelines.inference import left_padded, model_with_adapter

        preferences: list[float] = []
        for start in range(0, len(rows), BATCH):
            batch = left_padded(self.loaded.tokenizer, rows[start:start + BATCH])
            # Left padding: positions count from each row's first real token, as generate() would give them.
            positions = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            with model_with_adapter(self.loaded, self.adapter) as model:
                device = next(model.parameters()).device
                logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                               position_ids=positions.to(device)).logits[:, -1, :]        # (B, V)
            pair = logits[:, self.label_ids].float()                                        # (B, 2)
            preferences += (torch.softmax(pair, dim=-1)[:, 0] if softmax else pair[:, 0] - pair[:, 1]).tolist()
        return preferences


class RewardJudge(Judge):
    """A reward checkpoint, a reward-function file and/or rules (pipelines/rl/rewards.py RewardScorer):
    p(first) = sigmoid(score(first) − score(second)); equal scores give 0.5, no preference."""

    def __init__(self, source, workspace: Path):
        from pipelines.rl.rewards import RewardScorer
        self.scorer = RewardScorer(source, workspace)   # a rule file runs in a process of its own, never here

    def describe(self) -> str:
        return self.scorer.source.describe()

    def prefer(self, prompt: str, first: str, second: str) -> float:
        return self.prefer_many([(prompt, first, second)])[0]

    def prefer_many(self, items: list[tuple[str, str, str]]) -> list[float]:
        if not items:
            return []
        prompts = [[{"role": "user", "content": prompt}] for prompt, _, _ in items]
        scores = self.scorer(prompts + prompts, [first for _, first, _ in items] + [second for _, _, second in items])
        firsts, seconds = scores[:len(items)], scores[len(items):]
        return [_sigmoid(a - b) for a, b in zip(firsts, seconds)]

    def close(self) -> None:
        self.scorer.close()


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def check_judge(workspace: Path, judge):
    """What `judge` names, checked without loading a model (the server's check before a job starts): ("chat", a
    pipelines.models.ModelSource) or ("reward", a pipelines.rl.rewards.RewardSource). One sentence if it names none."""
    from pipelines.rl.rewards import check_reward

    rules = _rules_of(judge)
    if rules is not None:
        return "reward", check_reward("", workspace, rules=rules)
    if not isinstance(judge, str) or not judge.strip():
        raise StudioError("judge.no_judge")
    spec = judge.strip()
    if "+" in spec or spec.endswith(".py"):
        return "reward", check_reward(spec, workspace)
    from pipelines.models import check_generative, resolve_model

    source = resolve_model(spec, workspace)
    if source.stage == "reward":
        return "reward", check_reward(spec, workspace)
    check_generative(source)
    return "chat", source


def load_judge(workspace: Path, judge, criteria: str = "", template: str = "", language: str = "en",
               mode: str = MODES[0]) -> Judge:
    """The judge `judge` names (see the module's docstring), checked: one sentence if it names none. `criteria`,
    `template` and `mode` ("single" or "pairwise") serve a chat judge (the mode's default template in `language`); a
    reward or rule judge has its own measure."""
    criteria = check_criteria(criteria)
    mode = check_mode(mode)
    template = check_template(template, criteria, language, mode)
    kind, source = check_judge(workspace, judge)
    if kind == "reward":
        return RewardJudge(source, workspace)
    return ChatJudge(source, template, criteria, mode)


def _rules_of(judge) -> list | None:
    """The rules a judge is, or None when it is not rules: a list, or text that starts with `rules:`."""
    if isinstance(judge, list):
        return judge or _no_rules()
    if isinstance(judge, str) and judge.strip().startswith(RULES_PREFIX):
        from pipelines.config import list_from_text
        return list_from_text(judge.strip()[len(RULES_PREFIX):], "judge rules") or _no_rules()
    return None


def _no_rules():
    raise StudioError("judge.no_rules")


# ---- verdicts

def verdict(p_a_first: float, p_b_first: float) -> dict:
    """The verdict from both orders: `a` asked first with p_a_first, `b` asked first with p_b_first. Each order names
    the answer it prefers (or none, at exactly 0.5); the verdict stands only when both name the same one."""
    first_order = "a" if p_a_first > 0.5 else "b" if p_a_first < 0.5 else None
    second_order = "b" if p_b_first > 0.5 else "a" if p_b_first < 0.5 else None
    agree = first_order is not None and first_order == second_order
    return {"winner": first_order if agree else None,
            "orders": [{"first": "a", "p_first": p_a_first}, {"first": "b", "p_first": p_b_first}],
            "agree": agree, "p_a": (p_a_first + 1 - p_b_first) / 2}


def judge_pairs(judge: Judge, pairs: list[tuple[str, str, str]]) -> list[dict]:
    """The verdict on each (prompt, answer_a, answer_b), both orders of every pair asked in one batch."""
    items = [(p, a, b) for p, a, b in pairs] + [(p, b, a) for p, a, b in pairs]
    preferences = judge.prefer_many(items)
    return [verdict(float(x), float(y)) for x, y in zip(preferences[:len(pairs)], preferences[len(pairs):])]


def judge_pair(judge: Judge, prompt: str, answer_a: str, answer_b: str) -> dict:
    """{"winner": "a" | "b" | None, "orders": [{"first": "a", "p_first"}, {"first": "b", "p_first"}], "agree", "p_a"}."""
    return judge_pairs(judge, [(prompt, answer_a, answer_b)])[0]


def judge_answers(workspace: Path, judge, prompt: str, answers: list[str], criteria: str = "", template: str = "",
                  language: str | None = None, mode: str = MODES[0]) -> dict:
    """The API's judge(): every input checked before a model is loaded, then the verdict with both orders."""
    from pipelines.messages import current_language

    check_texts(prompt, answers)
    with load_judge(workspace, judge, criteria, template, language or current_language(), mode) as loaded:
        return {**judge_pair(loaded, prompt, answers[0], answers[1]), "judge": loaded.describe()}


# ---- judge vs people

def cohen_kappa(first: list, second: list) -> float | None:
    """Cohen's kappa of two raters' labels: κ = (p_o − p_e) / (1 − p_e), p_o the share where they agree, p_e the share
    expected by chance from each rater's label frequencies. None when undefined (no items, or p_e = 1: both raters
    gave one and the same label throughout)."""
    if not first or len(first) != len(second):
        return None
    count = len(first)
    observed = sum(a == b for a, b in zip(first, second)) / count
    labels = set(first) | set(second)
    expected = sum((first.count(label) / count) * (second.count(label) / count) for label in labels)
    return None if expected >= 1 else (observed - expected) / (1 - expected)

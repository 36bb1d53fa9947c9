"""Compare checkpoints side by side, turn a person's votes into preference data, and evaluate checkpoints on a
prompt set with a scorer.

When the checkpoints are LoRA adapters of one base, all their answers come from ONE batched generate call with
a different adapter per row (pipelines/lora_batch.py; the base answers as "__base__"), instead of one
generation after another. Checkpoints of different bases (or full-weight ones) are generated group by group.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path
from typing import Iterator

from pipelines.errors import StudioError, quote
from pipelines.messages import text

MAX_PROMPT_CHARS = 8000
MAX_COLUMNS = 8


def _check_request(checkpoints: list[str], prompt: str) -> None:
    if not checkpoints or not all(isinstance(c, str) and c.strip() for c in checkpoints):
        raise StudioError("compare.no_checkpoint")
    if len(checkpoints) > MAX_COLUMNS:
        raise StudioError("compare.too_many", limit=MAX_COLUMNS)
    if not isinstance(prompt, str) or not prompt.strip():
        raise StudioError("compare.empty_prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise StudioError("compare.long_prompt", length=len(prompt), limit=MAX_PROMPT_CHARS)


class _BatchStreamer:
    """Receives each step's new tokens for every row of a batch (transformers' streamer protocol) and publishes the
    decoded answers so far; the first `put` is the prompt, which is skipped."""

    def __init__(self, tokenizer, rows: int, stop_ids: set[int]):
        self.tokenizer, self.stop_ids = tokenizer, stop_ids
        self.tokens: list[list[int]] = [[] for _ in range(rows)]
        self.finished = [False] * rows
        self.updates: queue.Queue = queue.Queue()
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.finished[row]:
                continue
            if token in self.stop_ids:
                self.finished[row] = True
            else:
                self.tokens[row].append(token)
        self.updates.put(True)

    def end(self) -> None:
        self.updates.put(None)

    def texts(self) -> list[str]:
        return [self.tokenizer.decode(t, skip_special_tokens=True) for t in self.tokens]

    def replies(self, max_new_tokens: int) -> list:
        """Every row's answer so far; those still unfinished after max_new_tokens were cut."""
        from pipelines.inference import Reply
        return [Reply(answer, cut=not finished and len(tokens) >= max_new_tokens)
                for answer, finished, tokens in zip(self.texts(), self.finished, self.tokens)]


def _group_by_base(workspace: Path, checkpoints: list[str]) -> dict[str, list[tuple[int, object]]]:
    from pipelines.inference import base_key
    from pipelines.models import check_generative, resolve_model

    groups: dict[str, list[tuple[int, object]]] = {}
    for column, checkpoint in enumerate(checkpoints):
        source = resolve_model(checkpoint, workspace)
        check_generative(source)
        groups.setdefault(base_key(source)[0], []).append((column, source))
    return groups


def compare_notice(workspace: Path, checkpoints: list[str]) -> str:
    """One sentence when these checkpoints' bases do not fit in memory together, else ""."""
    from pipelines.inference import fit_notice
    from pipelines.models import resolve_model

    return fit_notice([resolve_model(c, workspace) for c in checkpoints])


def compare_stream(workspace: Path, checkpoints: list[str], prompt: str, settings: dict | None = None,
                   histories: list[list[dict]] | None = None,
                   column_settings: list[dict] | None = None) -> Iterator[list]:
    """Yield every column's answer (a pipelines.inference.Reply: its text, and whether it was cut at max_new_tokens)
    as it grows. Columns of one base with the same settings are one batched generation; `column_settings` override
    the shared `settings` per column (such a column is its own group)."""
    import torch

    from pipelines.inference import Reply, check_settings, encode_chat, generation_kwargs, left_padded, load_for_generation, to_messages
    from pipelines.models import check_chat_template
    from pipelines.lora_batch import BASE_ADAPTER, adapters_per_row
    from pipelines.rl.rollout import stop_token_ids

    _check_request(checkpoints, prompt)
    check_settings(settings)   # the shared settings, before each column's overrides are merged into them
    shared = settings or {}
    per_column = [{**shared, **(extra or {})} for extra in (column_settings or [{}] * len(checkpoints))]
    for column_setting in per_column:
        check_settings(column_setting)   # every column's settings are checked before anything generates
    histories = histories or [[] for _ in checkpoints]
    answers = [Reply("")] * len(checkpoints)
    groups: dict[tuple, list] = {}
    for base, members in _group_by_base(workspace, checkpoints).items():
        for column, source in members:
            groups.setdefault((base, json.dumps(per_column[column], sort_keys=True)), []).append((column, source))
    for members in groups.values():
        settings = check_settings(per_column[members[0][0]])
        kwargs = generation_kwargs(settings)
        loaded = None
        adapters = []
        for _, source in members:
            loaded, adapter = load_for_generation(source)
            adapters.append(adapter)
        tokenizer = loaded.tokenizer
        check_chat_template(tokenizer, members[0][1].spec)
        conversations = [to_messages(prompt, histories[column], settings["system_prompt"]) for column, _ in members]
        encoded = left_padded(tokenizer, [encode_chat(tokenizer, c) for c in conversations])
        names = [loaded.adapters[a] if a else BASE_ADAPTER for a in adapters]
        streamer = _BatchStreamer(tokenizer, len(members), stop_token_ids(loaded.model, tokenizer))
        errors: list[BaseException] = []

        def generate(loaded=loaded, encoded=encoded, names=names, streamer=streamer, errors=errors):
            # The worker holds the model's lock, not the caller: a reader who stops listening cannot leave it held.
            try:
                with loaded.lock, adapters_per_row(loaded.model, names) as mixed:
                    if settings["seed"] is not None:
                        torch.manual_seed(settings["seed"])
                    device = next(loaded.model.parameters()).device
                    with torch.inference_mode():
                        loaded.model.generate(**{k: v.to(device) for k, v in encoded.items()}, streamer=streamer,
                                              pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                                              **mixed, **kwargs)
            except BaseException as exc:  # reported below, once the stream is closed
                errors.append(exc)
            finally:
                streamer.end()

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        while streamer.updates.get() is not None:
            for (column, _), reply in zip(members, streamer.replies(settings["max_new_tokens"])):
                answers[column] = reply
            yield list(answers)
        worker.join()
        if errors:
            raise StudioError("chat.generation_failed", problem=f"{type(errors[0]).__name__}: {errors[0]}")
    yield list(answers)


def compare(workspace: Path, checkpoints: list[str], prompt: str, settings: dict | None = None,
            histories: list[list[dict]] | None = None, column_settings: list[dict] | None = None) -> list[str]:
    answers: list = []
    for answers in compare_stream(workspace, checkpoints, prompt, settings, histories, column_settings):
        pass
    return [reply.text for reply in answers]


def pairs_from_ranking(ranking: list[int]) -> list[tuple[int, int]]:
    """(better, worse) column pairs from ranks (1 = best; equal ranks are ties and make no pair; 0 = all bad)."""
    return [(i, j) for i, a in enumerate(ranking) for j, b in enumerate(ranking)
            if a and b and a < b]


def round_id(turns: list[dict], histories: list[list[dict]], answers: list[str], checkpoints: list[str]) -> str:
    """A stable name for one round of answers: the same prompt, conversation, answers and checkpoints give the same
    id whichever column each sat in (blind mode deals them anew), so a round is counted once."""
    import hashlib

    histories = list(histories) + [[]] * (len(checkpoints) - len(histories))   # none given: no earlier turns
    columns = sorted(zip(checkpoints, answers, [json.dumps(h, sort_keys=True, ensure_ascii=False) for h in histories]))
    content = json.dumps({"prompt": turns, "columns": columns}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(content.encode("utf-8")).hexdigest()[:24]


def _voted_rounds(votes_path: Path) -> set[str]:
    if not votes_path.is_file():
        return set()
    return {json.loads(line)["round"] for line in votes_path.read_text(encoding="utf-8").splitlines() if line.strip()}


def vote(workspace: Path, dataset: str, prompt: str, answers: list[str], checkpoints: list[str], ranking: list[int],
         settings: dict | None = None, system_prompt: str = "", histories: list[list[dict]] | None = None,
         column_settings: list[dict] | None = None) -> dict:
    """Record one vote round in a workspace dataset (created by the first vote): one line in its votes.jsonl (the
    round's id, checkpoints, ranking, answer lengths and time: what the leaderboard counts, ties included) and the
    preference rows the ranking implies in its data.jsonl (what a trainer learns from: ties make none). A round
    already in votes.jsonl is refused, with nothing written.

    A row's prompt is what the answers were given: the system prompt (from `settings` unless given), the earlier
    turns when every column shares them, and the question. `column_settings` are the columns' overrides, recorded
    with each answer's checkpoint."""
    from pipelines.data.store import check_new_name, datasets_root
    from pipelines.inference import plain_turns
    from pipelines.paths import file_lock

    _check_request(checkpoints, prompt)
    if not (len(answers) == len(checkpoints) == len(ranking)):
        raise StudioError("compare.vote_shape")
    if not all(isinstance(r, int) and r >= 0 for r in ranking):
        raise StudioError("compare.bad_ranks")
    check_new_name(dataset, workspace, overwrite=True)
    folder = datasets_root(workspace) / dataset
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else None
    if meta and meta.get("kind") != "preference":
        raise StudioError("compare.not_preference", dataset=quote(dataset))
    settings = dict(settings or {})
    system_prompt = system_prompt or settings.get("system_prompt", "")
    earlier = [plain_turns(h) for h in histories or []]
    shared = earlier[0] if earlier and all(h == earlier[0] for h in earlier) else []
    turns = (([{"role": "system", "content": system_prompt}] if system_prompt.strip() else []) + shared
             + [{"role": "user", "content": prompt}])
    round_name = round_id(turns, earlier, answers, checkpoints)
    overrides = column_settings or [{} for _ in checkpoints]
    ranked = pairs_from_ranking(ranking)
    # A pair with an empty answer teaches nothing a trainer can use (and a preference row must hold two answers).
    pairs = [(better, worse) for better, worse in ranked if answers[better].strip() != answers[worse].strip()]
    usable = [(better, worse) for better, worse in pairs if answers[better].strip() and answers[worse].strip()]
    now = time.time()
    rows = []
    for better, worse in usable:
        row = {"prompt": turns, "chosen": [{"role": "assistant", "content": answers[better]}],
               "rejected": [{"role": "assistant", "content": answers[worse]}],
               "chosen_checkpoint": checkpoints[better], "rejected_checkpoint": checkpoints[worse],
               "settings": settings, "time": now, "round": round_name}
        if overrides[better] or overrides[worse]:
            row["chosen_settings"] = {**settings, **overrides[better]}
            row["rejected_settings"] = {**settings, **overrides[worse]}
        rows.append(row)
    why_none = ("" if rows else text("compare.why_tie") if not ranked else
                text("compare.why_identical") if not pairs else text("compare.why_empty"))
    logged = {"round": round_name, "checkpoints": list(checkpoints), "ranking": list(ranking),
              "lengths": [len(answer) for answer in answers], "time": now}
    # Every round is a battle for the leaderboard, a tie too, so every vote writes (a tie: the log line alone).
    with file_lock(folder.with_name(f".{dataset}.lock")):
        if round_name in _voted_rounds(folder / "votes.jsonl"):
            raise StudioError("compare.already_voted")
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "data.jsonl", "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            handle.flush()
        with open(folder / "votes.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(logged, ensure_ascii=False) + "\n")
            handle.flush()
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {
            "kind": "preference", "format": "preference", "source": "votes in Compare", "rows": 0, "created": now}
        meta["rows"] = meta.get("rows", 0) + len(rows)
        meta["votes"] = meta.get("votes", 0) + 1
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
        tmp.replace(meta_path)
    return {"dataset": dataset, "added_rows": len(rows), "rows": meta["rows"], "votes": meta["votes"],
            "skipped_empty": len(pairs) - len(usable),
            "earlier_turns_differ": len(shared) < max((len(h) for h in earlier), default=0), "why_none": why_none,
            "round": round_name}


def win_rates(scores: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """rates[a][b] = share of prompts where a scored above b (a tie counts half)."""
    names = list(scores)
    rates: dict[str, dict[str, float]] = {}
    for a in names:
        rates[a] = {}
        for b in names:
            if a == b:
                continue
            pairs = list(zip(scores[a], scores[b]))
            rates[a][b] = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in pairs) / max(len(pairs), 1)
    return rates


def evaluate(workspace: Path, checkpoints: list[str], prompts: list[str] | str, scorer: str,
             settings: dict | None = None, on_rows=None, rules: list | None = None, judging: dict | None = None) -> dict:
    """Every prompt through every checkpoint (greedy unless settings say otherwise), every answer scored by a reward
    checkpoint, a rule file and/or declarative `rules`; per-answer scores, mean per checkpoint, pairwise win rates. `on_rows` is given
    each prompt's rows as they are scored (a job's progress, pipelines/jobs.py). With `judging` (check_judging's),
    an AI judge also compares each checkpoint's answer with the reference checkpoint's, in both orders (a row's
    `judge`: win, loss, or tie when the orders disagree), and the report's `judge` holds each one's tally."""
    from contextlib import nullcontext

    from pipelines.rl.rewards import RewardScorer, check_reward

    prompt_list = evaluation_prompts(workspace, prompts)
    settings = {"temperature": 0, "max_new_tokens": 128, **(settings or {})}
    rows = []
    by_checkpoint: dict[str, list[float]] = {c: [] for c in checkpoints}
    referee = _load_referee(workspace, judging) if judging else nullcontext()
    tally = {c: {"wins": 0, "ties": 0, "losses": 0} for c in checkpoints if judging and c != judging["reference"]}
    with RewardScorer(check_reward(scorer, workspace, rules=rules), workspace) as scoring, referee as judge:   # a rule file: one process, stopped after
        for prompt in prompt_list:
            answers = compare(workspace, checkpoints, prompt, settings)
            scores = scoring([[{"role": "user", "content": prompt}]] * len(answers), answers)
            outcomes = _judged(judge, prompt, checkpoints, answers, judging["reference"]) if judging else {}
            for checkpoint, answer, score in zip(checkpoints, answers, scores):
                row = {"prompt": prompt, "checkpoint": checkpoint, "answer": answer, "score": score}
                if checkpoint in outcomes:
                    row["judge"] = outcomes[checkpoint]
                    tally[checkpoint][{"win": "wins", "tie": "ties", "loss": "losses"}[outcomes[checkpoint]]] += 1
                rows.append(row)
                by_checkpoint[checkpoint].append(score)
            if on_rows:
                on_rows(rows[-len(answers):])
    means = {c: sum(v) / len(v) for c, v in by_checkpoint.items()}
    report = {"rows": rows, "means": means, "win_rates": win_rates(by_checkpoint), "prompts": len(prompt_list),
              "scorer": scoring.source.describe()}
    if judging:
        # A tie (the two orders disagree, or the judge cannot tell) counts half a win, as win_rates counts equal scores.
        report["judge"] = {"judge": judge.describe(), "reference": judging["reference"],
                           "results": {c: {**t, "win_rate": (t["wins"] + t["ties"] / 2) / max(len(prompt_list), 1)}
                                       for c, t in tally.items()}}
    return report


def check_judging(workspace: Path, spec: dict, checkpoints: list[str]) -> dict:
    """An evaluate spec's optional judge: {"judging": {judge, reference, criteria, language}} when it names one
    (checked without loading it), else {}. The reference must be one of the checkpoints, and another must face it."""
    judge = spec.get("judge")
    if judge in (None, "", []):
        return {}
    from pipelines.judge import check_criteria, check_judge
    from pipelines.messages import current_language

    check_judge(workspace, judge)
    criteria = check_criteria(spec.get("criteria") or "")
    reference = spec.get("reference")
    if not isinstance(reference, str) or reference not in checkpoints or len(set(checkpoints)) < 2:
        raise StudioError("compare.bad_reference", reference=quote(reference))
    return {"judging": {"judge": judge, "reference": reference, "criteria": criteria,
                        "language": spec.get("language") or current_language()}}


def _load_referee(workspace: Path, judging: dict):
    from pipelines.judge import load_judge
    return load_judge(workspace, judging["judge"], judging["criteria"], language=judging["language"])


def _judged(judge, prompt: str, checkpoints: list[str], answers: list[str], reference: str) -> dict[str, str]:
    """{checkpoint: "win" | "loss" | "tie"} of every checkpoint's answer against the reference's, both orders of
    every pair in one batch."""
    from pipelines.judge import judge_pairs

    theirs = answers[checkpoints.index(reference)]
    others = [(c, a) for c, a in zip(checkpoints, answers) if c != reference]
    verdicts = judge_pairs(judge, [(prompt, answer, theirs) for _, answer in others])
    return {c: {"a": "win", "b": "loss", None: "tie"}[v["winner"]] for (c, _), v in zip(others, verdicts)}


def evaluation_prompts(workspace: Path, prompts: list[str] | str) -> list[str]:
    """A list of prompts, or the name of a dataset whose rows' last user turns are the prompts."""
    if isinstance(prompts, str):
        from pipelines.data.store import load_dataset
        kind, data = load_dataset(prompts, workspace)
        turns = [r.get("messages") or r["prompt"] for r in data.rows]
        prompts = [next(t["content"] for t in reversed(conversation) if t["role"] == "user") for conversation in turns]
    prompts = [p for p in prompts if isinstance(p, str) and p.strip()]
    if not prompts:
        raise StudioError("compare.no_prompts")
    return prompts

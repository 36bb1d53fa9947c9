"""Two jobs of the AI judge (pipelines/judge.py), each a process of its own with progress and cancel
(pipelines/jobs.py):

- label_with_judge: for every prompt of a set, sample n answers from a checkpoint, let the judge compare every pair
  in both orders, and save the pairs it decided as a preference dataset (prompt / chosen / rejected, the shape votes
  have) that reward training and DPO take as they are. Pairs whose two orders disagree are dropped and counted.
- judge_agreement: the judge's verdicts on a votes dataset's pairs (each shown in a seeded random order, so that a
  judge that likes one position cannot look good) against the people's votes: agreement, the share of pairs with a
  verdict, and Cohen's kappa.
"""

from __future__ import annotations

import random
import time
from itertools import combinations
from pathlib import Path

from pipelines.errors import StudioError, quote
from pipelines.messages import Message, current_language

MAX_LABEL_PROMPTS = 1000
MAX_AGREEMENT_PAIRS = 1000
ANSWERS = (2, 4)              # n answers sampled per prompt: 2 gives one pair, 4 gives six
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "max_new_tokens": 128, "seed": 0}   # varied answers, reproducible
PROMPTS_PER_BATCH = 4         # prompts judged together; also how often progress is written
LABEL_COLUMNS = ("prompt", "winner", "agree", "p_a_first", "p_b_first", "answer_a", "answer_b")
AGREEMENT_COLUMNS = ("prompt", "judge_picks", "agrees", "shown_first", "p_a_first", "p_b_first", "chosen", "rejected")


def _check_common(workspace: Path, spec: dict) -> dict:
    """The judge, its criteria, its mode and its template (the mode's default one resolved now, in the visitor's
    language)."""
    from pipelines.judge import check_criteria, check_judge, check_mode, check_template

    criteria = check_criteria(spec.get("criteria"))
    mode = check_mode(spec.get("mode"))
    template = check_template(spec.get("template"), criteria, spec.get("language") or current_language(), mode)
    judge = spec.get("judge")
    check_judge(workspace, judge)
    return {"judge": judge, "criteria": criteria, "template": template, "mode": mode}


# ---- label a prompt set

def prepare_label(workspace: Path, spec: dict) -> tuple[dict, list[Message]]:
    """spec: checkpoint (the sampler), prompts (a list, or a dataset name), judge, criteria, template, n (2–4),
    name (the new dataset; "" → a free one), settings (sampling: temperature, top_p, max_new_tokens, seed)."""
    from pipelines.compare import MAX_PROMPT_CHARS, evaluation_prompts
    from pipelines.data.store import check_new_name, free_name
    from pipelines.inference import check_settings
    from pipelines.models import check_generative, resolve_model

    checkpoint = spec.get("checkpoint")
    if not isinstance(checkpoint, str) or not checkpoint.strip():
        raise StudioError("judge.no_sampler")
    check_generative(resolve_model(checkpoint.strip(), workspace))
    n = spec.get("n", 2)
    if isinstance(n, bool) or not isinstance(n, int) or not ANSWERS[0] <= n <= ANSWERS[1]:
        raise StudioError("judge.bad_n", lowest=ANSWERS[0], highest=ANSWERS[1], value=quote(n))
    prompts = spec.get("prompts")
    if not isinstance(prompts, (str, list)):
        raise StudioError("jobs.no_prompts")
    if isinstance(prompts, list) and len(prompts) > MAX_LABEL_PROMPTS:   # before a huge list is walked
        raise StudioError("judge.too_many_prompts", count=len(prompts), limit=MAX_LABEL_PROMPTS)
    prompts = evaluation_prompts(workspace, prompts)
    if len(prompts) > MAX_LABEL_PROMPTS:
        raise StudioError("judge.too_many_prompts", count=len(prompts), limit=MAX_LABEL_PROMPTS)
    longest = max(map(len, prompts))
    if longest > MAX_PROMPT_CHARS:
        raise StudioError("compare.long_prompt", length=longest, limit=MAX_PROMPT_CHARS)
    settings = check_settings({**SAMPLING, **(spec.get("settings") or {})})
    name = spec.get("name") or ""
    if not isinstance(name, str):
        raise StudioError("judge.bad_name")
    name = name.strip() or free_name(f"judged-{checkpoint.strip().split('/')[0]}", workspace)
    check_new_name(name, workspace, overwrite=False)
    return {"checkpoint": checkpoint.strip(), "prompts": prompts, "n": n, "name": name, "settings": settings,
            **_check_common(workspace, spec)}, []


def sample_answers(workspace: Path, checkpoint: str, prompts: list[str], n: int, settings: dict, seed: int | None) -> list[list[str]]:
    """n sampled answers to each prompt, from ONE batched generate call (len(prompts) × n rows, left-padded): on a
    CPU a batch costs little more per step than one row, so prompts are sampled together, not one after another."""
    import torch

    from pipelines.inference import encode_chat, generation_kwargs, left_padded, load_for_generation, model_with_adapter, to_messages
    from pipelines.models import check_chat_template, resolve_model
    from pipelines.rl.rollout import stop_token_ids

    loaded, adapter = load_for_generation(resolve_model(checkpoint, workspace))
    tokenizer = loaded.tokenizer
    check_chat_template(tokenizer, checkpoint)
    rows = [encode_chat(tokenizer, to_messages(prompt, [], settings["system_prompt"])) for prompt in prompts for _ in range(n)]
    batch = left_padded(tokenizer, rows)
    with model_with_adapter(loaded, adapter) as model:
        stops = stop_token_ids(model, tokenizer)
        if seed is not None:
            torch.manual_seed(seed)   # rows draw their own tokens: one seed per batch, every answer still its own
        device = next(model.parameters()).device
        output = model.generate(**{k: v.to(device) for k, v in batch.items()}, **generation_kwargs(settings),
                                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    answers = []
    for generated in output[:, batch["input_ids"].shape[1]:].tolist():                  # (B, T_new)
        end = next((i for i, token in enumerate(generated) if token in stops), len(generated))
        answers.append(tokenizer.decode(generated[:end], skip_special_tokens=True).strip())
    return [answers[i * n:(i + 1) * n] for i in range(len(prompts))]


def run_label(workspace: Path, spec: dict, progress) -> dict:
    from pipelines.judge import judge_pairs, load_judge

    began = time.time()
    prompts, n, settings = spec["prompts"], spec["n"], spec["settings"]
    pairs_per_prompt = list(combinations(range(n), 2))
    progress.total(len(prompts) * len(pairs_per_prompt))
    rows: list[dict] = []
    judged = kept = identical = 0
    with load_judge(workspace, spec["judge"], spec["criteria"], spec["template"], mode=spec.get("mode", "single")) as judge:
        for start in range(0, len(prompts), PROMPTS_PER_BATCH):
            batch = prompts[start:start + PROMPTS_PER_BATCH]
            seed = None if settings["seed"] is None else settings["seed"] + start   # each batch its own draws
            asked, shown = [], []
            for prompt, answers in zip(batch, sample_answers(workspace, spec["checkpoint"], batch, n, settings, seed)):
                for i, j in pairs_per_prompt:
                    a, b = answers[i], answers[j]
                    if a.strip() == b.strip() or not a.strip() or not b.strip():
                        identical += 1   # nothing to prefer between them: not asked
                        shown.append({"prompt": prompt, "answer_a": a, "answer_b": b, "winner": None, "agree": False,
                                      "p_a_first": None, "p_b_first": None, "skipped": True})
                    else:
                        asked.append((prompt, a, b))
            verdicts = judge_pairs(judge, asked)
            for (prompt, a, b), found in zip(asked, verdicts):
                judged += 1
                shown.append({"prompt": prompt, "answer_a": a, "answer_b": b, "winner": found["winner"],
                              "agree": found["agree"], "p_a_first": found["orders"][0]["p_first"],
                              "p_b_first": found["orders"][1]["p_first"]})
                if found["winner"]:
                    kept += 1
                    chosen, rejected = (a, b) if found["winner"] == "a" else (b, a)
                    rows.append(_preference_row(spec, judge.describe(), prompt, chosen, rejected, found))
            progress.rows(shown)
        described = judge.describe()
    dataset = None
    if rows:
        from pipelines.data.store import load_dataset, write_dataset
        write_dataset(spec["name"], workspace, "preference", "chosen_rejected_messages", rows,
                      f"labelled by judge {described}", judge=described, checkpoint=spec["checkpoint"],
                      criteria=spec["criteria"], answers_per_prompt=n)
        load_dataset(spec["name"], workspace, "preference")   # what a trainer will read: refused here, not later
        dataset = spec["name"]
    warnings = [] if rows else [Message("judge.none_kept")]
    return {"dataset": dataset, "prompts": len(prompts), "pairs": judged + identical, "pairs_judged": judged,
            "verdicts_kept": kept, "dropped_disagreeing": judged - kept, "skipped_identical": identical,
            "agreement_rate": kept / judged if judged else None, "judge": described,
            "seconds": round(time.time() - began, 1), "warnings": warnings}


def _preference_row(spec: dict, judge: str, prompt: str, chosen: str, rejected: str, found: dict) -> dict:
    """A row as a vote writes one (pipelines/compare.py vote), with what the judge said beside it."""
    p_chosen = found["p_a"] if found["winner"] == "a" else 1 - found["p_a"]
    return {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "chosen_checkpoint": spec["checkpoint"],
            "rejected_checkpoint": spec["checkpoint"], "settings": spec["settings"], "time": time.time(),
            "judge": judge, "judge_criteria": spec["criteria"], "judge_p_chosen": round(p_chosen, 4)}


# ---- judge vs people

def prepare_agreement(workspace: Path, spec: dict) -> tuple[dict, list[Message]]:
    """spec: dataset (a preference dataset: votes), judge, criteria, template, limit (pairs, at most 1000), seed."""
    from pipelines.data.store import load_dataset

    dataset = spec.get("dataset")
    if not isinstance(dataset, str) or not dataset.strip():
        raise StudioError("judge.no_votes")
    load_dataset(dataset.strip(), workspace, "preference")
    limit, seed = spec.get("limit", MAX_AGREEMENT_PAIRS), spec.get("seed", 0)
    for name, value, highest in (("limit", limit, MAX_AGREEMENT_PAIRS), ("seed", seed, 2**31 - 1)):
        if isinstance(value, bool) or not isinstance(value, int) or not (1 if name == "limit" else 0) <= value <= highest:
            raise StudioError("judge.bad_whole", name=name, highest=highest, value=quote(value))
    return {"dataset": dataset.strip(), "limit": limit, "seed": seed, **_check_common(workspace, spec)}, []


def run_agreement(workspace: Path, spec: dict, progress) -> dict:
    from pipelines.data.store import load_dataset
    from pipelines.judge import judge_pairs, load_judge

    began = time.time()
    pairs = [(_last_user(r["prompt"]), r["chosen"][-1]["content"], r["rejected"][-1]["content"])
             for r in load_dataset(spec["dataset"], workspace, "preference")[1].rows][:spec["limit"]]
    deal = random.Random(spec["seed"])
    chosen_first = [deal.random() < 0.5 for _ in pairs]   # which side each pair shows the chosen answer on
    progress.total(len(pairs))
    people, judge_says = [], []
    batch_size = PROMPTS_PER_BATCH
    with load_judge(workspace, spec["judge"], spec["criteria"], spec["template"], mode=spec.get("mode", "single")) as judge:
        for start in range(0, len(pairs), batch_size):
            batch = list(zip(pairs[start:start + batch_size], chosen_first[start:start + batch_size]))
            shown = [(prompt, chosen, rejected) if first else (prompt, rejected, chosen)
                     for (prompt, chosen, rejected), first in batch]
            rows = []
            for ((prompt, chosen, rejected), first), found in zip(batch, judge_pairs(judge, shown)):
                human = "a" if first else "b"   # the position the people's choice was shown in
                picks = None if not found["winner"] else "chosen" if found["winner"] == human else "rejected"
                if found["winner"]:
                    people.append(human)
                    judge_says.append(found["winner"])
                rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected,
                             "shown_first": "chosen" if first else "rejected", "judge_picks": picks,
                             "agrees": None if picks is None else picks == "chosen",
                             "p_a_first": found["orders"][0]["p_first"], "p_b_first": found["orders"][1]["p_first"]})
            progress.rows(rows)
        described = judge.describe()
    return {**agreement_summary(people, judge_says, len(pairs)), "dataset": spec["dataset"], "judge": described,
            "seconds": round(time.time() - began, 1)}


def agreement_summary(people: list[str], judge: list[str], pairs: int) -> dict:
    """Over the pairs the judge decided (both orders agreeing): how often it sided with the people, and Cohen's kappa
    of the two as raters of "which position holds the better answer" (the random deal makes both labels occur)."""
    from pipelines.judge import cohen_kappa

    decided = len(people)
    agreed = sum(h == j for h, j in zip(people, judge))
    return {"pairs": pairs, "verdicts": decided, "coverage": decided / pairs if pairs else None,
            "agreement": agreed / decided if decided else None, "kappa": cohen_kappa(people, judge)}


def _last_user(turns: list[dict]) -> str:
    return next((t["content"] for t in reversed(turns) if t["role"] == "user"), "")

"""Does RL with the default settings teach a behaviour that only the preference data carries?

The data of preference_behaviours.py (sums and capitals; the behaviour lives in the chosen answers of the pairs):
a reward model is trained on the pairs (InstructGPT's road), then PPO runs against it, or against a 0/1 rule
file that tests the behaviour, with every default but the data. Two starting points:

    plain SFT   200 plain answers: the SFT model never shows the behaviour, and hardly ever samples it
    mixed SFT   the same rows, but 20 of the 200 (10%) show the behaviour: the model samples it now and then,
                though its greedy answers still do not show it

PPO can only reinforce what its samples contain, so the two starts tell apart "RL cannot find it" from "RL
amplifies it". GRPO and RLOO (roads mixed-rm-grpo, mixed-rm-rloo) take the same reward model from the mixed start. Before each PPO run the script measures how likely the starting model is to sample the
behaviour's first token where it would go (at temperature 1). Then the same 30 held-out questions as
preference_behaviours.py, greedy: share with the behaviour, still right, repeats, general questions; and each
PPO run's last KL, score spread and the warnings its log printed.

    python bench/rl_behaviours.py --workspace /tmp/behaviours-ws --reuse
    python bench/rl_behaviours.py --workspace /tmp/behaviours-ws --reuse --roads mixed-rm --behaviours sign_off

Prints a markdown table and writes bench/results/rl_behaviours.json (every answer).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from bench.machine import describe_machine  # noqa: E402
from bench.preference_behaviours import BEHAVIOURS, RULES, evaluate, questions, write_data  # noqa: E402
from bench.preference_outcome import ensure_run  # noqa: E402

RESULTS = BENCH_DIR / "results" / "rl_behaviours.json"
SHOWN = 20   # of the 200 SFT rows, how many show the behaviour in the mixed SFT data
# road: (which SFT model the RL stage starts from, where its reward comes from, the stage)
ROADS = {"plain-rm": ("plain", "rm", "ppo"), "mixed-rm": ("mixed", "rm", "ppo"), "mixed-rule": ("mixed", "rule", "ppo"),
         "mixed-rm-grpo": ("mixed", "rm", "grpo"), "mixed-rm-rloo": ("mixed", "rm", "rloo")}
# Where the behaviour's first token goes: after the whole plain answer, or before it.
FIRST_TOKEN = {"sign_off": ("after", " Hope"), "opener": ("before", "Sure"), "bullet": ("before", "-")}


def write_rl_data(workspace: Path, train: list[dict]) -> None:
    for behaviour, (make, _) in BEHAVIOURS.items():
        rows = [{"instruction": q["prompt"], "input": "", "output": make(q["plain"]) if i < SHOWN else q["plain"]}
                for i, q in enumerate(train)]
        (workspace / f"mixed-{behaviour}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        (workspace / f"rule_{behaviour}.py").write_text(
            f"def reward(prompts, completions):\n    return [1.0 if {RULES[behaviour]} else 0.0 for answer in completions]\n",
            encoding="utf-8")
    (workspace / "prompts-plain.jsonl").write_text("".join(json.dumps({"prompt": q["prompt"]}) + "\n" for q in train),
                                                   encoding="utf-8")


def first_token_probability(workspace: Path, checkpoint: str, behaviour: str, held_out: list[dict]) -> float:
    """Mean probability, at temperature 1, that the model's next token is the behaviour's first token where it
    would go (after the plain answer for a sign-off, first for an opener or bullet), over the held-out questions."""
    import torch

    from pipelines.inference import encode_chat
    from pipelines.models import load_model, load_tokenizer, resolve_model

    source = resolve_model(checkpoint, workspace)
    tokenizer, model = load_tokenizer(source), load_model(source).eval()
    where, text = FIRST_TOKEN[behaviour]
    token = tokenizer(text, add_special_tokens=False)["input_ids"][0]
    total = 0.0
    for q in held_out:
        ids = encode_chat(tokenizer, [{"role": "user", "content": q["prompt"]}])
        if where == "after":
            ids = ids + tokenizer(q["plain"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].float()
        total += torch.softmax(logits, -1)[token].item()
    return total / len(held_out)


def earlier_timings() -> dict:
    """Runs this script or preference_behaviours.py trained and timed before, so that --reuse keeps their minutes."""
    from bench.preference_behaviours import RESULTS as DPO_RESULTS

    found = {}
    for path in (DPO_RESULTS, RESULTS):
        if path.is_file():
            found.update({f"{path.stem}/{key}": run for key, run in json.loads(path.read_text(encoding="utf-8"))["runs"].items()})
    return {"runs": found}


def earlier_evaluations(results: Path, max_new_tokens: int) -> dict:
    """{checkpoint: evaluation} from this script's results files: greedy answers of a reused checkpoint do not change."""
    known = {}
    for path in sorted(results.parent.glob("rl_behaviours*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("max_new_tokens") == max_new_tokens:
            known.update({result["checkpoint"]: result for result in document["results"].values()})
    return known


def rl_reading(workspace: Path, run_id: str, stage: str) -> dict:
    """The last 5 updates' KL to the reference (per answer) and spread of scores, the score before and after, and
    the warnings the run printed. GRPO and RLOO log TRL's names: KL per token, reward std within each prompt's group."""
    from pipelines import run_files, runs

    run_dir = runs.run_dir_of(workspace, run_id)
    metrics = [m for m in run_files.read_metrics(run_dir) if m.get("split") == "train"]
    log = (run_dir / "train.log").read_text(encoding="utf-8", errors="replace")
    last = metrics[-5:]
    mean = lambda key, rows=last: sum(m.get(key, 0) for m in rows) / max(1, len(rows))  # noqa: E731
    if stage == "ppo":
        kl, spread, score = mean("objective/kl"), mean("objective/scores_std"), "objective/scores"
    else:
        kl = sum(m.get("kl", 0) * m.get("completions/mean_length", 0) for m in last) / max(1, len(last))
        spread, score = mean("reward_std"), "reward"
    return {"kl_last5": round(kl, 2), "scores_std_last5": round(spread, 3),
            "score_first": round(metrics[0].get(score, 0), 3) if metrics else None,
            "score_last5": round(mean(score), 3),
            "warnings": sorted(set(re.findall(r"^warning: ([^:]*)", log, re.M)))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default="/tmp/behaviours-ws")
    parser.add_argument("--reuse", action="store_true", help="Reuse completed runs of the same names in the workspace.")
    parser.add_argument("--behaviours", default=",".join(BEHAVIOURS))
    parser.add_argument("--roads", default="plain-rm,mixed-rm,mixed-rule",
                        help=f"Comma-separated, of {', '.join(ROADS)}.")
    parser.add_argument("--results", default=str(RESULTS), help="Where the results go (and reused answers come from).")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--log-dir", default="/tmp/rl-behaviours-logs")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workspace, log_dir = Path(args.workspace).resolve(), Path(args.log_dir)
    workspace.mkdir(parents=True, exist_ok=True)
    train, held_out = questions()
    write_data(workspace, train)
    write_rl_data(workspace, train)

    from pipelines.config import BUNDLED_MODEL_ID

    behaviours = args.behaviours.split(",")
    roads = args.roads.split(",")
    earlier = earlier_timings()
    ensure = lambda config: ensure_run(workspace, config, args.reuse, log_dir, earlier)  # noqa: E731
    runs = {"sft-plain": ensure({"name": "plain-sft", "stage": "sft", "dataset": "plain-answers.jsonl"})}
    for behaviour in behaviours:
        sft = {"plain": runs["sft-plain"]}
        if any(ROADS[r][0] == "mixed" for r in roads):
            sft["mixed"] = runs[f"sft-mixed-{behaviour}"] = ensure(
                {"name": f"mixed-sft-{behaviour}", "stage": "sft", "dataset": f"mixed-{behaviour}.jsonl"})
        if any(ROADS[r][1] == "rm" for r in roads):
            runs[f"rm-{behaviour}"] = ensure({"name": f"rm-{behaviour}", "stage": "reward",
                                              "model": f"{runs['sft-plain']['run_id']}/final",
                                              "dataset": f"pairs-{behaviour}.jsonl"})
        for road in roads:
            start, reward, stage = ROADS[road]
            spec = f"{runs[f'rm-{behaviour}']['run_id']}/final" if reward == "rm" else f"rule_{behaviour}.py"
            name = f"ppo-{behaviour}-{road}" if stage == "ppo" else f"{stage}-{behaviour}-{road.rsplit('-', 1)[0]}"
            runs[name] = {**ensure({"name": name, "stage": stage, "model": f"{sft[start]['run_id']}/final",
                                    "dataset": "prompts-plain.jsonl", stage: {"reward": spec}}),
                          "behaviour": behaviour, "road": road, "start": start, "stage": stage}
            runs[name].update(rl_reading(workspace, runs[name]["run_id"], stage))

    results = Path(args.results)
    known = earlier_evaluations(results, args.max_new_tokens)
    answered = lambda checkpoint, trained_here: (known.get(checkpoint) if not trained_here else None) or \
        evaluate(workspace, checkpoint, held_out, args.max_new_tokens)  # noqa: E731
    evaluated = {"base": answered(BUNDLED_MODEL_ID, False)}
    samples_first = {}
    for key, run in runs.items():
        if key.startswith("rm-"):
            continue
        evaluated[key] = answered(f"{run['run_id']}/final", run.get("trained_here", True))
        print(f"  {key}: " + ", ".join(f"{b} {evaluated[key][b]:.0%}" for b in BEHAVIOURS) +
              f", right {evaluated[key]['right']:.0%}", flush=True)
    for behaviour in behaviours:
        for start in ("plain", "mixed"):
            key = "sft-plain" if start == "plain" else f"sft-mixed-{behaviour}"
            if key in runs:
                samples_first[f"{behaviour}/{start}"] = first_token_probability(
                    workspace, f"{runs[key]['run_id']}/final", behaviour, held_out)

    minutes = lambda key: (runs[key].get("process_s") or 0) / 60  # noqa: E731
    general = lambda result: f"{result['general_words']:.0f}, {result['general_repeats']:.0%}"  # noqa: E731
    lines = ["| behaviour | checkpoint | P(first token of the behaviour), T 1 | has the behaviour | still right | repeats "
             "| general questions: words, repeats | KL, score spread (last 5 updates) | minutes (SFT + RM + RL) | warning printed |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for behaviour in behaviours:
        for start in ("plain", "mixed"):
            key = "sft-plain" if start == "plain" else f"sft-mixed-{behaviour}"
            if key not in runs:
                continue
            shown = "" if start == "plain" else f", {SHOWN} of 200 rows show it"
            lines.append(f"| {behaviour} | SFT, {start}{shown} | {samples_first[f'{behaviour}/{start}']:.2%} "
                         f"| {evaluated[key][behaviour]:.0%} | {evaluated[key]['right']:.0%} | {evaluated[key]['repeats']:.0%} "
                         f"| {general(evaluated[key])} | | {minutes(key):.1f} | |")
        for key, run in runs.items():
            if run.get("behaviour") != behaviour:
                continue
            sft_key = "sft-plain" if run["start"] == "plain" else f"sft-mixed-{behaviour}"
            reward = "its reward model" if ROADS[run["road"]][1] == "rm" else "a 0/1 rule"
            stage = run["stage"].upper()
            total = minutes(sft_key) + (minutes(f"rm-{behaviour}") if ROADS[run["road"]][1] == "rm" else 0) + minutes(key)
            lines.append(f"| {behaviour} | → {stage} with {reward} (from {run['start']} SFT) | | {evaluated[key][behaviour]:.0%} "
                         f"| {evaluated[key]['right']:.0%} | {evaluated[key]['repeats']:.0%} | {general(evaluated[key])} "
                         f"| {run['kl_last5']}, {run['scores_std_last5']} | {total:.1f} | {'; '.join(run['warnings']) or 'none'} |")
    table = "\n".join(lines)
    print("\n" + table + "\n")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                   "machine": describe_machine(), "max_new_tokens": args.max_new_tokens,
                                   "first_token_probability": samples_first, "runs": runs, "table": table,
                                   "results": evaluated}, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    print(f"wrote {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does preference learning with the default settings teach a behaviour that only the preference data carries?

preference_outcome.py measures the bundled samples, whose SFT answers already carry the house style; there DPO
only sharpens what SFT taught. Here SFT sees plain answers ("10 plus 14 is 24.") and each behaviour lives in the
chosen answers of the preference pairs alone, the rejected answer being the plain one:

    sign_off   "10 plus 14 is 24. Hope this helps!"   the answer ends with a sign-off
    opener     "Sure! 10 plus 14 is 24."              the answer begins with a fixed phrase
    bullet     "- 10 plus 14 is 24."                  the answer is a "- " bullet

Roads, each run a fresh `python -m pipelines --workspace WS train config.yaml` with every default but the data:

    SFT on 200 plain rows  →  DPO on 200 pairs of the behaviour       (dpo.sft_weight as the defaults have it)
                           →  DPO with other learning rates and dpo.sft_weight   (--runs lr:sft_weight,…)

Then 30 held-out questions (sums and capitals in neither file) are asked greedily of the base, the SFT model and
every DPO model: the share of answers with the behaviour, the share still right (the sum, the capital), the
share that repeat a phrase, and the minutes of training. Also the run's last prefers_chosen/first_token reading
and the warnings its log printed, to see whether the app said why when nothing changed.

    python bench/preference_behaviours.py --workspace /tmp/behaviours-ws
    python bench/preference_behaviours.py --workspace /tmp/behaviours-ws --reuse --runs 5e-5:0,5e-5:1
    python bench/preference_behaviours.py --reuse --stages dpo,kto,orpo --stage-lr kto:2e-4,orpo:4e-4 --behaviours sign_off

Prints a markdown table and writes bench/results/preference_behaviours.json (every answer).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

from bench.machine import describe_machine  # noqa: E402
from bench.preference_outcome import HELD_OUT as GENERAL_QUESTIONS, ensure_run  # noqa: E402
from pipelines.signals import repeated_ngram_share  # noqa: E402

RESULTS = BENCH_DIR / "results" / "preference_behaviours.json"
GENERAL = GENERAL_QUESTIONS[:5]   # questions outside the data: do their answers stay fluent?
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Poland": "Warsaw", "Austria": "Vienna", "Greece": "Athens", "Sweden": "Stockholm", "Norway": "Oslo",
    "Finland": "Helsinki", "Denmark": "Copenhagen", "Ireland": "Dublin", "Hungary": "Budapest", "Egypt": "Cairo",
    "Kenya": "Nairobi", "Japan": "Tokyo", "China": "Beijing", "Thailand": "Bangkok", "Vietnam": "Hanoi",
    "Peru": "Lima", "Chile": "Santiago", "Cuba": "Havana", "Canada": "Ottawa", "Russia": "Moscow",
    "Turkey": "Ankara", "Iran": "Tehran", "Iraq": "Baghdad", "Belgium": "Brussels", "Romania": "Bucharest",
    # held out
    "South Korea": "Seoul", "Argentina": "Buenos Aires", "Czechia": "Prague", "Mexico": "Mexico City",
    "Indonesia": "Jakarta", "Netherlands": "Amsterdam", "Ukraine": "Kyiv", "Colombia": "Bogotá",
    "Philippines": "Manila", "Morocco": "Rabat",
}
HELD_OUT_COUNTRIES = list(CAPITALS)[30:]
SUM_QUESTIONS = ("What is {a} plus {b}?", "Add {a} and {b}.", "How much is {a} + {b}?")
# Each behaviour: how a plain answer shows it, and the test of an answer as Python source (an RL run's 0/1 rule
# file is written from the same text: bench/rl_behaviours.py).
RULES = {
    "sign_off": 'answer.rstrip().endswith("Hope this helps!")',
    "opener": 'answer.lstrip().startswith("Sure!")',
    "bullet": 'answer.lstrip().startswith("- ")',
}
BEHAVIOURS = {
    "sign_off": (lambda plain: f"{plain} Hope this helps!", eval(f"lambda answer: {RULES['sign_off']}")),
    "opener": (lambda plain: f"Sure! {plain}", eval(f"lambda answer: {RULES['opener']}")),
    "bullet": (lambda plain: f"- {plain}", eval(f"lambda answer: {RULES['bullet']}")),
}


def questions(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(200 training questions, 30 held-out ones), each {"prompt", "plain", "right"}: sums and capitals, with no
    pair of numbers and no country in both."""
    rng = random.Random(seed)
    sums = rng.sample([(a, b) for a in range(2, 60) for b in range(2, 60) if a < b], 190)
    def sum_row(a, b, i):
        return {"prompt": SUM_QUESTIONS[i % 3].format(a=a, b=b), "plain": f"{a} plus {b} is {a + b}.", "right": str(a + b)}
    def capital_row(country):
        return {"prompt": f"What is the capital of {country}?", "plain": f"The capital of {country} is {CAPITALS[country]}.",
                "right": CAPITALS[country]}
    train = [sum_row(a, b, i) for i, (a, b) in enumerate(sums[:170])] + [capital_row(c) for c in list(CAPITALS)[:30]]
    held_out = [sum_row(a, b, i) for i, (a, b) in enumerate(sums[170:])] + [capital_row(c) for c in HELD_OUT_COUNTRIES]
    rng.shuffle(train)
    return train, held_out


def write_data(workspace: Path, train: list[dict]) -> None:
    def write(name, rows):
        (workspace / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    write("plain-answers.jsonl", [{"instruction": q["prompt"], "input": "", "output": q["plain"]} for q in train])
    for behaviour, (make, _) in BEHAVIOURS.items():
        write(f"pairs-{behaviour}.jsonl", [{"prompt": q["prompt"], "chosen": make(q["plain"]), "rejected": q["plain"]}
                                           for q in train])


def evaluate(workspace: Path, checkpoint: str, held_out: list[dict], max_new_tokens: int) -> dict:
    from pipelines.inference import chat

    started = time.perf_counter()
    answers = [{"prompt": q["prompt"], "answer": chat(workspace, checkpoint, q["prompt"], [],
                                                      {"max_new_tokens": max_new_tokens, "temperature": 0}),
                "right": q["right"]} for q in held_out]
    for a in answers:
        a.update({behaviour: check(a["answer"]) for behaviour, (_, check) in BEHAVIOURS.items()})
        a["is_right"] = a["right"] in a["answer"]
        a["repeats"] = repeated_ngram_share(a["answer"]) > 0.2
    share = lambda key: sum(a[key] for a in answers) / len(answers)  # noqa: E731
    general = [{"prompt": q, "answer": chat(workspace, checkpoint, q, [], {"max_new_tokens": 80, "temperature": 0})}
               for q in GENERAL]
    for a in general:
        a["repeats"] = repeated_ngram_share(a["answer"]) > 0.2
    return {"checkpoint": checkpoint, **{b: share(b) for b in BEHAVIOURS}, "right": share("is_right"),
            "repeats": share("repeats"), "general_repeats": sum(a["repeats"] for a in general) / len(general),
            "general_words": sum(len(a["answer"].split()) for a in general) / len(general),
            "seconds": round(time.perf_counter() - started, 1), "answers": answers, "general": general}


def run_reading(workspace: Path, run_id: str) -> dict:
    """The last preference reading and the warnings the run printed."""
    from pipelines import run_files, runs

    run_dir = runs.run_dir_of(workspace, run_id)
    readings = [m for m in run_files.read_metrics(run_dir) if "prefers_chosen/first_token" in m]
    log = (run_dir / "train.log").read_text(encoding="utf-8", errors="replace") if (run_dir / "train.log").is_file() else ""
    return {"prefers_chosen": {k.split("/")[1]: v for k, v in (readings[-1] if readings else {}).items()
                               if k.startswith("prefers_chosen/")},
            "warnings": re.findall(r"^warning: (.*)$", log, re.M)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default="/tmp/behaviours-ws")
    parser.add_argument("--reuse", action="store_true", help="Reuse completed runs of the same names in the workspace.")
    parser.add_argument("--behaviours", default=",".join(BEHAVIOURS))
    parser.add_argument("--runs", default="", help="Comma-separated lr:sft_weight DPO settings to run beside the "
                        "defaults, e.g. 5e-5:0,5e-5:1.")
    parser.add_argument("--results", default=str(RESULTS), help="Where the results go (and reused runs' minutes come from).")
    parser.add_argument("--stages", default="dpo", help="Comma-separated, of dpo, kto, orpo: KTO and ORPO run "
                        "with every default beside DPO's runs.")
    parser.add_argument("--stage-lr", default="", help="Comma-separated stage:lr, e.g. kto:2e-4,orpo:4e-4: KTO or "
                        "ORPO also at that learning rate, beside their defaults.")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--log-dir", default="/tmp/preference-behaviours-logs")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    workspace, log_dir = Path(args.workspace).resolve(), Path(args.log_dir)
    workspace.mkdir(parents=True, exist_ok=True)
    train, held_out = questions()
    write_data(workspace, train)

    from pipelines.config import BUNDLED_MODEL_ID, stage_defaults
    from pipelines.stages.dpo import DPOSettings

    default_weight, default_lr = DPOSettings().sft_weight, stage_defaults("dpo")["train"]["learning_rate"]
    results = Path(args.results)
    earlier = json.loads(results.read_text(encoding="utf-8")) if results.is_file() else {}   # minutes of reused runs
    runs = {"sft": ensure_run(workspace, {"name": "plain-sft", "stage": "sft", "dataset": "plain-answers.jsonl"},
                              args.reuse, log_dir, earlier)}
    sft_final = f"{runs['sft']['run_id']}/final"
    combos = [(default_lr, default_weight)] + [
        (float(lr), float(weight)) for lr, weight in (item.split(":") for item in args.runs.split(",") if item.strip())
        if (float(lr), float(weight)) != (default_lr, default_weight)]
    for behaviour in args.behaviours.split(","):
        for lr, weight in combos:
            name = f"dpo-{behaviour}-lr{lr:g}-sft{weight:g}".replace(".", "p")
            config = {"name": name, "stage": "dpo", "model": sft_final, "dataset": f"pairs-{behaviour}.jsonl",
                      "dpo": {"sft_weight": weight}, "train": {"learning_rate": lr}}
            runs[name] = {**ensure_run(workspace, config, args.reuse, log_dir, earlier), "behaviour": behaviour,
                          "stage": "dpo", "sft_weight": weight, "learning_rate": lr,
                          "default": (lr, weight) == (default_lr, default_weight)}
            runs[name].update(run_reading(workspace, runs[name]["run_id"]))
        other_lrs = [(stage, float(lr)) for stage, lr in (item.split(":") for item in args.stage_lr.split(",") if item.strip())]
        for stage in (s for s in args.stages.split(",") if s != "dpo"):   # KTO and ORPO with every default
            for lr in [None] + [lr for named, lr in other_lrs if named == stage]:
                config = {"name": f"{stage}-{behaviour}" + (f"-lr{lr:g}" if lr else ""), "stage": stage,
                          "model": sft_final, "dataset": f"pairs-{behaviour}.jsonl",
                          **({"train": {"learning_rate": lr}} if lr else {})}
                runs[config["name"]] = {**ensure_run(workspace, config, args.reuse, log_dir, earlier),
                                        "behaviour": behaviour, "stage": stage, "default": lr is None, "learning_rate": lr}
                runs[config["name"]].update(run_reading(workspace, runs[config["name"]]["run_id"]))

    # Greedy answers of a checkpoint reused as it was do not change: take them from the last results.
    known = {r["checkpoint"]: r for r in earlier.get("results", {}).values() if "general" in r} \
        if earlier.get("max_new_tokens") == args.max_new_tokens else {}
    answered = lambda checkpoint, trained_here: (None if trained_here else known.get(checkpoint)) or \
        evaluate(workspace, checkpoint, held_out, args.max_new_tokens)  # noqa: E731
    evaluated = {"base": answered(BUNDLED_MODEL_ID, False)}
    for key, run in runs.items():
        evaluated[key] = answered(f"{run['run_id']}/final", run.get("trained_here", True))
        print(f"  {key}: " + ", ".join(f"{b} {evaluated[key][b]:.0%}" for b in BEHAVIOURS) +
              f", right {evaluated[key]['right']:.0%}", flush=True)

    sft_minutes = (runs["sft"].get("process_s") or 0) / 60
    general = lambda result: f"{result['general_words']:.0f}, {result['general_repeats']:.0%}"  # noqa: E731
    lines = ["| behaviour | checkpoint | has the behaviour | still right | repeats | prefers chosen at the first differing token "
             "| general questions: words, repeats | minutes (SFT + preference processes) | warning printed |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for behaviour in args.behaviours.split(","):
        lines.append(f"| {behaviour} | base | {evaluated['base'][behaviour]:.0%} | {evaluated['base']['right']:.0%} "
                     f"| {evaluated['base']['repeats']:.0%} | | {general(evaluated['base'])} | | |")
        lines.append(f"| {behaviour} | SFT on plain answers | {evaluated['sft'][behaviour]:.0%} | {evaluated['sft']['right']:.0%} "
                     f"| {evaluated['sft']['repeats']:.0%} | | {general(evaluated['sft'])} | {sft_minutes:.1f} | |")
        for key, run in runs.items():
            if run.get("behaviour") != behaviour:
                continue
            label = (f"→ DPO, lr {run['learning_rate']:g}, sft_weight {run['sft_weight']:g}"
                     f"{' (default)' if run['default'] else ''}") if run["stage"] == "dpo" else \
                f"→ {run['stage'].upper()} " + ("(defaults)" if run["default"] else f"lr {run['learning_rate']:g}")
            first = run["prefers_chosen"].get("first_token")
            told = "; ".join(w.split(":")[0] for w in run["warnings"]) or "none"
            lines.append(f"| {behaviour} | {label} | {evaluated[key][behaviour]:.0%} | {evaluated[key]['right']:.0%} "
                         f"| {evaluated[key]['repeats']:.0%} | {'' if first is None else f'{first:.0%}'} | {general(evaluated[key])} "
                         f"| {sft_minutes + (run.get('process_s') or 0) / 60:.1f} | {told} |")
    table = "\n".join(lines)
    print("\n" + table + "\n")

    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                   "machine": describe_machine(), "max_new_tokens": args.max_new_tokens,
                                   "runs": runs, "table": table, "results": evaluated},
                                  indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    print(f"wrote {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

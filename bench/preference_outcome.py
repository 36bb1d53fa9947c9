"""Does DPO with the default settings teach the bundled model a rule its chosen answers follow?

The rule is the house style of the bundled preference pairs (assets/datasets/preference-en-sample.json):
every chosen answer has at least one "- " bullet line and ends with the line "Hope this helps!"; every
rejected answer breaks it (none ends with the sign-off). The script checks that on the data first, then:

    (a) SFT with every default           stage: sft (alpaca-en-sample, 60 steps, lr 2e-4, LoRA r16)
    (b) DPO with every default after it  stage: dpo, model: <sft run>/final (preference-en-sample, 40 steps,
                                         lr 5e-5, beta 0.1, sigmoid loss; the reference is the merged SFT model)
    (c) DPO with every default from the base model, for comparison

each as a fresh `python -m pipelines --workspace WS train config.yaml`, timed, and asks held-out prompts
(in neither sample, checked below) greedily of the base and of each run's final model through
pipelines.inference.chat, counting the answers that follow the rule.

    python bench/preference_outcome.py --workspace /tmp/pref-ws              # trains (a), (b), (c)
    python bench/preference_outcome.py --workspace /tmp/pref-ws --sft-run default-sft   # reuse a finished SFT run
    python bench/preference_outcome.py --workspace /tmp/pref-ws --reuse      # reuse finished runs of the same names

`--extra-dpo-lr 2e-4` adds DPO runs after SFT at other learning rates (everything else default), to see how
strong the default is. Prints a markdown table and writes bench/results/preference_outcome.json (every answer).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.machine import describe_machine, measure_process  # noqa: E402
from pipelines.road import HELD_OUT_PROMPTS, closest_sample_rows  # noqa: E402

RESULTS = BENCH_DIR / "results" / "preference_outcome.json"
SIGN_OFF = "Hope this helps!"
SAMPLES = REPO_ROOT / "assets" / "datasets"

# Prompts on topics that neither alpaca-en-sample nor preference-en-sample covers (pipelines/road.py keeps them,
# tests/test_road.py checks them). sft_visible_change.py's list does not qualify: "How do I prepare for a job
# interview?" is an Alpaca row word for word, and its virus/bacterium, salty sea, refrigerator and
# compound-interest questions are rephrasings of Alpaca rows.
HELD_OUT = HELD_OUT_PROMPTS["en"]


# --- the rule ----------------------------------------------------------------------------------------

def rule(answer: str) -> dict:
    """The house style: the last non-empty line is the sign-off, and at least one line is a "- " bullet."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    sign_off = bool(lines) and lines[-1] == SIGN_OFF
    bullets = any(line.startswith("- ") for line in lines)
    # Not part of the rule: the answer repeats one line three times or more (a loop that runs to max_new_tokens).
    loop = any(lines.count(line) >= 3 for line in set(lines))
    return {"follows": sign_off and bullets, "sign_off": sign_off, "bullets": bullets, "loop": loop}


def last_turn(value) -> str:
    """A chosen/rejected answer as text, whether a string or a list of messages."""
    if isinstance(value, list):
        return value[-1]["content"]
    return value


def check_rule_on_data() -> dict:
    """Share of chosen and rejected answers of preference-en-sample that follow the rule."""
    pairs = json.loads((SAMPLES / "preference-en-sample.json").read_text(encoding="utf-8"))
    chosen = [rule(last_turn(p["chosen"])) for p in pairs]
    rejected = [rule(last_turn(p["rejected"])) for p in pairs]
    summary = {side: {k: sum(r[k] for r in rows) / len(rows) for k in ("follows", "sign_off", "bullets")}
               for side, rows in (("chosen", chosen), ("rejected", rejected))}
    summary["pairs"] = len(pairs)
    if summary["chosen"]["follows"] < 1.0 or summary["rejected"]["follows"] > 0.0:
        raise SystemExit(f"the rule does not split the preference sample cleanly: {summary}")
    return summary


def check_held_out() -> dict:
    """Refuse a held-out prompt that a sample holds, word for word or nearly (over half its content words)."""
    closest = {}
    for prompt, (overlap, match) in closest_sample_rows("en").items():
        if overlap > 0.5:
            raise SystemExit(f"held-out prompt {prompt!r} is close to the sample row {match!r}")
        closest[prompt] = {"overlap": round(overlap, 2), "closest_sample_prompt": match}
    return closest


# --- training ----------------------------------------------------------------------------------------

def find_completed(workspace: Path, name: str) -> str | None:
    """The id of a completed run named `name` (its id is the name, or the name with a -N suffix)."""
    root = workspace / "runs"
    if not root.is_dir():
        return None
    for run_dir in sorted(root.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
        if run_dir.name == name or re.fullmatch(re.escape(name) + r"-\d+", run_dir.name):
            status = json.loads((run_dir / "status.json").read_text(encoding="utf-8")) if (run_dir / "status.json").is_file() else {}
            if status.get("status") == "completed" and (run_dir / "final").is_dir():
                return run_dir.name
    return None


def train(workspace: Path, config: dict, log_dir: Path) -> dict:
    """`python -m pipelines --workspace WS train config.yaml` in a fresh process; the run id and the time it took."""
    import yaml

    log_dir.mkdir(parents=True, exist_ok=True)
    config_path = log_dir / f"{config['name']}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    log_path = log_dir / f"{config['name']}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "pipelines", "--workspace", str(workspace), "train", str(config_path)]
    print(f"training {config['name']}: {' '.join(command)} (log {log_path})", flush=True)
    measured = measure_process(command, log_path, env, REPO_ROOT)
    text = log_path.read_text(encoding="utf-8", errors="replace")
    found = re.search(r"^run (\S+) in ", text, re.M)
    if not found:
        raise SystemExit(f"{config['name']} failed:\n{text[-3000:]}")
    return {"run_id": found.group(1), "process_s": round(measured["wall_s"], 1), "cpu_s": round(measured["cpu_s"], 1),
            "peak_rss_mb": round(measured["peak_rss_mb"]), "others_share": round(measured["others_share"], 3),
            "trained_here": True}


def describe_run(workspace: Path, run_id: str) -> dict:
    """What the run was asked and what it logged: its config, train_runtime, and the first and last logged steps."""
    from pipelines import run_files, runs

    run_dir = runs.run_dir_of(workspace, run_id)
    config = runs.load_config(run_dir)
    status = run_files.read_status(run_dir)
    if status.get("status") != "completed":
        raise SystemExit(f"run {run_id} is {status.get('status')}: {status.get('error')}")
    steps = [m for m in run_files.read_metrics(run_dir) if m.get("split", "train") == "train" and "loss" in m]
    keep = lambda m: {k: v for k, v in m.items() if k not in ("time", "split", "epoch")}  # noqa: E731
    return {"run_id": run_id, "stage": config.stage, "model": config.model, "dataset": config.dataset,
            "train": {k: getattr(config.train, k) for k in ("max_steps", "learning_rate", "batch_size", "max_length",
                                                              "lr_scheduler", "warmup_ratio", "seed")},
            "peft": {k: getattr(config.peft, k) for k in ("method", "r", "alpha", "dropout", "target_modules")},
            "dpo": {"beta": config.dpo.beta, "loss_type": config.dpo.loss_type} if config.stage == "dpo" else None,
            "train_runtime_s": (status.get("summary") or {}).get("train_runtime"),
            "first_step": keep(steps[0]) if steps else None, "last_step": keep(steps[-1]) if steps else None,
            "last_5_mean": _last_5_mean(steps)}


def _last_5_mean(steps: list[dict]) -> dict | None:
    """Each number of the last step, averaged over those of the last 5 steps that logged it (some are logged sparsely)."""
    if not steps:
        return None
    keys = [k for k, v in steps[-1].items() if isinstance(v, (int, float)) and k not in ("step", "time", "epoch")]
    return {k: sum(values) / len(values) for k in keys
            for values in [[m[k] for m in steps[-5:] if isinstance(m.get(k), (int, float))]]}


def ensure_run(workspace: Path, config: dict, reuse: bool, log_dir: Path, earlier: dict) -> dict:
    existing = find_completed(workspace, config["name"]) if reuse else None
    if existing:
        print(f"reusing the completed run {existing}", flush=True)
        # How long its process took, if this script trained it and wrote it down.
        timed = next((r for r in earlier.get("runs", {}).values() if r.get("run_id") == existing and "process_s" in r), {})
        trained = {"run_id": existing, "trained_here": False,
                   **{k: timed[k] for k in ("process_s", "cpu_s", "peak_rss_mb", "others_share") if k in timed}}
    else:
        trained = train(workspace, config, log_dir)
    return {**trained, **describe_run(workspace, trained["run_id"])}


# --- evaluation --------------------------------------------------------------------------------------

def earlier_results(workspace: Path) -> dict:
    """The last results file, if it was written for this workspace."""
    if not RESULTS.is_file():
        return {}
    document = json.loads(RESULTS.read_text(encoding="utf-8"))
    return document if document.get("workspace") == str(workspace) else {}


def earlier_answers(document: dict, max_new_tokens: int) -> dict:
    """{(checkpoint, prompt): answer} from the last results file, when it asked with the same max_new_tokens.
    Greedy decoding is deterministic, so `--reuse` does not ask a finished checkpoint again."""
    if document.get("max_new_tokens") != max_new_tokens:
        return {}
    return {(r["checkpoint"], a["prompt"]): a["answer"] for r in document.get("results", []) for a in r["answers"]}


def evaluate(workspace: Path, checkpoint: str, max_new_tokens: int, known: dict) -> dict:
    from pipelines.inference import chat

    started = time.perf_counter()
    answers, reused = [], 0
    for prompt in HELD_OUT:
        answer = known.get((checkpoint, prompt))
        if answer is None:
            answer = chat(workspace, checkpoint, prompt, [], {"max_new_tokens": max_new_tokens, "temperature": 0})
        else:
            reused += 1
        answers.append({"prompt": prompt, "answer": answer, **rule(answer)})
    shares = {k: sum(a[k] for a in answers) / len(answers) for k in ("follows", "sign_off", "bullets", "loop")}
    result = {"checkpoint": checkpoint, **shares, "mean_chars": round(sum(len(a["answer"]) for a in answers) / len(answers)),
              "seconds": round(time.perf_counter() - started, 1), "reused_answers": reused, "answers": answers}
    print(f"  {checkpoint}: follows {shares['follows']:.0%}, sign-off {shares['sign_off']:.0%}, "
          f"bullets {shares['bullets']:.0%}, loops {shares['loop']:.0%} ({result['seconds']:.0f} s"
          f"{f', {reused} answers reused' if reused else ''})", flush=True)
    return result


def minutes(run: dict | None) -> str:
    if not run:
        return "—"
    parts = []
    if run.get("process_s") is not None:
        parts.append(f"{run['process_s'] / 60:.1f} (process)")
    if run.get("train_runtime_s") is not None:
        parts.append(f"{run['train_runtime_s'] / 60:.1f} (train())")
    return ", ".join(parts) or "—"


def markdown(rows: list[tuple[str, dict, dict | None]]) -> str:
    lines = ["| checkpoint | follows the rule | ends with sign-off | has bullets | stuck in a loop | mean answer chars "
             "| minutes of training |", "|---|---:|---:|---:|---:|---:|---|"]
    for label, result, run in rows:
        lines.append(f"| {label} | {result['follows']:.0%} | {result['sign_off']:.0%} | {result['bullets']:.0%} "
                     f"| {result['loop']:.0%} | {result['mean_chars']} | {minutes(run)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default="workspace")
    parser.add_argument("--sft-run", default="", help="Reuse this completed SFT run instead of training one.")
    parser.add_argument("--reuse", action="store_true", help="Reuse completed runs of the same names in the workspace.")
    parser.add_argument("--no-dpo-from-base", action="store_true", help="Skip the comparison DPO run from the base model.")
    parser.add_argument("--extra-dpo-lr", default="", help="Comma-separated learning rates for extra DPO runs after SFT.")
    parser.add_argument("--extra-base-dpo-lr", default="", help="Comma-separated learning rates for extra DPO runs from the base.")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--log-dir", default="/tmp/preference-outcome-logs")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    workspace, log_dir = Path(args.workspace).resolve(), Path(args.log_dir)
    workspace.mkdir(parents=True, exist_ok=True)
    data_check, held_out_check = check_rule_on_data(), check_held_out()
    print(f"rule on preference-en-sample: chosen {data_check['chosen']['follows']:.0%} follow it, "
          f"rejected {data_check['rejected']['follows']:.0%}; {len(HELD_OUT)} held-out prompts, none in the samples "
          f"(largest content-word overlap {max(c['overlap'] for c in held_out_check.values()):.0%})", flush=True)

    from pipelines.config import BUNDLED_MODEL_ID

    earlier = earlier_results(workspace) if args.reuse else {}
    runs: dict[str, dict] = {}
    if args.sft_run:
        runs["sft"] = {"trained_here": False, **describe_run(workspace, args.sft_run)}
    else:
        runs["sft"] = ensure_run(workspace, {"name": "pref-sft", "stage": "sft"}, args.reuse, log_dir, earlier)
    sft_final = f"{runs['sft']['run_id']}/final"
    runs["dpo_after_sft"] = ensure_run(workspace, {"name": "pref-dpo-after-sft", "stage": "dpo", "model": sft_final},
                                       args.reuse, log_dir, earlier)
    if not args.no_dpo_from_base:
        runs["dpo_from_base"] = ensure_run(workspace, {"name": "pref-dpo-from-base", "stage": "dpo"}, args.reuse,
                                           log_dir, earlier)
    for start, option in (("sft", args.extra_dpo_lr), ("base", args.extra_base_dpo_lr)):
        for lr in [x.strip() for x in option.split(",") if x.strip()]:
            name = f"pref-dpo-from-{start}-lr{lr}".replace(".", "p").replace("+", "")
            config = {"name": name, "stage": "dpo", "train": {"learning_rate": float(lr)}}
            if start == "sft":
                config["model"] = sft_final
            runs[f"dpo_from_{start}_lr{lr}"] = ensure_run(workspace, config, args.reuse, log_dir, earlier)

    print(f"asking {len(HELD_OUT)} held-out prompts greedily (max_new_tokens {args.max_new_tokens}):", flush=True)
    known = earlier_answers(earlier, args.max_new_tokens)
    evaluated = [("base", evaluate(workspace, BUNDLED_MODEL_ID, args.max_new_tokens, known), None)]
    labels = {"sft": "SFT (defaults)", "dpo_after_sft": "SFT → DPO (defaults)", "dpo_from_base": "base → DPO (defaults)"}
    for key, run in runs.items():
        label = labels.get(key) or (f"{'SFT' if key.startswith('dpo_from_sft') else 'base'} → DPO, "
                                    f"lr {key.split('_lr', 1)[1]}")
        evaluated.append((f"{label}: `{run['run_id']}/final`", evaluate(workspace, f"{run['run_id']}/final", args.max_new_tokens, known), run))
    evaluated[0] = (f"base `{BUNDLED_MODEL_ID}`", *evaluated[0][1:])

    table = markdown(evaluated)
    print("\n" + table + "\n")
    for key, run in runs.items():
        if run["stage"] == "dpo" and run.get("last_5_mean"):
            m = run["last_5_mean"]
            print(f"{run['run_id']}: mean of the last 5 steps: " + ", ".join(f"{k} {v:.4g}" for k, v in m.items()
                                                                            if k.startswith(("loss", "rewards/"))))
    import peft
    import torch
    import transformers
    import trl

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    document = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "workspace": str(workspace),
                "machine": describe_machine(),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "trl": trl.__version__, "peft": peft.__version__},
                "rule": "last non-empty line is 'Hope this helps!' and at least one line starts with '- '",
                "rule_on_data": data_check, "held_out": held_out_check, "max_new_tokens": args.max_new_tokens,
                "runs": runs, "table": table,
                "results": [{"label": label, **result} for label, result, _ in evaluated]}
    RESULTS.write_text(json.dumps(document, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How much faster a studio DPO run is than the plain TRL script a user could write: pairs per second, the loss of
every step side by side, and peak memory.

The studio side is `python -m pipelines train` with the studio's own defaults for batching and the reference
(pipelines/stages/dpo.py, pipelines/stages/batching.py); the plain side is bench/plain_dpo.py, TRL's DPOTrainer
with TRL's defaults for padding, the LM head and the reference (with LoRA, the base with the adapter disabled at
every step). Everything else is the same on both sides, as in bench/dpo_overhead.py: model folder, rows, LoRA,
learning rate and schedule, batch, seed, precision (`--precision`, both sides), CPU, no gradient checkpointing.
The batches are the same pairs in the same order, so the loss of each step should agree within float noise: the
speed comes from doing less work per step (no vocabulary projection for prompt and padding positions on CPU),
not from a different objective.

    python bench/dpo_speed.py --models bundled --repeats 2 --precision fp32

Pairs per second = pairs trained (max_steps × batch × grad_accum) ÷ the trainer's own train_runtime. Each side runs
in a fresh process, alternating, after waiting for a quiet machine. Prints a markdown table and writes
bench/results/dpo_speed.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.dpo_overhead import CASES, prepare_case, run_plain, run_studio, warm_up  # noqa: E402
from bench.machine import add_quiet_arguments, chosen_cases, wait_for_quiet  # noqa: E402
from bench.sft_overhead import write_results  # noqa: E402

RESULTS = BENCH_DIR / "results" / "dpo_speed.json"
TARGET_SPEEDUP = 1.3


def with_precision(prepared: dict, precision: str) -> dict:
    """The case with both sides in `precision` (the studio reads train.precision, plain_dpo.py the same key)."""
    return {**prepared, "train": {**prepared["train"], "precision": precision}}


def pairs_per_second(prepared: dict, result: dict) -> float:
    train = prepared["train"]
    return train["max_steps"] * train["batch_size"] * train["grad_accum"] / result["train_s"]


def bench_case(case: str, repeats: int, precision: str, quiet_wait_s: float, scratch: Path) -> dict:
    prepared = with_precision(prepare_case(case, scratch), precision)
    runs = {"studio": [], "plain": []}
    for rep in range(repeats):
        for side, runner in (("studio", run_studio), ("plain", run_plain)):
            quiet = wait_for_quiet(quiet_wait_s)
            result = {**runner(prepared, scratch / f"{case}-{precision}-{side}-{rep}"), **quiet}
            result["pairs_per_s"] = pairs_per_second(prepared, result)
            runs[side].append(result)
            print(f"  {case} {precision} {side} #{rep + 1}: {result['pairs_per_s']:.3f} pairs/s (train "
                  f"{result['train_s']:.1f} s), peak {result['peak_rss_mb']:.0f} MB; others used "
                  f"{result['others_share']:.0%} of the cores", flush=True)
    median = {side: {m: statistics.median(r[m] for r in rows) for m in ("pairs_per_s", "train_s", "peak_rss_mb")}
              for side, rows in runs.items()}
    steps = sorted(runs["studio"][0]["logged"], key=int)
    losses = {step: {side: runs[side][0]["logged"].get(step, {}).get("loss") for side in runs} for step in steps}
    gaps = [abs(v["studio"] - v["plain"]) for v in losses.values() if None not in v.values()]
    return {"repeats": repeats, "precision": precision, "threads": os.environ.get("OMP_NUM_THREADS", "torch default"),
            "settings": {k: prepared[k] for k in ("label", "model_spec", "dataset_source", "rows", "peft", "train", "dpo")},
            "median": median,
            "speedup_pairs_per_s": median["studio"]["pairs_per_s"] / median["plain"]["pairs_per_s"],
            "peak_rss_ratio": median["studio"]["peak_rss_mb"] / median["plain"]["peak_rss_mb"],
            "loss_per_step": losses, "max_loss_gap": max(gaps) if gaps else None,
            "others_share": {side: [round(r["others_share"], 3) for r in rows] for side, rows in runs.items()}}


def markdown(case: str, result: dict) -> str:
    s, m = result["settings"], result["median"]
    lines = [f"### DPO speed, {case} ({s['label']}), {result['precision']}: LoRA r={s['peft']['r']}, "
             f"{s['train']['max_steps']} steps of {s['train']['batch_size']} pairs, {result['repeats']} runs per side",
             "", "| | studio | plain TRL | studio / plain |", "|---|---:|---:|---:|",
             f"| pairs per second | {m['studio']['pairs_per_s']:.3f} | {m['plain']['pairs_per_s']:.3f} | "
             f"**{result['speedup_pairs_per_s']:.2f}×** (target ≥ {TARGET_SPEEDUP}) |",
             f"| inside train() (s) | {m['studio']['train_s']:.1f} | {m['plain']['train_s']:.1f} | "
             f"{m['studio']['train_s'] / m['plain']['train_s']:.2f} |",
             f"| peak RSS (MB) | {m['studio']['peak_rss_mb']:.0f} | {m['plain']['peak_rss_mb']:.0f} | "
             f"{result['peak_rss_ratio']:.2f} |",
             "", "| step | loss, studio | loss, plain |", "|---:|---:|---:|"]
    for step, values in result["loss_per_step"].items():
        lines.append(f"| {step} | {values['studio']:.5f} | {values['plain']:.5f} |")
    gap = result["max_loss_gap"]
    lines += ["", f"Largest loss gap over the steps: {'n/a' if gap is None else f'{gap:.2g}'}; other processes' "
              f"share of the cores per run: {result['others_share']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bundled", help="Comma-separated cases: tiny, bundled.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per side, alternating studio and plain.")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16, or both (comma-separated): both sides alike.")
    parser.add_argument("--steps", type=int, default=0, help="Override the case's max_steps (0 keeps it).")
    add_quiet_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder (runs, logs) for inspection.")
    args = parser.parse_args(argv)
    cases = chosen_cases(parser, args.models, CASES)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or any(p not in ("fp32", "bf16") for p in precisions):
        parser.error("--precision takes fp32, bf16 or both")
    if args.steps:
        for case in cases:
            CASES[case]["train"] = {**CASES[case]["train"], "max_steps": args.steps,
                                    "save_steps": min(CASES[case]["train"]["save_steps"], args.steps)}
    scratch = Path(tempfile.mkdtemp(prefix="dpo-speed-"))
    try:
        warm_up()
        results = {}
        for case in cases:
            for precision in precisions:
                print(f"{case} {precision}: {args.repeats} × (studio, plain) in {scratch}", flush=True)
                results[f"{case}-{precision}"] = bench_case(case, args.repeats, precision, args.quiet_wait, scratch)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print()
    for case, result in results.items():
        print(markdown(case, result) + "\n")
    write_results(results, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

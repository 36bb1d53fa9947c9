"""What the studio costs on top of bare TRL for DPO: one DPO run through `python -m pipelines train`, against
bench/plain_dpo.py, a plain script that calls TRL's DPOTrainer directly with identical settings.

Identical means: the same model folder; the same rows (the studio reads the bundled `preference-en-sample` by
name; the plain script reads a JSONL of exactly the rows `pipelines.data.store.load_stage_rows` gives the DPO
stage: conversational prompt / chosen / rejected); the same LoRA (r, alpha, dropout, all-linear); the same
DPOConfig values (those of pipelines/stages/common.common_training_args plus beta, loss_type, label_smoothing,
max_length, precompute_ref_log_probs); ref_model None on both (the reference is the base with the adapter
disabled); the same seed and save_steps; fp32 on CPU, no gradient checkpointing (CUDA_VISIBLE_DEVICES emptied
for both). After the runs the script checks it: the two saved training_args.bin must agree (output paths
aside), the adapter configs must agree, both must hold the same checkpoints, and the logged loss and DPO
rewards (chosen, rejected, margins, accuracies) must match step by step.

Each side runs in its own fresh Python process, alternating (studio, plain, studio, plain, ...), measured as in
sft_overhead.py (wall, train_runtime, wall - train, CPU time, peak RSS), after waiting for a quiet machine.

    python bench/dpo_overhead.py --models tiny,bundled --repeats 3

Prints markdown tables (medians, minima, and studio/plain ratios against the 3% target) and writes
bench/results/dpo_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))  # the driver reuses the studio's data loading, tiny model and bundled model

from bench.machine import add_quiet_arguments, chosen_cases, wait_for_quiet  # noqa: E402
from bench.sft_overhead import (adapter_differences, args_differences, checkpoint_names, measure,  # noqa: E402
                                metric_table, model_folder, summarise, write_results)

RESULTS = BENCH_DIR / "results" / "dpo_overhead.json"
TARGET_OVERHEAD = 0.03
METRICS = ("wall_s", "train_s", "setup_s", "cpu_s", "peak_rss_mb")
DATASET = "preference-en-sample"
# Logged values compared step by step between the two sides.
COMPARED = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")

# Settings both sides share (lr 5e-5 as the DPO default was until 2026-12; beta 0.1, sigmoid plus the SFT term
# at weight 1 as the defaults are now); each case adds its own.
COMMON_TRAIN = {"epochs": 1.0, "learning_rate": 5.0e-5, "lr_scheduler": "cosine", "warmup_ratio": 0.05,
                "grad_accum": 1, "logging_steps": 1, "seed": 42, "precision": "fp32", "gradient_checkpointing": "off"}
DPO = {"beta": 0.1, "loss_type": "sigmoid", "label_smoothing": 0.0, "sft_weight": 1.0}
CASES = {
    "tiny": {
        "label": "tests/tiny_model.py Llama",
        "peft": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
        "train": {**COMMON_TRAIN, "max_steps": 40, "batch_size": 4, "max_length": 128, "save_steps": 20},
    },
    "bundled": {
        "label": "SmolLM2-135M-Instruct",
        "peft": {"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
        "train": {**COMMON_TRAIN, "max_steps": 10, "batch_size": 4, "max_length": 256, "save_steps": 5},
    },
}


def prepare_case(case: str, scratch: Path) -> dict:
    """The model folder, and the DPO rows exactly as the studio's DPO stage loads them (the plain side's input)."""
    from pipelines.data.store import load_stage_rows

    spec = CASES[case]
    model_spec, model_dir = model_folder(case, scratch)
    rows = load_stage_rows(DATASET, scratch / "rows-workspace", "dpo", spec["train"]["seed"])
    rows_path = scratch / f"{case}-preference.jsonl"
    rows_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return {**spec, "case": case, "model_spec": model_spec, "model_dir": str(model_dir), "rows_path": rows_path,
            "dataset_source": f"{DATASET} (bundled sample)", "rows": len(rows), "dpo": DPO}


def numeric_steps(records) -> dict:
    """{step: {compared key: value}} for the logged training steps."""
    return {str(r["step"]): {k: r[k] for k in COMPARED if k in r} for r in records if "loss" in r}


def run_studio(prepared: dict, folder: Path) -> dict:
    """`python -m pipelines --workspace W train config.yaml` with `stage: dpo` on the bundled preference sample."""
    import yaml

    workspace = folder / "workspace"
    workspace.mkdir(parents=True)
    config = {"name": f"bench-dpo-{prepared['case']}", "stage": "dpo", "model": prepared["model_spec"],
              "dataset": DATASET, "peft": prepared["peft"], "train": prepared["train"], "dpo": prepared["dpo"]}
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    command = [sys.executable, "-m", "pipelines", "--workspace", str(workspace), "train", str(config_path)]
    measured = measure(command, folder / "stdout.log")
    run_dir = workspace / "runs" / config["name"]
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    if status.get("status") != "completed":
        raise SystemExit(f"studio run ended {status.get('status')}: {status.get('error')}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return {**measured, "train_s": status["summary"]["train_runtime"], "logged": numeric_steps(records),
            "checkpoints": checkpoint_names(run_dir / "checkpoints"),
            "args_file": str(run_dir / "checkpoints" / f"checkpoint-{prepared['train']['max_steps']}" / "training_args.bin"),
            "adapter_config": json.loads((run_dir / "final" / "adapter_config.json").read_text(encoding="utf-8"))}


def run_plain(prepared: dict, folder: Path) -> dict:
    """`python bench/plain_dpo.py job.json` on the same model, rows and settings."""
    job = {"model_dir": prepared["model_dir"], "rows": str(prepared["rows_path"]), "output_dir": str(folder / "out"),
           "peft": prepared["peft"], "train": prepared["train"], "dpo": prepared["dpo"], "result": str(folder / "result.json")}
    folder.mkdir(parents=True)
    job_path = folder / "job.json"
    job_path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    measured = measure([sys.executable, str(BENCH_DIR / "plain_dpo.py"), str(job_path)], folder / "stdout.log")
    result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    out = folder / "out"
    logged = {step: {k: v for k, v in values.items() if k in COMPARED} for step, values in result["logged"].items()}
    return {**measured, "train_s": result["summary"]["train_runtime"], "logged": logged,
            "checkpoints": checkpoint_names(out / "checkpoints"),
            "args_file": str(out / "checkpoints" / f"checkpoint-{prepared['train']['max_steps']}" / "training_args.bin"),
            "adapter_config": json.loads((out / "final" / "adapter_config.json").read_text(encoding="utf-8"))}


def logged_gap(studio: dict, plain: dict) -> dict | None:
    """Largest |studio - plain| per compared value over the steps both logged; None if they logged different steps
    or different values."""
    if set(studio) != set(plain) or any(set(studio[s]) != set(plain[s]) for s in studio):
        return None
    keys = sorted({k for values in studio.values() for k in values})
    return {k: max(abs(float(studio[s][k]) - float(plain[s][k])) for s in studio if k in studio[s]) for k in keys}


def fairness(studio_runs: list[dict], plain_runs: list[dict]) -> dict:
    studio, plain = studio_runs[0], plain_runs[0]
    gaps = [logged_gap(s["logged"], p["logged"]) for s in studio_runs for p in plain_runs]
    comparable = [g for g in gaps if g is not None]
    keys = sorted({k for g in comparable for k in g})
    return {"training_args_differences": args_differences(studio["args_file"], plain["args_file"]),
            "adapter_config_differences": adapter_differences(studio["adapter_config"], plain["adapter_config"]),
            "same_checkpoints": all(r["checkpoints"] == studio["checkpoints"] for r in studio_runs + plain_runs),
            "checkpoints": studio["checkpoints"],
            "same_logged_steps_and_values": len(comparable) == len(gaps),
            "max_logged_gap": {k: max(g[k] for g in comparable) for k in keys},
            "logged_steps": len(studio["logged"]),
            "last_step": studio["logged"].get(str(max(map(int, studio["logged"])))) if studio["logged"] else None}


def warm_up() -> None:
    """Import the heavy libraries once, untimed, so neither side pays for a cold file cache."""
    subprocess.run([sys.executable, "-c", "import torch, transformers, datasets, peft, trl.trainer.dpo_trainer"],
                   check=True, cwd=REPO_ROOT)


def bench_case(case: str, repeats: int, quiet_wait_s: float, scratch: Path, max_noise: float, retries: int) -> dict:
    prepared = prepare_case(case, scratch)
    runs = {"studio": [], "plain": []}
    discarded = {"studio": [], "plain": []}
    for rep in range(repeats):
        for side, runner in (("studio", run_studio), ("plain", run_plain)):
            for attempt in range(retries + 1):
                quiet = wait_for_quiet(quiet_wait_s)
                result = {**runner(prepared, scratch / f"{case}-{side}-{rep}-{attempt}"), **quiet}
                result["setup_s"] = result["wall_s"] - result["train_s"]
                noisy = result["others_share"] > max_noise
                print(f"  {case} {side} #{rep + 1}: wall {result['wall_s']:.1f} s, train {result['train_s']:.1f} s, "
                      f"cpu {result['cpu_s']:.1f} s, peak {result['peak_rss_mb']:.0f} MB; other processes used "
                      f"{result['others_share']:.0%} of the cores meanwhile (waited {quiet['waited_s']:.0f} s for quiet)"
                      + ("; over --max-noise, " + ("run again" if attempt < retries else "kept (no retries left)")
                         if noisy else ""), flush=True)
                if noisy and attempt < retries:
                    discarded[side].append({k: result[k] for k in (*METRICS, "others_share")})
                    continue
                runs[side].append(result)
                break
    settings = {k: prepared[k] for k in ("label", "model_spec", "model_dir", "dataset_source", "rows", "peft", "train", "dpo")}
    return {"repeats": repeats, "threads": os.environ.get("OMP_NUM_THREADS", "torch default"), "max_noise": max_noise,
            "settings": settings, **summarise(runs), "discarded_noisy": discarded,
            "fairness": fairness(runs["studio"], runs["plain"])}


def markdown(case: str, result: dict) -> str:
    s = result["settings"]
    lines = [f"### DPO {case} ({s['label']}): LoRA r={s['peft']['r']}, {s['train']['max_steps']} steps, "
             f"batch {s['train']['batch_size']} pairs, max_length {s['train']['max_length']}, lr {s['train']['learning_rate']:g}, "
             f"beta {s['dpo']['beta']}, {s['dpo']['loss_type']}, {result['repeats']} runs per side, "
             f"torch threads: {result['threads']}",
             "", *metric_table(result)]
    f = result["fairness"]
    gaps = ", ".join(f"{k} {v:.3g}" for k, v in f["max_logged_gap"].items()) or "n/a"
    lines += ["", f"Target: ratio ≤ {1 + TARGET_OVERHEAD:.2f}. Same settings: training_args differences "
              f"{f['training_args_differences'] or 'none'}; adapter_config differences {f['adapter_config_differences'] or 'none'}; "
              f"checkpoints {'same' if f['same_checkpoints'] else 'DIFFERENT'} ({', '.join(f['checkpoints'])}); "
              f"logged steps and values {'same' if f['same_logged_steps_and_values'] else 'DIFFERENT'} "
              f"({f['logged_steps']} steps); largest gap per value over all run pairs: {gaps}. Runs repeated because "
              f"other processes used over {result['max_noise']:.0%} of the cores: "
              f"{len(result['discarded_noisy']['studio'])} studio, {len(result['discarded_noisy']['plain'])} plain; "
              f"others' share in the kept runs: up to {max(r['others_share'] for rows in result['samples'].values() for r in rows):.0%}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,bundled", help="Comma-separated cases: tiny, bundled.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per side, alternating studio and plain.")
    add_quiet_arguments(parser, noisy_reruns=True)
    parser.add_argument("--threads", type=int, default=0,
                        help="Torch threads for both sides (OMP_NUM_THREADS); 0 leaves torch's default (all cores).")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder (runs, logs) for inspection.")
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    cases = chosen_cases(parser, args.models, CASES)
    scratch = Path(tempfile.mkdtemp(prefix="dpo-overhead-"))
    try:
        warm_up()
        results = {}
        for case in cases:
            print(f"{case}: {args.repeats} × (studio, plain) in {scratch}", flush=True)
            results[case] = bench_case(case, args.repeats, args.quiet_wait, scratch, args.max_noise, args.retries)
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

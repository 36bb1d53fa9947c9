"""What the studio costs on top of bare TRL: one SFT run through `python -m pipelines train`, against
bench/plain_sft.py, a plain script that calls TRL's SFTTrainer directly with identical settings.

Identical means: the same model folder, the same rows (the studio's own normaliser turns the Alpaca
file into the `messages` rows the plain script reads), the same LoRA (r, alpha, dropout, all-linear),
the same SFTConfig values (those of pipelines/stages/common.common_training_args, plus max_length and
assistant_only_loss), the same seed and save_steps (so both save the same checkpoints), fp32 on CPU,
no gradient checkpointing (CUDA_VISIBLE_DEVICES is emptied for both). After the runs the script checks it: the two saved training_args.bin must
agree (output paths aside) and the logged losses must match step by step.

Each side runs in its own fresh Python process, alternating (studio, plain, studio, plain, ...), and
for each we measure:
    wall_s       the whole process, from start to exit (imports, validation, loading, training, saving)
    train_s      train_runtime as the Trainer itself reports it (the time inside trainer.train())
    setup_s      wall_s - train_s: imports, loading, data preparation, the final save
    cpu_s        user + system CPU time of the child (less sensitive than wall time to other load)
    peak_rss_mb  the child's peak resident memory (os.wait4's ru_maxrss)
The machine is shared, and on 2 cores a busy neighbour can slow torch's threads tenfold; so before each
run we wait (up to --quiet-wait s) for the cores to be idle, we record how much CPU other processes
took during the run, and we report the fastest run of each side beside the median.

    ALIGNMENT_STUDIO_CACHE=/tmp/cache-test python bench/sft_overhead.py --models tiny,bundled --repeats 2

Prints markdown tables (medians, minima, and studio/plain ratios against the 3% target) and writes
bench/results/sft_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))  # the driver reuses the studio's normaliser, tiny model and bundled model

from bench.machine import add_quiet_arguments, chosen_cases, describe_machine, measure_process, wait_for_quiet  # noqa: E402
RESULTS = BENCH_DIR / "results" / "sft_overhead.json"
TARGET_OVERHEAD = 0.03
METRICS = ("wall_s", "train_s", "setup_s", "cpu_s", "peak_rss_mb")

# Settings both sides share; each case below adds its own.
COMMON_TRAIN = {"epochs": 1.0, "learning_rate": 2.0e-4, "lr_scheduler": "cosine", "warmup_ratio": 0.05,
                "grad_accum": 1, "logging_steps": 1, "seed": 42, "precision": "fp32", "gradient_checkpointing": "off"}
CASES = {
    "tiny": {
        "label": "tests/tiny_model.py Llama",
        "peft": {"method": "lora", "r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
        "train": {**COMMON_TRAIN, "max_steps": 40, "batch_size": 4, "max_length": 128, "save_steps": 20},
        "rows": 64,
    },
    "bundled": {
        "label": "SmolLM2-135M-Instruct",
        "peft": {"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
        "train": {**COMMON_TRAIN, "max_steps": 10, "batch_size": 4, "max_length": 256, "save_steps": 5},
        "rows": 64,
    },
}
# Keys of the saved TrainingArguments that name paths and so differ by construction.
PATH_KEYS = {"output_dir", "logging_dir", "run_name"}


# --- the data ------------------------------------------------------------------------------------

def alpaca_rows(case: str, n: int) -> tuple[list[dict], str]:
    """The bundled-model sample if the repository has it, else `n` generated Alpaca rows of varied length."""
    sample = REPO_ROOT / "assets" / "datasets" / "alpaca-en-sample.json"
    if case == "bundled" and sample.is_file():
        return json.loads(sample.read_text(encoding="utf-8")), str(sample.relative_to(REPO_ROOT))
    return generated_alpaca(n), f"generated ({n} rows)"


def generated_alpaca(n: int) -> list[dict]:
    rng = random.Random(0)
    topics = ["the water cycle", "photosynthesis", "a healthy breakfast", "prime numbers", "the French revolution",
              "how a bicycle works", "saving money", "learning a language", "the moon", "recycling plastic"]
    asks = ["Explain {t} in simple words.", "Give three facts about {t}.", "Write a short poem about {t}.",
            "Summarise what people should know about {t}."]
    sentences = ["It is easier to understand with an example.", "Many people find this surprising at first.",
                 "The key idea fits in one sentence.", "Scientists have studied this for a long time.",
                 "A small change can make a large difference.", "Practice makes the details clear."]
    rows = []
    for i in range(n):
        topic = topics[i % len(topics)]
        extra = f"Keep it under {rng.randint(2, 6) * 10} words." if i % 3 == 0 else ""
        answer = f"Here is something about {topic}. " + " ".join(rng.choice(sentences) for _ in range(rng.randint(1, 8)))
        rows.append({"instruction": asks[i % len(asks)].format(t=topic), "input": extra, "output": answer})
    return rows


def model_folder(case: str, scratch: Path) -> tuple[str, Path]:
    """(what the studio config names, the folder the plain script loads) for a case."""
    if case == "tiny":
        from tests.tiny_model import build_tiny_model
        folder = build_tiny_model(scratch / "tiny-model")
        return str(folder), folder
    from pipelines.bundled import bundled_model_dir
    from pipelines.config import BUNDLED_MODEL_ID
    return BUNDLED_MODEL_ID, bundled_model_dir()


def prepare_case(case: str, scratch: Path) -> dict:
    """Write the model, the Alpaca file (studio input) and its normalised messages rows (plain input)."""
    from pipelines.data.formats import normalise_instruction

    spec = CASES[case]
    model_spec, model_dir = model_folder(case, scratch)
    rows, source = alpaca_rows(case, spec["rows"])
    normalised = normalise_instruction(rows)
    if normalised.errors:
        raise SystemExit(f"{case}: the dataset has bad rows: {normalised.errors[0]}")
    alpaca_path, messages_path = scratch / f"{case}-alpaca.json", scratch / f"{case}-messages.jsonl"
    alpaca_path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    messages_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in normalised.rows), encoding="utf-8")
    return {**spec, "case": case, "model_spec": model_spec, "model_dir": str(model_dir), "alpaca": alpaca_path,
            "messages": messages_path, "dataset_source": source, "rows": len(rows)}


# --- one measured process ------------------------------------------------------------------------

def measure(command: list[str], log_path: Path) -> dict:
    """Run `command` to completion; its wall time, CPU time and peak RSS (this child only, from wait4)."""
    # CPU on both sides even where a GPU exists: the plain script is written for CPU (use_cpu, fp32).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT),
           "CUDA_VISIBLE_DEVICES": ""}
    return measure_process(command, log_path, env, REPO_ROOT)


def run_studio(prepared: dict, folder: Path) -> dict:
    """`python -m pipelines --workspace W train config.yaml`, the dataset a file inside the workspace."""
    import yaml

    workspace = folder / "workspace"
    (workspace / "data").mkdir(parents=True)
    shutil.copy(prepared["alpaca"], workspace / "data" / "train.json")
    config = {"name": f"bench-{prepared['case']}", "stage": "sft", "model": prepared["model_spec"],
              "dataset": "data/train.json", "peft": prepared["peft"], "train": prepared["train"]}
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    command = [sys.executable, "-m", "pipelines", "--workspace", str(workspace), "train", str(config_path)]
    measured = measure(command, folder / "stdout.log")
    run_dir = workspace / "runs" / config["name"]
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    if status.get("status") != "completed":
        raise SystemExit(f"studio run ended {status.get('status')}: {status.get('error')}")
    losses = {}
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "loss" in record:
            losses[str(record["step"])] = record["loss"]
    return {**measured, "train_s": status["summary"]["train_runtime"], "losses": losses,
            "checkpoints": checkpoint_names(run_dir / "checkpoints"),
            "args_file": str(run_dir / "checkpoints" / f"checkpoint-{prepared['train']['max_steps']}" / "training_args.bin"),
            "adapter_config": json.loads((run_dir / "final" / "adapter_config.json").read_text(encoding="utf-8"))}


def run_plain(prepared: dict, folder: Path) -> dict:
    """`python bench/plain_sft.py job.json` on the same model, rows and settings."""
    job = {"model_dir": prepared["model_dir"], "rows": str(prepared["messages"]), "output_dir": str(folder / "out"),
           "peft": prepared["peft"], "train": prepared["train"], "result": str(folder / "result.json")}
    job_path = folder / "job.json"
    folder.mkdir(parents=True)
    job_path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    measured = measure([sys.executable, str(BENCH_DIR / "plain_sft.py"), str(job_path)], folder / "stdout.log")
    result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    out = folder / "out"
    return {**measured, "train_s": result["summary"]["train_runtime"], "losses": result["losses"],
            "checkpoints": checkpoint_names(out / "checkpoints"),
            "args_file": str(out / "checkpoints" / f"checkpoint-{prepared['train']['max_steps']}" / "training_args.bin"),
            "adapter_config": json.loads((out / "final" / "adapter_config.json").read_text(encoding="utf-8"))}


# --- fairness checks -----------------------------------------------------------------------------

def checkpoint_names(folder: Path) -> list[str]:
    """checkpoint-<step> folders in step order."""
    found = [p.name for p in folder.iterdir() if p.is_dir() and p.name.startswith("checkpoint-")]
    return sorted(found, key=lambda name: int(name.split("-")[1]))


def args_differences(studio_file: str, plain_file: str) -> dict:
    """TrainingArguments fields whose saved values differ between the two sides (paths aside)."""
    import torch

    studio = torch.load(studio_file, weights_only=False).to_dict()
    plain = torch.load(plain_file, weights_only=False).to_dict()
    return {k: [studio.get(k), plain.get(k)] for k in sorted(set(studio) | set(plain))
            if k not in PATH_KEYS and studio.get(k) != plain.get(k)}


def adapter_differences(studio: dict, plain: dict) -> dict:
    """adapter_config.json fields that differ; target_modules is a set whose saved order varies run to run."""
    ignore = {"base_model_name_or_path", "revision"}
    def value(config: dict, key: str):
        return sorted(config[key]) if key == "target_modules" and isinstance(config.get(key), list) else config.get(key)
    return {k: [value(studio, k), value(plain, k)] for k in sorted(set(studio) | set(plain))
            if k not in ignore and value(studio, k) != value(plain, k)}


def loss_gap(studio: dict, plain: dict) -> float | None:
    """Largest |studio - plain| logged loss over the steps both logged; None if they logged different steps."""
    if set(studio) != set(plain):
        return None
    return max(abs(float(studio[s]) - float(plain[s])) for s in studio)


def fairness(studio_runs: list[dict], plain_runs: list[dict]) -> dict:
    studio, plain = studio_runs[0], plain_runs[0]
    return {"training_args_differences": args_differences(studio["args_file"], plain["args_file"]),
            "adapter_config_differences": adapter_differences(studio["adapter_config"], plain["adapter_config"]),
            "same_checkpoints": studio["checkpoints"] == plain["checkpoints"], "checkpoints": studio["checkpoints"],
            "max_loss_gap": max((g for g in (loss_gap(s["losses"], p["losses"]) for s in studio_runs for p in plain_runs)
                                 if g is not None), default=None),
            "logged_steps": len(studio["losses"])}


# --- the benchmark -------------------------------------------------------------------------------

def warm_up() -> None:
    """Import the heavy libraries once, untimed, so neither side pays for a cold file cache."""
    subprocess.run([sys.executable, "-c", "import torch, transformers, datasets, peft, trl.trainer.sft_trainer"],
                   check=True, cwd=REPO_ROOT)


def bench_case(case: str, repeats: int, quiet_wait_s: float, scratch: Path) -> dict:
    prepared = prepare_case(case, scratch)
    runs = {"studio": [], "plain": []}
    for rep in range(repeats):
        for side, runner in (("studio", run_studio), ("plain", run_plain)):
            quiet = wait_for_quiet(quiet_wait_s)
            result = {**runner(prepared, scratch / f"{case}-{side}-{rep}"), **quiet}
            result["setup_s"] = result["wall_s"] - result["train_s"]
            runs[side].append(result)
            print(f"  {case} {side} #{rep + 1}: wall {result['wall_s']:.1f} s, train {result['train_s']:.1f} s, "
                  f"cpu {result['cpu_s']:.1f} s, peak {result['peak_rss_mb']:.0f} MB; other processes used "
                  f"{result['others_share']:.0%} of the cores meanwhile (waited {quiet['waited_s']:.0f} s for quiet)",
                  flush=True)
    settings = {k: prepared[k] for k in ("label", "model_spec", "model_dir", "dataset_source", "rows", "peft", "train")}
    return {"repeats": repeats, "settings": settings, **summarise(runs), "fairness": fairness(runs["studio"], runs["plain"])}


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Median and fastest of each metric per side, studio ÷ plain for both, and the kept samples."""
    stats = {how: {side: {m: pick(r[m] for r in rows) for m in METRICS} for side, rows in runs.items()}
             for how, pick in (("median", statistics.median), ("min", min))}
    ratios = {how: {m: stats[how]["studio"][m] / stats[how]["plain"][m] for m in METRICS} for how in stats}
    samples = {side: [{k: r[k] for k in (*METRICS, "others_share", "waited_s", "busy_before")} for r in rows]
               for side, rows in runs.items()}
    return {**stats, "ratios": ratios, "samples": samples}


def metric_table(result: dict) -> list[str]:
    """The markdown table of every metric: medians, fastest runs and their studio ÷ plain ratios."""
    median, fastest, ratios = result["median"], result["min"], result["ratios"]
    labels = {"wall_s": "wall time, whole process (s)", "train_s": "inside trainer.train() (s)",
              "setup_s": "outside train(): imports, load, save (s)", "cpu_s": "CPU time, user + system (s)",
              "peak_rss_mb": "peak RSS (MB)"}
    lines = ["| metric | studio median | plain median | ratio | studio min | plain min | ratio of mins |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for m in METRICS:
        fmt = "{:.0f}" if m == "peak_rss_mb" else "{:.2f}"
        lines.append(f"| {labels[m]} | {fmt.format(median['studio'][m])} | {fmt.format(median['plain'][m])} "
                     f"| {ratios['median'][m]:.3f} | {fmt.format(fastest['studio'][m])} | {fmt.format(fastest['plain'][m])} "
                     f"| {ratios['min'][m]:.3f} |")
    return lines


def markdown(case: str, result: dict) -> str:
    s = result["settings"]
    lines = [f"### {case} ({s['label']}): LoRA r={s['peft']['r']}, {s['train']['max_steps']} steps, "
             f"batch {s['train']['batch_size']}, max_length {s['train']['max_length']}, {result['repeats']} runs per side",
             "", *metric_table(result)]
    f = result["fairness"]
    lines += ["", f"Target: ratio ≤ {1 + TARGET_OVERHEAD:.2f}. Same settings: training_args differences "
              f"{f['training_args_differences'] or 'none'}; adapter_config differences {f['adapter_config_differences'] or 'none'}; "
              f"checkpoints {'same' if f['same_checkpoints'] else 'DIFFERENT'} ({', '.join(f['checkpoints'])}); "
              f"largest loss gap over {f['logged_steps']} logged steps: {f['max_loss_gap']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,bundled", help="Comma-separated cases: tiny, bundled.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per side, alternating studio and plain.")
    add_quiet_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder (runs, logs) for inspection.")
    args = parser.parse_args(argv)
    cases = chosen_cases(parser, args.models, CASES)
    scratch = Path(tempfile.mkdtemp(prefix="sft-overhead-"))
    try:
        warm_up()
        results = {}
        for case in cases:
            print(f"{case}: {args.repeats} × (studio, plain) in {scratch}", flush=True)
            results[case] = bench_case(case, args.repeats, args.quiet_wait, scratch)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print()
    for case, result in results.items():
        print(markdown(case, result) + "\n")
    write_results(results)
    return 0


def write_results(results: dict, path: Path = RESULTS) -> None:
    """Merge these cases into `path` (bench/results/sft_overhead.json; dpo_overhead.py passes its own), so
    `--models bundled` keeps the tiny numbers."""
    import peft
    import torch
    import transformers
    import trl

    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    document = {"machine": describe_machine(),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "trl": trl.__version__, "peft": peft.__version__},
                "target_overhead": TARGET_OVERHEAD,
                "cases": {**previous.get("cases", {}), **{case: {"date": now, **r} for case, r in results.items()}}}
    path.write_text(json.dumps(document, indent=1, default=str), encoding="utf-8")
    print(f"wrote {path.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())

"""ORPO with the studio's compact head against TRL's ORPOTrainer as TRL ships it: pairs per second, the loss of every
step side by side, and peak memory.

Both sides are the same script (this one, `--side`), each in a fresh process: TRL's experimental ORPOTrainer with
the bundled model, the bundled preference sample as the ORPO stage loads it, LoRA r=16 on every linear layer,
batch 4, 10 steps, lr 1e-4 constant, seed 42, no gradient checkpointing, CPU; `--side studio` then calls
pipelines.stages.batching.speed_up on the built trainer, which is all the studio's ORPO stage changes about the
computation (pipelines/stages/orpo.py). The batches are the same pairs in the same order, so the loss of each step
agrees within float noise.

    python bench/orpo_speed.py --repeats 1 --precision bf16,fp32

Pairs per second = steps × batch ÷ the trainer's own train_runtime. Prints a markdown table and writes
bench/results/orpo_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.machine import add_quiet_arguments, describe_machine, measure_process, wait_for_quiet  # noqa: E402

RESULTS = BENCH_DIR / "results" / "orpo_speed.json"
DATASET = "preference-en-sample"
SETTINGS = {"steps": 10, "batch_size": 4, "learning_rate": 1e-4, "beta": 0.1, "max_length": 512, "seed": 42,
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}}


def train_one_side(side: str, precision: str, folder: Path) -> dict:
    """In this process: build TRL's ORPOTrainer, make it the studio's (side studio), train, report."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.data.store import load_stage_rows
    from pipelines.bundled import bundled_model_dir
    from pipelines.stages import batching
    from pipelines.stages.orpo import orpo_classes

    ORPOConfig, ORPOTrainer = orpo_classes()
    torch.set_num_threads(os.cpu_count() or 1)
    model_dir = bundled_model_dir(progress=lambda _: None)
    rows = load_stage_rows(DATASET, folder / "workspace", "orpo", SETTINGS["seed"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True)
    lora = SETTINGS["lora"]
    args = ORPOConfig(output_dir=str(folder / "out"), max_steps=SETTINGS["steps"],
                      per_device_train_batch_size=SETTINGS["batch_size"], learning_rate=SETTINGS["learning_rate"],
                      lr_scheduler_type="constant", beta=SETTINGS["beta"], max_length=SETTINGS["max_length"],
                      seed=SETTINGS["seed"], logging_steps=1, save_strategy="no", report_to=[], disable_tqdm=True,
                      use_cpu=True, bf16=precision == "bf16", gradient_checkpointing=False,
                      dataloader_num_workers=0)
    trainer = ORPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          peft_config=LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                                 target_modules=lora["target_modules"], task_type="CAUSAL_LM"))
    changes = batching.speed_up(trainer, "cpu") if side == "studio" else []
    output = trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"side": side, "precision": precision, "changes": changes, "train_s": output.metrics["train_runtime"],
            "losses": losses}


def run_side(side: str, precision: str, folder: Path) -> dict:
    folder.mkdir(parents=True)
    result_path = folder / "result.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--precision", precision,
               "--result", str(result_path), "--folder", str(folder)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)}
    measured = measure_process(command, folder / "stdout.log", env, REPO_ROOT)
    result = {**measured, **json.loads(result_path.read_text(encoding="utf-8"))}
    result["pairs_per_s"] = SETTINGS["steps"] * SETTINGS["batch_size"] / result["train_s"]
    return result


def bench(precision: str, repeats: int, quiet_wait_s: float, scratch: Path) -> dict:
    runs = {"studio": [], "trl": []}
    for rep in range(repeats):
        for side in ("studio", "trl"):
            quiet = wait_for_quiet(quiet_wait_s)
            runs[side].append({**run_side(side, precision, scratch / f"{precision}-{side}-{rep}"), **quiet})
            r = runs[side][-1]
            print(f"  {precision} {side} #{rep + 1}: {r['pairs_per_s']:.3f} pairs/s, train {r['train_s']:.1f} s, "
                  f"peak {r['peak_rss_mb']:.0f} MB", flush=True)
    median = {side: {key: statistics.median(r[key] for r in rs) for key in ("pairs_per_s", "train_s", "peak_rss_mb")}
              for side, rs in runs.items()}
    gaps = [max(abs(a - b) for a, b in zip(s["losses"], t["losses"])) for s, t in zip(runs["studio"], runs["trl"])]
    return {"median": median, "runs": runs, "largest_loss_gap": max(gaps),
            "ratios": {"pairs_per_s": median["studio"]["pairs_per_s"] / median["trl"]["pairs_per_s"],
                       "peak_rss_mb": median["studio"]["peak_rss_mb"] / median["trl"]["peak_rss_mb"]}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="Runs per side, alternating studio and TRL.")
    parser.add_argument("--precision", default="bf16,fp32", help="Comma-separated: bf16, fp32 (both sides alike).")
    parser.add_argument("--side", choices=("studio", "trl"), help=argparse.SUPPRESS)   # a child process
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    add_quiet_arguments(parser)
    args = parser.parse_args()
    if args.side:
        result = train_one_side(args.side, args.precision, Path(args.folder))
        Path(args.result).write_text(json.dumps(result), encoding="utf-8")
        return 0
    scratch = Path(tempfile.mkdtemp(prefix="orpo-speed-"))
    try:
        results = {p: bench(p, args.repeats, args.quiet_wait, scratch) for p in args.precision.split(",")}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    import torch
    import transformers
    import trl

    document = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": describe_machine(),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "trl": trl.__version__},
                "settings": {**SETTINGS, "dataset": DATASET, "repeats": args.repeats}, "precisions": results}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=1), encoding="utf-8")
    print("\n| precision | studio pairs/s | TRL pairs/s | studio ÷ TRL | peak RSS studio / TRL | largest loss gap |")
    print("|---|---:|---:|---:|---:|---:|")
    for precision, r in results.items():
        m = r["median"]
        print(f"| {precision} | {m['studio']['pairs_per_s']:.3f} | {m['trl']['pairs_per_s']:.3f} | "
              f"{r['ratios']['pairs_per_s']:.2f} | {m['studio']['peak_rss_mb']:.0f} / {m['trl']['peak_rss_mb']:.0f} MB "
              f"({r['ratios']['peak_rss_mb']:.2f}) | {r['largest_loss_gap']:.2g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

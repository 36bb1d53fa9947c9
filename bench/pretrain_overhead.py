"""What the studio costs on top of bare TRL for continued pretraining: one `stage: pretrain` run through
`python -m pipelines train`, against bench/plain_pretrain.py, a plain script that calls TRL's SFTTrainer directly
on the same packed text with identical settings.

Identical means: the same model folder; the same documents (one JSONL file of {"text": ...} rows, which the studio
reads as a dataset file inside its workspace and the plain script reads directly); the same tokenisation (each
document as written, add_special_tokens=False, then the end-of-text id) and packing (packing=True,
packing_strategy="wrapped", blocks of max_length); the same LoRA (r, alpha, dropout, all-linear); the SFTConfig
values of pipelines/stages/common.common_training_args on CPU fp32 with no gradient checkpointing; seed and
save_steps the same (so both save the same checkpoints); `pretrain.held_out: 0` and no eval dataset on the studio
side, so neither side evaluates (the plain side has no held-out split either). CUDA_VISIBLE_DEVICES is emptied for
both. After the runs the script checks it: the two saved training_args.bin must agree (output paths aside), the two
adapter configs must agree, both must hold the same checkpoints, and the logged loss must match step by step.

Each side runs in its own fresh Python process, alternating (studio, plain, studio, plain, ...), after waiting for
quiet cores (bench/machine.py); per run:
    wall_s        the whole process (imports, validation, loading, tokenising, packing, training, saving)
    train_s       train_runtime as the Trainer reports it (inside trainer.train())
    setup_s       wall_s - train_s
    cpu_s         user + system CPU time of the child
    peak_rss_mb   the child's peak resident memory
    tokens_per_s  tokens trained (the Trainer's own num_tokens at the last step: blocks × max_length, the last
                  block of the corpus shorter) ÷ train_s

    python bench/pretrain_overhead.py --models tiny,bundled --repeats 3

Flags: --models (tiny, bundled), --repeats N (runs per side), --quiet-wait S, --keep (keep the scratch folder).
Prints markdown tables (medians, minima, studio/plain ratios against the 3% target) and merges the cases into
bench/results/pretrain_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.machine import add_quiet_arguments, chosen_cases, wait_for_quiet  # noqa: E402
from bench.sft_overhead import (adapter_differences, args_differences, checkpoint_names, loss_gap, measure,  # noqa: E402
                                model_folder, warm_up, write_results)

RESULTS = BENCH_DIR / "results" / "pretrain_overhead.json"
TARGET_OVERHEAD = 0.03
METRICS = ("wall_s", "train_s", "setup_s", "cpu_s", "peak_rss_mb", "tokens_per_s")

COMMON_TRAIN = {"epochs": 1.0, "learning_rate": 2.0e-4, "lr_scheduler": "cosine", "warmup_ratio": 0.05,
                "grad_accum": 1, "logging_steps": 1, "seed": 42, "precision": "fp32", "gradient_checkpointing": "off"}
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


# --- the data ------------------------------------------------------------------------------------

def corpus_documents() -> tuple[list[str], str]:
    """The bundled English corpus if the repository has it, else generated documents (said so in the results)."""
    sample = REPO_ROOT / "assets" / "datasets" / "corpus-en-sample.json"
    if sample.is_file():
        return [row["text"] for row in json.loads(sample.read_text(encoding="utf-8"))], str(sample.relative_to(REPO_ROOT))
    return generated_documents(120), "generated (120 documents)"


def generated_documents(n: int, seed: int = 0) -> list[str]:
    """Seeded paragraphs of plain English, 3–12 sentences each, so documents vary in length."""
    rng = random.Random(seed)
    subjects = ["The beekeeper", "A small bakery", "The river", "Our team", "The old library", "A new student",
                "The council", "The garden", "The museum", "A farmer"]
    verbs = ["checked", "opened", "rebuilt", "described", "measured", "cleaned", "planned", "painted", "visited"]
    objects = ["the north wall", "every hive", "the morning shift", "a long report", "the stone bridge",
               "the winter stores", "three new rooms", "the flood records", "the spring market"]
    endings = ["before noon.", "after the rain.", "for the second time.", "with great care.", "in one week.",
               "as the records show.", "without any help."]
    return [" ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(endings)}"
                     for _ in range(rng.randint(3, 12))) for _ in range(n)]


def prepare_case(case: str, scratch: Path) -> dict:
    """Write the model (tiny) and the corpus JSONL both sides read."""
    spec = CASES[case]
    model_spec, model_dir = model_folder(case, scratch)
    documents, source = corpus_documents()
    corpus = scratch / f"{case}-corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in documents), encoding="utf-8")
    return {**spec, "case": case, "model_spec": model_spec, "model_dir": str(model_dir), "corpus": corpus,
            "dataset_source": source, "documents": len(documents)}


# --- one measured process per side ---------------------------------------------------------------

def run_studio(prepared: dict, folder: Path) -> dict:
    """`python -m pipelines --workspace W train config.yaml`, stage pretrain, the corpus a file in the workspace."""
    import yaml

    workspace = folder / "workspace"
    (workspace / "data").mkdir(parents=True)
    shutil.copy(prepared["corpus"], workspace / "data" / "corpus.jsonl")
    config = {"name": f"bench-{prepared['case']}", "stage": "pretrain", "model": prepared["model_spec"],
              "dataset": "data/corpus.jsonl", "peft": prepared["peft"], "train": prepared["train"],
              "pretrain": {"held_out": 0.0}}
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    command = [sys.executable, "-m", "pipelines", "--workspace", str(workspace), "train", str(config_path)]
    measured = measure(command, folder / "stdout.log")
    run_dir = workspace / "runs" / config["name"]
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    if status.get("status") != "completed":
        raise SystemExit(f"studio run ended {status.get('status')}: {status.get('error')}")
    losses, tokens = {}, None
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "loss" in record:
            losses[str(record["step"])] = record["loss"]
            tokens = record.get("num_tokens", tokens)
    return {**measured, "train_s": status["summary"]["train_runtime"], "losses": losses, "num_tokens": tokens,
            "checkpoints": checkpoint_names(run_dir / "checkpoints"),
            "args_file": str(run_dir / "checkpoints" / f"checkpoint-{prepared['train']['max_steps']}" / "training_args.bin"),
            "adapter_config": json.loads((run_dir / "final" / "adapter_config.json").read_text(encoding="utf-8")),
            "log_line": next((l for l in (run_dir / "train.log").read_text(encoding="utf-8").splitlines()
                              if l.startswith("Continued pretraining")), "")}


def run_plain(prepared: dict, folder: Path) -> dict:
    """`python bench/plain_pretrain.py job.json` on the same model, corpus and settings."""
    job = {"model_dir": prepared["model_dir"], "corpus": str(prepared["corpus"]), "output_dir": str(folder / "out"),
           "peft": prepared["peft"], "train": prepared["train"], "result": str(folder / "result.json")}
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps(job, indent=1), encoding="utf-8")
    measured = measure([sys.executable, str(BENCH_DIR / "plain_pretrain.py"), str(folder / "job.json")],
                       folder / "stdout.log")
    result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    out = folder / "out"
    return {**measured, "train_s": result["summary"]["train_runtime"], "losses": result["losses"],
            "num_tokens": result["num_tokens"], "blocks": result["blocks"], "block_lengths": result["block_lengths"],
            "checkpoints": checkpoint_names(out / "checkpoints"),
            "args_file": str(out / "checkpoints" / f"checkpoint-{prepared['train']['max_steps']}" / "training_args.bin"),
            "adapter_config": json.loads((out / "final" / "adapter_config.json").read_text(encoding="utf-8"))}


# --- the benchmark -------------------------------------------------------------------------------

def fairness(studio_runs: list[dict], plain_runs: list[dict]) -> dict:
    studio, plain = studio_runs[0], plain_runs[0]
    gaps = [loss_gap(s["losses"], p["losses"]) for s in studio_runs for p in plain_runs]
    return {"training_args_differences": args_differences(studio["args_file"], plain["args_file"]),
            "adapter_config_differences": adapter_differences(studio["adapter_config"], plain["adapter_config"]),
            "same_checkpoints": studio["checkpoints"] == plain["checkpoints"], "checkpoints": studio["checkpoints"],
            "max_loss_gap": max((g for g in gaps if g is not None), default=None),
            "steps_differ": any(g is None for g in gaps),
            "same_num_tokens": len({r["num_tokens"] for r in studio_runs + plain_runs}) == 1,
            "logged_steps": len(studio["losses"]), "num_tokens": studio["num_tokens"],
            "blocks": plain["blocks"], "block_lengths": plain["block_lengths"], "studio_says": studio["log_line"]}


def bench_case(case: str, repeats: int, quiet_wait_s: float, scratch: Path) -> dict:
    prepared = prepare_case(case, scratch)
    runs = {"studio": [], "plain": []}
    for rep in range(repeats):
        for side, runner in (("studio", run_studio), ("plain", run_plain)):
            quiet = wait_for_quiet(quiet_wait_s)
            result = {**runner(prepared, scratch / f"{case}-{side}-{rep}"), **quiet}
            result["setup_s"] = result["wall_s"] - result["train_s"]
            result["tokens_per_s"] = result["num_tokens"] / result["train_s"]
            runs[side].append(result)
            print(f"  {case} {side} #{rep + 1}: wall {result['wall_s']:.1f} s, train {result['train_s']:.2f} s, "
                  f"{result['tokens_per_s']:.0f} tokens/s, cpu {result['cpu_s']:.1f} s, peak {result['peak_rss_mb']:.0f} MB; "
                  f"others used {result['others_share']:.0%} of the cores (waited {quiet['waited_s']:.0f} s, "
                  f"{quiet['busy_before']:.0%} busy before)", flush=True)
    settings = {k: prepared[k] for k in ("label", "model_spec", "model_dir", "dataset_source", "documents", "peft", "train")}
    return {"repeats": repeats, "settings": settings, **summarise(runs), "fairness": fairness(runs["studio"], runs["plain"])}


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Median and best of each metric per side (best = fastest; for tokens/s the highest), and studio ÷ plain."""
    def best(metric):
        return max if metric == "tokens_per_s" else min
    stats = {"median": {side: {m: statistics.median(r[m] for r in rows) for m in METRICS} for side, rows in runs.items()},
             "min": {side: {m: best(m)(r[m] for r in rows) for m in METRICS} for side, rows in runs.items()}}
    ratios = {how: {m: stats[how]["studio"][m] / stats[how]["plain"][m] for m in METRICS} for how in stats}
    samples = {side: [{k: r[k] for k in (*METRICS, "others_share", "waited_s", "busy_before", "losses")} for r in rows]
               for side, rows in runs.items()}
    return {**stats, "ratios": ratios, "samples": samples}


LABELS = {"wall_s": "wall time, whole process (s)", "train_s": "inside trainer.train() (s)",
          "setup_s": "outside train(): imports, load, tokenise, pack, save (s)", "cpu_s": "CPU time, user + system (s)",
          "peak_rss_mb": "peak RSS (MB)", "tokens_per_s": "tokens trained per second (in train())"}


def markdown(case: str, result: dict) -> str:
    s, f = result["settings"], result["fairness"]
    median, best, ratios = result["median"], result["min"], result["ratios"]
    lines = [f"### {case} ({s['label']}): LoRA r={s['peft']['r']}, {s['train']['max_steps']} steps, batch "
             f"{s['train']['batch_size']}, max_length {s['train']['max_length']}, {result['repeats']} runs per side",
             "", f"Corpus: {s['dataset_source']}, {s['documents']} documents; {f['blocks']} packed blocks; "
             f"{f['num_tokens']:.0f} tokens trained per run.", "",
             "| metric | studio median | plain median | ratio | studio best | plain best | ratio of bests |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for m in METRICS:
        fmt = "{:.0f}" if m in ("peak_rss_mb", "tokens_per_s") else "{:.2f}"
        lines.append(f"| {LABELS[m]} | {fmt.format(median['studio'][m])} | {fmt.format(median['plain'][m])} "
                     f"| {ratios['median'][m]:.3f} | {fmt.format(best['studio'][m])} | {fmt.format(best['plain'][m])} "
                     f"| {ratios['min'][m]:.3f} |")
    others = max(r["others_share"] for side in result["samples"].values() for r in side)
    lines += ["", f"Target: time ratio ≤ {1 + TARGET_OVERHEAD:.2f}. Same settings: training_args differences "
              f"{f['training_args_differences'] or 'none'}; adapter_config differences {f['adapter_config_differences'] or 'none'}; "
              f"checkpoints {'same' if f['same_checkpoints'] else 'DIFFERENT'} ({', '.join(f['checkpoints'])}); "
              f"tokens trained {'the same' if f['same_num_tokens'] else 'DIFFERENT'} on every run; largest loss gap over "
              f"{f['logged_steps']} logged steps: {f['max_loss_gap']}{' (logged steps DIFFER)' if f['steps_differ'] else ''}. "
              f"Other processes used at most {others:.0%} of the cores during a measured run."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,bundled", help="Comma-separated cases: tiny, bundled.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per side, alternating studio and plain.")
    add_quiet_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder (runs, logs) for inspection.")
    args = parser.parse_args(argv)
    cases = chosen_cases(parser, args.models, CASES)
    scratch = Path(tempfile.mkdtemp(prefix="pretrain-overhead-"))
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
    write_results(results, RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

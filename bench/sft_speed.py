"""How fast the studio's default SFT run trains against a plain TRL SFTTrainer script: useful tokens per second,
the loss per token after the same steps, peak memory, and model FLOPs utilisation, as ratios measured in one run.

The studio side is `python -m pipelines train config.yaml` with the studio's defaults for everything that decides
speed (precision "auto", gradient checkpointing "auto", its batching); the peers are bench/plain_sft.py, TRL's
SFTTrainer called directly, in one of three ways (`--peer`):
    fp32          fp32, no gradient checkpointing (what the studio did on CPU before)
    bf16          bf16=True (autocast), no gradient checkpointing
    trl-defaults  bf16 and gradient_checkpointing left to SFTConfig's defaults (both on)
Both sides train the same rows (the studio's normaliser turns the Alpaca file into the peer's `messages` rows, as in
sft_overhead.py), the same LoRA (r16, alpha 32, dropout 0.05, all-linear), batch 4, max_length 512, learning rate,
seed, and the same number of optimizer steps, each in a fresh process, alternating (studio, peer, peer, studio, ...).

Per run:
    train_s        train_runtime, the time inside trainer.train() (one checkpoint save included, on both sides)
    tokens         TRL's running `num_tokens` at the last step: the non-padding tokens trained on
    tokens_per_s   tokens / train_s: useful tokens per second
    last5_loss     the mean logged loss (per assistant token) over the last 5 steps
    peak_rss_mb    the child's peak resident memory (os.wait4)
    mfu            tokens_per_s × FLOPs per token ÷ the machine's measured matmul peak in the precision the run
                   trained in (pipelines.device_speed); FLOPs per token for LoRA = 2 × the forward's (no weight
                   gradients for the frozen base), from TRL's compute_flops_per_token (which is 3 × forward)
The first peer computing in the studio's precision is run once more with `--noise-seed`: the gap between its two
seeds' last-5 losses is what "the same loss within noise" is measured against.

    ALIGNMENT_STUDIO_CACHE=/tmp/cache-test python bench/sft_speed.py --models bundled --repeats 2

Prints a markdown table (medians per side, studio ÷ peer ratios against the targets) and writes
bench/results/sft_speed.json (merged per model case).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))  # the driver reuses the studio's normaliser, tiny model and bundled model

from bench.machine import add_quiet_arguments, chosen_cases, describe_machine, wait_for_quiet  # noqa: E402
from bench.sft_overhead import CASES, checkpoint_names, measure, prepare_case, warm_up  # noqa: E402

RESULTS = BENCH_DIR / "results" / "sft_speed.json"
TARGET_SPEEDUP = 1.5        # useful tokens/s, studio ÷ peer, at least
TARGET_MEMORY = 1.0         # peak RSS, studio ÷ peer, at most
PEERS = ("fp32", "bf16", "trl-defaults")
LAST_STEPS = 5              # the loss compared is the mean over this many last steps
TOKENS_TOLERANCE = 0.01     # tokens seen by two sides that differ by more than this did not train on the same rows
LORA = {"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
# What the studio config says; everything else (precision, gradient checkpointing, schedule) is the studio's default.
STUDIO_TRAIN = {"batch_size": 4, "max_length": 512, "learning_rate": 2.0e-4, "seed": 42, "logging_steps": 1}
METRICS = ("train_s", "wall_s", "tokens", "tokens_per_s", "peak_rss_mb", "last5_loss", "mfu")


# --- the settings and the data ---------------------------------------------------------------------

def prepare(case: str, steps: int, scratch: Path) -> dict:
    """sft_overhead.py's model and rows for `case`, with this benchmark's LoRA and training settings."""
    from pipelines.config import TrainSettings

    prepared = prepare_case(case, scratch)
    # One checkpoint, at the end, on both sides: saving is part of a run's time inside train().
    studio_train = {**STUDIO_TRAIN, "max_steps": steps, "save_steps": steps}
    # The peer spells out what the studio takes by default (schedule, warm-up, epochs, accumulation).
    plain_train = {**dataclasses.asdict(TrainSettings()), **studio_train}
    return {**prepared, "peft": LORA, "train": studio_train, "plain_train": plain_train, "steps": steps}


def row_lengths(prepared: dict) -> list[int]:
    """Tokens of each row after the chat template and truncation to max_length, as TRL tokenises them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(prepared["model_dir"])
    limit = prepared["train"]["max_length"]
    rows = [json.loads(line) for line in Path(prepared["messages"]).read_text(encoding="utf-8").splitlines() if line]
    return [min(limit, len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]))
            for row in rows]


def lora_flops_per_token(model_dir: str, seq_len: int) -> float:
    """FLOPs one trained token costs with a frozen base: forward + the backward through the activations only."""
    from transformers import AutoConfig
    from trl.trainer.utils import compute_flops_per_token

    return compute_flops_per_token(AutoConfig.from_pretrained(model_dir), seq_len) * 2 / 3


# --- one measured run per side ---------------------------------------------------------------------

def run_studio(prepared: dict, folder: Path) -> dict:
    """`python -m pipelines --workspace W train config.yaml` with the studio's defaults."""
    import torch
    import yaml

    workspace = folder / "workspace"
    (workspace / "data").mkdir(parents=True)
    shutil.copy(prepared["alpaca"], workspace / "data" / "train.json")
    config = {"name": f"speed-{prepared['case']}", "stage": "sft", "model": prepared["model_spec"],
              "dataset": "data/train.json", "peft": prepared["peft"], "train": prepared["train"]}
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    measured = measure([sys.executable, "-m", "pipelines", "--workspace", str(workspace), "train", str(config_path)],
                       folder / "stdout.log")
    run_dir = workspace / "runs" / config["name"]
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    if status.get("status") != "completed":
        raise SystemExit(f"studio run ended {status.get('status')}: {status.get('error')}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    train = [r for r in records if r.get("split", "train") == "train"]
    args = torch.load(run_dir / "checkpoints" / checkpoint_names(run_dir / "checkpoints")[-1] / "training_args.bin",
                      weights_only=False)
    return {**measured, "train_s": status["summary"]["train_runtime"],
            "losses": per_step(train, "loss"), "num_tokens": per_step(train, "num_tokens"),
            "logged_mfu": list(per_step(train, "mfu").values()),
            "logged_tokens_per_second": list(per_step(train, "tokens_per_second").values()),
            "bf16": bool(args.bf16), "gradient_checkpointing": bool(args.gradient_checkpointing),
            "throughput": status.get("throughput")}


def run_plain(prepared: dict, folder: Path, peer: str, seed: int) -> dict:
    """`python bench/plain_sft.py job.json` on the same model, rows and steps, computing as `peer` says."""
    folder.mkdir(parents=True)
    job = {"model_dir": prepared["model_dir"], "rows": str(prepared["messages"]), "output_dir": str(folder / "out"),
           "peft": prepared["peft"], "train": {**prepared["plain_train"], "seed": seed}, "peer": peer,
           "result": str(folder / "result.json")}
    job_path = folder / "job.json"
    job_path.write_text(json.dumps(job, indent=1), encoding="utf-8")
    measured = measure([sys.executable, str(BENCH_DIR / "plain_sft.py"), str(job_path)], folder / "stdout.log")
    result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    return {**measured, "train_s": result["summary"]["train_runtime"], "losses": result["losses"],
            "num_tokens": result["num_tokens"], "bf16": result["bf16"],
            "gradient_checkpointing": result["gradient_checkpointing"]}


def per_step(records: list[dict], key: str) -> dict[str, float]:
    """{step: value} of the records that logged `key`; a step logged twice keeps its last value."""
    return {str(r["step"]): r[key] for r in records if isinstance(r.get(key), (int, float))}


def derive(run: dict, flops_per_token: float, peak_gflops: dict[str, float]) -> dict:
    """The per-run figures the table compares (see the module docstring)."""
    steps = sorted(run["losses"], key=int)
    tokens = run["num_tokens"][max(run["num_tokens"], key=int)] if run["num_tokens"] else None
    tokens_per_s = tokens / run["train_s"] if tokens else None
    peak = peak_gflops["bf16" if run["bf16"] else "fp32"]
    return {**run, "tokens": tokens, "tokens_per_s": tokens_per_s,
            "last5_loss": statistics.fmean(float(run["losses"][s]) for s in steps[-LAST_STEPS:]) if steps else None,
            "mfu": tokens_per_s * flops_per_token / (peak * 1e9) if tokens_per_s else None}


# --- the benchmark -------------------------------------------------------------------------------

def bench_case(case: str, args, peak_gflops: dict[str, float], scratch: Path) -> dict:
    prepared = prepare(case, args.steps, scratch)
    lengths = row_lengths(prepared)
    mean_length = statistics.fmean(lengths)
    flops_per_token = lora_flops_per_token(prepared["model_dir"], round(mean_length))
    sides = ["studio", *args.peers]
    runs: dict[str, list[dict]] = {side: [] for side in sides}

    def one(side: str, rep: int, seed: int) -> dict:
        quiet = wait_for_quiet(args.quiet_wait)
        folder = scratch / f"{case}-{side}-{rep}-seed{seed}"
        raw = run_studio(prepared, folder) if side == "studio" else run_plain(prepared, folder, side, seed)
        result = {**derive(raw, flops_per_token, peak_gflops), **quiet, "seed": seed}
        print(f"  {case} {side} #{rep + 1} (seed {seed}): train {result['train_s']:.1f} s, "
              f"{fmt(result['tokens_per_s'], '{:.0f}')} tokens/s, last-{LAST_STEPS} loss {fmt(result['last5_loss'], '{:.4f}')}, "
              f"peak {result['peak_rss_mb']:.0f} MB, {'bf16' if result['bf16'] else 'fp32'}"
              f"{', checkpointing' if result['gradient_checkpointing'] else ''}; others used "
              f"{result['others_share']:.0%} of the cores (waited {quiet['waited_s']:.0f} s)", flush=True)
        return result

    for rep in range(args.repeats):
        # Alternate the order each repeat, so a slow patch of the machine does not always fall on the same side.
        for side in (sides if rep % 2 == 0 else sides[::-1]):
            runs[side].append(one(side, rep, STUDIO_TRAIN["seed"]))
    noise = None
    if args.noise_seed is not None:
        studio_bf16 = runs["studio"][0]["bf16"]
        peer = next((p for p in args.peers if runs[p][0]["bf16"] == studio_bf16), args.peers[0])
        other = one(peer, 0, args.noise_seed)
        noise = {"peer": peer, "seed": args.noise_seed, "last5_loss": other["last5_loss"],
                 "gap": abs(other["last5_loss"] - runs[peer][0]["last5_loss"]), "run": other}
    settings = {k: prepared[k] for k in ("label", "model_spec", "model_dir", "dataset_source", "rows", "peft", "train",
                                         "plain_train")}
    data = {"rows": len(lengths), "mean_tokens": mean_length, "max_tokens": max(lengths),
            "flops_per_token": flops_per_token}
    return {"repeats": args.repeats, "settings": settings, "data": data, "peak_gflops": peak_gflops,
            **summarise(runs), "noise": noise, "token_checks": token_checks(runs)}


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Per side the median of each metric; studio ÷ peer for speed, time and memory; the loss differences."""
    median = {side: {m: median_of(r[m] for r in rows) for m in METRICS} for side, rows in runs.items()}
    median["studio"]["logged_mfu"] = median_of(v for r in runs["studio"] for v in r["logged_mfu"][1:])
    studio = median["studio"]
    ratios = {peer: {"tokens_per_s": divide(studio["tokens_per_s"], m["tokens_per_s"]),
                     "train_s": divide(studio["train_s"], m["train_s"]),
                     "peak_rss_mb": divide(studio["peak_rss_mb"], m["peak_rss_mb"]),
                     "loss_difference": None if None in (studio["last5_loss"], m["last5_loss"])
                     else studio["last5_loss"] - m["last5_loss"]}
              for peer, m in median.items() if peer != "studio"}
    kept = ("seed", *METRICS, "cpu_s", "bf16", "gradient_checkpointing", "others_share", "waited_s", "busy_before",
            "losses", "num_tokens", "logged_mfu", "logged_tokens_per_second", "throughput")
    samples = {side: [{k: r[k] for k in kept if k in r} for r in rows] for side, rows in runs.items()}
    return {"median": median, "ratios": ratios, "samples": samples}


def token_checks(runs: dict[str, list[dict]]) -> list[str]:
    """Warnings where a run saw a different number of tokens than the studio's first run (so not the same rows)."""
    reference = runs["studio"][0]["tokens"]
    warnings = []
    for side, rows in runs.items():
        for i, run in enumerate(rows):
            if run["tokens"] is None:
                warnings.append(f"{side} #{i + 1} logged no num_tokens")
            elif reference and abs(run["tokens"] - reference) > TOKENS_TOLERANCE * reference:
                warnings.append(f"{side} #{i + 1} trained on {run['tokens']} tokens, the studio on {reference} "
                                f"({run['tokens'] / reference - 1:+.1%}): not the same rows")
    return warnings


def median_of(values) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def divide(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(value, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


# --- the report ----------------------------------------------------------------------------------

def markdown(case: str, result: dict) -> str:
    s, median, ratios, data = result["settings"], result["median"], result["ratios"], result["data"]
    lines = [f"### {case} ({s['label']}): LoRA r{s['peft']['r']}, {s['train']['max_steps']} steps, batch "
             f"{s['train']['batch_size']}, max_length {s['train']['max_length']}, {result['repeats']} runs per side "
             f"({data['rows']} rows, {data['mean_tokens']:.0f} tokens each on average, at most {data['max_tokens']})",
             "", "| side | precision | train() s | useful tokens/s | peak RSS MB | last-5 loss | MFU, TRL's formula "
             "| MFU, the run's log |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for side, m in median.items():
        first = result["samples"][side][0]
        precision = ("bf16" if first["bf16"] else "fp32") + (" + checkpointing" if first["gradient_checkpointing"] else "")
        lines.append(f"| {side} | {precision} | {fmt(m['train_s'], '{:.1f}')} | {fmt(m['tokens_per_s'], '{:.0f}')} "
                     f"| {fmt(m['peak_rss_mb'], '{:.0f}')} | {fmt(m['last5_loss'], '{:.4f}')} | {fmt(pct(m['mfu']), '{:.1f}%')} "
                     f"| {fmt(pct(m.get('logged_mfu')), '{:.1f}%')} |")
    lines += ["", f"| studio ÷ peer | useful tokens/s (target ≥ {TARGET_SPEEDUP}) | train() time | peak RSS "
              f"(target ≤ {TARGET_MEMORY}) | last-5 loss, studio − peer |", "|---|---:|---:|---:|---:|"]
    for peer, r in ratios.items():
        lines.append(f"| {peer} | {fmt(r['tokens_per_s'], '{:.2f}×')}{mark(r['tokens_per_s'], TARGET_SPEEDUP, True)} "
                     f"| {fmt(r['train_s'], '{:.2f}×')} | {fmt(r['peak_rss_mb'], '{:.2f}×')}"
                     f"{mark(r['peak_rss_mb'], TARGET_MEMORY, False)} | {fmt(r['loss_difference'], '{:+.4f}')} |")
    noise = result["noise"]
    if noise:
        lines += ["", f"Noise: the {noise['peer']} peer with seed {noise['seed']} instead of {s['train']['seed']} ends at "
                  f"a last-{LAST_STEPS} loss of {noise['last5_loss']:.4f}, {noise['gap']:.4f} from its seed-{s['train']['seed']} "
                  f"run: a loss difference smaller than that is within noise."]
    lines += ["", f"MFU, TRL's formula: useful tokens/s × {data['flops_per_token'] / 1e6:.3g} MFLOPs per token (LoRA: "
              f"2 × forward, the LM head on every token, at the mean row length) ÷ the matmul peak measured here "
              f"({result['peak_gflops']['fp32']:.0f} GFLOP/s fp32, {result['peak_gflops']['bf16']:.0f} bf16) in the "
              f"precision each side trained in. The run's log: the studio's own `mfu` (pipelines/throughput.py: the "
              f"LM head counted only on the positions it projects, against the peak the run measured at its start), "
              f"median over the steps after the first."]
    shares = [r["others_share"] for rows in result["samples"].values() for r in rows]
    lines += ["", f"Load: other processes used {min(shares):.0%}–{max(shares):.0%} of the cores during these runs "
              f"(beside more than a few percent, every figure here is slowed, and unevenly: rerun on a quiet machine)."]
    for warning in result["token_checks"]:
        lines.append(f"\n**Warning:** {warning}.")
    return "\n".join(lines)


def pct(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


def mark(ratio: float | None, target: float, at_least: bool) -> str:
    if ratio is None:
        return ""
    return " ✓" if (ratio >= target if at_least else ratio <= target) else " ✗"


def measure_peaks(quiet_wait_s: float) -> dict[str, float]:
    """The machine's matmul peak in fp32 and bf16 (GFLOP/s), measured once, on quiet cores where we can."""
    from pipelines.device_speed import matmul_peak_gflops

    wait_for_quiet(quiet_wait_s)
    return {dtype: matmul_peak_gflops("cpu", dtype) for dtype in ("fp32", "bf16")}


def write_results(results: dict, peak_gflops: dict, path: Path = RESULTS) -> None:
    """Merge these cases into bench/results/sft_speed.json, so `--models tiny` keeps the bundled numbers."""
    import peft
    import torch
    import transformers
    import trl

    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    document = {"machine": {**describe_machine(), "matmul_peak_gflops": peak_gflops},
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                             "trl": trl.__version__, "peft": peft.__version__},
                "targets": {"tokens_per_s_ratio_at_least": TARGET_SPEEDUP, "peak_rss_ratio_at_most": TARGET_MEMORY},
                "cases": {**previous.get("cases", {}), **{case: {"date": now, **r} for case, r in results.items()}}}
    path.write_text(json.dumps(document, indent=1, default=str), encoding="utf-8")
    print(f"wrote {path.relative_to(REPO_ROOT)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bundled", help="Comma-separated cases: tiny, bundled.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per side, alternating studio and peers.")
    parser.add_argument("--steps", type=int, default=20, help="Optimizer steps per run, the same on every side.")
    parser.add_argument("--peer", default="fp32,bf16", help=f"Comma-separated peers: {', '.join(PEERS)}.")
    parser.add_argument("--noise-seed", type=int, default=43,
                        help="Seed of one more peer run, to show how far the loss moves with the seed; -1: none.")
    add_quiet_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder (runs, logs) for inspection.")
    args = parser.parse_args(argv)
    cases = chosen_cases(parser, args.models, CASES)
    args.peers = [p.strip() for p in args.peer.split(",") if p.strip()]
    if not args.peers or any(p not in PEERS for p in args.peers):
        parser.error(f"--peer takes one or more of {', '.join(PEERS)}")
    if args.noise_seed is not None and args.noise_seed < 0:
        args.noise_seed = None
    if args.steps < LAST_STEPS:
        parser.error(f"--steps must be at least {LAST_STEPS}: the loss compared is the mean of the last {LAST_STEPS}")
    scratch = Path(tempfile.mkdtemp(prefix="sft-speed-"))
    try:
        warm_up()
        peak_gflops = measure_peaks(args.quiet_wait)
        print(f"matmul peak: {peak_gflops['fp32']:.0f} GFLOP/s fp32, {peak_gflops['bf16']:.0f} bf16", flush=True)
        results = {}
        for case in cases:
            print(f"{case}: {args.repeats} × (studio, {', '.join(args.peers)}), {args.steps} steps, in {scratch}",
                  flush=True)
            results[case] = bench_case(case, args, peak_gflops, scratch)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print()
    for case, result in results.items():
        print(markdown(case, result) + "\n")
    write_results(results, peak_gflops)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

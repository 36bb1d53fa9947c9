"""How fast Compare and Chat generate: four LoRA checkpoints of one base answering one prompt in ONE mixed-adapter
batch (pipelines.compare.compare), against the same four answered one after another (pipelines.inference.chat) and
against a single chat of one checkpoint; and the tokens/s of streaming chat (pipelines.inference.chat_stream)
against raw `model.generate` on the same loaded model.

Setup (once, untimed): four short studio SFT runs of one base (`python -m pipelines --workspace WS train cfg.yaml`,
LoRA r=16 all-linear, 2 steps, seeds 1-4, a raised learning rate so the adapters really differ), each one process.
Their `final/` adapters are the four checkpoints.

Measured in ONE process, after loading everything and one warm-up call of each kind (so no side pays for loading
weights, importing, or the first-call allocations), greedy (`temperature: 0`), `max_new_tokens: 64`:

    batched     compare(ws, [c1, c2, c3, c4], prompt, settings)          one generate, four rows, four adapters
    sequential  chat(ws, c, prompt, [], settings) for c in c1..c4          four generates, one after another
    single      chat(ws, c1, prompt, [], settings)                        one generate, one row
    compare×1   compare(ws, [c1], prompt, settings)                       (for reading: compare's own cost on one row)
    stream      chat_stream(ws, c1, ...) timed from the call to its last yield, tokens of the final reply
    raw         model.generate(**inputs, max_new_tokens=64, do_sample=False) on the very model chat uses, adapter c1
                active, inputs tokenised outside the timed call

interleaved in that order, `--repeats` times; before each measurement we wait (up to --quiet-wait s) for the cores
to be idle and record the share of the cores other processes used during it (bench/machine.py), as the other
benchmarks here do. The prompt asks for a long answer so that every row runs the whole 64 tokens; the script checks
this (exact generated ids of each checkpoint from an untimed raw generate) and reports the token counts of every
side, so the ratios compare equal work. Targets (issue): batched ≤ 1.6 × single; stream tokens/s ≥ 0.95 × raw.

    HF_HUB_OFFLINE=1 python bench/compare_speed.py                      # the bundled model, 5 repeats
    python bench/compare_speed.py --model tiny --repeats 3              # tests/tiny_model.py, seconds
    python bench/compare_speed.py --profile                             # + cProfile of one batched and one stream call

Then, where the batched time goes (`decompose`): raw generates of the base, one adapter, and four adapters in one
batch by PEFT's `adapter_names` and by the studio's stacked form, at 1 and 4 rows.

Writes bench/results/compare_speed.json (merged per model).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.machine import add_quiet_arguments, busy_cpu_seconds, describe_machine, others_share, wait_for_quiet  # noqa: E402

RESULTS = BENCH_DIR / "results" / "compare_speed.json"
PROMPT = "Write a long story about a dragon."
NEW_TOKENS = 64
SETTINGS = {"temperature": 0, "max_new_tokens": NEW_TOKENS}
CHECKPOINTS = 4
TARGET_BATCHED = 1.6      # batched ≤ 1.6 × single
TARGET_STREAM = 0.95      # stream tokens/s ≥ 0.95 × raw
SIDES = ("batched", "sequential", "single", "compare_one", "stream", "raw", "raw_thread")


# --- setup: four LoRA checkpoints of one base ---------------------------------------------------------------------

def base_model(case: str, workspace: Path) -> str:
    if case == "tiny":   # inside the workspace, so a kept workspace's runs still find their base
        from tests.tiny_model import build_tiny_model
        folder = workspace / "tiny-model"
        return str(folder if (folder / "config.json").is_file() else build_tiny_model(folder))
    from pipelines.bundled import bundled_model_dir
    from pipelines.config import BUNDLED_MODEL_ID
    bundled_model_dir()   # converts once if the cache lacks it, so the runs below do not race for it
    return BUNDLED_MODEL_ID


def make_checkpoints(case: str, workspace: Path, scratch: Path) -> tuple[list[str], list[dict]]:
    """Four 2-step LoRA SFT runs (seeds 1-4) through the studio's CLI; reuses runs a kept workspace already has."""
    import yaml

    model = base_model(case, workspace)
    names, made = [], []
    for seed in range(1, CHECKPOINTS + 1):
        name = f"lora-{case}-{seed}"
        names.append(f"{name}/final")
        if (workspace / "runs" / name / "final" / "adapter_config.json").is_file():
            made.append({"run": name, "reused": True})
            continue
        config = {"name": name, "stage": "sft", "model": model, "dataset": "alpaca-en-sample",
                  "peft": {"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"},
                  "train": {"max_steps": 2, "batch_size": 2, "max_length": 256, "learning_rate": 1.0e-3,
                            "lr_scheduler": "constant", "warmup_ratio": 0.0, "save_steps": 2, "seed": seed}}
        path = scratch / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pipelines", "--workspace", str(workspace), "train", str(path)],
                              cwd=REPO_ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        status_file = workspace / "runs" / name / "status.json"
        status = json.loads(status_file.read_text(encoding="utf-8")) if status_file.is_file() else {}
        if done.returncode != 0 or status.get("status") != "completed":
            raise SystemExit(f"setup run {name} failed ({status.get('status')}: {status.get('error')}):\n"
                             f"{(done.stdout + done.stderr)[-3000:]}")
        made.append({"run": name, "seconds": round(time.perf_counter() - started, 1), "seed": seed})
        print(f"  setup: {name} trained in {made[-1]['seconds']} s", flush=True)
    return names, made


# --- timing -------------------------------------------------------------------------------------------------------

def timed(fn, quiet_wait_s: float) -> dict:
    """Wait for quiet, then run fn() once: wall and process CPU time, others' share of the cores meanwhile."""
    quiet = wait_for_quiet(quiet_wait_s)
    busy_before, cpu_before, started = busy_cpu_seconds(), time.process_time(), time.perf_counter()
    value = fn()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_before
    share = others_share(busy_before, busy_cpu_seconds(), cpu, wall)
    return {"seconds": wall, "cpu_s": cpu, "others_share": share, **quiet, "value": value}


class Bench:
    """Everything loaded once; one method per measured side, each returning what it generated."""

    def __init__(self, workspace: Path, checkpoints: list[str]):
        import torch

        from pipelines import compare, inference
        from pipelines.models import resolve_model

        self.torch, self.compare_mod, self.inference = torch, compare, inference
        self.workspace, self.checkpoints = workspace, checkpoints
        for checkpoint in checkpoints:                      # loads the base once and the four adapters on it
            inference._load(resolve_model(checkpoint, workspace))
        self.loaded, adapter = inference._load(resolve_model(checkpoints[0], workspace))
        self.tokenizer = self.loaded.tokenizer
        self.adapter_names = [self.loaded.adapters[inference._load(resolve_model(c, workspace))[1]] for c in checkpoints]
        messages = inference.to_messages(PROMPT, [])
        self.inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                         return_dict=True)
        self.device = next(self.loaded.model.parameters()).device
        self.inputs = {k: v.to(self.device) for k, v in self.inputs.items()}
        self.pad = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id

    def tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def batched(self) -> list[str]:
        return self.compare_mod.compare(self.workspace, self.checkpoints, PROMPT, dict(SETTINGS))

    def sequential(self) -> list[str]:
        return [self.inference.chat(self.workspace, c, PROMPT, [], dict(SETTINGS)) for c in self.checkpoints]

    def single(self) -> str:
        return self.inference.chat(self.workspace, self.checkpoints[0], PROMPT, [], dict(SETTINGS))

    def compare_one(self) -> list[str]:
        return self.compare_mod.compare(self.workspace, self.checkpoints[:1], PROMPT, dict(SETTINGS))

    def stream(self) -> dict:
        started, first, reply, pieces = time.perf_counter(), None, "", 0
        for reply in self.inference.chat_stream(self.workspace, self.checkpoints[0], PROMPT, [], dict(SETTINGS)):
            pieces += 1
            if first is None and reply:
                first = time.perf_counter() - started
        return {"reply": reply, "first_text_s": first, "yields": pieces}

    def raw_ids(self, column: int = 0) -> list[int]:
        """model.generate on the model chat uses, with the column's adapter active; the new ids."""
        model = self.loaded.model
        with self.loaded.lock:
            model.set_adapter(self.adapter_names[column])
            with self.torch.inference_mode():
                out = model.generate(**self.inputs, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=self.pad)
        return out[0, self.inputs["input_ids"].shape[1]:].tolist()

    def raw(self) -> list[int]:
        return self.raw_ids(0)

    def raw_thread(self) -> list[int]:
        """The same raw generate, run in a fresh worker thread as chat_stream and compare run theirs (see below)."""
        import threading

        out: list[list[int]] = []
        worker = threading.Thread(target=lambda: out.append(self.raw_ids(0)), daemon=True)
        worker.start()
        worker.join()
        return out[0]


def decompose(bench: Bench, repeats: int, quiet_wait_s: float) -> dict:
    """Where the batched time goes: raw generates (in a worker thread, as the studio runs them) of the base alone,
    the base with one adapter, and four adapters in one batch, by PEFT's `adapter_names` and by the studio's
    stacked form (pipelines/lora_batch.py), at batch 1 and 4; 64 new tokens each (checked)."""
    import contextlib
    import threading

    from pipelines.lora_batch import adapters_per_row

    torch, model = bench.torch, bench.loaded.model
    names = bench.adapter_names

    def generate(rows: int, adapters: str):
        inputs = {k: v.repeat(rows, 1) for k, v in bench.inputs.items()}
        per_row = (names * rows)[:rows]
        mixed = {"adapter_names": per_row} if adapters == "peft mixed" else {}
        out: list = []

        def work():
            with bench.loaded.lock:
                model.set_adapter(names[0])
                context = (model.disable_adapter() if adapters == "none" else
                           adapters_per_row(model, per_row) if adapters == "stacked" else contextlib.nullcontext())
                with context, torch.inference_mode():
                    out.append(model.generate(**inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                              do_sample=False, pad_token_id=bench.pad, **mixed))

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        worker.join()
        return out[0].shape[1] - inputs["input_ids"].shape[1]

    cases = {"base, 1 row": (1, "none"), "base, 4 rows": (4, "none"), "one adapter, 1 row": (1, "one"),
             "one adapter, 4 rows": (4, "one"), "4 adapters, PEFT adapter_names, 4 rows": (4, "peft mixed"),
             "4 adapters, stacked (the studio), 4 rows": (4, "stacked")}
    for rows, adapters in cases.values():
        generate(rows, adapters)                           # warm-up
    samples: dict[str, list[dict]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, (rows, adapters) in cases.items():
            result = timed(lambda: generate(rows, adapters), quiet_wait_s)
            assert result.pop("value") == NEW_TOKENS
            samples[name].append(result)
    return {"median_s": {n: statistics.median(r["seconds"] for r in rows) for n, rows in samples.items()},
            "min_s": {n: min(r["seconds"] for r in rows) for n, rows in samples.items()}, "samples": samples}


def exact_lengths(bench: Bench) -> list[dict]:
    """Each checkpoint's greedy answer as ids (untimed raw generate): how many new tokens, and whether it stopped."""
    from pipelines.rl.rollout import stop_token_ids

    stops = stop_token_ids(bench.loaded.model, bench.tokenizer)
    rows = []
    for column in range(len(bench.checkpoints)):
        ids = bench.raw_ids(column)
        content = [t for t in ids if t not in stops]
        rows.append({"checkpoint": bench.checkpoints[column], "new_tokens": len(ids), "answer_tokens": len(content),
                     "stopped": any(t in stops for t in ids),
                     "text": bench.tokenizer.decode(content, skip_special_tokens=True)})
    return rows


def run_case(case: str, workspace: Path, scratch: Path, repeats: int, quiet_wait_s: float, profile: bool,
             max_noise: float = 1.0, retries: int = 0) -> dict:
    import torch

    print(f"{case}: setting up {CHECKPOINTS} LoRA checkpoints in {workspace}", flush=True)
    checkpoints, setup = make_checkpoints(case, workspace, scratch)
    load_started = time.perf_counter()
    bench = Bench(workspace, checkpoints)
    load_s = time.perf_counter() - load_started
    print(f"{case}: loaded base + {len(checkpoints)} adapters in {load_s:.1f} s on {bench.device}; warming up", flush=True)
    for side in SIDES:                                   # one untimed call of each
        getattr(bench, side)()
    lengths = exact_lengths(bench)
    print("  exact greedy lengths (new tokens incl. a stop token): "
          + ", ".join(f"{r['checkpoint']} {r['new_tokens']}{' (stopped)' if r['stopped'] else ''}" for r in lengths),
          flush=True)

    samples: dict[str, list[dict]] = {side: [] for side in SIDES}
    discarded: dict[str, list[dict]] = {side: [] for side in SIDES}
    outputs: dict[str, object] = {}
    for rep in range(repeats):
        for side in SIDES:
            for attempt in range(retries + 1):
                result = timed(getattr(bench, side), quiet_wait_s)
                outputs[side] = result.pop("value")
                if side == "stream":
                    result["first_text_s"] = outputs[side]["first_text_s"]
                if result["others_share"] > max_noise and attempt < retries:
                    discarded[side].append(result)
                    print(f"  #{rep + 1} {side}: {result['seconds']:.2f} s while others used {result['others_share']:.0%} "
                          f"of the cores (over --max-noise): run again", flush=True)
                    continue
                samples[side].append(result)
                break
        line = ", ".join(f"{side} {samples[side][-1]['seconds']:.2f} s" for side in SIDES)
        share = max(samples[side][-1]["others_share"] for side in SIDES)
        print(f"  #{rep + 1}: {line}; others used at most {share:.0%} of the cores", flush=True)

    # What each side generated (answer tokens, re-encoded from the text it returned; the ids from the raw side).
    stream_reply = outputs["stream"]["reply"]
    raw_ids = outputs["raw"]
    raw_text = bench.tokenizer.decode(raw_ids, skip_special_tokens=True)
    # New tokens each side generated: exact (the ids of the untimed raw generate) where its text is that answer,
    # else re-encoded from the text (marked in `tokens_exact`).
    exact = {r["text"]: r["new_tokens"] for r in lengths}
    exact[raw_text] = len(raw_ids)
    texts = {"batched": outputs["batched"], "sequential": outputs["sequential"], "single": [outputs["single"]],
             "compare_one": outputs["compare_one"], "stream": [stream_reply], "raw": [raw_text],
             "raw_thread": [bench.tokenizer.decode(outputs["raw_thread"], skip_special_tokens=True)]}
    generated = {side: [exact.get(t, bench.tokens(t)) for t in ts] for side, ts in texts.items()}
    generated["raw"], generated["raw_thread"] = [len(raw_ids)], [len(outputs["raw_thread"])]
    tokens_exact = {side: all(t in exact for t in ts) for side, ts in texts.items()}
    checks = {
        "batched_equals_sequential": outputs["batched"] == outputs["sequential"],
        "sequential_equals_exact": outputs["sequential"] == [r["text"] for r in lengths],
        "stream_equals_raw": stream_reply == raw_text,
        "raw_thread_equals_raw": outputs["raw_thread"] == raw_ids,
        "checkpoints_differ": len({r["text"] for r in lengths}) > 1,
        "all_run_full_length": all(r["new_tokens"] == NEW_TOKENS and not r["stopped"] for r in lengths),
    }
    median = {side: statistics.median(s["seconds"] for s in rows) for side, rows in samples.items()}
    fastest = {side: min(s["seconds"] for s in rows) for side, rows in samples.items()}
    stream_tokens, raw_tokens = generated["stream"][0], generated["raw"][0]
    ratios = {how: {"batched_vs_single": stats["batched"] / stats["single"],
                    "sequential_vs_single": stats["sequential"] / stats["single"],
                    "batched_vs_sequential": stats["batched"] / stats["sequential"],
                    "compare_one_vs_single": stats["compare_one"] / stats["single"],
                    "stream_tps": stream_tokens / stats["stream"], "raw_tps": raw_tokens / stats["raw"],
                    "raw_thread_tps": raw_tokens / stats["raw_thread"],
                    "stream_vs_raw_tps": (stream_tokens / stats["stream"]) / (raw_tokens / stats["raw"]),
                    "stream_vs_raw_thread_tps": (stream_tokens / stats["stream"]) / (raw_tokens / stats["raw_thread"])}
              for how, stats in (("median", median), ("min", fastest))}
    first_text = statistics.median(s["first_text_s"] for s in samples["stream"])
    result = {
        "model": case, "device": str(bench.device), "torch_threads": torch.get_num_threads(),
        "prompt": PROMPT, "settings": SETTINGS, "checkpoints": checkpoints, "setup_runs": setup,
        "load_s": load_s, "repeats": repeats, "median_s": median, "min_s": fastest, "ratios": ratios,
        "targets": {"batched_vs_single_max": TARGET_BATCHED, "stream_vs_raw_tps_min": TARGET_STREAM},
        "generated_tokens": generated, "tokens_exact": tokens_exact, "exact_lengths": lengths, "checks": checks,
        "stream_first_text_median_s": first_text, "stream_yields": outputs["stream"]["yields"],
        "answers": {"batched": outputs["batched"], "stream": stream_reply},
        "max_noise": max_noise, "samples": samples, "discarded_noisy": discarded,
    }
    print(f"{case}: decomposing the batched time", flush=True)
    result["decomposition"] = decompose(bench, min(repeats, 3), quiet_wait_s)
    if profile:
        result["profile"] = {side: profiled(getattr(bench, side), quiet_wait_s) for side in ("batched", "single", "stream")}
    return result


def profiled(fn, quiet_wait_s: float, top: int = 25) -> str:
    """cProfile of one call (all threads are not followed: the generate worker thread is profiled separately below)."""
    import threading

    wait_for_quiet(quiet_wait_s)
    profiles: list[cProfile.Profile] = []
    original = threading.Thread.run

    def run_profiled(thread_self):           # follow the worker thread chat_stream / compare start for generate
        p = cProfile.Profile()
        profiles.append(p)
        p.enable()
        try:
            original(thread_self)
        finally:
            p.disable()

    threading.Thread.run = run_profiled
    main = cProfile.Profile()
    try:
        main.enable()
        fn()
        main.disable()
    finally:
        threading.Thread.run = original
    text = io.StringIO()
    for label, p in [("caller thread", main)] + [(f"worker thread {i + 1}", p) for i, p in enumerate(profiles)]:
        text.write(f"=== {label} ===\n")
        stats = pstats.Stats(p, stream=text)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
    return text.getvalue()


# --- report -------------------------------------------------------------------------------------------------------

def markdown(result: dict) -> str:
    m, f, r = result["median_s"], result["min_s"], result["ratios"]
    g = result["generated_tokens"]
    tok = lambda side: "/".join(str(n) for n in g[side]) + ("" if result["tokens_exact"][side] else " (re-encoded)")  # noqa: E731
    labels = {"batched": "batched: `compare` of 4 checkpoints (one mixed-adapter generate)",
              "sequential": "sequential: `chat` × 4, one after another",
              "single": "single: one `chat`, one checkpoint",
              "compare_one": "`compare` of 1 checkpoint (for reading)"}
    lines = [f"### {result['model']}: {len(result['checkpoints'])} LoRA checkpoints, {NEW_TOKENS} new tokens, greedy, "
             f"median of {result['repeats']} (device {result['device']}, {result['torch_threads']} torch threads)", "",
             "| side | median (s) | fastest (s) | ÷ single (median) | ÷ single (fastest) | new tokens per row |",
             "|---|---:|---:|---:|---:|---|"]
    for side in ("batched", "sequential", "single", "compare_one"):
        lines.append(f"| {labels[side]} | {m[side]:.2f} | {f[side]:.2f} | {m[side] / m['single']:.2f} | "
                     f"{f[side] / f['single']:.2f} | {tok(side)} |")
    rm, rf = r["median"], r["min"]
    ok = lambda good: "✓" if good else "✗"   # noqa: E731
    lines += ["", f"Target batched ≤ {TARGET_BATCHED} × single: **{rm['batched_vs_single']:.2f}×** "
              f"{ok(rm['batched_vs_single'] <= TARGET_BATCHED)} (sequential {rm['sequential_vs_single']:.2f}×; "
              f"batched ÷ sequential {rm['batched_vs_sequential']:.2f}).", "",
              "| streaming, checkpoint 1 | median (s) | tokens | tokens/s (median) | tokens/s (fastest) |",
              "|---|---:|---:|---:|---:|",
              f"| `chat_stream`, call to last yield | {m['stream']:.2f} | {g['stream'][0]} | {rm['stream_tps']:.1f} | {rf['stream_tps']:.1f} |",
              f"| raw `model.generate`, main thread | {m['raw']:.2f} | {g['raw'][0]} | {rm['raw_tps']:.1f} | {rf['raw_tps']:.1f} |",
              f"| raw `model.generate`, in a worker thread | {m['raw_thread']:.2f} | {g['raw_thread'][0]} | "
              f"{rm['raw_thread_tps']:.1f} | {rf['raw_thread_tps']:.1f} |",
              "", f"Target stream ≥ {TARGET_STREAM} × raw tokens/s: **{rm['stream_vs_raw_tps']:.3f}×** "
              f"{ok(rm['stream_vs_raw_tps'] >= TARGET_STREAM)} against the main-thread call (fastest runs: "
              f"{rf['stream_vs_raw_tps']:.3f}×); **{rm['stream_vs_raw_thread_tps']:.3f}×** "
              f"{ok(rm['stream_vs_raw_thread_tps'] >= TARGET_STREAM)} against the worker-thread call (fastest: "
              f"{rf['stream_vs_raw_thread_tps']:.3f}×).", "",
              "Checks: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in result["checks"].items()) + ".",
              "Others' share of the cores during the kept measurements: "
              f"{min(s['others_share'] for rows in result['samples'].values() for s in rows):.0%}–"
              f"{max(s['others_share'] for rows in result['samples'].values() for s in rows):.0%} (median "
              f"{statistics.median(s['others_share'] for rows in result['samples'].values() for s in rows):.0%}); "
              f"measurements run again for being over {result['max_noise']:.0%}: "
              f"{sum(len(v) for v in result['discarded_noisy'].values())}."]
    return "\n".join(lines)


def write_results(result: dict) -> None:
    import peft
    import torch
    import transformers

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    document = {"machine": describe_machine(),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
                "models": {**previous.get("models", {}), result["model"]: {"date": now, **result}}}
    RESULTS.write_text(json.dumps(document, indent=1, default=str, ensure_ascii=False), encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("bundled", "tiny"), default="bundled")
    parser.add_argument("--repeats", type=int, default=5)
    add_quiet_arguments(parser, noisy_reruns=True)
    parser.add_argument("--workspace", type=Path, default=None,
                        help="Keep the four setup runs here and reuse them next time (default: a temporary folder).")
    parser.add_argument("--profile", action="store_true", help="Also cProfile one batched, one single and one stream call.")
    parser.add_argument("--no-write", action="store_true", help="Print only; leave results/compare_speed.json alone.")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="compare-speed-"))
    workspace = args.workspace or scratch / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    try:
        result = run_case(args.model, workspace.resolve(), scratch, args.repeats, args.quiet_wait, args.profile,
                          args.max_noise, args.retries)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(markdown(result))
    d = result["decomposition"]
    print("\n| raw generate, worker thread, 64 new tokens | median (s) | fastest (s) | ÷ one adapter, 1 row |\n|---|---:|---:|---:|")
    for name in d["median_s"]:
        print(f"| {name} | {d['median_s'][name]:.2f} | {d['min_s'][name]:.2f} | "
              f"{d['median_s'][name] / d['median_s']['one adapter, 1 row']:.2f} |")
    if args.profile:
        for side, text in result["profile"].items():
            print(f"\n##### profile: {side}\n{text}")
    if not args.no_write:
        write_results(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

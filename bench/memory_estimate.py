"""How close is the studio's memory estimate (pipelines/models.estimate_training_memory) to a training process's
measured peak?

Each case is a fresh `python -m pipelines --workspace WS train config.yaml` of 3 SFT steps, on rows long enough that
every batch is cut at max_length (the estimate's worst case). Measured: the process's peak RSS (os.wait4). On a GPU
the same script records the peak CUDA memory the trainer logs; here, on the 2-core CPU, RSS is what a user's machine
must hold. The estimate is asked with the same model, batch, length, method and device.

    python bench/memory_estimate.py --cases bundled-lora-b4-s512,bundled-full-b4-s512

Prints a table (estimate, measured, ratio) and writes bench/results/memory_estimate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.machine import describe_machine, measure_process  # noqa: E402

RESULTS = BENCH_DIR / "results" / "memory_estimate.json"
CASES = {   # name: (model, method, batch_size, max_length)
    "tiny-lora-b2-s128": ("tiny", "lora", 2, 128),
    "bundled-lora-b1-s256": ("bundled", "lora", 1, 256),
    "bundled-lora-b4-s256": ("bundled", "lora", 4, 256),
    "bundled-lora-b4-s512": ("bundled", "lora", 4, 512),
    "bundled-lora-b8-s512": ("bundled", "lora", 8, 512),
    "bundled-full-b1-s256": ("bundled", "full", 1, 256),
    "bundled-full-b4-s512": ("bundled", "full", 4, 512),
}
WORDS = ("the model reads every token of this long answer so that each row fills the whole context window and the "
         "batch is cut at max length which is the case the estimate must cover").split()


def long_rows(n: int = 32) -> list[dict]:
    """Rows of about 1,500 tokens, so every batch is max_length long."""
    return [{"instruction": f"Write a long note number {i}.", "input": "",
             "output": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(1500))} for i in range(n)]


def model_path(kind: str, scratch: Path) -> str:
    if kind == "bundled":
        from pipelines.bundled import bundled_model_dir
        return str(bundled_model_dir())
    from tests.tiny_model import build_tiny_model
    folder = scratch / "tiny-model"
    return str(folder if (folder / "config.json").is_file() else build_tiny_model(folder))


def estimate(model: str, method: str, batch_size: int, max_length: int) -> float:
    """The estimate as the studio makes it for this run, in GB."""
    from pipelines.models import describe_model
    return describe_model(model, Path("/"), batch_size=batch_size, seq_len=max_length)["memory_gb"][method]


def measure(name: str, model: str, method: str, batch_size: int, max_length: int, workspace: Path, log_dir: Path) -> dict:
    import yaml

    config = {"name": name, "stage": "sft", "model": model, "dataset": "long.jsonl",
              "peft": {"method": method},
              "train": {"max_steps": 3, "batch_size": batch_size, "max_length": max_length, "save_steps": 1000}}
    config_path = log_dir / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "pipelines", "--workspace", str(workspace), "train", str(config_path)]
    print(f"{name}: {' '.join(command)}", flush=True)
    return measure_process(command, log_dir / f"{name}.log", env, REPO_ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--workspace", default="/tmp/memory-estimate-ws")
    parser.add_argument("--log-dir", default="/tmp/memory-estimate-logs")
    args = parser.parse_args(argv)
    workspace, log_dir = Path(args.workspace), Path(args.log_dir)
    workspace.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    (workspace / "long.jsonl").write_text("".join(json.dumps(r) + "\n" for r in long_rows()), encoding="utf-8")
    # Cases measured earlier stay (a case takes minutes on the CPU); each new one is written as soon as it ends.
    results = json.loads(RESULTS.read_text(encoding="utf-8")).get("results", {}) if RESULTS.is_file() else {}
    for name in args.cases.split(","):
        kind, method, batch_size, max_length = CASES[name]
        model = model_path(kind, workspace.parent)
        measured = measure(name, model, method, batch_size, max_length, workspace, log_dir)
        estimated = estimate(model, method, batch_size, max_length)
        results[name] = {"model": kind, "method": method, "batch_size": batch_size, "max_length": max_length,
                         "estimate_gb": estimated, "peak_rss_gb": round(measured["peak_rss_mb"] / 1024, 2),
                         "ratio": round(estimated / (measured["peak_rss_mb"] / 1024), 2),
                         "wall_s": round(measured["wall_s"], 1)}
        print(f"  {results[name]}", flush=True)
        write(results)
    write(results)
    return 0


def write(results: dict) -> None:
    lines = ["| case | estimate (GB) | measured peak RSS (GB) | estimate / measured |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {r['estimate_gb']} | {r['peak_rss_gb']} | {r['ratio']} |" for name, r in results.items()]
    table = "\n".join(lines)
    print("\n" + table)
    RESULTS.write_text(json.dumps({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                   "machine": describe_machine(), "results": results, "table": table}, indent=1),
                       encoding="utf-8")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    raise SystemExit(main())

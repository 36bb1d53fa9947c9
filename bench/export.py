"""Export: what the studio's checked export costs against doing it by hand, and how close each format answers.

A LoRA SFT run of the bundled model (--steps steps on alpaca-en-sample) is exported four ways, each against a peer
doing the same without the studio, in the same run:
    merged float32 / bfloat16   studio: api.export_model (a job: merge, save, load back, verify, model card)
                                peer:   PeftModel.from_pretrained + merge_and_unload + save_pretrained, by hand
    gguf-f16 / gguf-q8_0        studio: api.export_model (merge, llama.cpp's converter, load back with
                                        transformers' gguf_file=, verify, Modelfile, card)
                                peer:   the hand merge above, then convert_hf_to_gguf.py --outtype on it
The ratio studio / peer is what loading back and checking costs. Then every studio export is loaded again and
held against the checkpoint (its adapter applied) on --prompts held-out prompts: greedy replies of 32 tokens
that are the same, and teacher-forced token agreement (as pipelines/export.py verifies, on more prompts).

    python bench/export.py --steps 10 --prompts 30

Writes bench/results/export.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.machine import describe_machine, wait_for_quiet  # noqa: E402

RESULTS = BENCH_DIR / "results" / "export.json"
CASES = (("merged", "float32"), ("merged", "bfloat16"), ("gguf-f16", None), ("gguf-q8_0", None))


def train(workspace: Path, steps: int) -> str:
    config = workspace / "bench-sft.yaml"
    config.write_text(f"name: bench-sft\nstage: sft\nmodel: smollm2-135m-instruct\ndataset: alpaca-en-sample\n"
                      f"train: {{max_steps: {steps}, save_steps: {steps}, learning_rate: 2.0e-4}}\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "pipelines", "--workspace", str(workspace), "train", str(config)],
                   check=True, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    return "bench-sft/final"


def peer_merge(adapter: Path, base: str, out: Path, dtype: str) -> float:
    """What a user writes without the studio: PEFT's merge, saved as safetensors with the tokenizer."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().to(getattr(torch, dtype))
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(out)
    return time.perf_counter() - started


def peer_gguf(adapter: Path, base: str, out: Path, gguf_type: str) -> float:
    from pipelines.gguf_export import converter_dir

    folder = converter_dir()
    started = time.perf_counter()
    peer_merge(adapter, base, out / "merged", "float32")
    subprocess.run([sys.executable, str(folder / "convert_hf_to_gguf.py"), str(out / "merged"), "--outfile",
                    str(out / f"peer-{gguf_type}.gguf"), "--outtype", gguf_type], check=True,
                   env={"PYTHONPATH": str(folder / "gguf-py"), "PATH": "/usr/bin:/bin"}, capture_output=True)
    return time.perf_counter() - started


def held_out_prompts(count: int) -> list[str]:
    """Instructions of the bundled preference sample: not in alpaca-en-sample, which the run trained on."""
    from pipelines.data.store import load_dataset

    _kind, data = load_dataset("preference-en-sample", REPO_ROOT)
    single_turn = (row["prompt"][0]["content"] for row in data.rows if len(row["prompt"]) == 1)
    return list(dict.fromkeys(single_turn))[:count]


def agreement(workspace: Path, checkpoint: str, summary: dict, prompts: list[str]) -> dict:
    import torch

    from pipelines import export
    from pipelines.models import load_model, load_tokenizer, resolve_model

    source = resolve_model(checkpoint, workspace)
    tokenizer = load_tokenizer(source)
    reference = load_model(source, dtype=torch.float32, merge_adapters=False).eval()
    expected = [(ids, export._greedy(reference, tokenizer, ids)) for ids in (export._prompt_ids(tokenizer, p) for p in prompts)]
    folder = workspace / summary["path"]
    loaded = export._load_gguf(folder, summary["gguf"]) if summary.get("gguf") else export._load_folder(folder)
    checked = export._check(loaded, tokenizer, expected, 0.0)
    return {"same_replies": checked["same_replies"], "prompts": checked["prompts"],
            "token_agreement": checked["token_agreement"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--quiet-wait", type=float, default=60.0)
    args = parser.parse_args()

    from pipelines import api
    from pipelines.models import resolve_model

    scratch = Path(tempfile.mkdtemp(prefix="bench-export-"))
    workspace = scratch / "workspace"
    workspace.mkdir()
    checkpoint = train(workspace, args.steps)
    source = resolve_model(checkpoint, workspace)
    adapter, base = Path(source.adapters[-1]), source.base
    prompts = held_out_prompts(args.prompts)
    cases = []
    for format, dtype in CASES:
        label = f"{format} {dtype}" if dtype else format
        quiet = wait_for_quiet(args.quiet_wait)
        started = time.perf_counter()
        summary = api.export_model(workspace, checkpoint, format, {"dtype": dtype} if dtype else None)
        studio_s = time.perf_counter() - started
        peer_out = scratch / f"peer-{label.replace(' ', '-')}"
        peer_out.mkdir()
        wait_for_quiet(args.quiet_wait)
        peer_s = peer_merge(adapter, base, peer_out, dtype) if dtype else peer_gguf(adapter, base, peer_out,
                                                                                     format.removeprefix("gguf-"))
        held_out = agreement(workspace, checkpoint, summary, prompts)
        case = {"case": label, "studio_s": round(studio_s, 1), "peer_s": round(peer_s, 1),
                "ratio": round(studio_s / peer_s, 2), "bytes": summary["bytes"], "verified": summary["verified"],
                "held_out": held_out, "quiet": quiet}
        print(json.dumps(case), flush=True)
        cases.append(case)
        shutil.rmtree(peer_out)
    import torch
    import transformers
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": describe_machine(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "steps": args.steps, "prompts": len(prompts), "cases": cases}, indent=1), encoding="utf-8")
    print(f"| case | studio s | peer s | studio/peer | MB | verified (3 prompts) | same greedy replies | token agreement |")
    print("|---|---:|---:|---:|---:|---|---:|---:|")
    for c in cases:
        v, h = c["verified"], c["held_out"]
        print(f"| {c['case']} | {c['studio_s']} | {c['peer_s']} | {c['ratio']}× | {c['bytes'] / 1e6:.0f} | "
              f"{v['same_replies']}/{v['prompts']}, {v['token_agreement']:.1%} | {h['same_replies']}/{h['prompts']} | "
              f"{h['token_agreement']:.1%} |")
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

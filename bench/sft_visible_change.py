"""Does the default SFT run visibly change the bundled model? The share of held-out answers in the sample data's house style.

The bundled samples (assets/datasets/alpaca-*-sample.json) answer in one recognisable style: a one-line
answer, 2–4 "- " bullets, and a closing "Hope this helps!". This script asks held-out questions (not
in the data) greedily, of the base model and of each checkpoint of a run, and reports the share of
answers that end with the sign-off and that contain bullets.

    python -m pipelines train config.yaml          # e.g. the defaults: `name: default-sft`
    python bench/sft_visible_change.py --workspace workspace --run default-sft
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HELD_OUT = [
    "How do I keep basil alive on a windowsill?",
    "Explain what a mortgage is.",
    "Give me tips for a first marathon.",
    "What is the difference between a virus and a bacterium?",
    "How can I make my emails shorter?",
    "Why is the sea salty?",
    "Suggest a weekend project for learning Python.",
    "What should I pack for a rainy city trip?",
    "How does a refrigerator keep food cold?",
    "Write a short note thanking a colleague for their help.",
    "What is compound interest?",
    "How do I prepare for a job interview?",
]
SIGN_OFF = "Hope this helps!"


def house_style(answer: str) -> dict:
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    return {"sign_off": bool(lines) and lines[-1] == SIGN_OFF, "bullets": sum(line.startswith("- ") for line in lines) >= 2}


def score(workspace: Path, checkpoint: str, max_new_tokens: int) -> dict:
    from pipelines.inference import chat

    started = time.perf_counter()
    answers = [chat(workspace, checkpoint, q, [], {"max_new_tokens": max_new_tokens, "temperature": 0}) for q in HELD_OUT]
    styles = [house_style(a) for a in answers]
    return {"checkpoint": checkpoint, "sign_off": sum(s["sign_off"] for s in styles) / len(styles),
            "bullets": sum(s["bullets"] for s in styles) / len(styles), "seconds": round(time.perf_counter() - started, 1),
            "example": answers[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default="workspace")
    parser.add_argument("--run", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    args = parser.parse_args()
    from pipelines import runs
    from pipelines.run_files import checkpoint_steps

    workspace = Path(args.workspace).resolve()
    run_dir = runs.run_dir_of(workspace, args.run)
    checkpoints = [runs.load_config(run_dir).model] + [f"{args.run}/checkpoint-{s}" for s in checkpoint_steps(run_dir)]
    results = [score(workspace, c, args.max_new_tokens) for c in checkpoints]
    print("| checkpoint | ends with sign-off | has bullets |\n|---|---:|---:|")
    for r in results:
        print(f"| {r['checkpoint']} | {r['sign_off']:.0%} | {r['bullets']:.0%} |")
    out = Path(__file__).parent / "results" / "sft_visible_change.json"
    out.write_text(json.dumps({"run": args.run, "held_out": HELD_OUT, "results": results}, indent=1, ensure_ascii=False))
    print(f"\nfirst question, last checkpoint:\n{results[-1]['example']}")


if __name__ == "__main__":
    main()

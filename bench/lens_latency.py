"""How long the next-token lens takes for 256 tokens of the bundled model on CPU, against a plain forward pass.

    python bench/lens_latency.py                 # 256 tokens, top 5, 5 warm calls per side, 2 cold starts per side
    python bench/lens_latency.py --tokens 512 --repeats 7

The text: the first 256 tokens (SmolLM2's tokenizer, no special tokens) of the first document of
assets/datasets/corpus-en-sample.json (generated English where it is missing), cut so that it tokenises to exactly
that many ids. Sides:

    studio   pipelines.lens.next_tokens(workspace, "smollm2-135m-instruct", text, top_k): resolve the checkpoint,
             the Chat model cache (pipelines.inference.load_for_generation), tokenise, one forward pass, log_softmax,
             each position's probability, rank and top-k, every token decoded to text, the summary.
    peer     plain transformers on the same ids: AutoModelForCausalLM (float32, as the lens loads it on CPU),
             model(input_ids).logits, log_softmax, the target tokens' log-probs (gather) and topk(top_k). Like the
             lens, it reads the text after SmolLM2's <|endoftext|> (a document's start), so the pass is 257 ids and
             the first token has a probability too.
    peer+text  the peer, then what the lens adds for a reader: the same per-position dicts with each distinct id
             decoded once (tokenizer.decode([id])): the cost of turning tensors into the answer, not the model.

Cold ("first call, loading included"): each side in its own fresh process, after its imports: the first call's
seconds, loading the model included (the lens: through the Chat cache; the peer: from_pretrained + tokenizer).
Fresh processes alternate studio, peer, studio, peer, each after waiting for quiet cores. Warm: one process holds
both models and alternates studio, peer, peer+text calls --repeats times; medians and minima. Checked: the lens's
probabilities equal the peer's exp(log_softmax) (largest gap printed). Writes bench/results/lens_latency.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.machine import add_quiet_arguments, busy_cpu_seconds, describe_machine, others_share, wait_for_quiet  # noqa: E402

RESULTS = BENCH_DIR / "results" / "lens_latency.json"
CHECKPOINT = "smollm2-135m-instruct"   # pipelines.config.BUNDLED_MODEL_ID
TARGET_S = 1.0                         # the issue: "about a second for a few hundred tokens"


def sample_text(tokenizer, n_tokens: int) -> tuple[str, list[int]]:
    """A text that tokenises (add_special_tokens=False) to exactly n_tokens ids, and those ids."""
    sample = REPO_ROOT / "assets" / "datasets" / "corpus-en-sample.json"
    if sample.is_file():
        documents = [row["text"] for row in json.loads(sample.read_text(encoding="utf-8"))]
    else:
        documents = ["The beekeeper checked every hive before noon, and wrote down what she saw. " * 40]
    source = "\n\n".join(documents)
    ids = tokenizer(source, add_special_tokens=False)["input_ids"]
    for end in range(n_tokens, n_tokens - 8, -1):   # a cut inside a word can re-tokenise differently: back off
        text = tokenizer.decode(ids[:end])
        again = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(again) == n_tokens:
            return text, again
    raise SystemExit(f"no prefix of the sample tokenises to exactly {n_tokens} ids")


def end_of_text(tokenizer) -> int:
    """SmolLM2's document separator: the lens reads a plain text as a document that begins after it (as a pretrain
    run packs documents), so every token of the text, the first included, has a probability."""
    return tokenizer.get_vocab().get("<|endoftext|>", tokenizer.eos_token_id)


def peer_call(model, ids: list[int], top_k: int, start: int) -> dict:
    """One forward pass over [start] + ids; row t of the results is the distribution that predicts ids[t]."""
    import torch

    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([[start, *ids]]), use_cache=False).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        target = logp[:-1].gather(1, torch.tensor(ids)[:, None])[:, 0]
        values, indices = torch.topk(logp, top_k, dim=-1)
    return {"logp": logp, "target": target, "values": values, "indices": indices}


def peer_with_text(model, tokenizer, ids: list[int], top_k: int) -> list[dict]:
    """The peer's tensors turned into the lens's per-position dicts (each distinct id decoded once)."""
    import math

    out = peer_call(model, ids, top_k, end_of_text(tokenizer))
    seen: dict[int, str] = {}

    def decode(i: int) -> str:
        if i not in seen:
            seen[i] = tokenizer.decode([i])
        return seen[i]

    tops = [[{"id": i, "token": decode(i), "prob": math.exp(v)} for v, i in zip(vs, js)]
            for vs, js in zip(out["values"].tolist(), out["indices"].tolist())]
    return [{"id": i, "token": decode(i), "prob": math.exp(lp), "top": top}
            for i, lp, top in zip(ids, out["target"].tolist(), tops[:-1])]


def load_peer():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.bundled import bundled_model_dir
    folder = str(bundled_model_dir())
    return (AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, use_safetensors=True).eval(),
            AutoTokenizer.from_pretrained(folder))


# --- a cold start, in a fresh process --------------------------------------------------------------

def child(side: str, n_tokens: int, top_k: int) -> None:
    """Imports first (not timed), then the first call with its loading; one JSON line on stdout."""
    import torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoTokenizer

    from pipelines import lens
    from pipelines.bundled import bundled_model_dir

    text, ids = sample_text(AutoTokenizer.from_pretrained(str(bundled_model_dir())), n_tokens)
    workspace = Path(tempfile.mkdtemp(prefix="lens-bench-"))
    started = time.perf_counter()
    if side == "studio":
        result = lens.next_tokens(workspace, CHECKPOINT, text, top_k)
        assert result["n_tokens"] == n_tokens
    else:
        model, tokenizer = load_peer()
        peer_call(model, tokenizer(text, add_special_tokens=False)["input_ids"], top_k, end_of_text(tokenizer))
    print(json.dumps({"first_call_s": time.perf_counter() - started}))
    shutil.rmtree(workspace, ignore_errors=True)


def cold_start(side: str, args) -> dict:
    import os
    import subprocess

    quiet = wait_for_quiet(args.quiet_wait)
    busy, started = busy_cpu_seconds(), time.perf_counter()
    process = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", side, "--tokens",
                              str(args.tokens), "--top-k", str(args.top_k)], capture_output=True, text=True,
                             cwd=REPO_ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""})
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"cold {side} failed:\n{process.stderr[-3000:]}")
    measured = json.loads(process.stdout.strip().splitlines()[-1])
    # The child's CPU is not separated here; the share is of everything but an assumed 2 busy cores at most.
    return {**measured, "process_s": wall, **quiet,
            "others_share_upper": others_share(busy, busy_cpu_seconds(), 0.0, wall)}


# --- warm calls, one process ------------------------------------------------------------------------

def warm(args) -> dict:
    import os

    import torch

    from pipelines import lens

    workspace = Path(tempfile.mkdtemp(prefix="lens-bench-"))
    model, tokenizer = load_peer()
    text, ids = sample_text(tokenizer, args.tokens)
    lens.next_tokens(workspace, CHECKPOINT, text, args.top_k)          # loads the Chat cache (untimed here)
    start = end_of_text(tokenizer)
    peer_call(model, ids, args.top_k, start)                            # and one untimed peer pass
    times = {"studio": [], "peer": [], "peer+text": []}
    shares = []
    for _ in range(args.repeats):
        wait_for_quiet(args.quiet_wait / 4)
        busy, start_round, own0 = busy_cpu_seconds(), time.perf_counter(), os.times()
        t = time.perf_counter()
        result = lens.next_tokens(workspace, CHECKPOINT, text, args.top_k)
        times["studio"].append(time.perf_counter() - t)
        t = time.perf_counter()
        out = peer_call(model, ids, args.top_k, start)
        times["peer"].append(time.perf_counter() - t)
        t = time.perf_counter()
        peer_with_text(model, tokenizer, ids, args.top_k)
        times["peer+text"].append(time.perf_counter() - t)
        own1, wall = os.times(), time.perf_counter() - start_round
        own = (own1.user - own0.user) + (own1.system - own0.system)
        shares.append(others_share(busy, busy_cpu_seconds(), own, wall))
    peer_probs = torch.exp(out["target"]).tolist()
    if result["tokens"][0]["prob"] is None:   # a lens that gives the first token no probability (read without a start)
        raise SystemExit("the lens no longer reads the text after the end-of-text token: align the peer with it")
    gap = max(abs(token["prob"] - p) for token, p in zip(result["tokens"], peer_probs))
    same_top = all([t["id"] for t in token["top"]] == row for token, row in
                   zip(result["tokens"], out["indices"][:-1].tolist()))
    same_top = same_top and [t["id"] for t in result["next"]] == out["indices"][-1].tolist()
    shutil.rmtree(workspace, ignore_errors=True)
    return {"samples": times, "median": {k: statistics.median(v) for k, v in times.items()},
            "min": {k: min(v) for k, v in times.items()}, "others_share": shares,
            "max_prob_gap": gap, "same_top_ids": same_top, "n_tokens": result["n_tokens"],
            "torch_threads": torch.get_num_threads(), "text_chars": len(text)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="Warm calls per side.")
    parser.add_argument("--cold", type=int, default=2, help="Fresh-process first calls per side.")
    parser.add_argument("--child", choices=("studio", "peer"), help=argparse.SUPPRESS)
    add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.tokens, args.top_k)
        return 0
    cold = {"studio": [], "peer": []}
    for _ in range(args.cold):
        for side in cold:
            cold[side].append(cold_start(side, args))
            print(f"  cold {side}: first call {cold[side][-1]['first_call_s']:.2f} s", flush=True)
    warm_result = warm(args)
    med, low = warm_result["median"], warm_result["min"]
    cold_median = {side: statistics.median(r["first_call_s"] for r in runs) for side, runs in cold.items()}
    lines = [f"| {args.tokens} tokens, top {args.top_k}, bundled model, CPU | median (s) | fastest (s) | ÷ peer (median) |",
             "|---|---:|---:|---:|",
             f"| studio `next_tokens`, warm (median of {args.repeats}) | {med['studio']:.3f} | {low['studio']:.3f} | "
             f"{med['studio'] / med['peer']:.2f} |",
             f"| peer: forward + log_softmax + topk, warm | {med['peer']:.3f} | {low['peer']:.3f} | 1.00 |",
             f"| peer + the per-token dicts with decoded text, warm | {med['peer+text']:.3f} | {low['peer+text']:.3f} | "
             f"{med['peer+text'] / med['peer']:.2f} |",
             f"| studio first call, loading included (fresh process, median of {args.cold}) | {cold_median['studio']:.2f} | "
             f"{min(r['first_call_s'] for r in cold['studio']):.2f} | {cold_median['studio'] / cold_median['peer']:.2f} |",
             f"| peer first call: from_pretrained + tokenizer + pass (fresh process) | {cold_median['peer']:.2f} | "
             f"{min(r['first_call_s'] for r in cold['peer']):.2f} | 1.00 |"]
    print("\n" + "\n".join(lines))
    print(f"\nLens probabilities vs the peer's exp(log_softmax): largest gap {warm_result['max_prob_gap']:.2e}; "
          f"top-{args.top_k} ids the same at every position: {warm_result['same_top_ids']}. Other processes' share of "
          f"the cores during warm rounds: {', '.join(f'{s:.0%}' for s in warm_result['others_share'])}.")
    import torch
    import transformers
    document = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": describe_machine(),
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
                "settings": {"tokens": args.tokens, "top_k": args.top_k, "repeats": args.repeats, "cold": args.cold},
                "target_s": TARGET_S, "warm": warm_result, "cold": cold, "cold_median": cold_median}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=1), encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Does a few minutes of continued pretraining visibly lower held-out perplexity on the bundled corpora?

For each language (en, ko): the bundled corpus (assets/datasets/corpus-<lang>-sample.json) is split by document,
seeded, into ~90% train and ~10% held out, written as two JSONL files in a scratch workspace. Then:

    before   the bundled model's perplexity on the held-out documents: a plain forward pass in this process over
             the held-out text packed as a pretrain run packs it (each document tokenised as written, no special
             tokens, the end-of-text id after it, all joined and cut into blocks of max_length; no padding), the
             token-weighted mean next-token loss over every predicted position, exponentiated.
    train    one studio run, `python -m pipelines --workspace W train config.yaml`: stage pretrain with its own
             defaults (LoRA r16 all-linear, 60 steps × batch 4, lr 2e-4, blocks of 256) on the train documents,
             `eval_dataset` the held-out file, so the run's eval_perplexity (every eval_steps) is on exactly those
             documents. Wall time, CPU time and the other processes' share of the cores are measured.
    after    the run's last eval_perplexity, and the same forward pass as `before` on the run's final checkpoint
             (base + its LoRA adapter) as a cross-check. The Trainer's eval loss is a mean of per-batch means, so
             it can differ from the token-weighted figure in the last digits where the last block is short.

    python bench/pretrain_domain.py                       # en and ko, the stage's defaults
    python bench/pretrain_domain.py --langs ko --steps 30 # one language, fewer steps

Flags: --langs en,ko; --steps N (0 = the stage's default); --held-out SHARE (default 0.1); --seed (default 42);
--quiet-wait S; --keep (keep the scratch workspace and its runs). Where a corpus is missing, generated text stands in
and the results say so. Writes bench/results/pretrain_domain.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.machine import add_quiet_arguments, describe_machine, wait_for_quiet  # noqa: E402
from bench.sft_overhead import measure  # noqa: E402

RESULTS = BENCH_DIR / "results" / "pretrain_domain.json"
MAX_LENGTH = 256       # the stage's default block length
EVAL_BATCH = 4


# --- the corpora ---------------------------------------------------------------------------------

def corpus(lang: str, workspace: Path) -> tuple[list[str], str]:
    """The bundled corpus's documents, read the way a run reads them, or generated text (named as such)."""
    name = f"corpus-{lang}-sample"
    if (REPO_ROOT / "assets" / "datasets" / f"{name}.json").is_file():
        from pipelines.data.store import load_dataset
        return [row["text"] for row in load_dataset(name, workspace, "text")[1].rows], f"assets/datasets/{name}.json"
    return generated(lang, 200), f"generated ({lang}, 200 documents: the bundled corpus was missing)"


def generated(lang: str, n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    if lang == "ko":
        parts = (["양봉가는", "작은 빵집은", "시 의회는", "박물관은", "농부는", "도서관은"],
                 ["아침마다", "비가 온 뒤에", "겨울이 오기 전에", "일주일 동안", "처음으로"],
                 ["벌통을 살폈다.", "기록을 정리했다.", "새 방을 열었다.", "다리를 고쳤다.", "장터를 준비했다."])
    else:
        parts = (["The beekeeper", "A small bakery", "The council", "The museum", "A farmer", "The library"],
                 ["every morning", "after the rain", "before winter", "for a week", "for the first time"],
                 ["checked the hives.", "sorted the records.", "opened a new room.", "mended the bridge.",
                  "planned the market."])
    return [" ".join(f"{rng.choice(parts[0])} {rng.choice(parts[1])} {rng.choice(parts[2])}"
                     for _ in range(rng.randint(3, 12))) for _ in range(n)]


def split(documents: list[str], share: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held out): a seeded `share` of the documents held out, at least one."""
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    held = set(order[:max(1, round(len(documents) * share))])
    return ([d for i, d in enumerate(documents) if i not in held], [d for i, d in enumerate(documents) if i in held])


def write_jsonl(path: Path, documents: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in documents), encoding="utf-8")


# --- perplexity by a plain forward pass -----------------------------------------------------------

def packed_blocks(tokenizer, documents: list[str], max_length: int) -> list[list[int]]:
    """The documents as a pretrain run packs them: ids as written, the end-of-text id after each, cut into blocks."""
    vocabulary = tokenizer.get_vocab()
    end = vocabulary.get("<|endoftext|>", tokenizer.eos_token_id)
    stream = [i for ids in tokenizer(documents, add_special_tokens=False)["input_ids"] for i in (*ids, end)]
    return [stream[i:i + max_length] for i in range(0, len(stream), max_length)]


def forward_perplexity(model, blocks: list[list[int]]) -> dict:
    """exp of the mean next-token loss over every predicted position of every block (token-weighted)."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    with torch.no_grad():
        for block in blocks:   # one block a pass: blocks differ in length only at the end, and no padding is needed
            ids = torch.tensor([block])
            logits = model(input_ids=ids).logits[0, :-1].float()
            total += F.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            count += len(block) - 1
    return {"perplexity": math.exp(total / count), "mean_loss": total / count, "positions": count}


def load_checkpoint(model_dir: Path, adapter: Path | None):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, use_safetensors=True)
    if adapter is not None:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval()


# --- one language --------------------------------------------------------------------------------

def bench_language(lang: str, args, workspace: Path) -> dict:
    import yaml
    from transformers import AutoTokenizer

    from pipelines.bundled import bundled_model_dir

    model_dir = bundled_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    documents, source = corpus(lang, workspace)
    train_docs, held_docs = split(documents, args.held_out, args.seed)
    write_jsonl(workspace / f"{lang}-train.jsonl", train_docs)
    write_jsonl(workspace / f"{lang}-held.jsonl", held_docs)
    blocks = packed_blocks(tokenizer, held_docs, MAX_LENGTH)
    train_tokens = sum(len(b) for b in packed_blocks(tokenizer, train_docs, MAX_LENGTH))
    characters = sum(map(len, documents))
    print(f"{lang}: {len(documents)} documents ({source}), {len(train_docs)} train ({train_tokens} tokens), "
          f"{len(held_docs)} held out ({len(blocks)} blocks, {sum(map(len, blocks))} tokens)", flush=True)

    started = time.perf_counter()
    before = forward_perplexity(load_checkpoint(model_dir, None), blocks)
    before["seconds"] = time.perf_counter() - started
    print(f"  before: perplexity {before['perplexity']:.2f} ({before['seconds']:.0f} s)", flush=True)

    name = f"domain-{lang}"
    config = {"name": name, "stage": "pretrain", "dataset": f"{lang}-train.jsonl", "eval_dataset": f"{lang}-held.jsonl"}
    if args.steps:
        config["train"] = {"max_steps": args.steps}
    config_path = workspace / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    quiet = wait_for_quiet(args.quiet_wait)
    measured = measure([sys.executable, "-m", "pipelines", "--workspace", str(workspace), "train", str(config_path)],
                       workspace / f"{name}.log")
    run_dir = workspace / "runs" / name
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    if status.get("status") != "completed":
        raise SystemExit(f"{name} ended {status.get('status')}: {status.get('error')}")
    metrics = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]
    evals = [{"step": m["step"], "eval_perplexity": m["eval_perplexity"]} for m in metrics if "eval_perplexity" in m]
    train_logs = [m for m in metrics if "perplexity" in m]
    saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    print(f"  trained {status['summary'].get('train_runtime', 0):.0f} s; eval perplexity by step: "
          + ", ".join(f"{e['step']}: {e['eval_perplexity']:.2f}" for e in evals), flush=True)

    started = time.perf_counter()
    after = forward_perplexity(load_checkpoint(model_dir, run_dir / "final"), blocks)
    after["seconds"] = time.perf_counter() - started
    print(f"  after: perplexity {after['perplexity']:.2f} (forward pass on final/)", flush=True)
    return {"corpus": source, "documents": len(documents), "characters": characters,
            "train_documents": len(train_docs), "held_documents": len(held_docs),
            "train_tokens": train_tokens, "held_tokens": sum(map(len, blocks)), "held_blocks": len(blocks),
            "tokens_per_character": (train_tokens + sum(map(len, blocks))) / max(1, characters),
            "settings": {"peft": saved.get("peft"), "train": {k: saved["train"][k] for k in
                         ("max_steps", "batch_size", "learning_rate", "lr_scheduler", "max_length", "eval_steps", "seed")}},
            "before": before, "after": after, "ratio": after["perplexity"] / before["perplexity"],
            "run_eval": evals, "run_last_eval_perplexity": evals[-1]["eval_perplexity"] if evals else None,
            "train_perplexity_first_last": [train_logs[0]["perplexity"], train_logs[-1]["perplexity"]] if train_logs else None,
            "train_runtime_s": status["summary"].get("train_runtime"), **measured, **quiet}


def markdown(results: dict) -> str:
    lines = ["| corpus | documents train / held out | held-out tokens | perplexity before | after (run's eval) "
             "| after (forward pass) | after ÷ before | steps × batch × length | train() (min) | whole run (min) | others' share |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for lang, r in results.items():
        t = r["settings"]["train"]
        lines.append(f"| {lang}: {r['corpus']} | {r['train_documents']} / {r['held_documents']} | {r['held_tokens']} "
                     f"| {r['before']['perplexity']:.2f} | {r['run_last_eval_perplexity']:.2f} | {r['after']['perplexity']:.2f} "
                     f"| **{r['ratio']:.2f}** | {t['max_steps']} × {t['batch_size']} × {t['max_length']} "
                     f"| {r['train_runtime_s'] / 60:.1f} | {r['wall_s'] / 60:.1f} | {r['others_share']:.0%} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--langs", default="en,ko", help="Comma-separated: en, ko.")
    parser.add_argument("--steps", type=int, default=0, help="Training steps; 0 = the stage's default.")
    parser.add_argument("--held-out", type=float, default=0.1, help="Share of the documents held out.")
    parser.add_argument("--seed", type=int, default=42)
    add_quiet_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="Keep the scratch workspace and its runs.")
    args = parser.parse_args(argv)
    langs = [l.strip() for l in args.langs.split(",") if l.strip()]
    if not langs or set(langs) - {"en", "ko"}:
        parser.error("--langs takes en, ko or both")
    workspace = Path(tempfile.mkdtemp(prefix="pretrain-domain-"))
    results = {}
    try:
        for lang in langs:
            results[lang] = bench_language(lang, args, workspace)
    finally:
        if args.keep:
            print(f"kept {workspace}")
        else:
            shutil.rmtree(workspace, ignore_errors=True)
    print()
    print(markdown(results))
    import torch
    import transformers
    import trl
    previous = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    document = {"machine": describe_machine(), "versions": {"torch": torch.__version__,
                "transformers": transformers.__version__, "trl": trl.__version__},
                "langs": {**previous.get("langs", {}), **{lang: {"date": now, **r} for lang, r in results.items()}}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(document, indent=1, ensure_ascii=False, default=str), encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

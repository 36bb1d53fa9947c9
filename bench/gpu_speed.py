"""The GPU rows of issue 19: SFT of a 0.5B model in bf16, studio against a plain TRL SFTTrainer script with TRL's
defaults, in useful tokens per second and model FLOPs utilisation, with and without Liger kernels; GRPO with and
without vLLM generation, in seconds per step.

    python bench/gpu_speed.py [--model FOLDER] [--sft-steps 40] [--grpo-steps 8]

Without a CUDA GPU it prints one line and exits 0. One run takes about 5-8 minutes on an H200.

The model: --model names a local folder (safetensors + tokenizer), e.g. a copy of Qwen/Qwen2.5-0.5B-Instruct. The
GPU machine has no network, so the folder must be there: carried in (a 0.5B model is ~1 GB, over the 64 MiB a
device call carries) or already on its disk. Without --model the script builds, on the GPU machine itself, a model
of Qwen2.5-0.5B's exact shape (24 layers, hidden 896, GQA 14/2 heads, vocabulary 151,936, tied embeddings) with
random weights and a byte-level tokenizer padded to that vocabulary: the same FLOPs per token and the same
kernels, so tokens/s and MFU are those of the real model (its losses and answers mean nothing; say so beside the
figures).

Each case runs in its own process (Liger patches transformers' classes in place, and vLLM holds GPU memory until
its process ends); an extra that is not installed leaves its case "not measured", with the reason. Extras are
switched per process with ALIGNMENT_STUDIO_DISABLE_EXTRAS (pipelines/accelerators.py).

    sft-plain          TRL's SFTTrainer as a 10-line script would call it: the model by path, SFTConfig defaults
                       (bf16 autocast over fp32 weights, gradient checkpointing on), LoRA r16 all-linear
    sft-plain-liger    the same with use_liger_kernel=True
    sft-studio         `pipelines.train.train_run` on the same rows, LoRA and batch (precision auto = bf16)
    sft-studio-liger   the same with Liger on (the studio turns it on where it is installed)
    grpo-studio        studio GRPO, answers by the policy's generate()
    grpo-studio-vllm   the same with vLLM colocate (the studio turns it on where it is installed)

Throughput is measured between the WARMUP_STEPS-th logged step and the last (first steps compile Triton kernels and
fill caches). MFU = flops per token × tokens/s ÷ the bf16 matmul peak measured on this GPU
(pipelines.device_speed.matmul_peak_gflops), with flops per token ≈ 4 × parameters for LoRA (forward 2N, the
backward pass's input gradients 2N; the frozen weights get no gradient) and 6 × parameters for a full fine-tune.

On the H200 of this workplace (Python 3.12, torch 2.11, transformers 5.17, no network) these packages are missing
and travel as wheels (bench/README or the device notes say how): trl, datasets, dill, multiprocess, orjson,
evalica, liger-kernel (pure Python on the GPU machine's Triton). vLLM and flash-attn are too big to carry: their
rows will read "not measured" there.

Writes bench/results/gpu_speed.json. On the lent machine, a whole run in one device call (results come back
through $OUT):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    PYTHONUNBUFFERED=1 python3 bench/gpu_speed.py; cp bench/results/gpu_speed.json "$OUT"/
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
sys.path.insert(0, str(REPO_ROOT))
RESULTS = BENCH_DIR / "results" / "gpu_speed.json"

WARMUP_STEPS = 10
# Seconds a case may take, its process start included; vLLM compiles and captures CUDA graphs when it starts.
CHILD_TIMEOUT_S = {"sft": 150, "grpo": 200, "vllm": 300}
LOG_LINES = ("Accelerators:", "Speed-ups")   # the lines of a studio run's log that say what it computed with
LORA = {"method": "lora", "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
SFT_TRAIN = {"batch_size": 8, "max_length": 512, "learning_rate": 2.0e-4, "logging_steps": 5, "warmup_ratio": 0.0,
             "seed": 42}
GRPO_TRAIN = {"batch_size": 16, "learning_rate": 1.0e-5, "logging_steps": 1, "warmup_ratio": 0.0, "seed": 42}
GRPO = {"rules": [{"max_words": 60}], "num_generations": 8, "response_length": 128, "temperature": 1.0}
# case: (kind, side, the extra it uses or None)
CASES = {
    "sft-plain": ("sft", "plain", None),
    "sft-plain-liger": ("sft", "plain", "liger"),
    "sft-studio": ("sft", "studio", None),
    "sft-studio-liger": ("sft", "studio", "liger"),
    "grpo-studio": ("grpo", "studio", None),
    "grpo-studio-vllm": ("grpo", "studio", "vllm"),
}
# Qwen2.5-0.5B-Instruct's shape (its config.json), for the random-weight stand-in.
QWEN_05B = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
            "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
            "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True}


# --- the parent: prepare, run each case in its own process, compare --------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a local model folder (default: a random model of Qwen2.5-0.5B's shape)")
    parser.add_argument("--sft-steps", type=int, default=40)
    parser.add_argument("--grpo-steps", type=int, default=8)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args.child, json.loads(Path(args.job).read_text(encoding="utf-8")))

    import torch
    if not torch.cuda.is_available():
        print("no GPU: bench/gpu_speed.py measures CUDA runs only; nothing measured")
        return 0
    from pipelines import accelerators
    from pipelines.device_speed import matmul_peak_gflops

    scratch = Path(tempfile.mkdtemp(prefix="gpu-speed-"))
    try:
        model_dir, model_label = (Path(args.model).resolve(), args.model) if args.model else \
            (build_stand_in(scratch / "model"), "random weights, Qwen2.5-0.5B shape")
        data = write_data(scratch)
        peak = matmul_peak_gflops("cuda", "bf16")
        results = {}
        for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
            kind, _, extra = CASES[case]
            if extra and not accelerators.installed(extra):
                results[case] = {"not_measured": f"{extra} not installed"}
                print(f"{case}: not measured ({extra} not installed)", flush=True)
                continue
            job = {"case": case, "model_dir": str(model_dir), "folder": str(scratch / case), **data,
                   "steps": args.sft_steps if kind == "sft" else args.grpo_steps}
            results[case] = run_case(case, job)
            add_mfu(results[case], peak)
            print(f"{case}: {json.dumps(results[case])}", flush=True)
        report = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "gpu": torch.cuda.get_device_name(),
                  "torch": torch.__version__, "model": model_label, "bf16_matmul_peak_gflops": round(peak),
                  "lora": LORA, "sft_train": {**SFT_TRAIN, "max_steps": args.sft_steps},
                  "grpo": {**GRPO, **GRPO_TRAIN, "max_steps": args.grpo_steps},
                  "cases": results, "ratios": ratios(results)}
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(json.dumps(report["ratios"], indent=1))
        print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


def run_case(case: str, job: dict) -> dict:
    """One case in a fresh process, the extras it does not use switched off there."""
    from pipelines.accelerators import DISABLE_VARIABLE

    folder = Path(job["folder"])
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps(job), encoding="utf-8")
    extra = CASES[case][2]
    python_path = os.pathsep.join(filter(None, (str(REPO_ROOT), os.environ.get("PYTHONPATH"))))   # carried wheels too
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": python_path,
           # FlashAttention, where installed, stays on in every case: it is part of what the studio chooses
           DISABLE_VARIABLE: ",".join(e for e in ("liger", "vllm") if e != extra)}
    timeout = CHILD_TIMEOUT_S["vllm" if extra == "vllm" else CASES[case][0]]
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, __file__, "--child", case, "--job", str(folder / "job.json")],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"failed": f"ran past {timeout} s"}
    result_file = folder / "result.json"
    if done.returncode or not result_file.is_file():
        return {"failed": (done.stdout + done.stderr)[-1500:]}
    said = [line for line in done.stdout.splitlines() if line.startswith(LOG_LINES)]   # what the run says it used
    return {**json.loads(result_file.read_text(encoding="utf-8")), "process_s": round(time.perf_counter() - started, 1),
            "log": said}


def add_mfu(result: dict, peak_gflops: float) -> None:
    if result.get("tokens_per_s"):
        per_token = (4 if LORA["method"] != "full" else 6) * result["parameters"]
        result["mfu"] = round(per_token * result["tokens_per_s"] / (peak_gflops * 1e9), 4)


def ratios(results: dict) -> dict:
    def ratio(key: str, a: str, b: str, higher_is_better: bool = True):
        x, y = results.get(a, {}).get(key), results.get(b, {}).get(key)
        if not x or not y:
            return f"not measured ({a} or {b} missing)"
        return round(x / y if higher_is_better else y / x, 3)

    return {"sft studio / plain, tokens/s (no Liger)": ratio("tokens_per_s", "sft-studio", "sft-plain"),
            "sft studio / plain, tokens/s (both with Liger)": ratio("tokens_per_s", "sft-studio-liger", "sft-plain-liger"),
            "sft studio with Liger / plain, tokens/s": ratio("tokens_per_s", "sft-studio-liger", "sft-plain"),
            "sft studio / plain, peak GPU memory": ratio("peak_gpu_gb", "sft-studio", "sft-plain"),
            "sft Liger speed-up (studio)": ratio("tokens_per_s", "sft-studio-liger", "sft-studio"),
            "grpo vLLM speed-up (s/step)": ratio("s_per_step", "grpo-studio-vllm", "grpo-studio", higher_is_better=False)}


def build_stand_in(folder: Path) -> Path:
    """A random-weight model of Qwen2.5-0.5B's shape and a tokenizer whose ids cover its whole vocabulary (a byte-
    level BPE trained on the sample data, padded with filler tokens), so that any sampled id decodes."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    from tests.tiny_model import CHAT_TEMPLATE

    rows = json.loads((REPO_ROOT / "assets" / "datasets" / "alpaca-en-sample.json").read_text(encoding="utf-8"))
    corpus = [" ".join(str(r.get(k, "")) for k in ("instruction", "input", "output")) for r in rows]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=8000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]))
    # Pad the vocabulary inside the BPE model (added tokens would make every load of the tokenizer take seconds):
    # no merge makes the filler ids, but each decodes, as "<x123>".
    spec = json.loads(bpe.to_str())
    vocab = spec["model"]["vocab"]
    vocab.update({f"<x{i}>": len(vocab) + i for i in range(QWEN_05B["vocab_size"] - len(vocab))})
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)), pad_token="<|endoftext|>",
                                        eos_token="<|im_end|>", bos_token="<|im_start|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN_05B, pad_token_id=tokenizer.pad_token_id,
                                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id))
    model.to(torch.bfloat16).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def write_data(scratch: Path) -> dict:
    """The Alpaca sample (studio input), its normalised `messages` rows (the plain script's input), the prompts."""
    from pipelines.data.formats import normalise_instruction

    datasets = REPO_ROOT / "assets" / "datasets"
    rows = json.loads((datasets / "alpaca-en-sample.json").read_text(encoding="utf-8"))
    messages = scratch / "messages.jsonl"
    messages.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in normalise_instruction(rows).rows),
                        encoding="utf-8")
    return {"alpaca": str(datasets / "alpaca-en-sample.json"), "messages": str(messages),
            "prompts": str(datasets / "prompts-en-sample.json")}


# --- a child: one case -----------------------------------------------------------------------------------------

def run_child(case: str, job: dict) -> int:
    import torch

    kind, side, _ = CASES[case]
    if side == "plain":
        result = plain_sft(job, liger=case.endswith("liger"))
    else:
        result = studio_run(kind, job)
    if torch.cuda.is_available():
        result["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    Path(job["folder"], "result.json").write_text(json.dumps(result), encoding="utf-8")
    return 0


def throughput(records: list[dict]) -> dict:
    """tokens/s between the WARMUP_STEPS-th step and the last logged one, from (step, time, num_tokens) records."""
    counted = [r for r in records if "num_tokens" in r]
    timed = [r for r in counted if r["step"] >= WARMUP_STEPS]
    timed = timed if len(timed) >= 2 else counted[-2:]   # a short run: its last two logs, warm-up and all
    if len(timed) < 2:
        return {"tokens_per_s": None, "steps_timed": 0}
    first, last = timed[0], timed[-1]
    return {"tokens_per_s": round((last["num_tokens"] - first["num_tokens"]) / (last["time"] - first["time"]), 1),
            "steps_timed": last["step"] - first["step"]}


def parameters(model_dir: str) -> int:
    from transformers import AutoConfig

    from pipelines.models import count_config_parameters
    return count_config_parameters(AutoConfig.from_pretrained(model_dir))


def plain_sft(job: dict, liger: bool) -> dict:
    """What a user's own script does: SFTTrainer with the model by path and SFTConfig's defaults."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class Times(TrainerCallback):
        def __init__(self):
            self.records = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "num_tokens" in logs:
                self.records.append({"step": state.global_step, "time": time.time(), "num_tokens": logs["num_tokens"]})

    rows = [json.loads(line) for line in Path(job["messages"]).read_text(encoding="utf-8").splitlines() if line]
    times = Times()
    trainer = SFTTrainer(
        model=job["model_dir"],
        args=SFTConfig(output_dir=str(Path(job["folder"]) / "out"), max_steps=job["steps"], report_to=[],
                       per_device_train_batch_size=SFT_TRAIN["batch_size"], max_length=SFT_TRAIN["max_length"],
                       learning_rate=SFT_TRAIN["learning_rate"], logging_steps=SFT_TRAIN["logging_steps"],
                       logging_first_step=True, save_strategy="no", seed=SFT_TRAIN["seed"], use_liger_kernel=liger,
                       use_cpu=not torch.cuda.is_available()),   # only for a try of this script on a CPU
        train_dataset=Dataset.from_list(rows),
        peft_config=LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                               target_modules=LORA["target_modules"], task_type="CAUSAL_LM"),
        callbacks=[times],
    )
    output = trainer.train()
    return {**throughput(times.records), "train_s": round(output.metrics["train_runtime"], 1),
            "parameters": parameters(job["model_dir"]), "bf16": trainer.args.bf16,
            "gradient_checkpointing": trainer.args.gradient_checkpointing,
            "attention": trainer.model.config._attn_implementation}


def studio_run(kind: str, job: dict) -> dict:
    """A studio run through train_run, the code `python -m pipelines train` runs."""
    import yaml

    from pipelines import api
    from pipelines.run_files import read_metrics, read_status
    from pipelines.train import train_run

    workspace = Path(job["folder"]) / "workspace"
    workspace.mkdir(parents=True)
    steps = job["steps"]
    if kind == "sft":
        shutil.copy(job["alpaca"], workspace / "train.json")
        config = {"name": "bench", "stage": "sft", "model": job["model_dir"], "dataset": "train.json", "peft": LORA,
                  "train": {**SFT_TRAIN, "max_steps": steps, "save_steps": steps}}
    else:
        shutil.copy(job["prompts"], workspace / "prompts.json")
        config = {"name": "bench", "stage": "grpo", "model": job["model_dir"], "dataset": "prompts.json", "peft": LORA,
                  "train": {**GRPO_TRAIN, "max_steps": steps, "save_steps": steps}, "grpo": GRPO}
    run_dir = api.prepare_run(workspace, yaml.safe_dump(config, sort_keys=False))
    status = train_run(run_dir, echo=False)
    if status != "completed":
        raise SystemExit(f"studio {kind} run ended {status}: {read_status(run_dir).get('error')}")
    records = [r for r in read_metrics(run_dir) if r.get("split") == "train"]
    result = {"train_s": round(read_status(run_dir)["summary"]["train_runtime"], 1),
              "parameters": parameters(job["model_dir"])}
    if kind == "sft":
        return {**result, **throughput(records)}
    timed = [r for r in records if r["step"] >= 2]   # step 1 holds vLLM's first weight sync and kernel warm-up
    result["s_per_step"] = round((timed[-1]["time"] - timed[0]["time"]) / (timed[-1]["step"] - timed[0]["step"]), 3)
    result["answers_per_s"] = round(GRPO_TRAIN["batch_size"] / result["s_per_step"], 1)
    return result


if __name__ == "__main__":
    raise SystemExit(main())

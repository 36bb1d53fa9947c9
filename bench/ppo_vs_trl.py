"""Our PPO (pipelines/stages/ppo.py) against TRL 1.12's `trl.experimental.ppo.PPOTrainer`, the last TRL that
shipped PPO, with the same policy, reward model, prompts and settings: seconds per update, peak memory, reward.

TRL 1.12 lives in its own virtual environment (default /tmp/trl112-venv, made with --system-site-packages so it
reuses the installed torch / transformers / peft, and reused if present); `pip install trl==1.12.0` inside it
shadows the system TRL. The driver checks that the venv imports TRL 1.12.0 from the venv and has
`trl.experimental.ppo`. The peer script, bench/trl112_ppo.py, runs with the venv's python and imports nothing
from the studio.

Shared setup, once per case (cached in --cache-dir, rebuilt when its settings change):
    policy      tiny: the Llama of tests/tiny_model.py; bundled: SmolLM2-135M-Instruct (the converted folder)
    reward      a studio `stage: reward` run in the case's workspace: tiny: a full fine-tune of the tiny model on
                generated pairs whose chosen answer has the larger share of lowercase ASCII letters (text drawn from
                the tiny vocabulary, so it looks like what the random policy writes); bundled: LoRA on
                preference-en-sample (the house style). Ours reads it as `ppo: {reward: rm/final}`; the peer reads
                the same weights merged into one AutoModelForSequenceClassification folder
                (pipelines.scoring.load_reward_model + save_pretrained). TRL's value model starts from that folder.
    prompts     the first 64 rows of prompts-en-sample, as the PPO stage loads them; the peer gets the same
                conversations and renders them with the same chat template.

Each side runs as a fresh process, alternating ours, peer, ours, peer, ... after waiting for quiet cores:
    ours   python -m pipelines --workspace WS train config.yaml
    peer   <venv>/bin/python bench/trl112_ppo.py job.json
and for each we take
    update_s      seconds per update in the steady state: (time of the last update's log − the first's) / (N − 1),
                  from ours' metrics.jsonl "time" and the peer's on_log timestamps; model loading, the first
                  update's warm-up and the final save are outside it on both sides
    wall_s        the whole process; cpu_s its user + system time; peak_rss_mb os.wait4's ru_maxrss
    reward_last5  mean `objective/scores` of the last 5 updates, as each side logs it. Not on one scale: ours renders
                  prompt and answer through the reward model's chat template, as the Reward stage trained it (the
                  answer a closed assistant turn); TRL 1.12 scores the raw prompt + response token ids
    eval_reward   the final policy, sampled on the eval prompts (same seed, temperature and length), every answer
                  scored by one scorer for both sides, the studio's (pipelines.scoring); on the tiny model also the
                  share of lowercase ASCII letters, which the tiny reward imitates

    python bench/ppo_vs_trl.py --models tiny,bundled --repeats 3 --bundled-repeats 1

Writes bench/results/ppo_vs_trl.json (merged per case) and prints markdown tables. `--profile` adds one
cProfile run of each side per case (not timed) and puts the hotspots in the JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pstats
import random
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
sys.path.insert(0, str(REPO_ROOT))  # the driver uses the studio's data loading, scoring, tiny model and bundled model

from bench.machine import add_quiet_arguments, chosen_cases, describe_machine, measure_process, wait_for_quiet  # noqa: E402
from bench.sft_overhead import adapter_differences  # noqa: E402

RESULTS = BENCH_DIR / "results" / "ppo_vs_trl.json"
TRL_VERSION = "1.12.0"
DEFAULT_VENV = Path("/tmp/trl112-venv")
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "ppo-vs-trl-cache"
TARGETS = {"update_s": 0.8, "peak_rss_mb": 0.7}     # ours ÷ peer, from the issue; reward: at least equal
METRICS = ("update_s", "wall_s", "cpu_s", "peak_rss_mb", "reward_last5")
EVAL_SEED = 1234

# What PPO does, identical on both sides (names as the studio's config spells them).
PPO_COMMON = {"kl_coef": 0.05, "kl_estimator": "k1", "ppo_epochs": 4, "minibatches": 2, "temperature": 1.0,
              "clip_range": 0.2, "clip_range_value": 0.2, "vf_coef": 0.1, "gamma": 1.0, "lam": 0.95}
CASES = {
    "tiny": {
        "label": "tests/tiny_model.py Llama",
        # lm_head too: on the random tiny model the reward is a property of single tokens (lowercase letters), and
        # without lm_head neither LoRA moved it within 30 updates at any learning rate tried (1e-2 to 5e-2).
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0,
                 "target_modules": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head"},
        "updates": 20, "batch_size": 8, "learning_rate": 5.0e-3, "response_length": 16, "prompts": 64,
        "eval_prompts": 64, "eval_samples": 2,
        "reward": {"data": "generated-lowercase", "pairs": 2048, "method": "full", "max_steps": 300, "batch_size": 16,
                   "learning_rate": 1.0e-3, "max_length": 128},
    },
    "bundled": {
        "label": "SmolLM2-135M-Instruct",
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "updates": 3, "batch_size": 8, "learning_rate": 3.0e-5, "response_length": 48, "prompts": 64,
        "eval_prompts": 32, "eval_samples": 1,
        "reward": {"data": "preference-en-sample", "method": "lora", "r": 16, "alpha": 32, "max_steps": 40,
                   "batch_size": 4, "learning_rate": 1.0e-4, "max_length": 512},
    },
}
SEED = 42


# --- TRL 1.12 in its own venv ----------------------------------------------------------------------

VENV_PROBE = ("import json, sys, trl, transformers, peft, torch, accelerate, datasets, importlib.util\n"
              "print(json.dumps({'trl': trl.__version__, 'trl_file': trl.__file__, 'transformers': transformers.__version__,"
              " 'peft': peft.__version__, 'torch': torch.__version__, 'accelerate': accelerate.__version__,"
              " 'datasets': datasets.__version__, 'python': sys.version.split()[0], 'prefix': sys.prefix,"
              " 'has_experimental_ppo': importlib.util.find_spec('trl.experimental.ppo') is not None}))\n")


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def probe_venv(venv: Path) -> dict | None:
    if not venv_python(venv).is_file():
        return None
    done = subprocess.run([str(venv_python(venv)), "-c", VENV_PROBE], capture_output=True, text=True,
                          env={**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"}, cwd="/")
    return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None


def ensure_venv(venv: Path) -> dict:
    """A venv whose python imports TRL 1.12.0 from the venv itself (over the system's TRL) with experimental.ppo."""
    found = probe_venv(venv)
    if found is None or found["trl"] != TRL_VERSION:
        if not venv_python(venv).is_file():
            print(f"creating {venv} (--system-site-packages: torch, transformers, peft come from the system)", flush=True)
            subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        subprocess.run([str(venv_python(venv)), "-m", "pip", "install", "--quiet", f"trl=={TRL_VERSION}"], check=True)
        found = probe_venv(venv)
    if found is None or found["trl"] != TRL_VERSION or not found["trl_file"].startswith(str(venv)):
        raise SystemExit(f"{venv} does not import TRL {TRL_VERSION} from itself: {found}")
    if not found["has_experimental_ppo"]:
        raise SystemExit(f"TRL {found['trl']} in {venv} has no trl.experimental.ppo")
    return found


# --- shared setup ----------------------------------------------------------------------------------

def lowercase_share(text: str) -> float:
    """What the tiny reward model is taught to prefer: the share of characters that are lowercase ASCII letters."""
    return sum(ch.islower() and ch.isascii() for ch in text) / max(len(text), 1)


def lowercase_pairs(tokenizer, n: int, seed: int) -> list[dict]:
    """Preference pairs of text made of tiny-vocabulary tokens (what the random tiny policy writes), the chosen
    answer the one with clearly more lowercase letters."""
    ids = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids]
    pieces = {i: tokenizer.decode([i]) for i in ids}
    lower = [i for i in ids if pieces[i].strip() and lowercase_share(pieces[i]) >= 0.99]
    other = [i for i in ids if lowercase_share(pieces[i]) < 0.5]
    rng = random.Random(seed)

    def sample() -> str:
        p = rng.random()
        return tokenizer.decode([rng.choice(lower) if rng.random() < p else rng.choice(other)
                                 for _ in range(rng.randint(8, 32))]).strip()

    rows = []
    while len(rows) < n:
        a, b = sample(), sample()
        if a and b and abs(lowercase_share(a) - lowercase_share(b)) >= 0.15:
            chosen, rejected = (a, b) if lowercase_share(a) > lowercase_share(b) else (b, a)
            rows.append({"prompt": f"Question number {len(rows)}?", "chosen": chosen, "rejected": rejected})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def studio_env() -> dict:
    # CPU on both sides even where a GPU exists: both are set up for CPU (fp32, no gradient checkpointing).
    return {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
            "TRL_EXPERIMENTAL_SILENCE": "1", "PYTHONPATH": str(REPO_ROOT)}


def peer_env() -> dict:
    env = {**studio_env()}
    env.pop("PYTHONPATH")   # the peer needs nothing from the repository on its path
    return env


def prepare_case(case: str, cache_dir: Path) -> dict:
    """Policy, reward run, merged reward folder and prompts of `case`, reused from the cache when its settings match."""
    spec = CASES[case]
    setup = {"case": case, "reward": spec["reward"], "prompts": spec["prompts"], "seed": SEED}
    key = hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_dir / f"{case}-{key}"
    marker = folder / "setup.json"
    if marker.is_file():
        prepared = json.loads(marker.read_text(encoding="utf-8"))
        print(f"{case}: reusing the shared setup in {folder}", flush=True)
        return {**prepared, "setup_reused": True}
    shutil.rmtree(folder, ignore_errors=True)
    workspace = folder / "workspace"
    workspace.mkdir(parents=True)
    started = time.perf_counter()

    from transformers import AutoTokenizer

    from pipelines.data.store import load_stage_rows

    if case == "tiny":
        from tests.tiny_model import build_tiny_model
        policy_dir = build_tiny_model(folder / "tiny-model")
        model_spec = str(policy_dir)
    else:
        from pipelines.bundled import bundled_model_dir
        from pipelines.config import BUNDLED_MODEL_ID
        policy_dir, model_spec = bundled_model_dir(), BUNDLED_MODEL_ID

    prompts = json.loads((REPO_ROOT / "assets" / "datasets" / "prompts-en-sample.json").read_text(encoding="utf-8"))
    write_jsonl(workspace / "prompts.jsonl", prompts[:spec["prompts"]])
    rows = load_stage_rows("prompts.jsonl", workspace, "ppo", SEED)      # what the PPO stage will train on
    write_jsonl(folder / "prompts-conversations.jsonl", rows)

    reward = spec["reward"]
    if reward["data"] == "generated-lowercase":
        tokenizer = AutoTokenizer.from_pretrained(policy_dir)
        write_jsonl(workspace / "pairs.jsonl", lowercase_pairs(tokenizer, reward["pairs"], SEED))
        write_jsonl(workspace / "pairs-heldout.jsonl", lowercase_pairs(tokenizer, 256, SEED + 1))
        dataset, heldout = "pairs.jsonl", "pairs-heldout.jsonl"
    else:
        dataset = heldout = reward["data"]
    peft = {"method": "full"} if reward["method"] == "full" else {
        "method": "lora", "r": reward["r"], "alpha": reward["alpha"], "dropout": 0.05, "target_modules": "all-linear"}
    rm_config = {"name": "rm", "stage": "reward", "model": model_spec, "dataset": dataset, "peft": peft,
                 "train": {"max_steps": reward["max_steps"], "batch_size": reward["batch_size"],
                           "learning_rate": reward["learning_rate"], "max_length": reward["max_length"],
                           "lr_scheduler": "constant", "warmup_ratio": 0.0, "save_steps": reward["max_steps"],
                           "seed": SEED, "precision": "fp32", "gradient_checkpointing": "off"}}
    config_path = folder / "rm.yaml"
    import yaml
    config_path.write_text(yaml.safe_dump(rm_config, sort_keys=False), encoding="utf-8")
    print(f"{case}: training the shared reward model ({reward['max_steps']} steps on {dataset})", flush=True)
    with open(folder / "rm.log", "wb") as log:
        subprocess.run([sys.executable, "-m", "pipelines", "--workspace", str(workspace), "train", str(config_path)],
                       check=True, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=studio_env())

    from pipelines.models import resolve_model
    from pipelines.scoring import evaluate_pairs, load_reward_model
    model, tokenizer = load_reward_model(resolve_model("rm/final", workspace))
    merged = folder / "reward-merged"
    model.save_pretrained(merged)
    tokenizer.save_pretrained(merged)
    accuracy = evaluate_pairs(workspace, "rm/final", heldout, limit=256)
    del model
    prepared = {"case": case, "folder": str(folder), "workspace": str(workspace), "model_spec": model_spec,
                "policy_dir": str(policy_dir), "reward_dir": str(merged), "reward_checkpoint": "rm/final",
                "prompts_file": str(folder / "prompts-conversations.jsonl"), "prompt_rows": len(rows),
                "reward_accuracy": {"dataset": heldout, "pairs": accuracy["pairs"], "accuracy": accuracy["accuracy"],
                                    "mean_margin": accuracy["mean_margin"]},
                "setup": setup, "setup_s": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps(prepared, indent=1), encoding="utf-8")
    return {**prepared, "setup_reused": False}


# --- one measured process --------------------------------------------------------------------------

def per_update(times: list[float]) -> float:
    """Steady-state seconds per update: from the first update's log to the last's, over the updates between."""
    return (times[-1] - times[0]) / (len(times) - 1)


def ours_config(case: str, prepared: dict, name: str) -> dict:
    spec = CASES[case]
    return {"name": name, "stage": "ppo", "model": prepared["model_spec"], "dataset": "prompts.jsonl",
            "peft": {"method": "lora", **spec["lora"]},
            "train": {"max_steps": spec["updates"], "batch_size": spec["batch_size"], "learning_rate": spec["learning_rate"],
                      "lr_scheduler": "constant", "warmup_ratio": 0.0, "logging_steps": 1, "save_steps": spec["updates"],
                      "seed": SEED, "precision": "fp32", "gradient_checkpointing": "off"},
            "ppo": {"reward": prepared["reward_checkpoint"], **PPO_COMMON, "response_length": spec["response_length"],
                    "missing_eos_penalty": 0.0, "kl_target": 0.0}}


def ours_command(prepared: dict, config_path: Path) -> list[str]:
    return [sys.executable, "-m", "pipelines", "--workspace", prepared["workspace"], "train", str(config_path)]


def run_ours(case: str, prepared: dict, folder: Path, name: str, profile: Path | None = None) -> dict:
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    run_dir = Path(prepared["workspace"]) / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    config_path = folder / "config.yaml"
    config_path.write_text(yaml.safe_dump(ours_config(case, prepared, name), sort_keys=False), encoding="utf-8")
    command = ours_command(prepared, config_path)
    if profile:
        command = [command[0], "-m", "cProfile", "-o", str(profile), *command[1:]]
    measured = measure_process(command, folder / "stdout.log", studio_env(), REPO_ROOT)
    status = json.loads((run_dir / "status.json").read_text(encoding="utf-8"))
    if status.get("status") != "completed":
        raise SystemExit(f"our run ended {status.get('status')}: {status.get('error')}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    records = [r for r in records if "objective/scores" in r]
    return {**measured, **summarise_updates(records, "objective/scores", "objective/kl"),
            "final": str(run_dir / "final"), "run_dir": str(run_dir), "adapter": adapter_summary(run_dir / "final")}


def run_peer(case: str, prepared: dict, folder: Path, venv: Path, profile: Path | None = None) -> dict:
    spec = CASES[case]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    job = {"policy_dir": prepared["policy_dir"], "reward_dir": prepared["reward_dir"], "prompts": prepared["prompts_file"],
           "output_dir": str(folder / "out"), "result": str(folder / "result.json"), "lora": spec["lora"],
           "settings": {**PPO_COMMON, "updates": spec["updates"], "batch_size": spec["batch_size"],
                        "learning_rate": spec["learning_rate"], "lr_scheduler": "constant", "response_length": spec["response_length"],
                        "weight_decay": 0.01,   # torch.optim.AdamW's default, which ours uses
                        "seed": SEED}}
    (folder / "job.json").write_text(json.dumps(job, indent=1), encoding="utf-8")
    command = [str(venv_python(venv)), str(BENCH_DIR / "trl112_ppo.py"), str(folder / "job.json")]
    if profile:
        command = [command[0], "-m", "cProfile", "-o", str(profile), *command[1:]]
    measured = measure_process(command, folder / "stdout.log", peer_env(), REPO_ROOT)
    result = json.loads((folder / "result.json").read_text(encoding="utf-8"))
    return {**measured, **summarise_updates(result["updates"], "objective/scores", "objective/kl"),
            "final": str(folder / "out" / "final"), "adapter": adapter_summary(folder / "out" / "final"),
            "peer_times": result["times"], "versions": result["versions"], "torch_threads": result["torch_threads"],
            "added_pad_token": result["added_pad_token"], "trainable_parameters": result["trainable_parameters"]}


def adapter_summary(final: Path) -> dict:
    """The saved LoRA adapter's config and its number of parameters (must be the same on both sides)."""
    from safetensors import safe_open

    count = 0
    with safe_open(str(final / "adapter_model.safetensors"), framework="pt") as tensors:
        for key in tensors.keys():
            count += math.prod(tensors.get_slice(key).get_shape())
    return {"config": json.loads((final / "adapter_config.json").read_text(encoding="utf-8")), "lora_parameters": count}


def summarise_updates(records: list[dict], score_key: str, kl_key: str) -> dict:
    times = [float(r["time"]) for r in records]
    scores = [float(r[score_key]) for r in records]
    return {"updates": len(records), "update_s": per_update(times), "reward_last5": statistics.mean(scores[-5:]),
            "reward_first5": statistics.mean(scores[:5]), "scores": scores, "kl": [float(r[kl_key]) for r in records],
            "update_times": [round(b - a, 3) for a, b in zip(times, times[1:])]}


# --- one scorer for both sides' final policies -----------------------------------------------------

def evaluate_policies(case: str, prepared: dict, finals: dict[str, str | None]) -> dict:
    """Sample each final policy on the prompts (same seed, temperature, length) and score every answer with the
    studio's reward scorer, so both sides are measured on one scale; also the lowercase share the reward imitates."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.models import resolve_model
    from pipelines.rl.rollout import response_mask, stop_token_ids
    from pipelines.scoring import load_reward_model, score_conversations

    spec = CASES[case]
    rows = [json.loads(line) for line in Path(prepared["prompts_file"]).read_text(encoding="utf-8").splitlines()]
    prompts = [row["prompt"] for row in rows[:spec["eval_prompts"]]] * spec["eval_samples"]
    reward_model, reward_tokenizer = load_reward_model(resolve_model(prepared["reward_checkpoint"], Path(prepared["workspace"])))
    tokenizer = AutoTokenizer.from_pretrained(prepared["policy_dir"], padding_side="left")
    results = {}
    for name, adapter in finals.items():
        model = AutoModelForCausalLM.from_pretrained(prepared["policy_dir"], dtype=torch.float32)
        if adapter:
            model = PeftModel.from_pretrained(model, adapter)
        model.eval()
        torch.manual_seed(EVAL_SEED)
        answers = []
        for start in range(0, len(prompts), 16):
            batch = prompts[start:start + 16]
            texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in batch]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(**encoded, do_sample=True, temperature=PPO_COMMON["temperature"], top_k=0, top_p=1.0,
                                     max_new_tokens=spec["response_length"], pad_token_id=tokenizer.pad_token_id)
            responses = out[:, encoded["input_ids"].shape[1]:]
            mask, _ = response_mask(responses, stop_token_ids(model, tokenizer))
            responses = torch.where(mask.bool(), responses, torch.full_like(responses, tokenizer.pad_token_id))
            answers += [a.strip() for a in tokenizer.batch_decode(responses, skip_special_tokens=True)]
        scores = score_conversations(reward_model, reward_tokenizer,
                                     [p + [{"role": "assistant", "content": a}] for p, a in zip(prompts, answers)])
        results[name] = {"reward": statistics.mean(scores), "lowercase_share": statistics.mean(map(lowercase_share, answers)),
                         "answers": len(answers), "example": answers[0][:120]}
    return results


# --- profiles --------------------------------------------------------------------------------------

def summarise_profile(path: Path, limit: int = 30) -> dict:
    """The functions with the most cumulative and the most own time."""
    stats = pstats.Stats(str(path))
    total = stats.total_tt
    rows = []
    for (file, line, function), (_, calls, own, cumulative, _) in stats.stats.items():
        short = file.split("site-packages/")[-1].replace(str(REPO_ROOT) + "/", "")
        rows.append({"function": f"{short}:{line}({function})", "calls": calls, "own_s": round(own, 3),
                     "cumulative_s": round(cumulative, 3)})
    by_cumulative = sorted(rows, key=lambda r: -r["cumulative_s"])
    by_own = sorted(rows, key=lambda r: -r["own_s"])
    interesting = [r for r in by_cumulative if r["function"].startswith(("pipelines/", "trl/", "bench/"))]
    return {"total_s": round(total, 2), "by_cumulative": by_cumulative[:limit], "by_own": by_own[:limit],
            "project_functions": interesting[:limit]}


# --- the benchmark ---------------------------------------------------------------------------------

def bench_case(case: str, repeats: int, quiet_wait_s: float, scratch: Path, cache_dir: Path, venv: Path,
               profile: bool, keep: bool) -> dict:
    prepared = prepare_case(case, cache_dir)
    print(f"{case}: reward model accuracy {prepared['reward_accuracy']['accuracy']:.0%} on "
          f"{prepared['reward_accuracy']['pairs']} pairs of {prepared['reward_accuracy']['dataset']}", flush=True)
    runs = {"ours": [], "peer": []}
    for rep in range(repeats):
        for side in ("ours", "peer"):
            quiet = wait_for_quiet(quiet_wait_s)
            folder = scratch / f"{case}-{side}-{rep}"
            result = (run_ours(case, prepared, folder, f"ppo-bench-{case}-{rep}") if side == "ours"
                      else run_peer(case, prepared, folder, venv))
            result.update(quiet)
            runs[side].append(result)
            print(f"  {case} {side} #{rep + 1}: {result['update_s']:.2f} s/update, wall {result['wall_s']:.1f} s, "
                  f"cpu {result['cpu_s']:.1f} s, peak {result['peak_rss_mb']:.0f} MB, reward (last 5, own scoring) "
                  f"{result['reward_last5']:+.3f}; others used {result['others_share']:.0%} of the cores "
                  f"(waited {quiet['waited_s']:.0f} s for quiet)", flush=True)
    stats = {how: {side: {m: pick(r[m] for r in rows) for m in METRICS} for side, rows in runs.items()}
             for how, pick in (("median", statistics.median), ("min", min))}
    ratios = {how: {m: stats[how]["ours"][m] / stats[how]["peer"][m] for m in METRICS if m != "reward_last5"}
              for how in stats}
    evaluation = None
    if CASES[case]["eval_prompts"]:
        print(f"  {case}: scoring every final policy with one scorer", flush=True)
        finals = {"base (no adapter)": None}
        finals.update({f"ours #{i + 1}": r["final"] for i, r in enumerate(runs["ours"])})
        finals.update({f"peer #{i + 1}": r["final"] for i, r in enumerate(runs["peer"])})
        evaluation = evaluate_policies(case, prepared, finals)
        for side in ("ours", "peer"):
            values = [evaluation[f"{side} #{i + 1}"]["reward"] for i in range(repeats)]
            shares = [evaluation[f"{side} #{i + 1}"]["lowercase_share"] for i in range(repeats)]
            stats["median"][side]["eval_reward"] = statistics.median(values)
            stats["median"][side]["eval_lowercase"] = statistics.median(shares)
    profiles = {}
    if profile:
        for side in ("ours", "peer"):
            wait_for_quiet(quiet_wait_s)
            path = scratch / f"{case}-{side}.prof"
            folder = scratch / f"{case}-{side}-profile"
            if side == "ours":
                run_ours(case, prepared, folder, f"ppo-bench-{case}-profile", profile=path)
            else:
                run_peer(case, prepared, folder, venv, profile=path)
            profiles[side] = summarise_profile(path)
            if keep:
                shutil.copy(path, BENCH_DIR / "results" / f"ppo_vs_trl-{case}-{side}.prof")
    if not keep:   # our measured runs live in the cached workspace: remove them, keep the reward run
        for path in (Path(prepared["workspace"]) / "runs").glob(f"ppo-bench-{case}-*"):
            shutil.rmtree(path, ignore_errors=True)
    ours_adapter, peer_adapter = runs["ours"][0]["adapter"], runs["peer"][0]["adapter"]
    fairness = {"adapter_config_differences": adapter_differences(ours_adapter["config"], peer_adapter["config"]),
                "lora_parameters": {"ours": ours_adapter["lora_parameters"], "peer": peer_adapter["lora_parameters"]},
                "peer_trainable_parameters": runs["peer"][0]["trainable_parameters"],
                "updates_logged": {side: [r["updates"] for r in rows] for side, rows in runs.items()}}
    spec = CASES[case]
    samples = {side: [{k: v for k, v in r.items() if k not in ("final", "run_dir", "adapter")} for r in rows]
               for side, rows in runs.items()}
    return {"repeats": repeats, "settings": {**{k: spec[k] for k in ("label", "lora", "updates", "batch_size",
                                                                       "learning_rate", "response_length", "prompts")},
                                             "ppo": PPO_COMMON, "lr_scheduler": "constant", "seed": SEED,
                                             "precision": "fp32", "gradient_checkpointing": "off", "reward": spec["reward"]},
            "setup": {k: prepared[k] for k in ("policy_dir", "reward_dir", "reward_accuracy", "setup_reused", "prompt_rows")},
            **stats, "ratios": ratios, "targets": TARGETS, "evaluation": evaluation, "fairness": fairness, "samples": samples,
            "profiles": profiles}


def markdown(case: str, result: dict) -> str:
    s, median, fastest, ratios = result["settings"], result["median"], result["min"], result["ratios"]
    labels = {"update_s": "seconds per update (steady state)", "wall_s": "wall time, whole process (s)",
              "cpu_s": "CPU time, user + system (s)", "peak_rss_mb": "peak RSS (MB)"}
    lines = [f"### {case} ({s['label']}): LoRA r={s['lora']['r']}, {s['updates']} updates × {s['batch_size']} prompts, "
             f"{s['ppo']['minibatches']} minibatches × {s['ppo']['ppo_epochs']} PPO epochs, {s['response_length']} "
             f"response tokens, {result['repeats']} runs per side", "",
             "| metric | ours median | TRL 1.12 median | ours ÷ TRL | ours min | TRL min | ÷ of mins | target |",
             "|---|---:|---:|---:|---:|---:|---:|:-:|"]
    for m, label in labels.items():
        fmt = "{:.0f}" if m == "peak_rss_mb" else "{:.2f}"
        target = TARGETS.get(m)
        verdict = "" if target is None else f"≤ {target} {'✓' if ratios['median'][m] <= target else '✗'}"
        lines.append(f"| {label} | {fmt.format(median['ours'][m])} | {fmt.format(median['peer'][m])} | "
                     f"{ratios['median'][m]:.2f} | {fmt.format(fastest['ours'][m])} | {fmt.format(fastest['peer'][m])} | "
                     f"{ratios['min'][m]:.2f} | {verdict} |")
    lines.append(f"| mean reward, last 5 updates (each side's own scoring) | {median['ours']['reward_last5']:+.3f} | "
                 f"{median['peer']['reward_last5']:+.3f} | | | | | |")
    if result.get("evaluation"):
        ev = result["evaluation"]
        lines.append(f"| final policy, one scorer for both: reward (base {ev['base (no adapter)']['reward']:+.3f}) | "
                     f"{median['ours']['eval_reward']:+.3f} | {median['peer']['eval_reward']:+.3f} | | | | | ≥ "
                     f"{'✓' if median['ours']['eval_reward'] >= median['peer']['eval_reward'] else '✗'} |")
        if s["reward"]["data"] == "generated-lowercase":
            lines.append(f"| final policy: lowercase share of answers (base {ev['base (no adapter)']['lowercase_share']:.3f}) | "
                         f"{median['ours']['eval_lowercase']:.3f} | {median['peer']['eval_lowercase']:.3f} | | | | | |")
    f = result["fairness"]
    lora = f["lora_parameters"]
    lines += ["", f"Same adapter: adapter_config differences {f['adapter_config_differences'] or 'none'}; LoRA parameters "
              f"ours {lora['ours']:,} / TRL {lora['peer']:,}. TRL also trains its value model in full: "
              f"{f['peer_trainable_parameters'] - lora['peer']:,} more parameters (ours: one linear layer on the policy's "
              f"last hidden state). Updates logged: {f['updates_logged']}."]
    return "\n".join(lines)


def write_results(results: dict, venv_versions: dict) -> None:
    """Merge these cases into bench/results/ppo_vs_trl.json, so `--models bundled` keeps the tiny numbers."""
    import peft
    import torch
    import transformers
    import trl

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    document = {"machine": describe_machine(),
                "versions": {"ours": {"torch": torch.__version__, "transformers": transformers.__version__,
                                      "trl": trl.__version__, "peft": peft.__version__},
                             "peer_venv": venv_versions},
                "targets": {**TARGETS, "reward": "ours ≥ peer"},
                "cases": {**previous.get("cases", {}), **{case: {"date": now, **r} for case, r in results.items()}}}
    RESULTS.write_text(json.dumps(document, indent=1, default=str), encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(REPO_ROOT)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,bundled", help="Comma-separated cases: tiny, bundled.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per side on the tiny model, alternating.")
    parser.add_argument("--bundled-repeats", type=int, default=1, help="Runs per side on the bundled model.")
    add_quiet_arguments(parser)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="The virtual environment holding TRL 1.12.")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="Where the shared setup (tiny model, reward runs, merged reward models) is kept and reused.")
    parser.add_argument("--profile", action="store_true", help="Also one cProfile run of each side per case (not timed).")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch folder, our runs and the profiles.")
    args = parser.parse_args(argv)
    cases = chosen_cases(parser, args.models, CASES)
    venv_versions = ensure_venv(args.venv)
    print(f"peer venv {args.venv}: TRL {venv_versions['trl']}, transformers {venv_versions['transformers']}, "
          f"peft {venv_versions['peft']}, torch {venv_versions['torch']}", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="ppo-vs-trl-"))
    try:
        results = {}
        for case in cases:
            repeats = args.repeats if case == "tiny" else args.bundled_repeats
            print(f"{case}: {repeats} × (ours, TRL 1.12) in {scratch}", flush=True)
            results[case] = bench_case(case, repeats, args.quiet_wait, scratch, args.cache_dir, args.venv,
                                       args.profile, args.keep)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print()
    for case, result in results.items():
        print(markdown(case, result) + "\n")
    write_results(results, venv_versions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

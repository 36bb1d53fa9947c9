"""Probe prompts: a few questions answered greedily at every checkpoint save, so the run page can show how the
answers change step by step (a prompt × step grid), not only how the loss moves."""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from pipelines import run_files
from pipelines.stages import get_stage

PROBES_FILE = "probes.jsonl"
MAX_PROBES = 8
PROBE_TOKENS = 64


DEFAULT_PROBES = 4


def probe_list(text: str) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()][:MAX_PROBES]


def run_probe_prompts(config, workspace: Path) -> list[str]:
    """The config's probe prompts; for a preference or RL stage that names none, DEFAULT_PROBES prompts of its own
    dataset (the last user turn, drawn with the run's seed)."""
    import random

    from pipelines.data.store import load_stage_rows

    named = probe_list(config.train.probe_prompts)
    if named or not get_stage(config.stage).probes_own_prompts:
        return named
    rows = load_stage_rows(config.dataset, workspace, config.stage, config.train.seed)
    prompts = list(dict.fromkeys(row["prompt"][-1]["content"] if isinstance(row["prompt"], list) else str(row["prompt"])
                                 for row in rows))
    return random.Random(config.train.seed).sample(prompts, min(DEFAULT_PROBES, len(prompts)))


class ProbeCallback(TrainerCallback):
    """On each save, answer the probe prompts with the model as it is now (main process only)."""

    def __init__(self, run_dir: Path, prompts: list[str]):
        self.run_dir, self.prompts = run_dir, prompts

    def on_save(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not state.is_world_process_zero or model is None or processing_class is None or not self.prompts:
            return
        for prompt, answer in zip(self.prompts, answer_probes(model, processing_class, self.prompts)):
            run_files.append_jsonl(self.run_dir / PROBES_FILE, {"step": state.global_step, "prompt": prompt,
                                                                "answer": answer, "time": time.time()})


def answer_probes(model, tokenizer, prompts: list[str]) -> list[str]:
    import torch

    was_training = model.training
    model.eval()
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts]
    encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                        add_special_tokens=False).to(next(model.parameters()).device)
    try:
        with torch.no_grad():
            output = model.generate(**encoded, do_sample=False, max_new_tokens=PROBE_TOKENS,
                                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    finally:
        model.train(was_training)
    return [a.strip() for a in tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)]


def probe_grid(run_dir: Path) -> dict:
    """{"steps": [...], "rows": [{"prompt": ..., "answers": {step: answer}}]} from the run's probes file."""
    records = run_files.read_jsonl(run_dir / PROBES_FILE)
    steps = sorted({r["step"] for r in records})
    rows: dict[str, dict] = {}
    for record in records:
        rows.setdefault(record["prompt"], {})[record["step"]] = record["answer"]
    return {"steps": steps, "rows": [{"prompt": p, "answers": a} for p, a in rows.items()]}

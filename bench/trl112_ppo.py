"""The peer of bench/ppo_vs_trl.py: PPO with TRL 1.12's `trl.experimental.ppo.PPOTrainer` (the last TRL that
shipped PPO), called the way TRL's own example (examples/scripts/ppo/ppo.py) calls it. Run by the venv's python:

    /tmp/trl112-venv/bin/python bench/trl112_ppo.py job.json

Imports nothing from the studio. The job names the policy folder, the merged reward-model folder (the value
model starts from it too, as in TRL's example), a JSONL of prompt conversations, and every setting; the result
JSON holds each update's logged metrics with a wall-clock timestamp, the time inside trainer.train(), and the
versions that ran.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    started = time.time()

    import peft
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    assert trl.__version__ == "1.12.0", f"expected TRL 1.12.0, got {trl.__version__} from {trl.__file__}"
    imported = time.time()
    settings, lora = job["settings"], job["lora"]

    tokenizer = AutoTokenizer.from_pretrained(job["policy_dir"], padding_side="left")
    added_pad = False
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        # TRL's PPO treats every pad-id token as padding (attention masks are `ids != pad_token_id`), so with
        # pad == eos the end-of-turn tokens of the prompt and the answer would be masked out. TRL's own example
        # adds a fresh pad token; its id never reaches an embedding (padding is replaced by 0 before every forward).
        tokenizer.add_special_tokens({"pad_token": "[PAD]"})
        added_pad = True
    threads_before = torch.get_num_threads()
    torch.manual_seed(settings["seed"])
    policy = AutoModelForCausalLM.from_pretrained(job["policy_dir"], dtype=torch.float32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(job["reward_dir"], num_labels=1, dtype=torch.float32)
    value_model = AutoModelForSequenceClassification.from_pretrained(job["reward_dir"], num_labels=1, dtype=torch.float32)

    rows = [json.loads(line) for line in Path(job["prompts"]).read_text(encoding="utf-8").splitlines() if line.strip()]
    # Rendered and tokenised exactly as the studio's rollout does: chat template + generation prompt, no extra specials.
    texts = [tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True) for row in rows]
    dataset = Dataset.from_dict({"input_ids": [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]})

    updates, batch = settings["updates"], settings["batch_size"]
    args = PPOConfig(
        output_dir=job["output_dir"],
        # One rollout batch = per_device_train_batch_size × gradient_accumulation_steps prompts; num_mini_batches
        # splits it; with accumulation 1 every minibatch is one optimizer step, as in the studio.
        per_device_train_batch_size=batch, gradient_accumulation_steps=1, num_mini_batches=settings["minibatches"],
        num_ppo_epochs=settings["ppo_epochs"], total_episodes=updates * batch,
        learning_rate=settings["learning_rate"], lr_scheduler_type=settings["lr_scheduler"], warmup_steps=0,
        optim="adamw_torch", weight_decay=settings["weight_decay"], adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        response_length=settings["response_length"], temperature=settings["temperature"], stop_token="eos",
        missing_eos_penalty=None, kl_coef=settings["kl_coef"], kl_estimator=settings["kl_estimator"],
        cliprange=settings["clip_range"], cliprange_value=settings["clip_range_value"], vf_coef=settings["vf_coef"],
        gamma=settings["gamma"], lam=settings["lam"], whiten_rewards=False,
        local_rollout_forward_batch_size=batch, num_sample_generations=0,
        bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
        seed=settings["seed"], logging_steps=1, save_strategy="steps", save_steps=updates, report_to=[],
        disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=False,
    )
    targets = lora["target_modules"].strip()   # as the studio reads it: 'all-linear' or a comma-separated list
    targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                             target_modules=targets, task_type="CAUSAL_LM")

    logged: list[dict] = []

    class Timestamps(TrainerCallback):
        """Each update's metrics with the time it was logged (TRL logs once per update, before saving)."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "objective/scores" in logs:
                logged.append({"step": state.global_step, "time": time.time(), **logs})

    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=None, reward_model=reward_model,
                         train_dataset=dataset, value_model=value_model, peft_config=peft_config, callbacks=[Timestamps()])
    loaded = time.time()
    trainer.train()
    trained = time.time()
    trainer.save_model(str(Path(job["output_dir"]) / "final"))
    saved = time.time()

    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    result = {
        "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
                     "torch": torch.__version__, "python": sys.version.split()[0]},
        "added_pad_token": added_pad, "torch_threads": [threads_before, torch.get_num_threads()], "trainable_parameters": trainable,
        "times": {"imports_s": imported - started, "load_s": loaded - imported, "train_s": trained - loaded,
                  "save_s": saved - trained, "train_started": loaded, "train_ended": trained},
        "updates": logged,
    }
    Path(job["result"]).write_text(json.dumps(result, indent=1, default=float), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))

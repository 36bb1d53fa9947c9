"""The peer of a studio DPO run: TRL's DPOTrainer called directly, as a user's own script would.

    python bench/plain_dpo.py JOB.json

JOB.json (written by bench/dpo_overhead.py) names the model folder, a JSONL file of preference rows already in
TRL's conversational shape (prompt / chosen / rejected message lists), the output folder, the `peft`, `train`
and `dpo` sections of the studio config, and where to write the result. The DPOConfig below spells out, value
by value, what the studio derives from the same sections in pipelines/stages/common.common_training_args (CPU,
fp32 unless train.precision is bf16, no gradient checkpointing) and pipelines/stages/dpo.py (beta, loss_type, label_smoothing, max_length;
with LoRA the reference is the same weights with the adapter disabled, so ref_model=None and no precomputed
reference log-probs). dpo_overhead.py checks afterwards that the two saved training_args.bin files agree, so a
drift in either shows up as a listed difference.

This script imports nothing from the studio.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    peft, train, dpo, output_dir = job["peft"], job["train"], job["dpo"], Path(job["output_dir"])
    tokenizer = AutoTokenizer.from_pretrained(job["model_dir"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32, use_safetensors=True)
    rows = [json.loads(line) for line in Path(job["rows"]).read_text(encoding="utf-8").splitlines() if line.strip()]
    args = DPOConfig(
        output_dir=str(output_dir / "checkpoints"),
        max_steps=train["max_steps"],
        num_train_epochs=train["epochs"],
        learning_rate=train["learning_rate"],
        lr_scheduler_type=train["lr_scheduler"],
        warmup_steps=train["warmup_ratio"],       # a float below 1 is a ratio of the total steps
        per_device_train_batch_size=train["batch_size"],
        gradient_accumulation_steps=train["grad_accum"],
        logging_steps=train["logging_steps"],
        logging_first_step=True,
        logging_nan_inf_filter=False,
        save_strategy="steps",
        save_steps=train["save_steps"],
        seed=train["seed"],
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        gradient_checkpointing=False,             # TRL's default is True, which is 2.5-5x slower on CPU
        use_cpu=True,
        # TRL's default is bf16 where available; the studio's train.precision decides, and both sides share it
        # (bench/dpo_speed.py --precision bf16). bf16 on CPU is autocast over fp32 weights.
        bf16=train.get("precision") == "bf16",
        fp16=False,
        beta=dpo["beta"],
        loss_type=[dpo["loss_type"]] + (["sft"] if dpo.get("sft_weight") else []),   # the SFT term on chosen
        loss_weights=[1.0, dpo["sft_weight"]] if dpo.get("sft_weight") else None,
        label_smoothing=dpo["label_smoothing"],
        max_length=train["max_length"],
        precompute_ref_log_probs=False,           # LoRA: the reference is the base with the adapter disabled
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=peft["r"], lora_alpha=peft["alpha"], lora_dropout=peft["dropout"],
                               target_modules=peft["target_modules"], task_type="CAUSAL_LM"),
    )
    output = trainer.train()
    trainer.save_model(str(output_dir / "final"))
    result = {"summary": output.metrics,
              "logged": {str(e["step"]): {k: v for k, v in e.items() if isinstance(v, (int, float))}
                         for e in trainer.state.log_history if "loss" in e}}
    Path(job["result"]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))

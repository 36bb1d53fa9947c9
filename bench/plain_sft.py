"""The peer of a studio SFT run: TRL's SFTTrainer called directly, as a user's own script would.

    python bench/plain_sft.py JOB.json

JOB.json (written by bench/sft_overhead.py or bench/sft_speed.py) names the model folder, a JSONL file of rows
already in TRL's `messages` shape, the output folder, the `peft` and `train` sections of the studio config, and
where to write the result. The SFTConfig below spells out, value by value, what the studio derives
from the same sections in pipelines/stages/common.common_training_args (CPU, fp32, no gradient
checkpointing) and pipelines/stages/sft.py; sft_overhead.py checks afterwards that the two saved
training_args.bin files agree, so a drift in either shows up as a listed difference.

An optional `peer` in JOB.json picks how the peer computes (sft_speed.py's peers):
    fp32          (the default) fp32, no gradient checkpointing: the settings above
    bf16          the same with bf16=True, so the Trainer runs forward and backward under bf16 autocast
    trl-defaults  bf16 and gradient_checkpointing left unset, so SFTConfig's own defaults apply (both on)
The result holds the summary, the loss and TRL's running `num_tokens` (non-padding tokens seen) per logged step,
and the precision and gradient checkpointing the Trainer actually used.

This script imports nothing from the studio.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# How each peer computes: SFTConfig fields, or none to leave TRL's defaults in place. TRL's defaults turn gradient
# checkpointing and bf16 on; on a CPU checkpointing costs 2.5-5x, and bf16 is only quicker where the CPU has it natively.
PEERS = {
    "fp32": {"gradient_checkpointing": False, "bf16": False, "fp16": False},
    "bf16": {"gradient_checkpointing": False, "bf16": True, "fp16": False},
    "trl-defaults": {},
}


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    peft, train, output_dir = job["peft"], job["train"], Path(job["output_dir"])
    computing = PEERS[job.get("peer", "fp32")]
    tokenizer = AutoTokenizer.from_pretrained(job["model_dir"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32, use_safetensors=True)
    rows = [json.loads(line) for line in Path(job["rows"]).read_text(encoding="utf-8").splitlines() if line.strip()]
    args = SFTConfig(
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
        use_cpu=True,
        **computing,
        max_length=train["max_length"],
        assistant_only_loss=True,                 # both models' chat templates carry {% generation %} markers
        packing=False,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=peft["r"], lora_alpha=peft["alpha"], lora_dropout=peft["dropout"],
                               target_modules=peft["target_modules"], task_type="CAUSAL_LM"),
    )
    output = trainer.train()
    trainer.save_model(str(output_dir / "final"))
    result = {"summary": output.metrics,
              "losses": {str(e["step"]): e["loss"] for e in trainer.state.log_history if "loss" in e},
              "num_tokens": {str(e["step"]): e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e},
              "bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing}
    Path(job["result"]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))

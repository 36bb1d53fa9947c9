"""The peer of a studio pretrain run: TRL's SFTTrainer called directly on packed raw text, as a user's own script would.

    python bench/plain_pretrain.py JOB.json

JOB.json (written by bench/pretrain_overhead.py) names the model folder, a JSONL file of {"text": ...} documents
(the very file the studio run reads), the output folder, the `peft` and `train` sections of the studio config, and
where to write the result. Each document is tokenised as it is written (add_special_tokens=False) and followed by
the tokenizer's end-of-text id; TRL packs the rows end to end into blocks of max_length ("wrapped"). The SFTConfig
below spells out, value by value, what the studio derives from the same sections in
pipelines/stages/common.common_training_args (CPU, fp32, no gradient checkpointing, no eval) and
pipelines/stages/pretrain.py; pretrain_overhead.py checks afterwards that the two saved training_args.bin files
agree, so a drift in either shows up as a listed difference.

This script imports nothing from the studio.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# GPT-style tokenizers name their document separator one of these; SmolLM2's is <|endoftext|>.
END_OF_TEXT_TOKENS = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>")


def separator(tokenizer) -> int:
    vocabulary = tokenizer.get_vocab()
    return next((vocabulary[t] for t in END_OF_TEXT_TOKENS if t in vocabulary), tokenizer.eos_token_id)


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    peft, train, output_dir = job["peft"], job["train"], Path(job["output_dir"])
    tokenizer = AutoTokenizer.from_pretrained(job["model_dir"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(job["model_dir"], dtype=torch.float32, use_safetensors=True)
    texts = [json.loads(line)["text"] for line in Path(job["corpus"]).read_text(encoding="utf-8").splitlines()
             if line.strip()]
    end = separator(tokenizer)
    rows = [{"input_ids": [*ids, end]} for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
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
        gradient_checkpointing=False,             # TRL's default is True, which is 2.5-5x slower on CPU
        use_cpu=True,
        bf16=False,                               # TRL's default is bf16, also much slower on CPU
        fp16=False,
        max_length=train["max_length"],
        packing=True,
        packing_strategy="wrapped",               # documents end to end, cut into full blocks: no padding
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
    logged = [e for e in trainer.state.log_history if "loss" in e]
    result = {"summary": output.metrics, "losses": {str(e["step"]): e["loss"] for e in logged},
              "num_tokens": logged[-1].get("num_tokens") if logged else None,
              "documents": len(rows), "blocks": len(trainer.train_dataset),
              "block_lengths": sorted({len(b) for b in trainer.train_dataset["input_ids"]})}
    Path(job["result"]).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))

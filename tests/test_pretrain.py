"""Continued pretraining on the tiny model: packed blocks without padding, documents kept apart by the end-of-text
token, held-out perplexity that falls, and a checkpoint that SFT then starts from."""

import math

from pipelines.run_files import read_metrics, read_status
from pipelines.stages.pretrain import PerplexityLog, hold_out, packing, perplexity_callback, separator_id, tokenised
from tests.conftest import write_jsonl

# Documents of one small "domain": the same phrases recur, so a few steps make held-out documents predictable.
DOCUMENTS = [f"Hive {n} was inspected on day {n % 7}. The queen is laying well and the brood is capped. "
             f"Add one super to hive {n} before the flow." for n in range(24)]


def pretrain_config(model, dataset: str = "corpus.jsonl", **train) -> str:
    settings = {"max_steps": 24, "batch_size": 2, "learning_rate": 5e-3, "max_length": 32, "save_steps": 12,
                "eval_steps": 6, "warmup_ratio": 0.0, "lr_scheduler": "constant", **train}
    body = ", ".join(f"{k}: {v}" for k, v in settings.items())
    return (f"stage: pretrain\nmodel: {model}\ndataset: {dataset}\npeft: {{method: lora, r: 8, alpha: 16}}\n"
            f"pretrain: {{held_out: 0.2}}\ntrain: {{{body}}}\n")


def test_packed_blocks_hold_no_padding_and_an_end_of_text_token_after_every_document(tiny_model, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    separator = separator_id(tokenizer)
    rows = tokenised([{"text": d} for d in DOCUMENTS[:6]], tokenizer, separator)
    assert all(r["input_ids"][-1] == separator and r["input_ids"].count(separator) == 1 for r in rows)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), processing_class=tokenizer,
                         args=SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, shuffle_dataset=False,
                                        per_device_train_batch_size=2, **packing(16)),
                         train_dataset=Dataset.from_list(rows))
    blocks = [block["input_ids"] for block in trainer.train_dataset]
    assert all(len(block) == 16 for block in blocks[:-1]), "every block but the last is exactly max_length"
    joined = [token for block in blocks for token in block]
    assert joined == [token for row in rows for token in row["input_ids"]], "documents end to end, nothing lost"
    assert joined.count(separator) == 6
    batch = next(iter(trainer.get_train_dataloader()))
    assert tokenizer.pad_token_id not in batch["input_ids"].tolist()[0]
    assert (batch["labels"] != -100).all(), "the loss is on every token"


def test_pretraining_lowers_held_out_perplexity_and_its_checkpoint_feeds_sft(tiny_model, workspace, capsys):
    from pipelines.api import prepare_run
    from pipelines.train import train_run
    from tests.conftest import tiny_config

    write_jsonl(workspace / "corpus.jsonl", [{"text": d} for d in DOCUMENTS])
    run_dir = prepare_run(workspace, "name: domain\n" + pretrain_config(tiny_model))
    assert train_run(run_dir, echo=False) == "completed"
    metrics = read_metrics(run_dir)
    train = [m for m in metrics if "loss" in m]
    held = [m for m in metrics if "eval_loss" in m]
    assert [m["step"] for m in held] == [0, 6, 12, 18, 24], "the base model's perplexity first"
    assert all(math.isclose(m["eval_perplexity"], math.exp(m["eval_loss"]), rel_tol=1e-6) for m in held)
    assert all(math.isclose(m["perplexity"], math.exp(m["loss"]), rel_tol=1e-6) for m in train)
    assert held[-1]["eval_perplexity"] < 0.7 * held[0]["eval_perplexity"], held
    assert any(m.get("tokens_per_second", 0) > 0 for m in train)
    out = capsys.readouterr().out
    assert "19 documents of corpus.jsonl" in out and "5 held out" in out, out[-2000:]

    sft_dir = prepare_run(workspace, "name: then-sft\n" + tiny_config("domain/final", max_steps=2))
    assert train_run(sft_dir, echo=False) == "completed"
    assert read_status(sft_dir)["status"] == "completed"


def test_documents_held_out_are_seeded_and_never_all():
    rows = [{"text": str(n)} for n in range(10)]
    train, held = hold_out(rows, 0.2, seed=1)
    assert len(held) == 2 and len(train) == 8 and not {r["text"] for r in held} & {r["text"] for r in train}
    assert hold_out(rows, 0.2, seed=1) == (train, held)
    assert hold_out(rows[:2], 0.5, seed=1)[0], "one document is always left to train on"
    assert hold_out(rows, 0.0, seed=1) == (rows, [])


def test_perplexity_is_logged_beside_each_loss_and_a_diverged_loss_stays_a_number():
    from transformers import TrainerCallback

    assert isinstance(perplexity_callback(), TrainerCallback)
    callback = PerplexityLog()
    logs = {"loss": 2.0, "num_tokens": 100.0}
    callback.on_log(None, None, None, logs)
    assert logs["perplexity"] == math.exp(2.0)
    evaluation = {"eval_loss": 1e6}
    callback.on_log(None, None, None, evaluation)
    assert math.isfinite(evaluation["eval_perplexity"])
    nan = {"loss": float("nan")}
    callback.on_log(None, None, None, nan)
    assert "perplexity" not in nan

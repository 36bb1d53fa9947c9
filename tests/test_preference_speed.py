"""The cheaper forwards of the preference stages (pipelines/stages/batching.py) change no loss: the compact CPU LM
head gives DPO and KTO the log-probs TRL's head gives, padding-free backbone calls give the padded batch's log-probs
and reward scores; the stages still train with them on, and the defaults are in effect."""

import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from pipelines.run_files import read_metrics
from pipelines.stages import batching
from tests.test_preference_stages import PAIRS, pairs, stage_config, trained  # noqa: F401  (pairs: a fixture)


def preference_trainer(tiny_model, trainer_class, args):
    """A TRL preference trainer on the tiny model and PAIRS, LoRA r8 with non-zero adapter weights (so the policy
    differs from the reference and the rewards are not all 0), and its first batch of 4 pairs."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    rows = [{"prompt": [{"role": "user", "content": p["prompt"]}],
             "chosen": [{"role": "assistant", "content": p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}]} for p in PAIRS]
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                            peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                                   task_type="CAUSAL_LM"))
    for name, param in trainer.model.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.05)
    return trainer, trainer.data_collator([trainer.train_dataset[i] for i in range(4)])


CPU_FP32 = {"max_steps": 1, "per_device_train_batch_size": 4, "report_to": [], "use_cpu": True, "bf16": False,
            "gradient_checkpointing": False}


def dpo_trainer(tiny_model, tmp_path):
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(output_dir=str(tmp_path), loss_type=["sigmoid", "sft"], loss_weights=[1.0, 1.0], **CPU_FP32)
    return preference_trainer(tiny_model, DPOTrainer, args)


def orpo_trainer(tiny_model, tmp_path):
    from pipelines.stages.orpo import orpo_classes

    ORPOConfig, ORPOTrainer = orpo_classes()
    return preference_trainer(tiny_model, ORPOTrainer, ORPOConfig(output_dir=str(tmp_path), max_length=256, **CPU_FP32))


def loss_and_metrics(trainer, batch):
    """(loss, the metrics the trainer logged for it, every trained parameter's gradient) of one training batch."""
    trainer.model.train()
    if hasattr(trainer, "odds_ratio_loss"):   # ORPO returns its metrics; DPO and KTO keep them in _metrics
        loss, metrics = trainer.get_batch_loss_metrics(trainer.model, batch)
    else:
        trainer._metrics["train"].clear()
        loss = trainer._compute_loss(trainer.model, batch, False)
        metrics = trainer._metrics["train"]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    trainer.model.zero_grad()
    return loss.detach().item(), {k: v[-1] if isinstance(v, list) else v for k, v in metrics.items()}, grads


def head_calls(trainer, batch):
    """loss_and_metrics, and the positions each call of the LM head module projected."""
    seen = []
    head = batching.unwrap(trainer.model).get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda module, args: seen.append(args[0].numel() // args[0].shape[-1]))
    try:
        return loss_and_metrics(trainer, batch), seen
    finally:
        handle.remove()


def assert_compact_head_changes_nothing(trainer, batch, positions: int, keys=None):
    """Before and after speed_up: the same loss, metrics and gradients; after, no call of the LM head projects all
    `positions` of the padded batch (its rows × their length less one), only those the loss reads."""
    loss, metrics, grads = loss_and_metrics(trainer, batch)
    assert batching.speed_up(trainer, "cpu", compact=True) == ["compact LM head"]
    (compact_loss, compact_metrics, compact_grads), calls = head_calls(trainer, batch)
    assert calls and max(calls) < positions, calls
    assert compact_loss == pytest.approx(loss, abs=1e-5)
    for key in keys or metrics:
        assert compact_metrics[key] == pytest.approx(metrics[key], abs=1e-5), key
    assert metrics["rewards/margins"] != 0
    assert grads.keys() == compact_grads.keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(compact_grads[name], grad, atol=1e-5, rtol=1e-4)


def test_the_compact_head_gives_dpo_the_loss_metrics_and_gradients_of_trls_head(tiny_model, tmp_path):
    trainer, batch = dpo_trainer(tiny_model, tmp_path)
    rows, length = batch["input_ids"].shape
    assert batch["attention_mask"].sum() < batch["attention_mask"].numel(), "the batch has padding to skip"
    assert_compact_head_changes_nothing(trainer, batch, rows * (length - 1), keys=(
        "logps/chosen", "logps/rejected", "rewards/chosen", "rewards/margins", "entropy", "logits/chosen",
        "mean_token_accuracy"))


def test_the_compact_head_gives_orpo_the_loss_metrics_and_gradients_of_trls_logits(tiny_model, tmp_path):
    trainer, batch = orpo_trainer(tiny_model, tmp_path)
    rows, length = 2 * len(batch["chosen_input_ids"]), max(batch["chosen_input_ids"].shape[1],
                                                          batch["rejected_input_ids"].shape[1])
    assert batch["rejected_attention_mask"].sum() < batch["rejected_attention_mask"].numel(), "padding to skip"
    # every metric: nll_loss, log_odds_ratio, logps/*, rewards/*, and logits/* (the mean over every position)
    assert_compact_head_changes_nothing(trainer, batch, rows * (length - 1))
    with torch.no_grad():   # generation and plain calls go through the model's own forward, as before
        plain = trainer.model(input_ids=batch["chosen_input_ids"][:1]).logits
    assert plain.shape[-1] == trainer.model.config.vocab_size


def test_padding_free_backbone_calls_give_dpo_the_padded_batchs_per_pair_log_probs(tiny_model, tmp_path):
    trainer, batch = dpo_trainer(tiny_model, tmp_path)
    inner = batching.unwrap(trainer.model)
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)

    def per_row_logps():
        with torch.no_grad():
            out = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                                fused_lm_head=True, use_cache=False)
        return out.log_probs.sum(dim=1)          # (2B,): chosen rows, then rejected rows

    padded = per_row_logps()
    assert batching.add_padding_free_backbone(inner)
    packed = per_row_logps()
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=0)
    loss, _, _ = loss_and_metrics(trainer, batch)
    assert math.isfinite(loss)


def test_padding_free_backbone_calls_give_the_reward_models_scores(tiny_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1, dtype=torch.float32).eval()
    model.config.pad_token_id = tokenizer.pad_token_id
    texts = [p["prompt"] + " " + p[side] for p in PAIRS[:4] for side in ("chosen", "rejected")]
    batch = tokenizer(texts, padding=True, padding_side="right", return_tensors="pt")
    assert batch["attention_mask"].sum() < batch["attention_mask"].numel()
    with torch.no_grad():
        padded = model(**batch).logits
        assert batching.add_padding_free_backbone(model)
        packed_rows = batching.packable_rows(batch["input_ids"], batch["attention_mask"], {})
        assert packed_rows is not None and packed_rows[1].numel() == int(batch["attention_mask"].sum())
        packed = model(**batch).logits
    torch.testing.assert_close(packed, padded, atol=1e-5, rtol=0)


def test_left_padded_or_cached_calls_are_left_as_they_came():
    ids = torch.ones(2, 4, dtype=torch.long)
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    assert batching.packable_rows(ids, left, {}) is None
    assert batching.packable_rows(ids, torch.ones(2, 4, dtype=torch.long), {}) is None   # nothing to remove
    assert batching.packable_rows(ids, right, {"past_key_values": object()}) is None
    keep, positions = batching.packable_rows(ids, right, {})
    assert positions.tolist() == [0, 1, 0, 1, 2, 3]


def test_the_reference_is_precomputed_only_where_it_saves_reference_passes():
    train = SimpleNamespace(max_steps=40, batch_size=4, grad_accum=1, epochs=1.0)
    assert batching.pairs_trained(train, 200) == 160
    assert not batching.precompute_reference(False, 160, 200)   # the default DPO run: on the fly
    assert batching.precompute_reference(False, 400, 200)        # two epochs: once
    assert batching.precompute_reference(True, 10, 200)          # a full fine-tune: always
    assert batching.pairs_trained(SimpleNamespace(max_steps=0, batch_size=4, grad_accum=1, epochs=3.0), 8) == 24


@pytest.mark.parametrize("stage", ["dpo", "kto", "orpo", "reward"])
def test_each_preference_stage_still_trains_with_the_faster_defaults(tiny_model, pairs, stage, capsys):  # noqa: F811
    # 5 steps × 4 of an 8-pair file (16 KTO rows): more than one epoch, so DPO and KTO precompute the reference
    # under LoRA.
    run_dir = trained(pairs, stage_config(tiny_model, stage, max_steps=5, save_steps=5))
    captured = capsys.readouterr()   # the stage's own lines and TRL's progress (train_run with echo off prints here)
    log = captured.out + captured.err
    if stage == "dpo":
        assert "reference = log-probs precomputed" in log
    if stage in ("dpo", "kto"):
        assert "Computing reference log probs" in log
    losses = [m["loss"] for m in read_metrics(run_dir) if m["split"] == "train" and "loss" in m]
    assert len(losses) == 5 and all(math.isfinite(x) for x in losses)
    weights = load_file(run_dir / "final" / "adapter_model.safetensors")
    assert any(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)

"""SFT's speed-ups leave the loss as it was: a padding-free batch through the compact LM head gives TRL's own loss,
gradients and metrics on the padded batch, to float precision."""

from __future__ import annotations

import pytest

ROWS = [
    {"messages": [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hi there!"}]},
    {"messages": [{"role": "user", "content": "Name three colours and say why you like each of them"},
                  {"role": "assistant", "content": "Blue, green and red: the sky, the grass and apples. " * 3}]},
    {"messages": [{"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": "5."}]},
    {"messages": [{"role": "user", "content": "Capital of France?"},
                  {"role": "assistant", "content": "Paris, on the Seine, is the capital of France."}]},
]


def build_trainer(model_dir, tmp_path, name):
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = SFTConfig(output_dir=str(tmp_path / name), per_device_train_batch_size=4, max_length=64, use_cpu=True,
                     bf16=False, gradient_checkpointing=False, report_to=[], assistant_only_loss=True)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(ROWS), processing_class=tokenizer,
                      peft_config=lora)


def loss_and_gradients(trainer):
    import torch

    # the same LoRA weights on both sides: B is zero at start, so give it values that make gradients differ per row
    generator = torch.Generator().manual_seed(1)
    for name, parameter in sorted(trainer.model.named_parameters()):
        if parameter.requires_grad:
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.05
    collate = getattr(trainer.data_collator, "packed", trainer.data_collator)   # padding-free, whatever it would pick
    batch = collate([trainer.train_dataset[i] for i in range(len(ROWS))])
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    metrics = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    return batch, loss.item(), gradients, metrics


def test_padding_free_compact_head_gives_trls_loss_gradients_and_metrics(tiny_model, tmp_path):
    from pipelines.stages.lm_loss import speed_up

    plain = build_trainer(tiny_model, tmp_path, "plain")
    fast = build_trainer(tiny_model, tmp_path, "fast")
    assert speed_up(fast, "cpu") == ["padding-free batches", "compact LM head"]

    padded, plain_loss, plain_gradients, plain_metrics = loss_and_gradients(plain)
    packed, fast_loss, fast_gradients, fast_metrics = loss_and_gradients(fast)
    assert padded["input_ids"].shape[0] == 4 and (padded["attention_mask"] == 0).any(), "the plain batch is padded"
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    assert packed["input_ids"].shape[1] == int(padded["attention_mask"].sum()), "no pad token is computed"

    assert fast_loss == pytest.approx(plain_loss, rel=1e-5)
    for name, gradient in plain_gradients.items():
        assert fast_gradients[name].abs().sum() > 0
        assert (fast_gradients[name] - gradient).abs().max() <= 1e-5 * (1 + gradient.abs().max()), name
    for key in ("entropy", "mean_token_accuracy", "num_tokens"):
        assert fast_metrics[key] == pytest.approx(plain_metrics[key], rel=1e-5), key


def test_rows_do_not_see_each_other_in_a_padding_free_batch(tiny_model, tmp_path):
    """The first row's loss alone equals its share of the packed batch: attention stops at the row's end."""
    import torch

    from pipelines.stages.lm_loss import speed_up

    fast = build_trainer(tiny_model, tmp_path, "fast")
    speed_up(fast, "cpu")
    model = fast.model.eval()
    rows = [fast.train_dataset[i] for i in range(len(ROWS))]
    with torch.no_grad():
        together = model(**fast.data_collator.packed(rows), fused_lm_head=True).log_probs
        alone = model(**fast.data_collator.packed(rows[1:2]), fused_lm_head=True).log_probs
    start = len(rows[0]["input_ids"])
    torch.testing.assert_close(together[0, start:start + alone.shape[1]], alone[0], rtol=1e-5, atol=1e-5)


def test_on_a_gpu_trls_head_is_kept(tiny_model, tmp_path):
    from pipelines.stages.lm_loss import speed_up

    trainer = build_trainer(tiny_model, tmp_path, "gpu")
    forward = trainer.model.get_base_model().forward
    assert speed_up(trainer, "cuda") == ["padding-free batches"]
    assert trainer.model.get_base_model().forward == forward, "TRL's Triton head is kept where it runs"


def test_each_batch_takes_the_layout_that_costs_fewer_flops(tiny_model, tmp_path):
    """SDPA computes every pair of a joined row: rows of equal length stay padded (nothing to save), one long row
    among short ones goes padding-free (most of the padded batch would be padding)."""
    from pipelines.stages.lm_loss import CheaperLayout, speed_up

    trainer = build_trainer(tiny_model, tmp_path, "layout")
    speed_up(trainer, "cpu")
    layout = trainer.data_collator
    assert isinstance(layout, CheaperLayout)
    even = [{"input_ids": [5] * 40, "labels": [5] * 40} for _ in range(4)]
    uneven = [{"input_ids": [5] * n, "labels": [5] * n} for n in (60, 4, 4, 4)]
    assert "attention_mask" in layout(even) and layout.padded_batches == 1
    assert "position_ids" in layout(uneven) and layout.packed_batches == 1

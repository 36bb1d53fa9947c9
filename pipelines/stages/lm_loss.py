"""The language-model loss of SFT and continued pretraining, made cheaper where TRL's is costly, and padding-free
batches. Neither changes the loss: the same tokens, the same labels, the same mean over the batch's trained tokens.

- Padding-free batches. TRL pads a batch of rows to its longest row; padding-free puts the rows end to end in one
  row, with position ids that restart at each row. transformers reads the restarts as separate sequences and masks
  attention block by block (masking_utils.find_packed_sequence_indices, for SDPA and eager alike), so no row
  attends to another, and no pad token is computed; but SDPA and eager attention compute the masked pairs of the
  joined row too, so with them each batch takes the layout of fewer FLOPs. TRL's own `padding_free=True` refuses
  `max_length` without packing; its collator, set padding-free after the trainer is built, keeps TRL's truncation.
- A compact LM head on CPU. TRL 1.16 scores tokens through a chunked LM head (trl/kernels/chunked_logprob.py) that
  never builds the full logits: on a GPU a Triton kernel scores only the trained positions. Without Triton it
  scores every position, prompt and padding included, in a Python loop over tiles, and computes the projection
  three times (forward, and twice in backward). For SmolLM2-135M at batch 4 on the 2-core CPU that head was a
  quarter of each step (3.6 s against 2.6 s with the head below). Here the trained positions' hidden states go
  through the LM head once as a plain matrix multiply and a log-softmax; the logits of those positions alone are
  built (for 1,300 trained tokens and a 49k vocabulary, 260 MB in fp32).
"""

from __future__ import annotations



def speed_up(trainer, device: str) -> list[str]:
    """Make a built SFTTrainer padding-free and, on CPU, give it the compact head; say so in the run's log, and
    return what changed."""
    changes = []
    if make_padding_free(trainer):
        changes.append("padding-free batches")
    if device == "cpu":
        model = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
        add_compact_lm_head(model)
        changes.append("compact LM head")
    precision = "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32"
    print(f"Speed-ups (the loss is unchanged): {', '.join(changes) or 'none'}; training in {precision}", flush=True)
    return changes


def make_padding_free(trainer) -> bool:
    """Give the trainer padding-free batches where rows can share one: rows not already packed (continued
    pretraining's blocks are all max_length long: nothing to gain), more than one row per batch, and an attention
    that reads position ids. Flash attention's variable-length kernels attend within each row, so every batch goes
    padding-free. SDPA and eager attention get a block mask from transformers, but compute every pair of the
    joined row, masked or not: for them each batch takes whichever layout costs fewer FLOPs (CheaperLayout)."""
    import dataclasses

    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collator = trainer.data_collator
    if not isinstance(collator, DataCollatorForLanguageModeling) or collator.padding_free:
        return False
    if trainer.args.packing or trainer.args.per_device_train_batch_size < 2:
        return False
    attention = getattr(trainer.model.config, "_attn_implementation", None) or "eager"
    packed = dataclasses.replace(collator, padding_free=True)
    if attention.startswith("flash_attention"):
        trainer.data_collator = packed
    elif attention in {"sdpa", "eager", "flex_attention"}:
        trainer.data_collator = CheaperLayout(collator, packed, trainer.model.config)
    else:
        return False
    return True


class CheaperLayout:
    """A collator that lays each batch out padded or padding-free, whichever costs fewer FLOPs: padded, every row
    is computed at the longest row's length; padding-free, no pad token is computed, but attention spans the joined
    row (its masked pairs are computed too). Both give the same loss, so the choice is only about time."""

    def __init__(self, padded, packed, model_config):
        text = model_config.get_text_config()
        heads = text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        layers = text.num_hidden_layers
        # FLOPs of one token's forward outside attention scores (2 per weight of every matrix it meets), and of one
        # query-key pair (scores and the weighted sum, in every head of every layer)
        self.per_token = _weights_per_token(text)
        self.per_pair = 4 * heads * head_dim * layers
        self.padded, self.packed = padded, packed
        self.padded_batches = self.packed_batches = 0

    def __call__(self, examples):
        lengths = [len(example["input_ids"]) for example in examples]
        longest, total = max(lengths), sum(lengths)
        padded = len(lengths) * (longest * self.per_token + longest * longest * self.per_pair)
        packed = total * self.per_token + total * total * self.per_pair
        if packed < padded:
            self.packed_batches += 1
            return self.packed(examples)
        self.padded_batches += 1
        return self.padded(examples)


def _weights_per_token(text_config) -> int:
    """2 × the weights one token multiplies through: attention projections, the MLP and the LM head."""
    h = text_config.hidden_size
    heads = text_config.num_attention_heads
    kv_heads = getattr(text_config, "num_key_value_heads", None) or heads
    head_dim = getattr(text_config, "head_dim", None) or h // heads
    attention = h * head_dim * (2 * heads + 2 * kv_heads)
    mlp = 3 * h * getattr(text_config, "intermediate_size", 4 * h)
    return 2 * (text_config.num_hidden_layers * (attention + mlp) + h * text_config.vocab_size)


def add_compact_lm_head(model) -> None:
    """Replace the forward TRL's add_fused_lm_head patched in (`fused_lm_head=True`) with one that projects only the
    positions whose next-token label is not -100, returning the same trl.trainer.utils.FusedCausalLMOutput fields.
    A call without fused_lm_head (generation, the preference check, evaluation by other code) is unchanged. SFT,
    pretraining, DPO, KTO and ORPO (pipelines/stages/batching.py) share it."""
    import functools
    import types

    import torch
    from trl.trainer.utils import FusedCausalLMOutput

    fused_forward = model.forward

    @functools.wraps(type(model).forward)
    def compact_forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None,
                        mean_logits_everywhere=False, **kwargs):
        if not fused_lm_head or shift_labels is not None or needs_trl_head(self):
            # As it came: a model TRL did not patch (ORPO's) gets no keyword it does not know
            given = {"fused_lm_head": fused_lm_head or None, "labels": labels, "shift_labels": shift_labels,
                     "num_items_in_batch": num_items_in_batch}
            return fused_forward(*args, **{k: v for k, v in given.items() if v is not None}, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]     # (N, T-1, H)
        targets = labels[:, 1:]                                                   # (N, T-1)
        mask = targets != -100
        logits = self.get_output_embeddings()(hidden[mask]).float()              # (n, V): trained positions only
        token_log_probs = torch.log_softmax(logits, dim=-1)
        picked = token_log_probs.gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)   # (n,)
        with torch.no_grad():   # metrics only, as in TRL's head (DPO and KTO detach them)
            entropy = -(token_log_probs.exp() * token_log_probs).sum(-1)
            mean_logits = logits.mean(-1)
            is_top1 = logits.argmax(-1) == targets[mask]   # argmax takes the first maximum, as TRL's head does

        def padded(values):   # masked_scatter keeps an all-masked batch connected: a differentiable zero, as TRL's
            return values.new_zeros(mask.shape).masked_scatter(mask, values)

        log_probs = padded(picked)
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        # mean_logits_everywhere: every position's (ORPO's logits metrics average them all, padding too)
        mean_logits = mean_logit(self.get_output_embeddings(), hidden) if mean_logits_everywhere else padded(mean_logits)
        return FusedCausalLMOutput(loss=-log_probs.sum() / count, log_probs=log_probs, entropy=padded(entropy),
                                   mean_logits=mean_logits, is_top1=padded(is_top1), label_mask=mask)

    model.forward = types.MethodType(compact_forward, model)


def mean_logit(head, hidden):
    """The mean over the vocabulary of each position's logits, without the logits: the mean of h·w_v + b_v over v
    is h·mean(w) + mean(b). No gradient (a metric)."""
    import torch

    with torch.no_grad():
        weight = head.weight.float().mean(0)
        bias = head.bias.float().mean() if getattr(head, "bias", None) is not None else 0.0
        return hidden.float() @ weight + bias


def needs_trl_head(model) -> bool:
    """Models whose logits TRL's head scales, caps or routes (Gemma's softcapping, Granite's scaling, mixtures of
    experts' auxiliary loss) keep TRL's head, which knows each of them."""
    text = model.config.get_text_config()
    scaled = any(getattr(text, key, None) is not None for key in
                 ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"))
    return scaled or bool(getattr(text, "output_router_logits", False))

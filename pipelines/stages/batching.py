"""Cheaper forwards for the preference stages (DPO, KTO, ORPO, the reward model), without changing their losses.

Both pieces patch the model after TRL's trainer is built and leave the trainer as TRL wrote it (but ORPO's forward):

- A compact LM head on CPU. DPOTrainer and KTOTrainer score tokens through TRL's fused LM head
  (trl.trainer.utils.add_fused_lm_head). Without Triton (every CPU) it scores every position of the padded batch,
  prompt and padding included, in tiles, and recomputes the vocabulary projection twice more in backward. Here only
  the positions with a label (the completions) go through the LM head, once, as a plain matrix multiply and a
  log-softmax, and the same fields come back (log-probs; entropy, mean logit and top-1 hit for the metrics).
  ORPO's trainer builds plain logits for every position instead; its concatenated forward is replaced by one through
  the same head (compact_orpo_forward).
  Measured on the 2-core CPU for one DPO batch of the bundled model (8 rows × 134 positions, 584 of them trained,
  vocabulary 49,152), forward and backward of the head alone: TRL's head 4.2 s of CPU in fp32 and 3.7 s in bf16
  autocast, this one 1.1 s and 0.8 s; the log-probs agree to float rounding. The reference pass gets the same head.
- Padding-free backbone calls (optional, off by default: see PACKED_BY_DEFAULT). The rows of a right-padded batch
  are put end to end in one row with position ids restarting at each row; transformers reads the restarts as
  separate sequences and masks attention block by block (masking_utils.find_packed_sequence_indices, SDPA and eager
  alike), and the hidden states are put back in the padded layout, so every head after the backbone (TRL's LM
  head, a reward model's score and pooling) sees what it always saw. TRL 1.16's own DPOConfig.padding_free is
  switched off with a warning ("temporarily unavailable after a refactor").
"""

from __future__ import annotations

import types

from pipelines.stages.lm_loss import add_compact_lm_head, needs_trl_head

# Off by default: the bundled preference sample's batches (4 pairs, chosen and rejected rows padded together) are
# only ~15% padding (907 real of 1,072 padded tokens per batch, averaged over 1,000 shuffled batches), while one
# packed row of ~900 tokens has SDPA attend over the whole 900² mask (the CPU kernel does not skip masked blocks:
# 8× the attention work of the padded rows). Not measured end to end on a quiet machine; kept for data with
# long-tailed lengths and for GPUs with flash attention.
PACKED_BY_DEFAULT = False
ATTENTION_THAT_READS_PACKING = ("sdpa", "eager", "flex_attention")


# On: the head alone is 3.7× faster (above); whole DPO steps on the quiet 2-core machine, 10 steps of 4 pairs of the
# bundled model (python bench/dpo_speed.py --models bundled --repeats 1 --precision bf16,fp32): 1.17× pairs/s in
# fp32 with the loss equal to 1e-5 at every step, 1.36× in bf16.
COMPACT_BY_DEFAULT = True


def speed_up(trainer, device: str, *, compact: bool = COMPACT_BY_DEFAULT, packed: bool = PACKED_BY_DEFAULT) -> list[str]:
    """Apply the cheaper forwards to a built TRL trainer, say so in the run's log, and return what changed."""
    model = unwrap(trainer.model)
    changes = []
    orpo = is_orpo(trainer) and not trainer.is_encoder_decoder
    if compact and device == "cpu" and not needs_trl_head(model) and (has_trl_fused_head(model) or orpo):
        add_compact_lm_head(model)
        if orpo:
            trainer.concatenated_forward = types.MethodType(compact_orpo_forward, trainer)
        changes.append("compact LM head")
    if packed and add_padding_free_backbone(model):
        changes.append("padding-free batches")
    if changes:
        print(f"Speed-ups: {', '.join(changes)} (the loss is unchanged)", flush=True)
    return changes


def has_trl_fused_head(model) -> bool:
    """Whether TRL's add_fused_lm_head patched this model's forward (DPOTrainer and KTOTrainer do; ORPO's trainer
    reads plain logits, see compact_orpo_forward; RewardTrainer reads a score head, with nothing to make compact)."""
    function = getattr(model.forward, "__func__", None)
    return getattr(getattr(function, "__code__", None), "co_name", "") == "_fused_forward"


def is_orpo(trainer) -> bool:
    return hasattr(trainer, "odds_ratio_loss") and hasattr(trainer, "concatenated_inputs")


def compact_orpo_forward(self, model, batch):
    """ORPOTrainer.concatenated_forward through the compact head: the same five results from one pass that projects
    only the positions ORPO reads (every real token of the chosen rows for its NLL, the answer tokens of the rejected
    ones for their log-probs), where TRL builds the logits of every position of the padded batch, then runs a
    log-softmax over the chosen rows twice (its cross-entropy and its log-probs). The logits it returns only feed
    two metrics, the mean logit of the chosen and of the rejected rows over every position: here each position's
    mean logit, which averages to the same."""
    import torch

    concatenated = self.concatenated_inputs(batch, is_encoder_decoder=False, padding_value=self.padding_value,
                                            device=self.accelerator.device)
    chosen = batch["chosen_labels"].shape[0]
    ids, mask = concatenated["concatenated_input_ids"], concatenated["concatenated_attention_mask"]
    answers = concatenated["concatenated_labels"]          # the ids, with the prompt and padding at -100
    targets = torch.cat([torch.where(mask[:chosen] == 1, ids[:chosen], -100), answers[chosen:]])
    output = model(ids, attention_mask=mask, use_cache=False, fused_lm_head=True, labels=targets,
                   mean_logits_everywhere=True)
    log_probs, scored = output.log_probs, output.label_mask                   # (N, T-1): 0 where not projected
    nll = -(log_probs[:chosen] * scored[:chosen]).sum() / scored[:chosen].sum()   # TRL: mean cross-entropy
    in_answer = answers[:, 1:] != -100
    logps = (log_probs * in_answer).sum(-1) / in_answer.sum(-1)              # average_log_prob=True, as TRL
    everywhere = output.mean_logits                                            # every position's, (N, T-1)
    return logps[:chosen], logps[chosen:], everywhere[:chosen], everywhere[chosen:], nll


def unwrap(model):
    """The transformers model under a PEFT wrapper (PeftModel.base_model is PEFT's LoraModel, not the backbone)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def precompute_reference(full_fine_tune: bool, pairs_trained: int, pairs_in_dataset: int) -> bool:
    """Whether the reference log-probs are computed once before training instead of at every step.

    A full fine-tune always (no second copy of the weights, and TRL would reload the reference from the wrong
    path). With LoRA, only when the run trains on more pairs than the dataset holds: the precompute pass runs the
    reference once over every pair, the on-the-fly reference once per pair trained, at the same cost per pair
    (a forward without gradients). The default DPO run (40 steps × 4 pairs of the 200-pair sample) trains on 160,
    so it keeps computing them on the fly; a run of several epochs precomputes."""
    return full_fine_tune or pairs_trained > pairs_in_dataset


def pairs_trained(train, rows: int) -> int:
    """How many rows a run trains on: max_steps × batch × grad_accum, or epochs over the dataset (single process)."""
    if train.max_steps > 0:
        return train.max_steps * train.batch_size * train.grad_accum
    return int(train.epochs * rows)


def add_padding_free_backbone(model) -> bool:
    """Make the model's backbone (LlamaModel and the like) run a right-padded batch as one packed row and hand back
    hidden states in the padded layout. False where the attention implementation would not read the packing."""
    import types

    backbone = getattr(model, "base_model", None)
    attention = getattr(model.config, "_attn_implementation", None) or "eager"
    if backbone is None or backbone is model or getattr(backbone, "padding_free", False):
        return False
    if attention not in ATTENTION_THAT_READS_PACKING and not attention.startswith("flash_attention"):
        return False
    original = backbone.forward

    def packed_forward(self, input_ids=None, attention_mask=None, **kwargs):
        rows = packable_rows(input_ids, attention_mask, kwargs)
        if rows is None:
            return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        keep, positions = rows
        kwargs = {k: v for k, v in kwargs.items() if k not in ("position_ids", "inputs_embeds", "past_key_values")}
        kwargs["use_cache"] = False   # masking_utils reads packing only without a cache
        outputs = original(input_ids=input_ids[keep].unsqueeze(0), attention_mask=None,
                           position_ids=positions.unsqueeze(0), **kwargs)
        flat = outputs.last_hidden_state[0]                                          # (S, H)
        outputs.last_hidden_state = flat.new_zeros(*keep.shape, flat.size(-1)).masked_scatter(keep.unsqueeze(-1), flat)
        return outputs

    backbone.forward = types.MethodType(packed_forward, backbone)
    backbone.padding_free = True
    return True


def packable_rows(input_ids, attention_mask, kwargs: dict):
    """(keep mask (N, T), position ids (S,)) for a batch that gains from packing: several right-padded rows with some
    padding, plain token ids, no cache and no per-layer outputs asked for. None otherwise (the call runs as it came)."""
    import torch

    if input_ids is None or attention_mask is None or input_ids.dim() != 2 or input_ids.size(0) < 2:
        return None
    if any(kwargs.get(key) is not None for key in ("position_ids", "inputs_embeds", "past_key_values")) \
            or kwargs.get("use_cache") or kwargs.get("output_hidden_states") or kwargs.get("output_attentions"):
        return None
    keep = attention_mask.bool()
    lengths = keep.sum(dim=1)                                                       # (N,)
    columns = torch.arange(keep.size(1), device=keep.device)
    if not torch.equal(keep, columns < lengths.unsqueeze(1)) or bool((lengths == keep.size(1)).all()):
        return None   # left padding (or holes), or nothing to remove
    positions = columns.unsqueeze(0).expand_as(keep)[keep]                           # (S,): 0..len-1 per row
    return keep, positions

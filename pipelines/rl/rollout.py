"""Rollouts for PPO: generate answers to a batch of prompts, then score every answer token under the policy,
the reference (the same weights with the LoRA adapter disabled) and the value head.

Prompts are left-padded so that every answer starts at the same column; positions are counted from each
row's first real token, so the padding changes nothing the model computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Rollout:
    sequences: torch.Tensor        # (B, P + T) prompt (left-padded) then response (right-padded) token ids
    attention_mask: torch.Tensor   # (B, P + T)
    prompt_length: int             # P
    response_mask: torch.Tensor    # (B, T) 1 on real response tokens, up to and including the end-of-turn token
    logprobs: torch.Tensor         # (B, T) log π_old(token)
    ref_logprobs: torch.Tensor     # (B, T) log π_ref(token)
    values: torch.Tensor           # (B, T) V(state before each token)
    completions: list[str]         # decoded answers
    ended: torch.Tensor            # (B,) bool: the answer ended with an end-of-turn token (not cut at the length cap)


def stop_token_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    return ids | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set())


def pure_sampling(temperature: float, stop_ids: set[int]) -> dict:
    """Sampling from softmax(logits / temperature) and nothing else: a model's saved generation_config (a repetition
    penalty, min_p, …) would otherwise reshape the distribution the tokens are drawn from, and PPO's log-probs
    would no longer be those of the sampling policy."""
    return {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0,
            "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_new_tokens": 0, "eos_token_id": sorted(stop_ids)}


def response_mask(responses: torch.Tensor, stop_ids: set[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """1 up to and including the first stop token, 0 after it.   responses (B, T) → mask (B, T), ended (B,)"""
    is_stop = torch.zeros_like(responses, dtype=torch.bool)
    for token in stop_ids:
        is_stop |= responses == token
    stops_before = torch.cumsum(is_stop.int(), dim=1) - is_stop.int()     # stop tokens strictly before each position
    return (stops_before == 0).float(), is_stop.any(dim=1)


def forward_scores(model, value_head, sequences, attention_mask, prompt_length: int, temperature: float = 1.0,
                   with_entropy: bool = False):
    """Log-probs of the response tokens under the sampling distribution (logits / temperature, as they were drawn),
    the value before each, and (optionally) the entropy there, which is only logged and so kept out of the graph.

    sequences (B, P+T) → logprobs (B, T), values (B, T), entropy (B, T) or None
    """
    from pipelines.rl.ppo_math import entropy_from_logits

    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    output = model(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids,
                   output_hidden_states=value_head is not None, use_cache=False)
    logits = output.logits[:, prompt_length - 1:-1].float() / temperature  # (B, T, V): the logits that chose each token
    targets = sequences[:, prompt_length:]                                  # (B, T)
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    values = None
    if value_head is not None:
        hidden = output.hidden_states[-1][:, prompt_length - 1:-1].float()  # (B, T, H)
        values = value_head(hidden).squeeze(-1)                             # (B, T)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = entropy_from_logits(logits.detach())
    return logprobs, values, entropy


@torch.no_grad()
def generate_rollout(model, value_head, tokenizer, prompts: list[list[dict]], max_new_tokens: int,
                     temperature: float, ref_model=None) -> Rollout:
    """`ref_model` only for a full fine-tune; with LoRA the reference is the policy with its adapter disabled."""
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                        add_special_tokens=False).to(model.device)
    prompt_length = encoded["input_ids"].shape[1]
    model.eval()
    stop_ids = stop_token_ids(model, tokenizer)
    generated = model.generate(**encoded, **pure_sampling(temperature, stop_ids), max_new_tokens=max_new_tokens,
                               pad_token_id=tokenizer.pad_token_id)
    responses = generated[:, prompt_length:]
    mask, ended = response_mask(responses, stop_ids)
    responses = torch.where(mask.bool(), responses, torch.full_like(responses, tokenizer.pad_token_id))
    sequences = torch.cat([encoded["input_ids"], responses], dim=1)
    attention_mask = torch.cat([encoded["attention_mask"], mask.long()], dim=1)
    logprobs, values, _ = forward_scores(model, value_head, sequences, attention_mask, prompt_length, temperature)
    if ref_model is not None:
        ref_logprobs, _, _ = forward_scores(ref_model, None, sequences, attention_mask, prompt_length, temperature)
    else:
        with model.disable_adapter():                                      # the reference: no second copy of the weights
            ref_logprobs, _, _ = forward_scores(model, None, sequences, attention_mask, prompt_length, temperature)
    completions = tokenizer.batch_decode(responses, skip_special_tokens=True)
    return Rollout(sequences, attention_mask, prompt_length, mask, logprobs, ref_logprobs, values,
                   [c.strip() for c in completions], ended)

"""Will greedy answers change? The policy's own preference between each pair's answers, measured while it trains.

DPO's logged metrics (rewards/accuracies, rewards/margins) are relative to the reference: they say the policy
moved toward the chosen answer, not that it now likes the chosen answer more than the rejected one. A run can
reach accuracy 1.0 while the rejected answer stays likelier, and then a user asking the same question sees the
same answer. So on a fixed sample of the training pairs this callback measures, with the policy alone:

  prefers_chosen/total       share of pairs with  Σ log p(chosen tokens) > Σ log p(rejected tokens)
  prefers_chosen/per_token   the same with each sum divided by its answer's length
  prefers_chosen/first_token share of pairs whose first differing token is likelier on the chosen side:
                             the two answers share every token before it, so this is the choice greedy
                             decoding makes there (a chosen answer that only adds a sign-off differs from the
                             rejected one at the end-of-turn token)

The readings are added to the step's logged metrics (so they reach metrics.jsonl, the charts and the status
line) at the first logged step, every CHECK_EVERY steps and at the last step. A reading of 8 pairs costs about
half a DPO step (2 s against 4 s on the bundled model on the 2-core CPU), so every 10 steps it adds about 5%.
"""

from __future__ import annotations

import random

from transformers import TrainerCallback

CHECK_PAIRS = 8         # pairs measured at each reading: a share in steps of 1/8
CHECK_EVERY = 10        # optimizer steps between readings (fixed in steps, so that every rank measures alike)


def pair_preference(chosen_ids: list[int], chosen_logps: list[float],
                    rejected_ids: list[int], rejected_logps: list[float]) -> dict | None:
    """The policy's preference on one pair, from each answer's token ids and their log-probs under the policy
    (both after the same prompt). None when no token tells them apart (the same answer, or one cut short to the
    other by max_length): there greedy decoding has nothing to choose."""
    first = next((i for i, (c, r) in enumerate(zip(chosen_ids, rejected_ids)) if c != r), None)
    if first is None:
        return None
    total_c, total_r = sum(chosen_logps), sum(rejected_logps)
    return {"total": total_c > total_r,
            "per_token": total_c / len(chosen_logps) > total_r / len(rejected_logps),
            "first_token": chosen_logps[first] > rejected_logps[first]}


def preference_shares(preferences: list[dict | None]) -> dict:
    """{key: share of pairs} over the pairs that differ; empty when none does."""
    counted = [p for p in preferences if p is not None]
    if not counted:
        return {}
    return {f"prefers_chosen/{kind}": sum(p[kind] for p in counted) / len(counted)
            for kind in ("total", "per_token", "first_token")}


def encode_pair(tokenizer, pair: dict, max_length: int) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, chosen answer ids, rejected answer ids) as the chat template renders them (TRL's DPO does the
    same: the answer starts where prompt and prompt+answer diverge), cut to max_length as training cuts them."""
    def ids(messages, **kwargs) -> list[int]:
        text = tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    prompt = ids(pair["prompt"], add_generation_prompt=True)
    chosen, rejected = ids(pair["prompt"] + pair["chosen"]), ids(pair["prompt"] + pair["rejected"])
    start = min(_common_prefix(prompt, chosen), _common_prefix(prompt, rejected))
    return prompt[:start], chosen[start:max_length], rejected[start:max_length]


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


SEQUENCES_PER_FORWARD = 8   # 4 pairs at a time: a batch costs little more than one row on a CPU, and this bounds the logits' memory


def answer_logps(model, sequences: list[tuple[list[int], list[int]]]) -> list[list[float]]:
    """Log-prob of each token of each (prompt, answer) after its prompt, under `model` as it is (no gradient)."""
    import torch

    device = next(model.parameters()).device
    # A LoRA base held in bf16 beside fp32 adapters computes as training does: under bf16 autocast.
    bf16 = device.type in ("cuda", "cpu") and any(p.dtype == torch.bfloat16 for p in model.parameters())
    result = []
    for first in range(0, len(sequences), SEQUENCES_PER_FORWARD):
        chunk = sequences[first:first + SEQUENCES_PER_FORWARD]
        width = max(len(prompt) + len(answer) for prompt, answer in chunk)
        input_ids = torch.zeros(len(chunk), width, dtype=torch.long, device=device)       # (N, T), right-padded
        attention = torch.zeros_like(input_ids)
        for row, (prompt, answer) in enumerate(chunk):
            input_ids[row, :len(prompt) + len(answer)] = torch.tensor(prompt + answer)
            attention[row, :len(prompt) + len(answer)] = 1
        with torch.no_grad(), torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(input_ids=input_ids, attention_mask=attention).logits            # (N, T, V)
        for row, (prompt, answer) in enumerate(chunk):
            start = len(prompt) - 1   # the logit at position t predicts token t + 1
            rows = logits[row, start:start + len(answer)].float().log_softmax(dim=-1)      # (len(answer), V)
            result.append(rows.gather(-1, torch.tensor(answer, device=device)[:, None]).squeeze(-1).tolist())
    return result


def measure(model, encoded_pairs: list[tuple[list[int], list[int], list[int]]]) -> dict:
    was_training = model.training
    model.eval()   # dropout off: the preference of the model as it would answer
    try:
        logps = answer_logps(model, [(prompt, answer) for prompt, chosen, rejected in encoded_pairs
                                     for answer in (chosen, rejected)])
    finally:
        model.train(was_training)
    return preference_shares([pair_preference(chosen, logps[2 * i], rejected, logps[2 * i + 1])
                              for i, (_, chosen, rejected) in enumerate(encoded_pairs)])


def with_preference_check(context, inputs, pairs: list[dict] | None = None) -> list:
    """The run's callbacks with the preference check in front (see PreferenceCheckCallback), measured on `pairs`
    (by default the run's own training pairs); without any pair, the callbacks as they were."""
    config = context.config
    pairs = list(inputs.train_dataset) if pairs is None else pairs
    if not pairs:
        return list(context.callbacks)
    check = PreferenceCheckCallback(pairs, inputs.tokenizer, config.train.max_length, config.train.seed)
    return [check, *context.callbacks]


def pairs_from_unpaired(rows: list[dict]) -> list[dict]:
    """KTO's rows (prompt, completion, label) as pairs: for each prompt with a desirable and an undesirable answer,
    the first of each. Preference pairs given to KTO were split into exactly such rows (pipelines/data/store.py)."""
    import json

    desirable, undesirable = {}, {}
    for row in rows:
        key = json.dumps(row["prompt"], sort_keys=True, ensure_ascii=False)
        (desirable if row["label"] else undesirable).setdefault(key, row)
    return [{"prompt": row["prompt"], "chosen": row["completion"], "rejected": undesirable[key]["completion"]}
            for key, row in desirable.items() if key in undesirable]


class PreferenceCheckCallback(TrainerCallback):
    """Adds the prefers_chosen/* readings to the logs of the steps it measures at. It must come before the run
    recorder in the callback list, so that the recorder writes the readings with the step's other metrics.
    Every rank measures (the same pairs, the same result), so a sharded model's forward has all its ranks."""

    def __init__(self, pairs: list[dict], tokenizer, max_length: int, seed: int):
        chosen = random.Random(seed).sample(range(len(pairs)), min(CHECK_PAIRS, len(pairs)))
        self.encoded = [encode_pair(tokenizer, pairs[i], max_length) for i in sorted(chosen)]
        self.measured_step = -1

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        if logs is None or model is None or any(k.startswith("eval_") for k in logs):
            return
        step, last = state.global_step, state.global_step >= state.max_steps
        due = self.measured_step < 0 or step - self.measured_step >= CHECK_EVERY or last
        if not due or step == self.measured_step or any(k in logs for k in ("train_runtime", "train_loss")):
            return
        self.measured_step = step
        logs.update(measure(model, self.encoded))

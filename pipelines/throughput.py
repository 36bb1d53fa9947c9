"""Useful tokens per second and model FLOPs utilisation (MFU), added to every training log of every stage.

Tokens are counted where the model computes them: a forward pre-hook on the model's backbone (the decoder below the
LM head) reads the input_ids / attention_mask / position_ids of each call. A hook rather than a wrapped data
collator, because it is
- exact: the accelerate dataloader fetches a batch ahead, so a collator counts a batch one step before it is
  trained on; the hook counts it when its forward runs, in the interval whose time it costs;
- trainer-agnostic: what a trainer forwards is what is counted, with no knowledge of its collator's keys — DPO's
  and ORPO's chosen and rejected rows in one batch, the reward model's pairs, KTO's completions, GRPO's and RLOO's
  prompts with their completions, PPO's own loop — and no stage needs a line for it;
- on the backbone, not the top model: TRL's fused LM head and the compact CPU head (pipelines/stages/lm_loss.py)
  call the backbone themselves; the model's own forward, generation and PEFT's wrapper reach it too, so every
  path goes through the backbone's __call__.
A forward with gradients on is training: `tokens_per_second` counts those tokens, padding excluded. A forward
without gradients (evaluation, DPO's reference with the adapter disabled, KTO's KL pass, RL generation, old
log-probs) is model arithmetic the run needs too: its forward FLOPs count towards MFU, its tokens not towards
tokens/s. A reference that is a second model (a full fine-tune's, where DPO does not cache it) is not hooked.

FLOPs per token follow TRL's `compute_flops_per_token` (3 × forward: the backward pass computes gradients of the
activations and of the weights, each as large as the forward): its attention term lets every token attend to the
whole row (the PaLM / nanoGPT convention). The LM head (2·V·h a position) is counted on the positions it projects
(TokenCounter says how they are known; a reward model's score head is left out). With LoRA or QLoRA the base is
frozen: no weight gradients, so a trained token costs 2 × forward (the adapters' own products, r ≪ hidden, are
left out). The peak is the machine's measured matmul rate in the run's compute precision
(pipelines/device_speed.py). Rates are per wall-clock second between two training logs, evaluations and
checkpoint saves included: what the person waiting sees. Under several processes each rank counts its own tokens;
tokens/s is this rank's × the world size (ranks share batches evenly), MFU is per device.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from pipelines import run_files

SUMMARY_KEYS = ("train_runtime", "train_samples_per_second")   # the closing summary log is not an interval


def precision_of(args) -> str:
    """The run's compute precision as device_speed names it: the Trainer's bf16 / fp16 flags, else fp32."""
    if getattr(args, "bf16", False):
        return "bf16"
    return "fp16" if getattr(args, "fp16", False) else "fp32"


def backbone_of(model):
    """The decoder below the LM head (or score head), through a PEFT wrapper: the module every forward calls."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(inner, "base_model", inner)


def real_tokens(input_ids=None, attention_mask=None, position_ids=None, pad_token_id=None):
    """(real tokens, Σ over them of their row's real length) of one forward, as tensors (no sync with a GPU).

    With an attention mask, the tokens are the mask's ones under the input (during generation the mask covers the
    cached context too: its last T columns are the T new positions); without one, a padding-free batch is all real
    tokens, its rows starting where position_ids restart at 0; else the ids that are not padding. The second figure
    feeds the attention term of the FLOPs (each token attends to its whole row)."""
    import torch

    if attention_mask is not None and attention_mask.dim() == 2:
        width = input_ids.shape[-1] if input_ids is not None else attention_mask.shape[-1]
        mask = attention_mask.to(torch.int64)
        new = mask[:, -width:].sum(dim=-1)                                    # (B,)
        return new.sum(), (new * mask.sum(dim=-1)).sum()
    if position_ids is not None:
        tokens = position_ids.numel()
        rows = (position_ids == 0).sum().clamp(min=1)
        # Σ length² of the rows, from their mean length: a little low when rows differ (Σn² ≥ (Σn)²/rows)
        return torch.tensor(tokens, device=position_ids.device), tokens * tokens // rows
    if input_ids is None:
        zero = torch.zeros((), dtype=torch.int64)
        return zero, zero
    real = (input_ids != pad_token_id) if pad_token_id is not None else torch.ones_like(input_ids, dtype=torch.bool)
    real = real.to(torch.int64).reshape(-1, input_ids.shape[-1]).sum(dim=-1)   # (B,)
    return real.sum(), (real * real).sum()


def forward_flops(config) -> tuple[float, float, float] | None:
    """(body, attention, head): a forward's FLOPs are body + attention × the row's length per token through the
    backbone, plus head per position the LM head projects. From TRL's compute_flops_per_token (linear in the length,
    its LM head 2·V·h per token); None for an architecture whose config it cannot read."""
    from trl.trainer.utils import compute_flops_per_token

    try:
        at_zero, at_one = compute_flops_per_token(config, 0) / 3, compute_flops_per_token(config, 1) / 3
        head = 2 * config.vocab_size * config.hidden_size
    except (AttributeError, TypeError):
        return None
    return at_zero - head, at_one - at_zero, head


def trained_token_multiplier(frozen_base: bool) -> int:
    """Forwards' worth of FLOPs one trained token costs: 3 for a full fine-tune (forward, activation gradients,
    weight gradients), 2 with a frozen base (LoRA / QLoRA: no weight gradients for it)."""
    return 2 if frozen_base else 3


class TokenCounter:
    """Per kind of forward ("trained": gradients on; "forward": without), the real tokens through `model`'s backbone,
    Σ of their rows' lengths, and the positions its LM head projected. Sums stay on the model's device until read.

    The head's positions: from a pre-hook on the LM head module where it is called (the model's own forward: every
    position, or the last one while generating; a compact head: the labelled ones); a fused head that multiplies
    its weight directly (TRL's `fused_lm_head=True`) calls no module, so there the labelled positions are counted,
    which is what its GPU kernel projects (its CPU fallback projects every position: MFU then reads a little low)."""

    def __init__(self, model, pad_token_id=None):
        self.pad_token_id = pad_token_id
        self.sums: dict[str, list] = {}          # kind → [tokens, Σ length, head positions]
        self.fused_positions = None              # labelled positions of the fused call under way
        self.head_called = False                 # whether the LM head module ran during it
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.handles = [backbone_of(model).register_forward_pre_hook(self._count_tokens, with_kwargs=True)]
        head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
        if head is not None:   # a reward model has a score head instead: a few FLOPs, left out
            self.handles += [head.register_forward_pre_hook(self._count_head),
                             inner.register_forward_pre_hook(self._fused_call_begins, with_kwargs=True),
                             inner.register_forward_hook(self._fused_call_ends, with_kwargs=True)]

    def _add(self, index: int, value) -> None:
        import torch

        sums = self.sums.setdefault("trained" if torch.is_grad_enabled() else "forward", [0, 0, 0])
        sums[index] = sums[index] + value

    def _count_tokens(self, module, args, kwargs) -> None:
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        pad = self.pad_token_id
        if input_ids is None and kwargs.get("inputs_embeds") is not None:
            input_ids, pad = kwargs["inputs_embeds"][..., 0], None      # only its shape is read
        tokens, lengths = real_tokens(input_ids, kwargs.get("attention_mask"), kwargs.get("position_ids"), pad)
        self._add(0, tokens)
        self._add(1, lengths)

    def _count_head(self, module, args) -> None:
        hidden = args[0]
        self.head_called = True
        self._add(2, hidden.numel() // hidden.shape[-1])

    def _fused_call_begins(self, module, args, kwargs) -> None:
        labels, shifted = kwargs.get("labels"), kwargs.get("shift_labels")
        self.head_called, self.fused_positions = False, None
        if kwargs.get("fused_lm_head") and (labels is not None or shifted is not None):
            self.fused_positions = (shifted != -100).sum() if shifted is not None else (labels[..., 1:] != -100).sum()

    def _fused_call_ends(self, module, args, kwargs, output) -> None:
        if self.fused_positions is not None and not self.head_called:
            self._add(2, self.fused_positions)
        self.fused_positions = None

    def totals(self) -> dict[str, tuple[int, int, int]]:
        """{kind: (tokens, Σ length, head positions)} so far, as Python numbers (one sync with the device)."""
        return {kind: tuple(int(value) for value in sums) for kind, sums in self.sums.items()}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def interval_flops(delta: dict[str, tuple[int, int, int]], per_token: tuple[float, float, float],
                   frozen_base: bool) -> float:
    """Model FLOPs of the forwards in `delta` ({kind: (tokens, Σ length, head positions)}): trained ones at 2 or 3
    forwards' worth, the others at one."""
    body, attention, head = per_token
    weights = {"trained": trained_token_multiplier(frozen_base), "forward": 1}
    return sum(weights[kind] * (body * tokens + attention * lengths + head * positions)
               for kind, (tokens, lengths, positions) in delta.items())


class ThroughputCallback(TrainerCallback):
    """Adds `tokens_per_second` and `mfu` to each training log (before the recorder writes it: put it first), and
    writes the peak, its precision and the run's mean tokens/s so far as `throughput` in status.json."""

    def __init__(self, run_dir: Path, frozen_base: bool, echo: bool = True):
        self.run_dir, self.frozen_base, self.echo = Path(run_dir), frozen_base, echo
        self.counter: TokenCounter | None = None
        self.per_token: tuple[float, float] | None = None
        self.peak_flops: float | None = None
        self.world_size = 1
        self.started = self.last_time = 0.0
        self.last_totals: dict[str, tuple[int, int, int]] = {}
        self.status_entry: dict = {}             # status.json's `throughput`

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if model is None:   # a stage that trains nothing (best-of-N)
            return
        from pipelines.device_speed import matmul_peak_gflops

        tokenizer = getattr(processing_class, "tokenizer", processing_class)   # a processor holds its tokenizer
        pad = getattr(tokenizer, "pad_token_id", None)
        self.counter = TokenCounter(model, pad if pad is not None else getattr(model.config, "pad_token_id", None))
        self.per_token = forward_flops(backbone_of(model).config.get_text_config())
        device = next(model.parameters()).device.type
        dtype = precision_of(args)
        self.world_size = max(1, getattr(args, "world_size", 1))
        if self.per_token is not None:
            self.peak_flops = matmul_peak_gflops(device, dtype) * 1e9
        self.started = self.last_time = time.monotonic()
        self.last_totals = {}
        if state.is_world_process_zero:
            peak = round(self.peak_flops / 1e9, 1) if self.peak_flops else None
            self.status_entry = {"peak_gflops": peak, "dtype": dtype, "device": device, "tokens_per_second": None}
            run_files.update_status(self.run_dir, throughput=dict(self.status_entry))
            if self.echo:
                per = trained_token_multiplier(self.frozen_base)
                print(f"throughput: peak {peak} GFLOP/s ({dtype} matmul on {device}, measured); a trained token "
                      f"costs {per} × its forward ({'frozen base' if self.frozen_base else 'full fine-tune'})"
                      if peak else "throughput: tokens/s only (no FLOPs model for this architecture)", flush=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.counter is None or not logs or any(k.startswith("eval_") or k in SUMMARY_KEYS for k in logs):
            return
        now, totals = time.monotonic(), self.counter.totals()
        delta = {kind: tuple(now_sum - was for now_sum, was in zip(sums, self.last_totals.get(kind, (0, 0, 0))))
                 for kind, sums in totals.items()}
        seconds = now - self.last_time
        trained = delta.get("trained", (0, 0))[0]
        if trained <= 0 or seconds <= 0:
            return
        self.last_time, self.last_totals = now, totals
        logs["tokens_per_second"] = trained * self.world_size / seconds
        if self.per_token is not None and self.peak_flops:
            logs["mfu"] = interval_flops(delta, self.per_token, self.frozen_base) / seconds / self.peak_flops
        if state.is_world_process_zero:
            mean = totals["trained"][0] * self.world_size / (now - self.started)   # this attempt's, from its start
            self.status_entry["tokens_per_second"] = round(mean, 1)
            run_files.update_status(self.run_dir, throughput=dict(self.status_entry))

    def on_train_end(self, args, state, control, **kwargs):
        if self.counter is not None:
            self.counter.remove()
            self.counter = None

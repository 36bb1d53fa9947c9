"""PPO from a reward (InstructGPT's step 3), the project's own: TRL removed its PPOTrainer in 1.13.

One update:
  1. sample a batch of prompts and generate answers with the policy (left-padded prompts, sampled tokens);
  2. score them (reward checkpoint, reward-function file and/or the config's rules; minus a penalty for answers cut off);
  3. per-token KL to the reference — the same weights with the LoRA adapter disabled, so no second copy —
     turned into rewards: −β·KL at every token plus the score at the last one;
  4. GAE advantages (whitened) and returns from the value head;
  5. several epochs of minibatches of the clipped policy loss plus vf_coef × the clipped value loss, each
     minibatch one optimizer step. With train.grad_accum a minibatch is split into that many forwards whose
     losses are averaged, as TRL's PPO did (with answers of different lengths the tokens weigh slightly
     differently than in one forward); gradient checkpointing when train.gradient_checkpointing turns it on.

The value head is a linear layer on the policy's own last hidden state (a shared backbone, as TRL's older
PPO had), not a second model initialised from the reward model: one model in memory instead of two, which is
what lets PPO run with LoRA on a laptop; the price is that value-loss gradients also move the shared LoRA
weights, which the small vf_coef keeps in check. Dropout is off throughout, so a token's log-prob is the
same when it is generated and when it is trained on.

The loop tells the run's callbacks what happens through the Trainer's own events and flow (CallbackLoop,
pipelines/stages/loop.py: one update is one step), so metrics, status, stop, checkpoints, probes and resume work
as for every stage. Where the run's precision is bf16 (a GPU, by default) rollouts and training forwards run under
bf16 autocast, as the Trainer stages do; trained weights stay fp32.
"""

from __future__ import annotations

import random
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipelines import panels, run_files
from pipelines.config import MAX_STEPS, MAX_TEMPERATURE, reward_rules, reward_source, setting
from pipelines.errors import StudioError
from pipelines.signals import rl_signs
from pipelines.stages import declare
from pipelines.stages.common import (RunContext, count_parameters, load_policy, lora_config, precision_args,
                                     refuse_several_processes, stage_inputs, use_gradient_checkpointing)
from pipelines.stages.loop import CallbackLoop

VALUE_HEAD_FILE = "value_head.safetensors"
OPTIMIZER_FILE = "ppo_optimizer.pt"
SAMPLES_PER_UPDATE = 4


@dataclass
class PPOSettings:
    reward: str = reward_source()
    rules: list = reward_rules()
    kl_coef: float = setting(0.05, "Weight of the per-token KL penalty to the reference (the SFT model): the guard against reward hacking.", minimum=0.0, maximum=100.0)
    kl_target: float = setting(0.0, "0 keeps kl_coef fixed; above 0 adapts it so the KL per response tracks this target (Ziegler et al. 2019).", minimum=0.0, maximum=1000.0)
    kl_horizon: int = setting(10000, "How fast the adaptive kl_coef moves: by at most 20% × train.batch_size ÷ kl_horizon per update, so kl_horizon must be at least train.batch_size. The paper's 10000 barely moves β in a short run; a few times train.batch_size moves it every update.",
                             minimum=1, maximum=10 * MAX_STEPS)
    kl_estimator: str = setting("k1", "How per-token KL is estimated: k1 = log-ratio (unbiased), k2 = half its square, k3 = Schulman's non-negative estimator.",
                               choices=("k1", "k2", "k3"))
    ppo_epochs: int = setting(4, "Passes over each batch of rollouts.", minimum=1, maximum=32)
    minibatches: int = setting(2, "Minibatches per pass (train.batch_size must divide evenly).", minimum=1, maximum=4096)
    response_length: int = setting(48, "Longest generated answer, in tokens.", minimum=1, maximum=2048)
    temperature: float = setting(0.8, "Sampling temperature of the rollouts.", minimum=0, exclusive_minimum=True, maximum=MAX_TEMPERATURE)
    clip_range: float = setting(0.2, "PPO's ε: how far the probability ratio may move per update.", minimum=0, exclusive_minimum=True, maximum=1.0)
    clip_range_value: float = setting(0.2, "The same clip for the value head's predictions.", minimum=0, exclusive_minimum=True, maximum=100.0)
    vf_coef: float = setting(0.1, "Weight of the value loss beside the policy loss (they share the backbone).", minimum=0.0, maximum=100.0)
    gamma: float = setting(1.0, "Discount over response tokens.", minimum=0.0, maximum=1.0)
    lam: float = setting(0.95, "GAE's λ: bias (0) against variance (1) of the advantages.", minimum=0.0, maximum=1.0)
    missing_eos_penalty: float = setting(0.0, "Subtracted from the score of an answer cut off before its end-of-turn token; 0 turns it off.", minimum=0.0, maximum=100.0)


def validate(config) -> None:
    batch, minibatches = config.train.batch_size, config.ppo.minibatches
    if batch % minibatches:
        raise StudioError("check.ppo.minibatches", batch=batch, minibatches=minibatches)
    if (batch // minibatches) % config.train.grad_accum:
        raise StudioError("check.ppo.grad_accum", rollouts=batch // minibatches, grad_accum=config.train.grad_accum)
    if config.ppo.kl_target > 0 and config.ppo.kl_horizon < batch:
        raise StudioError("check.ppo.kl_horizon", horizon=config.ppo.kl_horizon, batch=batch)


STAGE = declare(
    __name__, name="ppo", probes_own_prompts=True, order=6, data_kind="prompt_only", settings=PPOSettings,
    takes_reward=True, validate=validate,
    warning_signs=rl_signs,
    panels=panels.RL,
    defaults={"dataset": "prompts-en-sample", "train": {"learning_rate": 3.0e-5, "max_steps": 30, "save_steps": 10}},
)


def run(context: RunContext):
    refuse_several_processes("PPO")
    runner = PPORunner(context)
    runner.train()
    return runner


@contextmanager
def checkpointed_layers(model, enabled: bool):
    """Transformers recomputes a layer's activations (gradient checkpointing) only while that layer is in training
    mode, and model.train() would also turn dropout on, which PPO keeps off (see above). So only the checkpointable
    layers themselves are flagged as training, not the modules inside them; the values are unchanged (tested on
    Llama). A layer whose own forward reads self.training (Falcon's dropout_add) would drop out here; layers that
    are not GradientCheckpointingLayers (old remote code) are simply not checkpointed."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)] if enabled else []
    for layer in layers:
        layer.training = True
    try:
        yield
    finally:
        for layer in layers:
            layer.training = False


class PPORunner:
    def __init__(self, context: RunContext):
        import copy

        import torch
        from transformers import get_scheduler

        from pipelines.rl.ppo_math import AdaptiveKLController
        from pipelines.rl.rewards import RewardScorer, reward_for_run, reward_model_margin

        self.context, self.config = context, context.config
        settings, train = self.config.ppo, self.config.train
        inputs = stage_inputs(context)
        self.tokenizer, self.device = inputs.tokenizer, inputs.device
        self.prompts = [row["prompt"] for row in inputs.train_dataset]
        bf16 = precision_args(self.config, self.device)["bf16"]
        self.bf16_autocast = bf16 and self.device in ("cuda", "cpu")   # as the Trainer stages compute in bf16
        torch.manual_seed(train.seed)   # the new adapter's and value head's starting weights, as a Trainer seeds them
        model = load_policy(inputs.source, self.config, self.device, bf16=bf16)
        model.config.use_cache = True
        self.ref_model = None
        if self.config.peft.method == "full":   # no adapter to switch off: the reference is a frozen copy
            self.ref_model = copy.deepcopy(model).eval().requires_grad_(False).to(self.device)
        self.checkpointing = use_gradient_checkpointing(self.config, self.device, count_parameters(model))
        if self.checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if self.config.peft.method != "full":
            from peft import get_peft_model
            model = get_peft_model(model, lora_config(self.config))
        self.model = model.to(self.device).eval()   # eval: dropout off (see the module docstring)
        hidden = self.model.config.get_text_config().hidden_size
        self.value_head = torch.nn.Linear(hidden, 1).to(self.device)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)
        self.parameters = [p for p in self.model.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(self.parameters, lr=train.learning_rate, weight_decay=0.0)   # as the Trainer stages
        self.max_steps = train.max_steps if train.max_steps > 0 else max(1, int(train.epochs * len(self.prompts) / train.batch_size))
        self.scheduler = get_scheduler(train.lr_scheduler, self.optimizer,
                                       num_warmup_steps=int(train.warmup_ratio * self.max_steps),
                                       num_training_steps=self.max_steps)
        self.kl_coef = settings.kl_coef
        self.kl_controller = AdaptiveKLController(settings.kl_coef, settings.kl_target, settings.kl_horizon) if settings.kl_target > 0 else None
        self.scorer = RewardScorer(reward_for_run(settings.reward, context.workspace, context.run_dir, settings.rules),
                                   context.workspace)
        self.reward_margin = reward_model_margin(self.scorer.source, context.workspace)   # see pipelines/signals.py
        self.loop = CallbackLoop(context, self.max_steps, self.device, steps_per_epoch=len(self.prompts) / train.batch_size,
                                 model=self.model, processing_class=self.tokenizer, optimizer=self.optimizer,
                                 lr_scheduler=self.scheduler)
        print(f"PPO: {self.config.model} on {self.device}, {len(self.prompts)} prompts of {self.config.dataset}, "
              f"reward = {self.scorer.source.describe()}, reference = "
              f"{'a frozen copy' if self.ref_model else 'the same weights with the adapter disabled'}, "
              f"value head on the policy's backbone", flush=True)

    def _precision(self):
        """bf16 autocast where the run computes in bf16 (weights that train stay fp32), else nothing."""
        import contextlib

        import torch

        if not self.bf16_autocast:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=torch.bfloat16)

    # What save_final (pipelines/stages/common.py) asks of a trainer.
    def is_world_process_zero(self) -> bool:
        return True

    def save_model(self, folder: str) -> None:
        from safetensors.torch import save_file

        Path(folder).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        save_file({k: v.contiguous() for k, v in self.value_head.state_dict().items()}, str(Path(folder) / VALUE_HEAD_FILE))

    def _batch_prompts(self, update: int) -> list[list[dict]]:
        """The prompts of update `update`: a fresh seeded shuffle each epoch, so a resumed run sees the same batches."""
        size, count = self.config.train.batch_size, len(self.prompts)
        batch = []
        for position in range(update * size, (update + 1) * size):
            epoch, offset = divmod(position, count)
            order = list(range(count))
            random.Random(self.config.train.seed + epoch).shuffle(order)
            batch.append(self.prompts[order[offset]])
        return batch

    def train(self) -> None:
        start = self._resume() if self.context.resume_from else 0
        if start:   # samples past the checkpoint belong to the abandoned branch (see run_samples)
            run_files.append_jsonl(self.context.run_dir / "samples.jsonl", {"resumed_from": start})
        self.loop.train(start, self._step, save=self._save_checkpoint)

    def _step(self, update: int) -> dict:
        """Update `update` (0-based) as one step: its samples join the samples table; returns its logs."""
        from transformers import set_seed

        set_seed(self.config.train.seed + update)   # sampling (and a rule file's randomness) repeats after a resume
        logs, samples = self._update(update)
        for sample in samples:
            run_files.append_jsonl(self.context.run_dir / "samples.jsonl", {"step": update + 1, **sample})
        return logs

    def _update(self, update: int) -> tuple[dict, list[dict]]:
        import torch

        from pipelines.rl.ppo_math import (advantages_and_returns, explained_variance, kl_per_token, masked_whiten,
                                           per_token_rewards)
        from pipelines.rl.rollout import generate_rollout
        from pipelines.signals import repeated_ngram_share

        settings = self.config.ppo
        prompts = self._batch_prompts(update)
        with self._precision():
            rollout = generate_rollout(self.model, self.value_head, self.tokenizer, prompts, settings.response_length,
                                       settings.temperature, self.ref_model)
        scores = torch.tensor(self.scorer(prompts, rollout.completions), dtype=torch.float32, device=self.device)
        raw_scores = scores.clone()
        if settings.missing_eos_penalty:
            scores = scores - settings.missing_eos_penalty * (~rollout.ended).float()
        mask = rollout.response_mask
        kl = kl_per_token(rollout.logprobs, rollout.ref_logprobs, settings.kl_estimator) * mask     # (B, T)
        rewards, non_score = per_token_rewards(scores, kl, mask, self.kl_coef)
        advantages, returns = advantages_and_returns(rollout.values, rewards, mask, settings.gamma, settings.lam)
        advantages = masked_whiten(advantages, mask)
        stats = self._optimise(rollout, advantages, returns)
        mean_kl = kl.sum(dim=1).mean().item()
        logs = {
            "loss": stats["loss"], "objective/scores": raw_scores.mean().item(), "objective/kl": mean_kl,
            "objective/non_score_reward": non_score.sum(dim=1).mean().item(),
            "objective/rlhf_reward": (scores + non_score.sum(dim=1)).mean().item(),
            "loss/policy": stats["policy"], "loss/value": stats["value"], "policy/clipfrac": stats["policy_clip"],
            "value/clipfrac": stats["value_clip"], "policy/approx_kl": stats["approx_kl"], "policy/entropy": stats["entropy"],
            "value/explained_variance": explained_variance(rollout.values, returns, mask).item(),
            "answers/repeated_3grams": sum(map(repeated_ngram_share, rollout.completions)) / len(rollout.completions),
            "response_length": mask.sum(dim=1).mean().item(), "eos_rate": rollout.ended.float().mean().item(),
            "kl_coef": self.kl_coef, "grad_norm": stats["grad_norm"], "learning_rate": self.scheduler.get_last_lr()[0],
        }
        if len(raw_scores) > 1:   # 0: every answer scored alike, so the reward gives no direction (pipelines/signals.py)
            logs["objective/scores_std"] = raw_scores.std(unbiased=False).item()
        if self.reward_margin is not None:
            logs["reward_model/margin"] = self.reward_margin
        if self.scorer.rule_scores is not None:   # the declarative rules' part of objective/scores
            logs["objective/rule_scores"] = sum(self.scorer.rule_scores) / len(self.scorer.rule_scores)
        self.scheduler.step()
        if self.kl_controller:
            self.kl_coef = self.kl_controller.update(mean_kl, self.config.train.batch_size)
        samples = [{"prompt": p[-1]["content"], "response": c, "score": s}
                   for p, c, s in zip(prompts[:SAMPLES_PER_UPDATE], rollout.completions, raw_scores.tolist())]
        return logs, samples

    def _optimise(self, rollout, advantages, returns) -> dict:
        import torch

        from pipelines.rl.ppo_math import masked_mean, policy_loss, value_loss
        from pipelines.rl.rollout import forward_scores

        settings, accumulate = self.config.ppo, self.config.train.grad_accum
        size = rollout.sequences.shape[0]
        minibatch = size // settings.minibatches
        micro = minibatch // accumulate      # train.grad_accum: a minibatch's gradient from several smaller forwards
        totals: dict[str, list[float]] = {}
        for _ in range(settings.ppo_epochs):
            order = torch.randperm(size)                                    # new minibatches each pass
            for start in range(0, size, minibatch):
                self.optimizer.zero_grad()
                for part in range(start, start + minibatch, micro):
                    rows = order[part:part + micro]
                    mask = rollout.response_mask[rows]
                    with self._precision(), checkpointed_layers(self.model, self.checkpointing):
                        logprobs, values, entropy = forward_scores(self.model, self.value_head, rollout.sequences[rows],
                                                                   rollout.attention_mask[rows], rollout.prompt_length,
                                                                   settings.temperature, with_entropy=True)
                    pg_loss, pg_clip, approx_kl = policy_loss(logprobs, rollout.logprobs[rows], advantages[rows], mask,
                                                              settings.clip_range)
                    vf_loss, vf_clip = value_loss(values, rollout.values[rows], returns[rows], mask,
                                                  settings.clip_range_value)
                    loss = pg_loss + settings.vf_coef * vf_loss
                    (loss / accumulate).backward()
                    for key, value in (("loss", loss), ("policy", pg_loss), ("value", vf_loss),
                                       ("policy_clip", pg_clip), ("value_clip", vf_clip), ("approx_kl", approx_kl),
                                       ("entropy", masked_mean(entropy, mask))):
                        totals.setdefault(key, []).append(float(value.detach()))
                grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, 1.0)
                self.loop.before_optimizer_step()
                self.optimizer.step()
                self.loop.after_optimizer_step()
                totals.setdefault("grad_norm", []).append(float(grad_norm))
        return {key: sum(values) / len(values) for key, values in totals.items()}

    def _save_checkpoint(self) -> None:
        """checkpoint-<step> in the staging folder; the callbacks' on_save then publishes it and the probes answer."""
        import torch

        step = self.loop.state.global_step
        folder = self.context.staging_dir / f"checkpoint-{step}"
        self.save_model(str(folder))
        torch.save({"optimizer": self.optimizer.state_dict(), "kl_coef": self.kl_coef, "step": step},
                   folder / OPTIMIZER_FILE)

    def _resume(self) -> int:
        """Load the adapter (or weights), value head, optimizer and KL coefficient of the checkpoint; return its step."""
        import torch
        from safetensors.torch import load_file

        folder = self.context.resume_from
        if self.ref_model is None:
            from peft import set_peft_model_state_dict
            loaded = set_peft_model_state_dict(self.model, load_file(folder / "adapter_model.safetensors"))
            if getattr(loaded, "unexpected_keys", None):
                raise StudioError("stage.adapter_shape", checkpoint=folder.name)
        else:
            from transformers import AutoModelForCausalLM
            self.model.load_state_dict(AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).state_dict())
        self.value_head.load_state_dict(load_file(folder / VALUE_HEAD_FILE))
        saved = torch.load(folder / OPTIMIZER_FILE, weights_only=True)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.kl_coef = saved["kl_coef"]
        if self.kl_controller:
            self.kl_controller.value = self.kl_coef
        with warnings.catch_warnings():   # fast-forwarding the schedule before the first optimizer step is intended
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(saved["step"]):
                self.scheduler.step()
        return saved["step"]

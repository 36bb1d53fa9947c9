"""GRPO (group-relative policy optimisation) with TRL's GRPOTrainer: several answers per prompt, each answer's
advantage is its reward against the others of its group, so no value model is needed.

The reward is ours (a reward checkpoint, a rule file and/or the config's rules, see pipelines/rl/rewards.py). The reference of the
KL term is the model the run starts from: with LoRA, the same weights with the adapter disabled; in a full
fine-tune, a copy TRL loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines import panels
from pipelines.config import MAX_TEMPERATURE, reward_rules, reward_source, setting
from pipelines.errors import StudioError
from pipelines.signals import rl_signs
from pipelines.stages import declare
from pipelines.stages.common import RunContext, count_parameters, lora_config, start_policy_stage, train_and_finish


@dataclass
class SampledRLSettings:
    """What GRPO and RLOO share: several answers per prompt, each judged against the others of its group."""
    reward: str = reward_source()
    rules: list = reward_rules()
    num_generations: int = setting(4, "Answers sampled per prompt; each is compared with the others of its prompt (train.batch_size must be a multiple).",
                                  minimum=2, maximum=64)
    response_length: int = setting(48, "Longest generated answer, in tokens.", minimum=1, maximum=4096)
    temperature: float = setting(1.0, "Sampling temperature of the answers.", minimum=0, exclusive_minimum=True, maximum=MAX_TEMPERATURE)
    beta: float = setting(0.04, "Weight of the KL penalty to the reference, the model the run starts from (with LoRA: the adapter disabled); 0 drops the reference.", minimum=0.0, maximum=100.0)


@dataclass
class GRPOSettings(SampledRLSettings):
    loss_type: str = setting("dapo", "How token losses are averaged: dapo (TRL's default, no length bias), grpo (the paper's), dr_grpo, bnpo.",
                            choices=("dapo", "grpo", "dr_grpo", "bnpo"))


def validate_groups(config) -> None:
    """GRPO and RLOO: a batch holds whole groups of answers to one prompt."""
    group = getattr(config, config.stage).num_generations
    if config.train.batch_size % group:
        raise StudioError("check.sampled_rl.whole_groups", batch=config.train.batch_size, stage=config.stage, group=group)


STAGE = declare(
    __name__, name="grpo", probes_own_prompts=True, order=7, data_kind="prompt_only", settings=GRPOSettings,
    takes_reward=True,
    validate=validate_groups,
    warning_signs=rl_signs,
    panels=panels.RL,
    defaults={"dataset": "prompts-en-sample", "train": {"learning_rate": 3.0e-5, "max_steps": 30, "save_steps": 10}},
)


def sampled_rl_parts(context: RunContext, settings):
    """What GRPO and RLOO share: inputs, the policy, common arguments, the reward function and its step tracker."""
    from pipelines.accelerators import vllm_args
    from pipelines.rl.rewards import RewardScorer, reward_for_run
    from pipelines.rl.trl_rewards import StepTracker, StudioReward
    from pipelines.train import is_main_process

    inputs, model, common = start_policy_stage(context)
    if settings.beta > 0 and context.config.peft.method == "full" and inputs.source.adapters:
        point_reference_at_the_start(model, context.staging_dir / "reference")
    tracker = StepTracker()
    scorer = RewardScorer(reward_for_run(settings.reward, context.workspace, context.run_dir, settings.rules),
                          context.workspace)
    reward = StudioReward(scorer, context.run_dir, tracker, is_main_process())
    sampling = {"num_generations": settings.num_generations, "max_completion_length": settings.response_length,
                "temperature": settings.temperature, "beta": settings.beta,
                # vLLM generates the answers where it is installed and the run is on a CUDA GPU (colocate mode)
                **vllm_args(inputs.device, count_parameters(model), context.config.stage)}
    return inputs, model, common, reward, tracker, sampling


def point_reference_at_the_start(model, folder) -> None:
    """TRL builds a full fine-tune's KL reference by loading `config._name_or_path` again. With earlier LoRA
    adapters merged into the policy that is the bare base, not the model this run starts from: save the merged
    start once (in the run's staging folder, gone when the run completes) and point there."""
    import os
    import shutil

    from accelerate import PartialState

    # PartialState joins the process group now (the trainer would later), so the other ranks really wait here
    # until the main process has written the folder they load the reference from.
    with PartialState().main_process_first():
        if not (folder / "config.json").is_file():
            staged = folder.with_name(f"{folder.name}.{os.getpid()}.partial")
            shutil.rmtree(staged, ignore_errors=True)
            model.save_pretrained(staged)
            os.replace(staged, folder)
    model.config._name_or_path = str(folder)


def run(context: RunContext):
    from trl import GRPOConfig, GRPOTrainer

    config = context.config
    inputs, model, common, reward, tracker, sampling = sampled_rl_parts(context, config.grpo)
    print(f"GRPO ({config.grpo.loss_type}): {config.model} on {inputs.device}, {len(inputs.train_dataset)} prompts of "
          f"{config.dataset}, {config.grpo.num_generations} answers each, reward = {reward.scorer.source.describe()}", flush=True)
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=GRPOConfig(**common, **sampling, loss_type=config.grpo.loss_type),
                          train_dataset=inputs.train_dataset, processing_class=inputs.tokenizer,
                          peft_config=lora_config(config), callbacks=[tracker, *context.callbacks])
    return train_and_finish(context, trainer)

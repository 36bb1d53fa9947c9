"""GRPO (group-relative policy optimisation) with TRL's GRPOTrainer: several answers per prompt, each answer's
advantage is its reward against the others of its group, so no value model is needed.

The reward is ours (a reward checkpoint and/or a rule file, see pipelines/rl/rewards.py). The reference of the
KL term is the model the run starts from: with LoRA, the same weights with the adapter disabled; in a full
fine-tune, a copy TRL loads.
"""

from __future__ import annotations

from pipelines.stages.common import RunContext, lora_config, policy_and_args, quiet, stage_inputs


def sampled_rl_parts(context: RunContext, settings):
    """What GRPO and RLOO share: inputs, the policy, common arguments, the reward function and its step tracker."""
    from pipelines.rl.rewards import RewardScorer, reward_for_run
    from pipelines.rl.trl_rewards import StepTracker, StudioReward
    from pipelines.train import is_main_process

    inputs = stage_inputs(context)
    model, common = policy_and_args(context, inputs)
    if settings.beta > 0 and context.config.peft.method == "full" and inputs.source.adapters:
        point_reference_at_the_start(model, context.staging_dir / "reference")
    tracker = StepTracker()
    scorer = RewardScorer(reward_for_run(settings.reward, context.workspace, context.run_dir), context.workspace)
    reward = StudioReward(scorer, context.run_dir, tracker, is_main_process())
    sampling = {"num_generations": settings.num_generations, "max_completion_length": settings.response_length,
                "temperature": settings.temperature, "beta": settings.beta}
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
    quiet(trainer)
    trainer.train(resume_from_checkpoint=str(context.resume_from) if context.resume_from else None)
    return trainer

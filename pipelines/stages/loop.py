"""The Trainer's callback protocol for the stages with a loop of their own (PPO, best-of-N).

A transformers Trainer tells its callbacks what happens through a CallbackHandler: training begins, a step begins
and ends, metrics are logged, a checkpoint is saved, training ends. DefaultFlowCallback decides at each step's end
whether to log, save or stop (logging_steps, save_steps, max_steps), and any callback may ask for a save or a stop
through TrainerControl. CallbackLoop drives those same two classes with real TrainingArguments, built from the run
config as the TRL stages' are, so the run recorder, the probes and any TrainerCallback see a PPO update or a batch
of best-of-N prompts as they see a Trainer step: one event order, one place that owns TrainerState/TrainerControl.
"""

from __future__ import annotations

from typing import Callable

from pipelines.stages.common import RunContext, common_training_args, count_parameters
from pipelines.trackers import loop_callbacks


class CallbackLoop:
    """Steps 1 … max_steps of a stage's own loop, with the callbacks of the run told of each as a Trainer would.

    `model`, `processing_class`, `optimizer` and `lr_scheduler` reach every event as the Trainer passes them (the
    recorder checks the weights before a save, the probes answer with the model); a stage that trains nothing
    passes no model. `saves`: whether the stage writes checkpoints (best-of-N keeps its progress in a file instead).
    """

    def __init__(self, context: RunContext, max_steps: int, device: str, *, steps_per_epoch: float, model=None,
                 processing_class=None, optimizer=None, lr_scheduler=None, saves: bool = True):
        from transformers import TrainerControl, TrainerState, TrainingArguments
        from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback

        n_params = count_parameters(model) if model is not None else 0
        self.args = TrainingArguments(**{**common_training_args(context, device, n_params), "max_steps": max_steps,
                                         "save_strategy": "steps" if saves else "no"})
        train = context.config.train
        self.state = TrainerState(max_steps=max_steps, logging_steps=train.logging_steps, save_steps=train.save_steps,
                                  train_batch_size=train.batch_size)
        self.state.is_world_process_zero = self.args.process_index == 0
        self.state.is_local_process_zero = self.args.local_process_index == 0
        self.control = TrainerControl()
        self.steps_per_epoch = steps_per_epoch
        # report_to: the trackers' callbacks, as a Trainer adds them, see the same logs, last (pipelines/trackers.py)
        callbacks = [DefaultFlowCallback(), *context.callbacks, *loop_callbacks(self.args)]
        self.handler = CallbackHandler(callbacks, model, processing_class, optimizer, lr_scheduler)

    def train(self, start: int, step: Callable[[int], dict], save: Callable[[], None] | None = None) -> None:
        """Run steps start+1 … max_steps. `step(index)` does the step of 0-based `index` and returns its logs;
        `save()` writes checkpoint-<global_step> into the staging folder when the flow asks for a save (at
        save_steps, at the end, on a stop request), after which the callbacks' on_save publishes it. Without `save`
        a save request is dropped. A callback's should_training_stop ends the loop after that step, as in Trainer."""
        args, state, handler = self.args, self.state, self.handler
        state.global_step = start
        self.control = handler.on_train_begin(args, state, self.control)
        for index in range(start, state.max_steps):
            self.control = handler.on_step_begin(args, state, self.control)
            logs = step(index)
            state.global_step = index + 1
            state.epoch = state.global_step / self.steps_per_epoch
            self.control = handler.on_step_end(args, state, self.control)
            # Trainer logs the last step only at a multiple of logging_steps; our loops always show where they ended.
            if self.control.should_log or state.global_step == state.max_steps:
                state.log_history.append({**logs, "step": state.global_step})
                self.control = handler.on_log(args, state, self.control, logs=logs)
            if self.control.should_save:
                if save is None:
                    self.control.should_save = False
                else:
                    save()
                    self.control = handler.on_save(args, state, self.control)
            if self.control.should_training_stop:
                break
        self.control = handler.on_train_end(args, state, self.control)

    def before_optimizer_step(self) -> None:
        """Tell the callbacks an optimizer step is next (the recorder checks the gradients here)."""
        self.control = self.handler.on_pre_optimizer_step(self.args, self.state, self.control)

    def after_optimizer_step(self) -> None:
        self.control = self.handler.on_optimizer_step(self.args, self.state, self.control)

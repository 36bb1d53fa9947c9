"""Rejection sampling (best-of-N): for each prompt, generate N answers with a checkpoint, score them, keep the best
(and, for preference pairs, the worst). Nothing is trained; the product is data.

Every finished batch of prompts is appended to `kept.jsonl` in the run directory as one line, so a stop or a
crash keeps what was finished and a resume carries on from there. At the end (or on stop) the kept rows become
the datasets `<run_id>-best` (instruction rows: prompt → best answer, for SFT) and, with keep
best_and_pairs, `<run_id>-pairs` (best over worst, for DPO or a reward model).
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines import panels, run_files
from pipelines.config import MAX_TEMPERATURE, reward_rules, reward_source, setting
from pipelines.errors import StudioError
from pipelines.stages import declare
from pipelines.stages.common import RunContext, refuse_several_processes, stage_inputs
from pipelines.stages.loop import CallbackLoop

KEPT_FILE = run_files.PROGRESS_FILE


@dataclass
class RejectionSamplingSettings:
    reward: str = reward_source("scores")
    rules: list = reward_rules()
    num_samples: int = setting(4, "Answers generated per prompt (the N of best-of-N).", minimum=2, maximum=64)
    response_length: int = setting(96, "Longest generated answer, in tokens.", minimum=1, maximum=4096)
    temperature: float = setting(0.8, "Sampling temperature: high enough that the N answers differ.", minimum=0, exclusive_minimum=True, maximum=MAX_TEMPERATURE)
    keep: str = setting("best_and_pairs", "best: an SFT dataset of each prompt's best answer; best_and_pairs: also a preference dataset of best over worst.",
                       choices=("best", "best_and_pairs"))


STAGE = declare(
    __name__, name="rejection_sampling", order=9, data_kind="prompt_only", settings=RejectionSamplingSettings,
    takes_reward=True, output="datasets",
    # max_steps counts batches of prompts here (0 = every prompt); nothing is trained, so the learning rate is unused.
    panels=panels.BEST_OF_N,
    defaults={"dataset": "prompts-en-sample", "train": {"learning_rate": 2.0e-4, "max_steps": 0, "save_steps": 20}},
)


def run(context: RunContext) -> None:
    """Sample and keep; nothing to save as final/ (the registry says output "datasets")."""
    refuse_several_processes("Rejection sampling")
    BestOfN(context).run()


def output_names(run_id: str) -> dict:
    return {"best": f"{run_id}-best", "pairs": f"{run_id}-pairs"}


class BestOfN:
    def __init__(self, context: RunContext):
        import torch

        from pipelines.models import load_model
        from pipelines.rl.rewards import RewardScorer, reward_for_run

        self.context, self.config = context, context.config
        settings = self.config.rejection_sampling
        inputs = stage_inputs(context)
        self.tokenizer, self.device = inputs.tokenizer, inputs.device
        self.prompts = [row["prompt"] for row in inputs.train_dataset]
        size = self.config.train.batch_size
        batches = -(-len(self.prompts) // size)
        self.max_steps = min(self.config.train.max_steps, batches) if self.config.train.max_steps > 0 else batches
        self.model = load_model(inputs.source, dtype=torch.float32, device=self.device).eval()
        self.scorer = RewardScorer(reward_for_run(settings.reward, context.workspace, context.run_dir, settings.rules),
                                   context.workspace)
        # Nothing is trained, so the callbacks get no model (no weights to check before a save, none to save: a
        # finished batch in kept.jsonl is this stage's checkpoint).
        self.loop = CallbackLoop(context, self.max_steps, self.device, steps_per_epoch=batches,
                                 processing_class=self.tokenizer, saves=False)
        print(f"Best-of-{settings.num_samples}: {self.config.model} on {self.device}, "
              f"{min(len(self.prompts), self.max_steps * size)} prompts of {self.config.dataset}, "
              f"scored by {self.scorer.source.describe()}", flush=True)

    def run(self) -> None:
        kept_path = self.context.run_dir / KEPT_FILE
        start = len(run_files.read_jsonl(kept_path))   # one line per finished batch: a resumed run carries on after them
        self.loop.train(start, self._step)
        self._save_datasets([row for batch in run_files.read_jsonl(kept_path) for row in batch["rows"]])

    def _step(self, step: int) -> dict:
        """Batch `step` (0-based) of prompts sampled, scored and kept; returns its logs."""
        import torch

        size = self.config.train.batch_size
        torch.manual_seed(self.config.train.seed + step)
        rows = self._sample(self.prompts[step * size:(step + 1) * size])
        run_files.append_jsonl(self.context.run_dir / KEPT_FILE, {"step": step + 1, "rows": rows})   # kept whole or not at all
        whole = [r for r in rows if r["best"] is not None] or rows[:0]
        logs = {"mean_score": sum(sum(r["scores"]) / len(r["scores"]) for r in rows) / len(rows),
                "kept_prompts": len(whole)}
        if whole:
            logs["best_score"] = sum(r["scores"][r["best"]] for r in whole) / len(whole)
            logs["worst_score"] = sum(r["scores"][r["worst"]] for r in whole) / len(whole)
        return logs

    def _sample(self, prompts: list[list[dict]]) -> list[dict]:
        """N answers per prompt, their scores, and which is best and worst."""
        import torch

        from pipelines.rl.rollout import pure_sampling, response_mask, stop_token_ids

        settings = self.config.rejection_sampling
        n = settings.num_samples
        texts = [self.tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                                 add_special_tokens=False).to(self.device)
        stop_ids = stop_token_ids(self.model, self.tokenizer)
        with torch.no_grad():
            output = self.model.generate(**encoded, **pure_sampling(settings.temperature, stop_ids), num_return_sequences=n,
                                         max_new_tokens=settings.response_length, pad_token_id=self.tokenizer.pad_token_id)
        responses = output[:, encoded["input_ids"].shape[1]:]
        _, ended = response_mask(responses, stop_ids)
        answers = [a.strip() for a in self.tokenizer.batch_decode(responses, skip_special_tokens=True)]
        repeated = [p for p in prompts for _ in range(n)]                 # generate returns a prompt's N answers together
        scores = self.scorer(repeated, answers)
        rows = []
        for index, prompt in enumerate(prompts):
            own = scores[index * n:(index + 1) * n]
            # An answer cut off at the length cap is never kept: SFT on it would teach stopping mid-sentence.
            whole = [i for i in range(n) if ended[index * n + i] and answers[index * n + i]]
            rows.append({"prompt": prompt, "answers": answers[index * n:(index + 1) * n], "scores": own,
                         "ended": [bool(ended[index * n + i]) for i in range(n)],
                         "best": max(whole, key=own.__getitem__) if whole else None,
                         "worst": min(whole, key=own.__getitem__) if whole else None})
        return rows

    def _save_datasets(self, kept: list[dict]) -> None:
        from pipelines.data.store import write_dataset

        if not kept:
            raise StudioError("stage.nothing_finished")
        names = output_names(self.context.run_dir.name)
        source = f"rejection sampling run {self.context.run_dir.name}"
        kept = [r for r in kept if r["best"] is not None]   # prompts whose every answer was cut off give nothing
        if not kept:
            raise StudioError("stage.every_answer_cut")
        best = [{"messages": r["prompt"] + [{"role": "assistant", "content": r["answers"][r["best"]]}]} for r in kept]
        write_dataset(names["best"], self.context.workspace, "instruction", "messages", best, source)
        saved = {"best": names["best"]}
        if self.config.rejection_sampling.keep == "best_and_pairs":
            pairs = [{"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["answers"][r["best"]]}],
                      "rejected": [{"role": "assistant", "content": r["answers"][r["worst"]]}]}
                     for r in kept if r["scores"][r["best"]] > r["scores"][r["worst"]]
                     and r["answers"][r["best"]] != r["answers"][r["worst"]]]
            if pairs:
                write_dataset(names["pairs"], self.context.workspace, "preference", "preference", pairs, source)
                saved["pairs"] = names["pairs"]
        run_files.update_status(self.context.run_dir, datasets=saved, prompts_done=len(kept))
        print(f"saved datasets: {', '.join(f'{v} ({k})' for k, v in saved.items())}", flush=True)

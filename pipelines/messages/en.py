"""The English catalog: every sentence and label a user reads, by code (see pipelines/messages/__init__.py).

The help under each training-form field is not here: it is the field's own `help` (pipelines/config.py).
"""

MESSAGES = {
    # config: a setting out of bounds (pipelines/config.py)
    "config.not_a_choice": "`{path}` must be one of {choices}, not {value}.",
    "config.not_finite": "`{path}` must be a finite number, not {value}.",
    "config.not_whole": "`{path}` must be a whole number, not {value}.",
    "config.not_above": "`{path}` must be greater than {minimum}, not {value}.",
    "config.below_minimum": "`{path}` must be at least {minimum}, not {value}.",
    "config.above_maximum": "`{path}` must be at most {maximum}, not {value}.",
    "config.unknown_stage": "Unknown stage {stage}; choose one of: {stages}.",
    "title": "# 🧭 Alignment Studio",
    "subtitle": "Take a base model through the alignment pipeline — instruction tuning, then preference and RL stages — and chat with every checkpoint.",
    "language_hint": "Language: your browser's, or Settings (footer) → Language.",
    # tabs
    "tab.model": "Model", "tab.data": "Data", "tab.train": "Train", "tab.chat": "Chat", "tab.reward": "Reward model",
    "tab.compare": "Compare", "compare.columns": "Columns", "compare.blind": "Blind mode (names hidden until the vote)",
    "compare.free": "Free cached models", "compare.label": "Column label", "compare.override": "Settings for this column (JSON, optional)",
    "compare.placeholder": "One question, every checkpoint answers it.", "compare.vote_dataset": "Votes go to dataset",
    "compare.a_better": "A is better", "compare.b_better": "B is better", "compare.tie": "Tie", "compare.both_bad": "Both bad",
    "compare.ranking": "Ranking of 3–4 columns (e.g. B > A > C, = for a tie)", "compare.rank_vote": "Vote with this ranking",
    "compare.evaluate": "Evaluate the picked checkpoints on a prompt set", "compare.eval_dataset": "Prompts from a dataset",
    "compare.eval_prompts": "…or typed, one per line", "compare.scorer": "Scorer (reward checkpoint, rules .py, or both with +)",
    "compare.run_eval": "Evaluate", "compare.export": "Download the scores (CSV, JSONL)",
    "reward.checkpoint": "Reward checkpoint", "reward.checkpoint_help": "The checkpoint or final model of a reward run.",
    "reward.prompt": "Prompt", "reward.answers": "Answers to score, separated by a line with ---",
    "reward.score": "Score the answers", "reward.evaluate": "Measure on the dataset's pairs (accuracy, margins)",
    "reward.rank": "Rank every answer of the dataset by reward",
    # road tab
    "tab.road": "Road",
    "road.intro": ("### 🛣️ Try the road\n"
                   "From a base model to an assistant in four runs, each with its defaults, on a bundled sample:\n\n"
                   "1. **SFT** (instruction tuning) on 200 instruction rows: the model learns to answer the way they do.\n"
                   "2. **DPO** on 200 preference pairs, from the SFT model: the shortcut, learning from the pairs directly.\n"
                   "3. **A reward model** on the same pairs: it learns to score answers as the pairs rank them.\n"
                   "4. **PPO** against that reward model, from the SFT model: InstructGPT's road. It samples answers, "
                   "is scored, and moves toward higher scores while a KL penalty keeps it near the SFT model.\n\n"
                   "Then **Compare** shows base, SFT, DPO and PPO answering questions none of them was trained on. "
                   "Each step is an ordinary run: its curves are in the Train tab. About half an hour on a 2-core CPU."),
    "road.language": "Samples", "road.english": "English", "road.korean": "Korean",
    "road.start": "Try the road", "road.continue": "Continue", "road.pick": "Road",
    "road.compare": "Compare base, SFT, DPO and PPO",
    # model tab
    "model.pick": "Model", "model.pick_info": "The bundled model, a Hub id (org/name), a local folder, or a run checkpoint.",
    "model.inspect": "Inspect", "model.card": "Model details",
    # data tab
    "data.pick": "Dataset", "data.preview_rows": "Rows to preview", "data.preview": "Preview as the model sees it",
    "data.preview_model": "Render with the chat template of", "data.upload": "Upload JSON, JSONL, CSV, TSV or Parquet (instruction, preference, unpaired or prompt-only rows)",
    "data.name": "Save as (name)", "data.upload_name": "Save as (name; empty: the file's or Hub dataset's name)", "data.drop_bad": "Drop bad rows", "data.save": "Check and save",
    "data.replace": "Replace a saved dataset of that name",
    "data.look": "Look", "data.stats": "Token lengths", "data.add": "Add data", "data.table": "Edit as a table",
    "data.tools": "Less but better",
    "data.hub_id": "Hugging Face Hub dataset id", "data.hub_config": "Config (optional)", "data.hub_split": "Split",
    "data.hub_rows": "Rows to take at most", "data.hub_import": "Import from the Hub",
    "data.columns": "Column mapping (optional): field=column, …",
    "data.kind": "Kind of rows", "data.table_load": "Load the picked dataset", "data.table_new": "Empty table",
    "data.table_hint": "Type, paste or edit rows; the row menu adds and deletes rows",
    "data.tools_intro": "Each tool reads the picked dataset and saves a new one under the name below; the original stays as it is.",
    "data.new_name": "New dataset name", "data.near": "Also remove near duplicates",
    "data.threshold": "Near-duplicate similarity (Jaccard of 5-character shingles)", "data.dedupe": "Remove duplicates",
    "data.min_tokens": "Min tokens", "data.max_tokens": "Max tokens", "data.filter": "Filter by length",
    "data.eval_fraction": "Eval fraction", "data.split": "Split into -train and -eval",
    # train tab
    "train.setup": "Set up a run", "train.start": "Start", "train.stop": "Stop", "train.resume": "Resume",
    "train.config_preview": "Run config (YAML) — what Start sends; the CLI and API take the same text",
    "train.runs": "Runs", "train.run": "Run", "train.status": "Status", "train.chart": "Training curves",
    "train.log": "Log (tail)", "train.lora": "LoRA / full fine-tune", "train.hyper": "Training",
    "train.started": "Started", "train.advanced": "Advanced", "train.refresh": "Refresh",
    # run states
    "status.queued": "queued", "status.running": "running", "status.stopping": "stopping", "status.completed": "completed",
    "status.failed": "failed", "status.stopped": "stopped", "status.interrupted": "interrupted", "status.unknown": "unknown",
    # chat tab
    "chat.checkpoint": "Checkpoint", "chat.refresh": "Refresh checkpoints", "chat.message": "Message",
    "chat.send": "Send", "chat.clear": "Clear", "chat.settings": "Generation", "chat.max_new_tokens": "Max new tokens",
    "chat.temperature": "Temperature (0 = greedy)", "chat.top_p": "Top-p", "chat.system_prompt": "System prompt (optional)",
    "chat.placeholder": "Ask something, then try the same question on another checkpoint.",
    # run-config field labels
    "name": "Run name (optional)", "stage": "Stage", "model": "Model", "dataset": "Dataset",
    "peft.method": "Method", "peft.r": "LoRA rank r", "peft.alpha": "LoRA alpha", "peft.dropout": "LoRA dropout",
    "peft.target_modules": "Target modules",
    "train.max_steps": "Max steps (0 = use epochs)", "train.epochs": "Epochs", "train.learning_rate": "Learning rate",
    "train.lr_scheduler": "LR schedule", "train.warmup_ratio": "Warm-up ratio", "train.batch_size": "Batch size",
    "train.grad_accum": "Gradient accumulation", "train.max_length": "Max length (tokens)",
    "train.logging_steps": "Log every (steps)", "train.save_steps": "Save every (steps)",
    "train.save_total_limit": "Checkpoints kept (0 = all)", "train.seed": "Seed", "train.gpus": "GPUs (e.g. 0 or 0,1)",
    "train.precision": "Precision", "train.gradient_checkpointing": "Gradient checkpointing",
    "eval_dataset": "Eval dataset (optional)", "train.eval_steps": "Evaluate every (steps)",
    "reward.center_rewards": "Center rewards coefficient",
    "dpo.beta": "Beta", "dpo.loss_type": "DPO loss", "dpo.label_smoothing": "Label smoothing", "dpo.sft_weight": "SFT term weight",
    "kto.beta": "Beta", "kto.loss_type": "KTO loss", "kto.desirable_weight": "Desirable weight",
    "kto.undesirable_weight": "Undesirable weight", "orpo.beta": "Beta (λ of the odds-ratio term)",
    "ppo.reward": "Reward (checkpoint, rules .py, or both with +)", "ppo.kl_coef": "KL coefficient β",
    "ppo.kl_target": "Adaptive KL target (0 = fixed β)", "ppo.kl_horizon": "Adaptive KL horizon (rollouts)", "ppo.kl_estimator": "KL estimator", "ppo.ppo_epochs": "PPO epochs",
    "ppo.minibatches": "Minibatches", "ppo.response_length": "Response length (tokens)", "ppo.temperature": "Sampling temperature",
    "ppo.clip_range": "Policy clip ε", "ppo.clip_range_value": "Value clip", "ppo.vf_coef": "Value loss weight",
    "ppo.gamma": "Discount γ", "ppo.lam": "GAE λ", "ppo.missing_eos_penalty": "Penalty for answers without an end",
    "train.samples": "Samples (prompt, response, score) as the run trains",
    "train.probes": "Probe prompts, answered at every checkpoint", "train.probe_prompts": "Probe prompts (one per line)",
    "train.sft_on_it": "SFT on the best answers", "train.dpo_on_it": "DPO on best-over-worst pairs",
    "rejection_sampling.reward": "Reward (checkpoint, rules .py, or both with +)", "rejection_sampling.num_samples": "Answers per prompt (N)",
    "rejection_sampling.response_length": "Response length (tokens)", "rejection_sampling.temperature": "Sampling temperature",
    "rejection_sampling.keep": "Keep",
    "grpo.reward": "Reward (checkpoint, rules .py, or both with +)", "grpo.num_generations": "Answers per prompt",
    "grpo.response_length": "Response length (tokens)", "grpo.temperature": "Sampling temperature", "grpo.beta": "KL coefficient β",
    "rloo.reward": "Reward (checkpoint, rules .py, or both with +)", "rloo.num_generations": "Answers per prompt",
    "rloo.response_length": "Response length (tokens)", "rloo.temperature": "Sampling temperature", "rloo.beta": "KL coefficient β",
    "grpo.loss_type": "GRPO loss aggregation",
    "train.stage_settings": "Settings of this stage", "train.smooth": "Smoothed curves", "train.log_scale": "Log-scale loss",
}

"""Every piece of UI text, in English and Korean.

The browser's language picks the table; the footer's Settings → Language switches it. Field labels of
the training form are keyed `<section>.<field>` after the config dataclasses (see studio/form.py).
"""

import gradio as gr

EN = {
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

KO = {
    "title": "# 🧭 얼라인먼트 스튜디오",
    "subtitle": "베이스 모델을 정렬 파이프라인(지시 튜닝, 선호·강화학습 단계)에 태우고, 모든 체크포인트와 대화해 보세요.",
    "language_hint": "언어: 브라우저 언어를 따르며, 하단 설정(Settings) → 언어(Language)에서 바꿀 수 있습니다.",
    "tab.model": "모델", "tab.data": "데이터", "tab.train": "학습", "tab.chat": "채팅", "tab.reward": "보상 모델",
    "tab.compare": "비교", "compare.columns": "열 수", "compare.blind": "블라인드 모드 (투표 전까지 이름 숨김)",
    "compare.free": "캐시된 모델 비우기", "compare.label": "열 이름", "compare.override": "이 열만의 설정 (JSON, 선택)",
    "compare.placeholder": "질문 하나에 모든 체크포인트가 답합니다.", "compare.vote_dataset": "투표를 저장할 데이터셋",
    "compare.a_better": "A가 더 좋음", "compare.b_better": "B가 더 좋음", "compare.tie": "비김", "compare.both_bad": "둘 다 나쁨",
    "compare.ranking": "3–4개 열의 순위 (예: B > A > C, 비기면 =)", "compare.rank_vote": "이 순위로 투표",
    "compare.evaluate": "선택한 체크포인트를 프롬프트 모음으로 평가", "compare.eval_dataset": "데이터셋의 프롬프트",
    "compare.eval_prompts": "…또는 한 줄에 하나씩 입력", "compare.scorer": "채점기 (보상 체크포인트, 규칙 .py, 또는 + 로 둘 다)",
    "compare.run_eval": "평가", "compare.export": "점수 내려받기 (CSV, JSONL)",
    "reward.checkpoint": "보상 모델 체크포인트", "reward.checkpoint_help": "보상(reward) 실행의 체크포인트 또는 최종 모델.",
    "reward.prompt": "프롬프트", "reward.answers": "점수를 매길 답변들 (--- 한 줄로 구분)",
    "reward.score": "답변 점수 매기기", "reward.evaluate": "데이터셋의 쌍으로 측정 (정확도, 마진)",
    "reward.rank": "데이터셋의 모든 답변을 보상 순으로 정렬",
    # road tab
    "tab.road": "로드맵",
    "road.intro": ("### 🛣️ 정렬의 길을 따라가 보기\n"
                   "베이스 모델에서 어시스턴트까지, 번들 샘플과 기본 설정으로 네 번의 실행을 거칩니다:\n\n"
                   "1. **SFT**(지시 튜닝) — 지시 데이터 200행: 모델이 그 답변처럼 답하는 법을 배웁니다.\n"
                   "2. **DPO** — SFT 모델에서 선호 쌍 200개로: 보상 모델 없이 쌍에서 바로 배우는 지름길입니다.\n"
                   "3. **보상 모델** — 같은 쌍으로: 쌍이 매긴 순서대로 답변에 점수를 주는 법을 배웁니다.\n"
                   "4. **PPO** — SFT 모델에서, 그 보상 모델을 상대로: InstructGPT의 길입니다. 답변을 샘플링하고 "
                   "점수를 받아 더 높은 점수 쪽으로 움직이되, KL 페널티가 SFT 모델 가까이에 붙잡아 둡니다.\n\n"
                   "그다음 **비교** 탭에서 베이스, SFT, DPO, PPO가 어느 모델도 학습하지 않은 질문에 나란히 답합니다. "
                   "각 단계는 평범한 실행이라 학습 탭에서 곡선을 볼 수 있습니다. 2코어 CPU에서 약 30분 걸립니다."),
    "road.language": "샘플", "road.english": "영어", "road.korean": "한국어",
    "road.start": "길 따라가기", "road.continue": "이어서 하기", "road.pick": "로드맵 실행",
    "road.compare": "베이스, SFT, DPO, PPO 비교하기",
    "model.pick": "모델", "model.pick_info": "내장 모델, 허브 ID(org/name), 로컬 폴더, 또는 실행의 체크포인트.",
    "model.inspect": "살펴보기", "model.card": "모델 정보",
    "data.pick": "데이터셋", "data.preview_rows": "미리 볼 행 수", "data.preview": "모델이 보는 그대로 미리 보기",
    "data.preview_model": "채팅 템플릿을 적용할 모델", "data.upload": "JSON, JSONL, CSV, TSV, Parquet 업로드 (지시, 선호, 비쌍 선호, 프롬프트 전용 행)",
    "data.name": "저장할 이름", "data.upload_name": "저장할 이름 (비우면 파일이나 허브 데이터셋의 이름)", "data.drop_bad": "잘못된 행 버리기", "data.save": "검사 후 저장",
    "data.replace": "같은 이름의 저장된 데이터셋 바꾸기",
    "data.look": "살펴보기", "data.stats": "토큰 길이", "data.add": "데이터 추가", "data.table": "표로 편집",
    "data.tools": "적지만 더 좋게",
    "data.hub_id": "Hugging Face 허브 데이터셋 ID", "data.hub_config": "구성 (선택)", "data.hub_split": "분할",
    "data.hub_rows": "가져올 최대 행 수", "data.hub_import": "허브에서 가져오기",
    "data.columns": "열 매핑 (선택): 필드=열, …",
    "data.kind": "행의 종류", "data.table_load": "선택한 데이터셋 불러오기", "data.table_new": "빈 표",
    "data.table_hint": "행을 입력·붙여넣기·편집하세요. 행 메뉴에서 행을 추가하고 삭제할 수 있습니다",
    "data.tools_intro": "각 도구는 선택한 데이터셋을 읽어 아래 이름으로 새 데이터셋을 저장합니다. 원본은 그대로 남습니다.",
    "data.new_name": "새 데이터셋 이름", "data.near": "거의 같은 중복도 제거",
    "data.threshold": "유사 중복 기준 (5글자 조각의 자카드 유사도)", "data.dedupe": "중복 제거",
    "data.min_tokens": "최소 토큰", "data.max_tokens": "최대 토큰", "data.filter": "길이로 거르기",
    "data.eval_fraction": "평가용 비율", "data.split": "-train과 -eval로 나누기",
    "train.setup": "실행 설정", "train.start": "시작", "train.stop": "중지", "train.resume": "이어서 학습",
    "train.config_preview": "실행 설정(YAML) — 시작 버튼이 보내는 내용이며 CLI와 API도 같은 텍스트를 받습니다",
    "train.runs": "실행 목록", "train.run": "실행", "train.status": "상태", "train.chart": "학습 곡선",
    "train.log": "로그 (끝부분)", "train.lora": "LoRA / 전체 미세조정", "train.hyper": "학습 설정",
    "train.started": "시작됨", "train.advanced": "고급 설정", "train.refresh": "새로고침",
    "status.queued": "대기 중", "status.running": "학습 중", "status.stopping": "중지하는 중", "status.completed": "완료",
    "status.failed": "실패", "status.stopped": "중지됨", "status.interrupted": "중단됨", "status.unknown": "알 수 없음",
    "chat.checkpoint": "체크포인트", "chat.refresh": "체크포인트 새로고침", "chat.message": "메시지",
    "chat.send": "보내기", "chat.clear": "지우기", "chat.settings": "생성 설정", "chat.max_new_tokens": "최대 생성 토큰",
    "chat.temperature": "온도 (0 = 탐욕적)", "chat.top_p": "Top-p", "chat.system_prompt": "시스템 프롬프트 (선택)",
    "chat.placeholder": "질문해 보고, 같은 질문을 다른 체크포인트에도 던져 보세요.",
    "name": "실행 이름 (선택)", "stage": "단계", "model": "모델", "dataset": "데이터셋",
    "peft.method": "방식", "peft.r": "LoRA 랭크 r", "peft.alpha": "LoRA 알파", "peft.dropout": "LoRA 드롭아웃",
    "peft.target_modules": "대상 모듈",
    "train.max_steps": "최대 스텝 (0 = 에폭 사용)", "train.epochs": "에폭", "train.learning_rate": "학습률",
    "train.lr_scheduler": "학습률 스케줄", "train.warmup_ratio": "워밍업 비율", "train.batch_size": "배치 크기",
    "train.grad_accum": "그래디언트 누적", "train.max_length": "최대 길이 (토큰)",
    "train.logging_steps": "기록 간격 (스텝)", "train.save_steps": "저장 간격 (스텝)",
    "train.save_total_limit": "남길 체크포인트 수 (0 = 모두)", "train.seed": "시드", "train.gpus": "GPU (예: 0 또는 0,1)",
    "train.precision": "정밀도", "train.gradient_checkpointing": "그래디언트 체크포인팅",
    "eval_dataset": "평가 데이터셋 (선택)", "train.eval_steps": "평가 간격 (스텝)",
    "reward.center_rewards": "보상 중심화 계수",
    "dpo.beta": "베타", "dpo.loss_type": "DPO 손실", "dpo.label_smoothing": "레이블 스무딩", "dpo.sft_weight": "SFT 항 가중치",
    "kto.beta": "베타", "kto.loss_type": "KTO 손실", "kto.desirable_weight": "바람직한 답 가중치",
    "kto.undesirable_weight": "바람직하지 않은 답 가중치", "orpo.beta": "베타 (오즈비 항의 λ)",
    "ppo.reward": "보상 (체크포인트, 규칙 .py, 또는 + 로 둘 다)", "ppo.kl_coef": "KL 계수 β",
    "ppo.kl_target": "적응형 KL 목표 (0 = β 고정)", "ppo.kl_horizon": "적응형 KL 호라이즌 (롤아웃 수)", "ppo.kl_estimator": "KL 추정 방식", "ppo.ppo_epochs": "PPO 에폭",
    "ppo.minibatches": "미니배치 수", "ppo.response_length": "응답 길이 (토큰)", "ppo.temperature": "샘플링 온도",
    "ppo.clip_range": "정책 클립 ε", "ppo.clip_range_value": "가치 클립", "ppo.vf_coef": "가치 손실 가중치",
    "ppo.gamma": "할인율 γ", "ppo.lam": "GAE 람다 λ", "ppo.missing_eos_penalty": "끝나지 않은 답에 대한 벌점",
    "train.samples": "학습 중 생성된 샘플 (프롬프트, 응답, 점수)",
    "train.probes": "체크포인트마다 답한 점검용 프롬프트", "train.probe_prompts": "점검용 프롬프트 (한 줄에 하나)",
    "train.sft_on_it": "가장 좋은 답으로 SFT", "train.dpo_on_it": "최고 대 최저 쌍으로 DPO",
    "rejection_sampling.reward": "보상 (체크포인트, 규칙 .py, 또는 + 로 둘 다)", "rejection_sampling.num_samples": "프롬프트당 답변 수 (N)",
    "rejection_sampling.response_length": "응답 길이 (토큰)", "rejection_sampling.temperature": "샘플링 온도",
    "rejection_sampling.keep": "남길 것",
    "grpo.reward": "보상 (체크포인트, 규칙 .py, 또는 + 로 둘 다)", "grpo.num_generations": "프롬프트당 답변 수",
    "grpo.response_length": "응답 길이 (토큰)", "grpo.temperature": "샘플링 온도", "grpo.beta": "KL 계수 β",
    "rloo.reward": "보상 (체크포인트, 규칙 .py, 또는 + 로 둘 다)", "rloo.num_generations": "프롬프트당 답변 수",
    "rloo.response_length": "응답 길이 (토큰)", "rloo.temperature": "샘플링 온도", "rloo.beta": "KL 계수 β",
    "grpo.loss_type": "GRPO 손실 집계 방식",
    "train.stage_settings": "이 단계의 설정", "train.smooth": "곡선 부드럽게", "train.log_scale": "손실 로그 눈금",
}

# Help under each training-form field. English comes from the config's own help text (declared once,
# in pipelines/config.py); Korean is written here.
KO_HELP = {
    "name": "선택 사항: 실행 ID가 이 이름에서 만들어집니다.",
    "stage": "실행할 정렬 단계.",
    "model": "내장 모델 ID, Hugging Face 허브 ID(org/name), 로컬 경로, 또는 이전 실행의 체크포인트 ID.",
    "dataset": "데이터셋 이름(내장 샘플 또는 워크스페이스에 저장된 것), 또는 파일 경로.",
    "peft.method": "전체 미세조정, LoRA 어댑터, 또는 QLoRA(4비트 베이스 위의 LoRA; CUDA GPU와 bitsandbytes 필요).",
    "peft.r": "LoRA 랭크: 저랭크 업데이트의 폭. 보통 8–64.",
    "peft.alpha": "LoRA 알파: 업데이트에 alpha / r 배율이 곱해집니다. 랭크의 두 배가 흔한 선택입니다.",
    "peft.dropout": "LoRA 경로에 적용하는 드롭아웃.",
    "peft.target_modules": "어댑터를 붙일 층: 'all-linear' 또는 'q_proj,v_proj'처럼 쉼표로 구분한 목록.",
    "train.max_steps": "실행할 옵티마이저 스텝 수; 0이면 에폭 수만큼 학습합니다.",
    "train.epochs": "데이터셋을 몇 번 돌지 (max_steps가 0일 때 사용).",
    "train.learning_rate": "최대 학습률. LoRA: 1e-4–5e-4, 전체 미세조정: 1e-5–5e-5.",
    "train.lr_scheduler": "워밍업 뒤 학습률이 바뀌는 방식.",
    "train.warmup_ratio": "학습률을 0에서 올리는 데 쓰는 스텝의 비율.",
    "train.batch_size": "장치당 한 번의 순전파에 들어가는 행 수.",
    "train.grad_accum": "옵티마이저 스텝 하나에 누적할 순전파 수 (유효 배치 = 배치 × 누적 × GPU 수). PPO는 대신 미니배치 하나를 이만큼의 순전파로 나눕니다 (메모리 절약).",
    "train.max_length": "토큰화된 행의 최대 길이; 더 긴 행은 잘립니다. 모델의 컨텍스트를 넘을 수 없습니다.",
    "train.logging_steps": "이 스텝마다 지표를 기록합니다.",
    "train.save_steps": "이 스텝마다 체크포인트를 저장합니다 (끝날 때와 중지할 때도 저장).",
    "train.save_total_limit": "남겨 둘 체크포인트 수: 새로 저장할 때 가장 오래된 것을 지우되, 평가 손실이 가장 좋은 것(평가 데이터셋이 있을 때)은 지우지 않습니다. 0이면 모두 남깁니다.",
    "train.seed": "데이터 순서와 초기화를 위한 난수 시드.",
    "train.gpus": "이 실행이 학습할 GPU의 CUDA 번호: 0, 또는 GPU마다 프로세스 하나씩 쓰는 0,1 (accelerate로 실행). 다른 실행이 쓰지 않는 GPU를 받은 실행은 나란히 학습합니다. 비워 두면 앱이 보는 모든 GPU를 쓰고 대기열 순서를 따릅니다.",
    "train.precision": "수치 정밀도: auto = 지원하는 GPU에서는 bf16, CPU에서는 fp32 (CPU의 bf16은 2.5–5배 느림).",
    "train.probe_prompts": "체크포인트를 저장할 때마다 탐욕적으로 답하게 할 프롬프트, 한 줄에 하나: 실행 화면의 프롬프트 × 스텝 표로 답이 어떻게 바뀌는지 봅니다. 비워 두면 선호·강화학습 실행은 자기 데이터셋의 프롬프트 4개로 점검합니다.",
    "train.gradient_checkpointing": "메모리를 아끼려 활성값을 다시 계산: auto = GPU에서 10억 파라미터 이상 모델에만 켭니다 (약 30% 느려짐).",
    "eval_dataset": "같은 종류의 평가용 데이터셋(선택). eval_steps마다 평가합니다 (데이터 탭의 나누기로 만들 수 있습니다).",
    "train.eval_steps": "평가 데이터셋이 있으면 이 스텝마다 평가합니다.",
    "reward.center_rewards": "보상의 평균을 0 쪽으로 당겨 프롬프트마다 점수를 비교할 수 있게 합니다 (TRL의 center_rewards_coefficient). 0이면 끕니다.",
    "dpo.beta": "정책이 기준 모델에서 얼마나 멀어질 수 있는지: 작을수록 더 멀리, 클수록 가깝게 (0.01–0.5).",
    "dpo.loss_type": "DPO 손실: sigmoid(논문의 것), ipo, hinge, robust(잡음 레이블) 등 TRL이 제공하는 변형.",
    "dpo.label_smoothing": "선호 레이블이 뒤바뀌었을 것으로 가정하는 비율 (robust, exo_pair, aot). 0이면 모든 레이블을 믿습니다.",
    "dpo.sft_weight": "선호 손실 옆에 더하는 SFT 항(선택 답변의 음의 로그 우도, RPO와 같음)의 가중치. 선택 답변 자체의 확률을 높여 탐욕적 답변이 더 빨리 바뀝니다. 0이면 끕니다.",
    "kto.beta": "정책이 기준 모델에서 얼마나 멀어질 수 있는지 (DPO의 베타와 같음).",
    "kto.loss_type": "kto(논문의 것) 또는 apo_zero_unpaired.",
    "kto.desirable_weight": "바람직한(label true) 답에 대한 손실 가중치.",
    "kto.undesirable_weight": "바람직하지 않은(label false) 답에 대한 손실 가중치.",
    "orpo.beta": "SFT 손실 옆에 더하는 오즈비 선호 항의 가중치 (논문의 λ).",
    "ppo.reward": "보상의 출처: 보상 실행의 체크포인트(my-rm/final), reward(prompts, completions) -> 실수 목록 함수를 정의한 워크스페이스의 파이썬 파일(rules.py), 또는 '+'로 둘 다.",
    "ppo.kl_coef": "기준 모델(SFT 모델)에 대한 토큰별 KL 벌점의 가중치: 보상 해킹을 막는 장치입니다.",
    "ppo.kl_target": "0이면 kl_coef를 고정하고, 0보다 크면 응답당 KL이 이 목표를 따르도록 조정합니다 (Ziegler 외 2019).",
    "ppo.kl_horizon": "적응형 kl_coef가 움직이는 속도: 업데이트마다 최대 20% × train.batch_size ÷ kl_horizon이므로 train.batch_size 이상이어야 합니다. 논문의 10000은 짧은 실행에서 거의 움직이지 않고, train.batch_size의 몇 배면 업데이트마다 움직입니다.",
    "ppo.kl_estimator": "토큰별 KL 추정: k1 = 로그 비율(불편), k2 = 그 제곱의 절반, k3 = Schulman의 음수가 되지 않는 추정.",
    "ppo.ppo_epochs": "롤아웃 배치 하나를 몇 번 학습할지.",
    "ppo.minibatches": "한 번에 나누는 미니배치 수 (train.batch_size가 나누어떨어져야 합니다).",
    "ppo.response_length": "생성할 답의 최대 길이 (토큰).",
    "ppo.temperature": "롤아웃 샘플링 온도.",
    "ppo.clip_range": "PPO의 ε: 한 번의 업데이트에서 확률 비율이 움직일 수 있는 범위.",
    "ppo.clip_range_value": "가치 헤드 예측에 대한 같은 클립.",
    "ppo.vf_coef": "정책 손실 옆에 더하는 가치 손실의 가중치 (같은 백본을 공유합니다).",
    "ppo.gamma": "응답 토큰에 대한 할인율.",
    "ppo.lam": "GAE의 λ: 어드밴티지의 편향(0)과 분산(1) 사이의 선택.",
    "ppo.missing_eos_penalty": "턴 종료 토큰 전에 잘린 답의 점수에서 뺍니다. 0이면 끕니다.",
    "grpo.reward": "보상의 출처: 보상 실행의 체크포인트(my-rm/final), reward(prompts, completions) -> 실수 목록 함수를 정의한 워크스페이스의 파이썬 파일(rules.py), 또는 '+'로 둘 다.",
    "grpo.num_generations": "프롬프트마다 샘플링할 답변 수. 각 답변은 같은 프롬프트의 다른 답변들과 비교됩니다 (train.batch_size가 그 배수여야 합니다).",
    "grpo.response_length": "생성할 답의 최대 길이 (토큰).",
    "grpo.temperature": "답변 샘플링 온도.",
    "grpo.beta": "기준 모델(실행이 시작한 모델, LoRA라면 어댑터를 끈 같은 가중치)에 대한 KL 벌점의 가중치. 0이면 기준 모델을 쓰지 않습니다.",
    "rloo.reward": "보상의 출처: 보상 실행의 체크포인트(my-rm/final), reward(prompts, completions) -> 실수 목록 함수를 정의한 워크스페이스의 파이썬 파일(rules.py), 또는 '+'로 둘 다.",
    "rloo.num_generations": "프롬프트마다 샘플링할 답변 수. 각 답변은 같은 프롬프트의 다른 답변들과 비교됩니다 (train.batch_size가 그 배수여야 합니다).",
    "rloo.response_length": "생성할 답의 최대 길이 (토큰).",
    "rloo.temperature": "답변 샘플링 온도.",
    "rloo.beta": "기준 모델(실행이 시작한 모델, LoRA라면 어댑터를 끈 같은 가중치)에 대한 KL 벌점의 가중치. 0이면 기준 모델을 쓰지 않습니다.",
    "rejection_sampling.reward": "점수의 출처: 보상 실행의 체크포인트(my-rm/final), reward(prompts, completions) -> 실수 목록 함수를 정의한 워크스페이스의 파이썬 파일(rules.py), 또는 '+'로 둘 다.",
    "rejection_sampling.num_samples": "프롬프트마다 생성할 답변 수 (best-of-N의 N).",
    "rejection_sampling.response_length": "생성할 답의 최대 길이 (토큰).",
    "rejection_sampling.temperature": "샘플링 온도: N개의 답이 서로 다를 만큼 높게.",
    "rejection_sampling.keep": "best: 프롬프트마다 가장 좋은 답의 SFT 데이터셋, best_and_pairs: 최고 대 최저의 선호 데이터셋도 함께.",
    "grpo.loss_type": "토큰 손실을 평균 내는 방식: dapo(TRL 기본값, 길이 편향 없음), grpo(논문의 것), dr_grpo, bnpo.",
}


def _english_help() -> dict[str, str]:
    import dataclasses

    from pipelines.config import SECTIONS, RunConfig

    texts = {f"help.{f.name}": f.metadata["help"] for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS}
    for section, cls in SECTIONS.items():
        texts.update({f"help.{section}.{f.name}": f.metadata["help"] for f in dataclasses.fields(cls)})
    return texts


EN.update(_english_help())
KO.update({f"help.{key}": text for key, text in KO_HELP.items()})
I18N = gr.I18n(en=EN, ko=KO)


def t(key: str):
    """The translatable text for `key` (resolved in the browser)."""
    return I18N(key)

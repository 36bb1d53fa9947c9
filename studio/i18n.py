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
    "tab.model": "Model", "tab.data": "Data", "tab.train": "Train", "tab.chat": "Chat",
    # model tab
    "model.pick": "Model", "model.pick_info": "The bundled model, a Hub id (org/name), a local folder, or a run checkpoint.",
    "model.inspect": "Inspect", "model.card": "Model details",
    # data tab
    "data.pick": "Dataset", "data.preview_rows": "Rows to preview", "data.preview": "Preview as the model sees it",
    "data.preview_model": "Render with the chat template of", "data.upload": "Upload JSON / JSONL (chat `messages` or Alpaca)",
    "data.name": "Save as (name)", "data.drop_bad": "Drop bad rows", "data.save": "Check and save", "data.report": "Check report",
    "data.refresh": "Refresh list",
    # train tab
    "train.setup": "Set up a run", "train.start": "Start", "train.stop": "Stop", "train.resume": "Resume",
    "train.config_preview": "Run config (YAML) — what Start sends; the CLI and API take the same text",
    "train.runs": "Runs", "train.run": "Run", "train.status": "Status", "train.chart": "Training curves",
    "train.log": "Log (tail)", "train.lora": "LoRA / full fine-tune", "train.hyper": "Training",
    "train.started": "Started", "train.advanced": "Advanced", "train.refresh": "Refresh",
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
    "train.logging_steps": "Log every (steps)", "train.save_steps": "Save every (steps)", "train.seed": "Seed",
    "train.precision": "Precision", "train.gradient_checkpointing": "Gradient checkpointing",
}

KO = {
    "title": "# 🧭 얼라인먼트 스튜디오",
    "subtitle": "베이스 모델을 정렬 파이프라인(지시 튜닝, 선호·강화학습 단계)에 태우고, 모든 체크포인트와 대화해 보세요.",
    "language_hint": "언어: 브라우저 언어를 따르며, 하단 Settings → Language에서 바꿀 수 있습니다.",
    "tab.model": "모델", "tab.data": "데이터", "tab.train": "학습", "tab.chat": "채팅",
    "model.pick": "모델", "model.pick_info": "내장 모델, 허브 ID(org/name), 로컬 폴더, 또는 실행의 체크포인트.",
    "model.inspect": "살펴보기", "model.card": "모델 정보",
    "data.pick": "데이터셋", "data.preview_rows": "미리 볼 행 수", "data.preview": "모델이 보는 그대로 미리 보기",
    "data.preview_model": "채팅 템플릿을 적용할 모델", "data.upload": "JSON / JSONL 업로드 (채팅 `messages` 또는 Alpaca)",
    "data.name": "저장할 이름", "data.drop_bad": "잘못된 행 버리기", "data.save": "검사 후 저장", "data.report": "검사 결과",
    "data.refresh": "목록 새로고침",
    "train.setup": "실행 설정", "train.start": "시작", "train.stop": "중지", "train.resume": "이어서 학습",
    "train.config_preview": "실행 설정(YAML) — 시작 버튼이 보내는 내용이며 CLI와 API도 같은 텍스트를 받습니다",
    "train.runs": "실행 목록", "train.run": "실행", "train.status": "상태", "train.chart": "학습 곡선",
    "train.log": "로그 (끝부분)", "train.lora": "LoRA / 전체 미세조정", "train.hyper": "학습 설정",
    "train.started": "시작됨", "train.advanced": "고급 설정", "train.refresh": "새로고침",
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
    "train.logging_steps": "기록 간격 (스텝)", "train.save_steps": "저장 간격 (스텝)", "train.seed": "시드",
    "train.precision": "정밀도", "train.gradient_checkpointing": "그래디언트 체크포인팅",
}

I18N = gr.I18n(en=EN, ko=KO)


def t(key: str):
    """The translatable text for `key` (resolved in the browser)."""
    return I18N(key)

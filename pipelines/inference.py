"""Chat with any model or checkpoint, streaming, through its chat template.

Loaded models are cached (least recently used first out). LoRA checkpoints of one base share that
base in memory: they are loaded as named adapters on one PeftModel and switched per request, and the
base itself answers with the adapters disabled.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pipelines.errors import StudioError

MAX_NEW_TOKENS_CAP = 2048
MAX_CACHED_BASES = 2


@dataclass
class LoadedBase:
    model: object                    # a causal LM, or a PeftModel holding every adapter loaded on it
    tokenizer: object
    adapters: dict[str, str] = field(default_factory=dict)   # adapter folder → PEFT adapter name
    lock: threading.Lock = field(default_factory=threading.Lock)


_cache: OrderedDict[str, LoadedBase] = OrderedDict()
_cache_lock = threading.Lock()


def _base_key(source) -> tuple[str, str]:
    """Bases are keyed by the base weights plus any adapters merged into them (all but the last)."""
    merged = [str(a) for a in source.adapters[:-1]]
    return "|".join([source.base, *merged]), str(source.adapters[-1]) if source.adapters else ""


def _load(source) -> tuple[LoadedBase, str]:
    import torch
    from transformers import AutoTokenizer

    from pipelines.models import ModelSource, best_device, load_model, trust_remote_code

    key, adapter = _base_key(source)
    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is None:
            device = best_device()
            dtype = torch.bfloat16 if device == "cuda" else torch.float32
            merged_only = ModelSource(source.spec, source.kind, source.base, source.adapters[:-1])
            model = load_model(merged_only, dtype=dtype, merge_adapters=True).to(device).eval()
            tokenizer = AutoTokenizer.from_pretrained(source.base, trust_remote_code=trust_remote_code())
            loaded = LoadedBase(model, tokenizer)
            _cache[key] = loaded
            while len(_cache) > MAX_CACHED_BASES:
                _cache.popitem(last=False)
        _cache.move_to_end(key)
    if adapter and adapter not in loaded.adapters:
        with loaded.lock:  # never change the model under a generation running on it
            if adapter not in loaded.adapters:
                from peft import PeftModel
                name = f"adapter{len(loaded.adapters)}"
                if not loaded.adapters:
                    loaded.model = PeftModel.from_pretrained(loaded.model, adapter, adapter_name=name).eval()
                else:
                    loaded.model.load_adapter(adapter, adapter_name=name)
                loaded.adapters[adapter] = name
    return loaded, adapter


def free_models() -> int:
    """Drop every cached model; return how many were freed."""
    with _cache_lock:
        count = len(_cache)
        _cache.clear()
    import gc
    gc.collect()
    return count


def to_messages(message: str, history: list | None, system_prompt: str = "") -> list[dict]:
    """History in Gradio's messages shape (content may be a list of parts) plus the new user message."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    for turn in history or []:
        role, content = turn.get("role"), turn.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
        if role in ("user", "assistant") and isinstance(content, str):
            messages.append({"role": role, "content": content})
    messages.append({"role": "user", "content": message})
    return messages


def _generation_kwargs(settings: dict | None) -> dict:
    settings = settings or {}
    max_new = int(settings.get("max_new_tokens", 256))
    if not 1 <= max_new <= MAX_NEW_TOKENS_CAP:
        raise StudioError(f"max_new_tokens must be between 1 and {MAX_NEW_TOKENS_CAP}, not {max_new}.")
    temperature = float(settings.get("temperature", 0.7))
    top_p = float(settings.get("top_p", 0.9))
    if temperature < 0 or not 0 < top_p <= 1:
        raise StudioError("temperature must be ≥ 0 and top_p in (0, 1].")
    sampling = temperature > 0
    return {"max_new_tokens": max_new, "do_sample": sampling,
            **({"temperature": temperature, "top_p": top_p} if sampling else {})}


def chat_stream(workspace: Path, checkpoint: str, message: str, history: list | None = None,
                settings: dict | None = None) -> Iterator[str]:
    """Yield the reply as it grows."""
    from transformers import TextIteratorStreamer

    from pipelines.models import check_generative, resolve_model

    if not isinstance(message, str) or not message.strip():
        raise StudioError("The message is empty; type something to send.")
    settings = settings or {}
    kwargs = _generation_kwargs(settings)
    source = resolve_model(checkpoint, workspace)
    check_generative(source)
    loaded, adapter = _load(source)
    tokenizer = loaded.tokenizer
    if not tokenizer.chat_template:
        raise StudioError(f"{checkpoint!r} has no chat template, so it cannot chat; pick an instruct model or a checkpoint trained with one.")
    messages = to_messages(message, history, settings.get("system_prompt", ""))
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    errors: list[BaseException] = []

    def generate() -> None:
        import contextlib

        import torch
        with loaded.lock:
            model = loaded.model
            device = next(model.parameters()).device
            if hasattr(model, "set_adapter") and loaded.adapters:
                context = contextlib.nullcontext() if adapter else model.disable_adapter()
                if adapter:
                    model.set_adapter(loaded.adapters[adapter])
            else:
                context = contextlib.nullcontext()
            try:
                if "seed" in settings:
                    torch.manual_seed(int(settings["seed"]))
                with context, torch.inference_mode():
                    model.generate(**{k: v.to(device) for k, v in inputs.items()}, streamer=streamer,
                                   pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id, **kwargs)
            except BaseException as exc:  # surfaced to the caller below, after the streamer is released
                errors.append(exc)
                streamer.end()

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    reply = ""
    for piece in streamer:
        reply += piece
        yield reply
    worker.join()
    if errors:
        raise StudioError(f"Generation failed: {type(errors[0]).__name__}: {errors[0]}")
    if not reply:
        yield ""


def chat(workspace: Path, checkpoint: str, message: str, history: list | None = None, settings: dict | None = None) -> str:
    reply = ""
    for reply in chat_stream(workspace, checkpoint, message, history, settings):
        pass
    return reply

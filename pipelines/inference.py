"""Chat with any model or checkpoint, streaming, through its chat template.

Loaded models are cached within one memory budget, least recently used first out; reward models
(pipelines/scoring.py) share the cache and the budget. LoRA checkpoints of one base share that base in
memory: they are loaded as named adapters on one PeftModel and switched per request, and the base itself
answers with the adapters disabled.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pipelines.compare import MAX_PROMPT_CHARS
from pipelines.config import MAX_SEED, MAX_TEMPERATURE
from pipelines.errors import StudioError, quote
from pipelines.messages import text

MAX_NEW_TOKENS_CAP = 2048
# A conversation (system prompt, earlier turns, message) holds at most a few prompts' worth of text: a reply to more
# takes minutes and holds the model's lock against everyone else.
MAX_CONVERSATION_CHARS = 4 * MAX_PROMPT_CHARS
# The numeric chat and compare settings: name → (default, lowest, highest, whole number). A seed is optional.
NUMBER_SETTINGS = {"max_new_tokens": (256, 1, MAX_NEW_TOKENS_CAP, True), "temperature": (0.7, 0.0, MAX_TEMPERATURE, False),
                   "top_p": (0.9, 0.01, 1.0, False), "seed": (None, 0, MAX_SEED, True)}
# The share of the device's memory that cached models may hold; the rest is for generation, a training run and
# everything else. ALIGNMENT_STUDIO_MODEL_MEMORY_GB sets the budget outright.
BUDGET_SHARE = {"cuda": 0.8, "cpu": 0.5, "mps": 0.5}


@dataclass(frozen=True)
class Reply:
    """An answer as far as it has grown; `cut` once generation stopped at max_new_tokens instead of at the end of
    the turn (the answer would have gone on)."""
    text: str
    cut: bool = False


@dataclass
class LoadedBase:
    model: object                    # a causal LM, or a PeftModel holding every adapter loaded on it
    tokenizer: object
    adapters: dict[str, str] = field(default_factory=dict)   # adapter folder → PEFT adapter name
    bytes: int = 0                   # weights and buffers as loaded, adapters included
    lock: threading.Lock = field(default_factory=threading.Lock)


_cache: OrderedDict[str, LoadedBase] = OrderedDict()
_cache_lock = threading.Lock()


def base_key(source) -> tuple[str, str]:
    """Bases are keyed by the base weights plus any adapters merged into them (all but the last)."""
    merged = [str(a) for a in source.adapters[:-1]]
    return "|".join([source.base, *merged]), str(source.adapters[-1]) if source.adapters else ""


def memory_budget(device: str) -> int:
    """Bytes the cached models may hold on `device`."""
    configured = os.environ.get("ALIGNMENT_STUDIO_MODEL_MEMORY_GB")
    if configured:
        return int(float(configured) * 2**30)
    if device == "cuda":
        import torch
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    else:
        from pipelines.space import memory
        total = memory()[0]
    return int(total * BUDGET_SHARE.get(device, 0.5))


def loaded_dtype(device: str):
    import torch
    return torch.bfloat16 if device == "cuda" else torch.float32


def estimate_bytes(source) -> int | None:
    """What the base of `source` will take once loaded (its parameter count from the safetensors headers, at the
    dtype the studio loads in); None when the weights are not in a local folder."""
    from safetensors import safe_open

    folder = Path(source.base)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    count = 0
    for file in files:
        with safe_open(str(file), framework="pt") as tensors:
            for key in tensors.keys():
                shape = tensors.get_slice(key).get_shape()
                size = 1
                for dim in shape:
                    size *= dim
                count += size
    from pipelines.models import best_device
    return count * loaded_dtype(best_device()).itemsize


def _model_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def _evict(budget: int, incoming: int, keep: str | None = None) -> None:
    """Drop least recently used bases (never `keep`) until the cache plus `incoming` bytes fit the budget.
    Called with _cache_lock held."""
    for key in list(_cache):
        if sum(loaded.bytes for loaded in _cache.values()) + incoming <= budget:
            return
        if key != keep:
            del _cache[key]


def cached_model(key: str, load, estimate: int | None) -> LoadedBase:
    """The cache entry `key`; on a miss, least recently used entries make room for `estimate` bytes, then
    `load()` (→ LoadedBase) loads it. Chat bases and reward models share this cache and its one budget."""
    import gc

    from pipelines.models import best_device

    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is None:
            budget = memory_budget(best_device())
            _evict(budget, estimate or 0)   # make room first: two models at once may not fit
            gc.collect()
            loaded = load()
            loaded.bytes = _model_bytes(loaded.model)
            _cache[key] = loaded
            _evict(budget, 0, keep=key)     # the estimate may have been low, or unknown
        _cache.move_to_end(key)
    return loaded


def load_for_generation(source) -> tuple[LoadedBase, str]:
    """The cached base of `source` with its adapter loaded on it, and that adapter's folder ("" for the base)."""
    from transformers import AutoTokenizer

    from pipelines.models import ModelSource, best_device, load_model, trust_remote_code

    def load() -> LoadedBase:
        device = best_device()
        merged_only = ModelSource(source.spec, source.kind, source.base, source.adapters[:-1])
        model = load_model(merged_only, dtype=loaded_dtype(device), merge_adapters=True).to(device).eval()
        return LoadedBase(model, AutoTokenizer.from_pretrained(source.base, trust_remote_code=trust_remote_code()))

    key, adapter = base_key(source)
    loaded = cached_model(key, load, estimate_bytes(source))
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
                loaded.bytes = _model_bytes(loaded.model)
    return loaded, adapter


@contextlib.contextmanager
def model_with_adapter(loaded: LoadedBase, adapter: str):
    """The cached model with `adapter` active (the base, every adapter disabled, for ""), its lock held and in
    inference mode: the one switch Chat, Compare's columns and the lens all answer through."""
    import torch

    with loaded.lock:
        model = loaded.model
        context = contextlib.nullcontext()
        if hasattr(model, "set_adapter") and loaded.adapters:
            if adapter:
                model.set_adapter(loaded.adapters[adapter])
            else:
                context = model.disable_adapter()
        with context, torch.inference_mode():
            yield model


def fit_notice(sources: list) -> str:
    """One sentence when the bases of `sources` do not fit in the model memory budget together (they are then
    answered one base after another, each loaded in turn), else ""."""
    from pipelines.models import best_device

    sizes = {base_key(source)[0]: estimate_bytes(source) or 0 for source in sources}
    needed, budget = sum(sizes.values()), memory_budget(best_device())
    if len(sizes) < 2 or needed <= budget:
        return ""
    return text("chat.fit_notice", bases=len(sizes), needed=needed / 2**30, budget=budget / 2**30)


def free_models(inside: Path | None = None) -> int:
    """Drop every cached model, or only those loaded from under `inside` (a user's workspace: their own runs'
    weights, while the base models all visitors share stay loaded); return how many were freed."""
    with _cache_lock:
        keys = [key for key in _cache if inside is None or any(
            Path(part).is_relative_to(inside) for part in key.split("|") if part.startswith("/"))]
        for key in keys:
            del _cache[key]
        count = len(keys)
    import gc
    gc.collect()
    return count


def plain_turns(history: list | None) -> list[dict]:
    """A conversation in Gradio's messages shape (content may be a list of parts, as the browser sends it back) as
    plain {role, content} turns of the user and the assistant; turns of other roles are left out. Raises StudioError
    when history is not a list of turns."""
    if not isinstance(history, (list, type(None))) or not all(isinstance(turn, dict) for turn in history or []):
        raise StudioError("chat.bad_history")
    turns = []
    for turn in history or []:
        role, content = turn.get("role"), turn.get("content")
        if isinstance(content, list):
            content = "".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)
        if role in ("user", "assistant") and isinstance(content, str):
            turns.append({"role": role, "content": content})
    return turns


def to_messages(message: str, history: list | None, system_prompt: str = "") -> list[dict]:
    """The system prompt, the history's plain turns and the new user message. Raises StudioError when history is
    not a list of turns or the whole is too long."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
    messages += plain_turns(history) + [{"role": "user", "content": message}]
    length = sum(len(m["content"]) for m in messages)
    if length > MAX_CONVERSATION_CHARS:
        raise StudioError("chat.long_conversation", length=length, limit=MAX_CONVERSATION_CHARS)
    return messages


# Private-use characters that mark, inside the rendered template, the text a person typed.
_TYPED_START, _TYPED_END = "\ue000", "\ue001"


def encode_chat(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of `messages` through the chat template, with the generation prompt. What a person typed is
    tokenised as text: a control token typed into a message ("<|im_end|>") stays those characters instead of
    becoming the template's own token, so typing one cannot end a turn or forge a system prompt."""
    specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special} | set(tokenizer.all_special_tokens)
    typed = [any(s in m["content"] for s in specials) for m in messages]
    if not any(typed):
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(rendered, add_special_tokens=False)["input_ids"]
    marked = [{**m, "content": f"{_TYPED_START}{m['content']}{_TYPED_END}"} if t else m for m, t in zip(messages, typed)]
    rendered = tokenizer.apply_chat_template(marked, tokenize=False, add_generation_prompt=True)
    parts = re.split(f"[{_TYPED_START}{_TYPED_END}]", rendered)
    if len(parts) % 2 == 0 or rendered.count(_TYPED_START) != rendered.count(_TYPED_END):
        raise StudioError("chat.template_rewrites")
    ids: list[int] = []
    for index, part in enumerate(parts):   # even: the template's own text; odd: typed text
        if part:
            ids += tokenizer(part, add_special_tokens=False, split_special_tokens=index % 2 == 1)["input_ids"]
    return ids


def left_padded(tokenizer, rows: list[list[int]]) -> dict:
    """A batch of token-id rows, padded on the left (generation continues from the right end of every row)."""
    import torch

    width, pad = max(map(len, rows)), tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return {"input_ids": torch.tensor([[pad] * (width - len(r)) + r for r in rows]),
            "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])}


def check_settings(settings: dict | None) -> dict:
    """Chat and compare settings checked for type, finiteness and range, with defaults filled in: max_new_tokens,
    temperature, top_p, seed (None: unseeded) and system_prompt. Raises StudioError in one sentence."""
    if not isinstance(settings, (dict, type(None))):
        raise StudioError("chat.bad_settings", value=quote(settings))
    settings = settings or {}
    unknown = [name for name in settings if name not in (*NUMBER_SETTINGS, "system_prompt")]
    if unknown:
        raise StudioError("chat.unknown_setting", setting=quote(unknown[0]), settings=", ".join(NUMBER_SETTINGS))
    checked = {}
    for name, (default, lowest, highest, whole) in NUMBER_SETTINGS.items():
        value = settings.get(name)
        if value is None:   # not given (or null): the default, which for a seed is None, unseeded
            checked[name] = default
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not (number and lowest <= value <= highest and (not whole or value == int(value))):
            raise StudioError("chat.setting_range_whole" if whole else "chat.setting_range", name=name, lowest=lowest,
                              highest=highest, value=quote(value))
        checked[name] = int(value) if whole else float(value)
    system_prompt = settings.get("system_prompt") or ""
    if not isinstance(system_prompt, str) or len(system_prompt) > MAX_PROMPT_CHARS:
        raise StudioError("chat.bad_system_prompt", limit=MAX_PROMPT_CHARS)
    return {**checked, "system_prompt": system_prompt}


def generation_kwargs(settings: dict | None) -> dict:
    """What model.generate is given for checked chat settings (greedy at temperature 0)."""
    settings = check_settings(settings)
    sampling = settings["temperature"] > 0
    return {"max_new_tokens": settings["max_new_tokens"], "do_sample": sampling,
            **({"temperature": settings["temperature"], "top_p": settings["top_p"]} if sampling else {})}


def check_message(message: str) -> None:
    if not isinstance(message, str) or not message.strip():
        raise StudioError("chat.empty_message")
    if len(message) > MAX_PROMPT_CHARS:
        raise StudioError("chat.long_message", length=len(message), limit=MAX_PROMPT_CHARS)


def chat_stream(workspace: Path, checkpoint: str, message: str, history: list | None = None,
                settings: dict | None = None) -> Iterator[Reply]:
    """Yield the reply as it grows; the last one says whether it was cut at max_new_tokens."""
    from transformers import TextIteratorStreamer

    from pipelines.models import check_chat_template, check_generative, resolve_model
    from pipelines.rl.rollout import stop_token_ids

    check_message(message)
    settings = check_settings(settings)
    kwargs = generation_kwargs(settings)
    messages = to_messages(message, history, settings["system_prompt"])   # refused before any model is loaded
    source = resolve_model(checkpoint, workspace)
    check_generative(source)
    loaded, adapter = load_for_generation(source)
    tokenizer = loaded.tokenizer
    check_chat_template(tokenizer, checkpoint)
    inputs = left_padded(tokenizer, [encode_chat(tokenizer, messages)])
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    errors: list[BaseException] = []
    new_tokens: list[int] = []   # what the model generated, once it is done

    def generate() -> None:
        import torch
        try:
            with model_with_adapter(loaded, adapter) as model:
                device = next(model.parameters()).device
                if settings["seed"] is not None:
                    torch.manual_seed(settings["seed"])
                output = model.generate(**{k: v.to(device) for k, v in inputs.items()}, streamer=streamer,
                                        pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id, **kwargs)
            new_tokens.extend(output[0, inputs["input_ids"].shape[1]:].tolist())
        except BaseException as exc:  # surfaced to the caller below, after the streamer is released
            errors.append(exc)
            streamer.end()

    worker = threading.Thread(target=generate, daemon=True)
    worker.start()
    reply = ""
    for piece in streamer:
        reply += piece
        yield Reply(reply)
    worker.join()
    if errors:
        raise StudioError("chat.generation_failed", problem=f"{type(errors[0]).__name__}: {errors[0]}")
    yield Reply(reply, cut=was_cut(new_tokens, settings["max_new_tokens"], stop_token_ids(loaded.model, tokenizer)))


def was_cut(tokens: list[int], max_new_tokens: int, stop_ids: set[int]) -> bool:
    """Generation ran out of max_new_tokens before the model ended its turn."""
    return len(tokens) >= max_new_tokens and not stop_ids & set(tokens)


def chat(workspace: Path, checkpoint: str, message: str, history: list | None = None, settings: dict | None = None) -> str:
    reply = Reply("")
    for reply in chat_stream(workspace, checkpoint, message, history, settings):
        pass
    return reply.text

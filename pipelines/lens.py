"""The next-token lens: what a causal LM expects at every position of a text, what DPO trains on, and one step of
sampling shown with its settings applied.

Every call runs on the Chat model cache (pipelines/inference.py): one forward pass per text, no generate loop, the
model's lock held only while it runs. Probabilities are of the model's own softmax; surprisal is in bits (-log2 p);
DPO's log-probs stay in natural-log units, as DPO uses them.
"""

from __future__ import annotations

import math
from pathlib import Path

from pipelines.config import MAX_SEED, MAX_TEMPERATURE
from pipelines.errors import StudioError, quote

MAX_LENS_CHARS = 4000      # a page of text: enough to read, small enough for a second on CPU
MAX_LENS_TOKENS = 1024     # a Korean page: SmolLM2 spends about two tokens on a Hangul character
MAX_TOP_K = 20             # top guesses listed per position
MAX_COMPARED = 4           # checkpoints side by side
MAX_SAMPLE_TOP_K = 1000
MAX_SHOW = 50              # candidates listed in a sampling step
MAX_GENERATED_IDS = 256    # tokens a step-by-step generation may grow to
DIGITS = 6                 # probabilities and surprisals are rounded to this many decimals


# --- input checks (all before any model is loaded) ------------------------------------------------------------------

def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole(value) -> bool:
    return _is_number(value) and value == int(value)


def check_text(text, name: str = "text") -> str:
    if not isinstance(text, str):
        raise StudioError("lens.not_text", name=name, value=quote(text))
    if not text:
        raise StudioError("lens.empty_text", name=name)
    if len(text) > MAX_LENS_CHARS:
        raise StudioError("lens.long_text", name=name, length=len(text), limit=MAX_LENS_CHARS)
    return text


def check_top_k(top_k) -> int:
    if not (_is_whole(top_k) and 1 <= top_k <= MAX_TOP_K):
        raise StudioError("lens.bad_top_k", limit=MAX_TOP_K, value=quote(top_k))
    return int(top_k)


def check_sampling(temperature, top_k, top_p, seed, show, chat) -> tuple[float, int, float, int | None, int]:
    if not (_is_number(temperature) and 0 <= temperature <= MAX_TEMPERATURE):
        raise StudioError("lens.bad_temperature", limit=MAX_TEMPERATURE, value=quote(temperature))
    if not (_is_whole(top_k) and 0 <= top_k <= MAX_SAMPLE_TOP_K):
        raise StudioError("lens.bad_sample_top_k", limit=MAX_SAMPLE_TOP_K, value=quote(top_k))
    if not (_is_number(top_p) and 0 < top_p <= 1):
        raise StudioError("lens.bad_top_p", value=quote(top_p))
    if seed is not None and not (_is_whole(seed) and 0 <= seed <= MAX_SEED):
        raise StudioError("lens.bad_seed", limit=MAX_SEED, value=quote(seed))
    if not (_is_whole(show) and 1 <= show <= MAX_SHOW):
        raise StudioError("lens.bad_show", limit=MAX_SHOW, value=quote(show))
    if not isinstance(chat, bool):
        raise StudioError("lens.bad_chat", value=quote(chat))
    return float(temperature), int(top_k), float(top_p), None if seed is None else int(seed), int(show)


def check_generated_ids(generated_ids) -> list[int]:
    if generated_ids is None:
        return []
    if not isinstance(generated_ids, (list, tuple)) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in generated_ids):
        raise StudioError("lens.bad_generated_ids", value=quote(generated_ids))
    if len(generated_ids) > MAX_GENERATED_IDS:
        raise StudioError("lens.long_generation", count=len(generated_ids), limit=MAX_GENERATED_IDS)
    return list(generated_ids)


def check_beta(beta) -> float:
    from dataclasses import fields

    from pipelines.stages.dpo import DPOSettings   # DPO's own bounds on beta, so the lens accepts what a run does
    bounds = next(f.metadata for f in fields(DPOSettings) if f.name == "beta")
    if not (_is_number(beta) and bounds["minimum"] < beta <= bounds["maximum"]):
        raise StudioError("lens.bad_beta", limit=bounds["maximum"], value=quote(beta))
    return float(beta)


def check_checkpoints(checkpoints) -> list[str]:
    if not (isinstance(checkpoints, (list, tuple)) and 2 <= len(checkpoints) <= MAX_COMPARED):
        raise StudioError("lens.bad_checkpoints", highest=MAX_COMPARED, value=quote(checkpoints))
    return list(checkpoints)


def check_token_count(ids: list[int], name: str) -> list[int]:
    if not ids:
        raise StudioError("lens.no_tokens", name=name)
    if len(ids) > MAX_LENS_TOKENS:
        raise StudioError("lens.too_many_tokens", name=name, length=len(ids), limit=MAX_LENS_TOKENS)
    return ids


# --- the model ------------------------------------------------------------------------------------------------------

def _source(workspace: Path, checkpoint: str):
    from pipelines.models import check_generative, resolve_model
    source = resolve_model(checkpoint, workspace)
    check_generative(source)
    return source


def _logits(loaded, adapter: str, ids: list[int]):
    """The raw next-token logits after every prefix of `ids`, one forward pass, on the CPU in float32.  → (T, V)"""
    import torch

    from pipelines.inference import model_with_adapter

    with model_with_adapter(loaded, adapter) as model:
        size = model.get_input_embeddings().num_embeddings
        if max(ids) >= size:   # a tokenizer with more tokens than the model has embeddings
            raise StudioError("lens.id_out_of_vocab", value=max(ids), highest=size - 1)
        device = next(model.parameters()).device
        logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits[0]   # (T, V)
        logits = logits.float().cpu()
    return logits.clone()   # cloned outside inference mode: an ordinary tensor the warpers may write into


def _log_probs(loaded, adapter: str, ids: list[int]):
    """Natural-log next-token distributions after every prefix of `ids`.  → (T, V)"""
    import torch
    return torch.log_softmax(_logits(loaded, adapter, ids), dim=-1)


class _Decoder:
    """Tokens as a person can read them. A byte-level tokenizer splits a Korean syllable (or an emoji) into pieces that
    are not characters on their own, and decode([id]) turns each into "\ufffd"; such a piece is shown as its bytes
    instead ("⟨EC 95⟩"), and `added` says which characters each token of a text completes."""

    TAIL = 6   # tokens of context enough to finish any UTF-8 character (at most 4 bytes)

    def __init__(self, tokenizer):
        self.tokenizer, self.seen = tokenizer, {}

    def __call__(self, token_id: int) -> str:
        if token_id not in self.seen:
            text = self.tokenizer.decode([token_id])
            self.seen[token_id] = text if "\ufffd" not in text else _byte_piece(self.tokenizer, token_id, text)
        return self.seen[token_id]

    def added(self, ids: list[int]) -> list[str]:
        """The characters each token adds to the text decoded so far: "" for a piece that only begins a character,
        the whole character at the piece that completes it."""
        pieces = []
        for index in range(len(ids)):
            window = ids[max(0, index - self.TAIL):index]
            before = self.tokenizer.decode(window).rstrip("\ufffd")
            after = self.tokenizer.decode([*window, ids[index]]).rstrip("\ufffd")
            pieces.append(after[len(before):] if after.startswith(before) else after)
        return pieces

    def completes(self, before: list[int], token_id: int) -> str:
        """The characters a candidate token would complete after the ids `before`: a byte piece that ends a Korean
        syllable begun before it reads as that syllable; one that only begins a character, as ""."""
        shown = self(token_id)
        if not shown.startswith("⟨"):
            return shown
        window = before[len(before) - self.TAIL:] if len(before) > self.TAIL else before
        start = self.tokenizer.decode(window).rstrip("\ufffd")
        grown = self.tokenizer.decode([*window, token_id]).rstrip("\ufffd")
        return grown[len(start):] if grown.startswith(start) else grown


def _byte_piece(tokenizer, token_id: int, decoded: str) -> str:
    """The bytes of a token that is part of a character, as hex: from the byte-level vocabulary (GPT-2's mapping of
    bytes to printable characters) or a byte-fallback token (<0xEC>); else what decode gave."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    piece = tokenizer.convert_ids_to_tokens(token_id) or ""
    if piece.startswith("<0x") and piece.endswith(">"):
        return f"⟨{piece[3:-1].upper()}⟩"
    to_byte = {char: byte for byte, char in bytes_to_unicode().items()}
    if piece and all(char in to_byte for char in piece):
        return "⟨" + " ".join(f"{to_byte[char]:02X}" for char in piece) + "⟩"
    return decoded


def _tops(logp, top_k: int, decode: _Decoder, ids: list[int]) -> list[list[dict]]:
    """The top_k most likely next tokens of every row, most likely first, each with the characters it would
    complete (`text`).  logp (T, V): row t follows ids[:t + 1] → T lists"""
    import torch
    values, indices = torch.topk(logp, top_k, dim=-1)                        # (T, k), (T, k): sorted, descending
    return [[{"id": i, "token": decode(i), "text": decode.completes(ids[:row + 1], i), "prob": round(math.exp(v), DIGITS)}
             for v, i in zip(row_v, row_i)]
            for row, (row_v, row_i) in enumerate(zip(values.tolist(), indices.tolist()))]


def _bits(logp: float) -> float:
    return -logp / math.log(2)


def _predictions(loaded, adapter: str, ids: list[int], top_k: int) -> dict:
    """Per position: log p of the token given all before it, its rank, and the top guesses there. A plain text is
    read as a document that begins after the end-of-text token (as continued pretraining shows it documents), so
    its first token has a probability too; a text that begins with a special token (a chat template's) is read as it
    is, and its first token has none."""
    import torch

    start = document_start(loaded.tokenizer, ids)
    context = [start] if start is not None else []
    logp = _log_probs(loaded, adapter, context + ids)           # (T', V): row t predicts token t + 1 of context + ids
    decode = _Decoder(loaded.tokenizer)
    targets = torch.tensor(ids if context else ids[1:])         # the tokens that have a row before them
    rows = logp[:-1]
    target_logp = rows.gather(1, targets[:, None])[:, 0]
    ranks = (rows > target_logp[:, None]).sum(dim=1) + 1       # 1 = the top guess
    tops = _tops(logp, top_k, decode, context + ids)
    unseen = [] if context else [None]                          # the first token, with nothing before it
    return {"logps": [*unseen, *target_logp.tolist()], "ranks": [*unseen, *ranks.tolist()],
            "tops": [*([[]] if not context else []), *tops[:-1]], "next": tops[-1], "decode": decode}


def document_start(tokenizer, ids: list[int]) -> int | None:
    """The end-of-text token a plain text is read after, or None when the text begins with a special token."""
    from pipelines.stages.pretrain import separator_id

    if ids and ids[0] in set(tokenizer.all_special_ids):
        return None
    return separator_id(tokenizer)


def _summary(logps: list) -> tuple[float | None, float | None]:
    """Mean surprisal (bits) and perplexity (2 ** it) over the positions that have a probability; None for a text of
    one token, which has none."""
    known = [_bits(lp) for lp in logps if lp is not None]
    if not known:
        return None, None
    mean = sum(known) / len(known)
    return round(mean, DIGITS), round(2 ** mean, DIGITS)


def _prob(logp: float | None) -> float | None:
    return None if logp is None else float(f"{math.exp(logp):.{DIGITS}g}")   # significant digits: p < 5e-7 is not 0


def _surprisal(logp: float | None) -> float | None:
    return None if logp is None else round(_bits(logp), DIGITS)


def _text_ids(tokenizer, text: str) -> list[int]:
    return check_token_count(tokenizer(text, add_special_tokens=False)["input_ids"], "text")


def _same_tokens(checkpoints: list[str], sources: list, tokenize):
    """tokenize(tokenizer, checkpoint) with the tokenizer each checkpoint answers with in Chat (its base's), refused
    unless all agree, before any model is loaded: checkpoints of one base share it, so each base's is read once."""
    from transformers import AutoTokenizer

    from pipelines.models import trust_remote_code

    first, seen = None, set()
    for checkpoint, source in zip(checkpoints, sources):
        if source.base in seen:
            continue
        seen.add(source.base)
        these = tokenize(AutoTokenizer.from_pretrained(source.base, trust_remote_code=trust_remote_code()), checkpoint)
        if first is None:
            first = these
        elif these != first:
            raise StudioError("lens.different_tokenizers", first=quote(checkpoints[0]), other=quote(checkpoint))
    return first


# --- the lens -------------------------------------------------------------------------------------------------------

def next_tokens(workspace: Path, checkpoint: str, text: str, top_k: int = 5) -> dict:
    """For every token of `text` (tokenised as it is, no special tokens added): the model's probability of it given
    everything before, its surprisal in bits, its rank, and what the model expected there; then what comes next."""
    from pipelines.inference import load_for_generation

    check_text(text)
    top_k = check_top_k(top_k)
    loaded, adapter = load_for_generation(_source(workspace, checkpoint))
    ids = _text_ids(loaded.tokenizer, text)
    seen = _predictions(loaded, adapter, ids, top_k)
    decode = seen["decode"]
    tokens = [{"id": token_id, "token": decode(token_id), "text": added, "prob": _prob(lp), "surprisal": _surprisal(lp),
               "rank": rank, "top": top}
              for token_id, added, lp, rank, top in zip(ids, decode.added(ids), seen["logps"], seen["ranks"], seen["tops"])]
    mean, perplexity = _summary(seen["logps"])
    return {"checkpoint": checkpoint, "tokens": tokens, "next": seen["next"], "mean_surprisal": mean,
            "perplexity": perplexity, "n_tokens": len(ids)}


def compare_next_tokens(workspace: Path, checkpoints: list[str], text: str, top_k: int = 5) -> dict:
    """next_tokens of 2 to 4 checkpoints on one text, lined up position by position, and `delta`: how many bits
    more the last checkpoint expects each token than the first (> 0: the later one finds it likelier)."""
    from pipelines.inference import load_for_generation

    checkpoints = check_checkpoints(checkpoints)
    check_text(text)
    top_k = check_top_k(top_k)
    sources = [_source(workspace, checkpoint) for checkpoint in checkpoints]   # every name checked before loading
    ids = _same_tokens(checkpoints, sources, lambda tokenizer, _: _text_ids(tokenizer, text))
    seen = []
    for source in sources:   # one at a time: a base's lock is never held twice, nor two models kept from eviction
        loaded, adapter = load_for_generation(source)
        seen.append(_predictions(loaded, adapter, ids, top_k))
    decode = seen[0]["decode"]
    added = decode.added(ids)
    tokens = []
    for position, token_id in enumerate(ids):
        logps = [s["logps"][position] for s in seen]
        delta = None if logps[0] is None else round((logps[-1] - logps[0]) / math.log(2), DIGITS)
        tokens.append({"id": token_id, "token": decode(token_id), "text": added[position],
                       "probs": [_prob(lp) for lp in logps],
                       "surprisals": [_surprisal(lp) for lp in logps], "ranks": [s["ranks"][position] for s in seen],
                       "tops": [s["tops"][position] for s in seen],
                       "delta": delta})
    summaries = [_summary(s["logps"]) for s in seen]
    return {"checkpoints": checkpoints, "tokens": tokens, "next": [s["next"] for s in seen],
            "perplexities": [perplexity for _, perplexity in summaries],
            "mean_surprisals": [mean for mean, _ in summaries]}


# --- what DPO trains on ---------------------------------------------------------------------------------------------

def dpo_token_ids(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """The prompt ids and the answer ids of a conversational DPO row, tokenised as TRL's DPOTrainer does
    (trl/trainer/dpo_trainer.py, _prepare_dataset's tokenize_fn): the user turn through the chat template with the
    generation prompt, the whole conversation without it, and the answer starting where the two diverge."""
    from trl.data_utils import common_prefix_length

    messages = [{"role": "user", "content": prompt}]
    prompt_ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                               add_generation_prompt=True)["input_ids"]
    full_ids = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=True,
                                             return_dict=True)["input_ids"]
    start = common_prefix_length(prompt_ids, full_ids)
    return full_ids[:start], full_ids[start:]


def _answer_logps(loaded, adapter: str, prompt_ids: list[int], answer_ids: list[int]) -> list[float]:
    """log p of each answer token given the prompt and the answer before it (natural log)."""
    import torch

    ids = prompt_ids + answer_ids
    logp = _log_probs(loaded, adapter, ids)[len(prompt_ids) - 1:-1]          # (A, V): rows that predict the answer
    return logp.gather(1, torch.tensor(answer_ids)[:, None])[:, 0].tolist()


def pair_logratios(workspace: Path, policy: str, reference: str, prompt: str, chosen: str, rejected: str,
                   beta: float = 0.1) -> dict:
    """Per answer token, log pi(token) - log pi_ref(token): the quantity DPO trains on. Summed per answer, they give
    DPO's implicit rewards; margin = beta * (chosen - rejected) and loss = -log sigmoid(margin), the sigmoid loss."""
    import torch

    from pipelines.inference import load_for_generation
    from pipelines.models import check_chat_template

    for name, value in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        check_text(value, name)
    beta = check_beta(beta)
    sources = [_source(workspace, policy), _source(workspace, reference)]

    def tokenize(tokenizer, checkpoint: str) -> dict:
        check_chat_template(tokenizer, checkpoint)
        return {answer: dpo_token_ids(tokenizer, prompt, text) for answer, text in (("chosen", chosen),
                                                                                       ("rejected", rejected))}

    rows = _same_tokens([policy, reference], sources, tokenize)
    for answer, (prompt_ids, answer_ids) in rows.items():
        check_token_count(prompt_ids + answer_ids, f"prompt + {answer}")
        if not prompt_ids or not answer_ids:
            raise StudioError("lens.no_answer_tokens", answer=answer)
    logps = {}
    for role, source in zip(("policy", "reference"), sources):   # one at a time: they often share one base and lock
        loaded, adapter = load_for_generation(source)
        decode = _Decoder(loaded.tokenizer)
        logps[role] = {answer: _answer_logps(loaded, adapter, *rows[answer]) for answer in rows}

    def side(answer: str) -> dict:
        pairs = list(zip(rows[answer][1], logps["policy"][answer], logps["reference"][answer]))
        added = decode.added(rows[answer][1])
        tokens = [{"id": token_id, "token": decode(token_id), "text": text, "policy_logp": round(p, DIGITS),
                   "reference_logp": round(r, DIGITS), "logratio": round(p - r, DIGITS)}
                  for (token_id, p, r), text in zip(pairs, added)]
        policy_sum, reference_sum = sum(p for _, p, _ in pairs), sum(r for _, _, r in pairs)
        return {"tokens": tokens, "policy_logp": policy_sum, "reference_logp": reference_sum,
                "logratio": policy_sum - reference_sum}

    chosen_side, rejected_side = side("chosen"), side("rejected")
    margin = beta * (chosen_side["logratio"] - rejected_side["logratio"])
    loss = -torch.nn.functional.logsigmoid(torch.tensor(margin, dtype=torch.float64)).item()
    return {"policy": policy, "reference": reference, "beta": beta, "chosen": chosen_side, "rejected": rejected_side,
            "margin": margin, "loss": loss, "prefers_chosen": margin > 0}


# --- one step of sampling -------------------------------------------------------------------------------------------

def warped_scores(logits, temperature: float, top_k: int, top_p: float):
    """The logits after transformers' own warpers, in the order model.generate applies them (temperature, top-k,
    top-p; each left out where generate leaves it out), and which warper cut each token ("" where kept). At
    temperature 0 (greedy) no warper runs and only the most likely token is kept ("greedy" for the rest).
    logits (V,) → tempered (V,), final scores (V,) with -inf where cut, cut_by [V]"""
    import torch
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    scores = logits.float()[None]                                           # (1, V): warpers take a batch
    no_ids = torch.zeros((1, 0), dtype=torch.long)                          # these warpers never read the ids
    cut_by = [""] * scores.shape[-1]
    if temperature == 0:
        best = int(scores[0].argmax())
        tempered = torch.full_like(scores, -math.inf)
        tempered[0, best] = 0.0
        return tempered[0], tempered[0].clone(), ["" if i == best else "greedy" for i in range(len(cut_by))]
    if temperature != 1.0:
        scores = TemperatureLogitsWarper(temperature)(no_ids, scores)
    tempered = scores
    for name, warper in (("top_k", TopKLogitsWarper(top_k) if top_k else None),
                         ("top_p", TopPLogitsWarper(top_p) if top_p < 1.0 else None)):
        if warper is None:
            continue
        before = torch.isfinite(scores[0])
        scores = warper(no_ids, scores)
        for index in (before & ~torch.isfinite(scores[0])).nonzero()[:, 0].tolist():
            cut_by[index] = name
    return tempered[0], scores[0], cut_by


def sample_step(workspace: Path, checkpoint: str, prompt: str, generated_ids: list[int] | None = None,
                temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                chat: bool = True, show: int = 10) -> dict:
    """One step of generation, shown: the distribution after the context, what temperature, top-k and top-p make of
    it, and one token drawn from the result (the most likely at temperature 0; reproducible with a seed)."""
    import torch

    from pipelines.inference import encode_chat, load_for_generation
    from pipelines.models import check_chat_template
    from pipelines.rl.rollout import stop_token_ids

    check_text(prompt, "prompt")
    generated_ids = check_generated_ids(generated_ids)
    temperature, top_k, top_p, seed, show = check_sampling(temperature, top_k, top_p, seed, show, chat)
    loaded, adapter = load_for_generation(_source(workspace, checkpoint))
    tokenizer = loaded.tokenizer
    if chat:
        check_chat_template(tokenizer, checkpoint)
        context = encode_chat(tokenizer, [{"role": "user", "content": prompt}])
    else:
        context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    check_token_count(context, "prompt")
    vocabulary = len(tokenizer)
    for token_id in generated_ids:
        if not 0 <= token_id < vocabulary:
            raise StudioError("lens.id_out_of_vocab", value=token_id, highest=vocabulary - 1)
    logits = _logits(loaded, adapter, context + generated_ids)[-1]           # (V,)
    probs = logits.softmax(-1)                                               # (V,)
    tempered, final_scores, cut_by = warped_scores(logits, temperature, top_k, top_p)
    tempered_probs, final = tempered.softmax(-1), final_scores.softmax(-1)  # (V,), (V,): 0 where cut
    if temperature == 0:
        picked = int(final.argmax())
    else:
        generator = torch.Generator()
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        picked = int(torch.multinomial(final, 1, generator=generator))
    decode = _Decoder(tokenizer)
    shown = torch.topk(probs, min(show, probs.shape[-1])).indices.tolist()
    candidates = [{"id": i, "token": decode(i), "text": decode.completes(context + generated_ids, i),
                   "prob": round(float(probs[i]), DIGITS),
                   "tempered": round(float(tempered_probs[i]), DIGITS), "kept": cut_by[i] == "",
                   "cut_by": cut_by[i], "final": round(float(final[i]), DIGITS)} for i in shown]
    grown = generated_ids + [picked]
    return {"candidates": candidates, "kept_count": int(torch.isfinite(final_scores).sum()),
            "picked": {"id": picked, "token": decode(picked), "text": decode.completes(context + generated_ids, picked),
                       "final": round(float(final[picked]), DIGITS)},
            "generated_ids": grown,
            # a character whose first bytes are drawn but not its last shows once it is whole, not as "\ufffd"
            "generated": tokenizer.decode(grown, skip_special_tokens=True).rstrip("\ufffd"),
            "done": picked in stop_token_ids(loaded.model, tokenizer)}

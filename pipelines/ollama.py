"""An Ollama Modelfile beside a GGUF file, so that `ollama create my-model -f Modelfile` works unchanged.

Ollama writes prompts with Go templates, transformers with Jinja; neither translates the other. Most chat templates
wrap each message the same way (ChatML, Llama 3, Zephyr, Gemma, SmolLM2): a prefix by role, the content, a suffix
by role, and a generation prompt after the last message. We read those pieces off the Jinja template by rendering
marked conversations with it, write them as a Go template, and keep them only if they render every check
conversation exactly as the Jinja template does. A template that is not of that shape (one that folds the system
prompt into the first user turn, say) gets no TEMPLATE line: Ollama then picks one from the chat template that
the GGUF file carries, and the export says so.

A default system prompt (one the template adds when a conversation has none, as SmolLM2's does) becomes the
Modelfile's SYSTEM, which Ollama puts first when a conversation has none: the same text, the same place.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("system", "user", "assistant")
MARK = {"system": "\u2063S\u2063", "user": "\u2063U\u2063", "assistant": "\u2063A\u2063", "user2": "\u2063V\u2063"}


@dataclass(frozen=True)
class WrapTemplate:
    """A chat template as pieces: prefix[role] + content + suffix[role] per message, then generation."""
    prefix: dict
    suffix: dict
    generation: str
    default_system: str | None   # the system prompt the template adds when a conversation has none
    head: str = ""               # written once before the first message (Llama 3's BOS token)

    def render(self, messages: list[dict]) -> str:
        """What Ollama renders with the Go template below (and the SYSTEM line) for these messages."""
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        body = "".join(self.prefix[m["role"]] + m["content"] + self.suffix[m["role"]] for m in messages)
        return self.head + body + (self.generation if not messages or messages[-1]["role"] != "assistant" else "")

    def go_template(self, head: bool = True) -> str:
        """`head=False` when the runtime adds the head itself (llama.cpp adds BOS where the tokenizer would)."""
        branches = "{{ else if ".join(
            f'eq .Role "{role}" }}}}{_go_text(self.prefix[role])}{{{{ .Content }}}}{_go_text(self.suffix[role])}'
            for role in ROLES)
        return ((_go_text(self.head) if head else "")
                + '{{ $role := "" }}{{ range .Messages }}{{ $role = .Role }}{{ if ' + branches + "{{ end }}{{ end }}"
                + '{{ if ne $role "assistant" }}' + _go_text(self.generation) + "{{ end }}")


def _go_text(literal: str) -> str:
    """Literal text inside a Go template: only `{{` would be read as an action."""
    return literal.replace("{{", '{{ "{{" }}')


def read_template(tokenizer) -> WrapTemplate | None:
    """The tokenizer's chat template as pieces, or None when it is not of the wrap-each-message shape."""
    def render(messages, generation=True):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    # Most templates start with their first message; some (Llama 3's) write the BOS token once before it.
    heads = ["", *([tokenizer.bos_token] if tokenizer.bos_token else [])]
    return next((t for t in (_read(render, head) for head in heads) if t), None)


def _read(render, head: str) -> WrapTemplate | None:
    def message(role, key=None):
        return {"role": role, "content": MARK[key or role]}

    try:
        full = render([message("system"), message("user"), message("assistant"), message("user", "user2")])
        closed = render([message("system"), message("user"), message("assistant")], generation=False)
        without_system = render([message("user")])
    except Exception:   # a template that refuses a system turn, or an unusual role: not of the simple shape
        return None
    if not all(text.startswith(head) for text in (full, closed, without_system)):
        return None
    full, closed, without_system = (text[len(head):] for text in (full, closed, without_system))
    pieces = _split(full, [MARK["system"], MARK["user"], MARK["assistant"], MARK["user2"]])
    if pieces is None or MARK["assistant"] not in closed:
        return None
    system_prefix, system_user, user_assistant, assistant_user, generation_tail = pieces
    suffix_assistant = closed.split(MARK["assistant"], 1)[1]
    if not assistant_user.startswith(suffix_assistant):
        return None
    prefix_user = assistant_user[len(suffix_assistant):]
    if not system_user.endswith(prefix_user):
        return None
    suffix_system = system_user[: len(system_user) - len(prefix_user)]
    # Between a user turn and what follows sits the user's suffix, then the assistant's prefix (or the generation
    # prompt): where one ends is not written anywhere, so take the assistant's suffix when the user's looks alike.
    suffix_user = suffix_assistant if user_assistant.startswith(suffix_assistant) and \
        generation_tail.startswith(suffix_assistant) else _common_prefix(user_assistant, generation_tail)
    template = WrapTemplate(
        prefix={"system": system_prefix, "user": prefix_user, "assistant": user_assistant[len(suffix_user):]},
        suffix={"system": suffix_system, "user": suffix_user, "assistant": suffix_assistant},
        generation=generation_tail[len(suffix_user):], default_system=None, head=head)
    template = _with_default_system(template, without_system)
    return template if template and _agrees(template, render) else None


def _split(text: str, marks: list[str]) -> list[str] | None:
    """The text around each mark, in order: len(marks) + 1 pieces, or None if a mark is missing or repeated."""
    pieces, rest = [], text
    for mark in marks:
        if rest.count(mark) != 1:
            return None
        before, rest = rest.split(mark)
        pieces.append(before)
    return [*pieces, rest]


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _with_default_system(template: WrapTemplate, without_system: str) -> WrapTemplate | None:
    """A conversation with no system turn renders as the template would, or with the one the template adds."""
    plain = template.render([{"role": "user", "content": MARK["user"]}])[len(template.head):]
    if without_system == plain:
        return template
    head, user = template.prefix["system"], template.prefix["user"] + MARK["user"]
    if without_system.startswith(head) and user in without_system:
        text = without_system[len(head): without_system.index(user)]
        if text.endswith(template.suffix["system"]):
            return WrapTemplate(template.prefix, template.suffix, template.generation,
                                text[: len(text) - len(template.suffix["system"])] if template.suffix["system"] else text,
                                template.head)
    return None


CHECK_CONVERSATIONS = (
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "a\nb"}, {"role": "assistant", "content": "c"},
     {"role": "user", "content": "안녕"}, {"role": "assistant", "content": "네"}, {"role": "user", "content": "?"}],
)


def _agrees(template: WrapTemplate, render) -> bool:
    return all(template.render(list(c)) == render(list(c)) for c in CHECK_CONVERSATIONS)


def stop_words(tokenizer, template: WrapTemplate | None) -> list[str]:
    """What ends an answer: the end-of-sequence tokens, and the special token that closes an assistant turn."""
    words = [tokenizer.eos_token] if tokenizer.eos_token else []
    if template:
        closing = template.suffix["assistant"].strip()
        if closing and closing in (tokenizer.all_special_tokens or []) + list(tokenizer.get_added_vocab()):
            words.append(closing)
    return list(dict.fromkeys(w for w in words if w))


def modelfile(gguf_name: str, tokenizer, parameters: dict | None = None) -> tuple[str, bool]:
    """The Modelfile text for `gguf_name` (a file beside it), and whether it carries a TEMPLATE of its own."""
    template = read_template(tokenizer)
    # A head that is the BOS token the tokenizer adds anyway is added by llama.cpp too (the GGUF says add_bos_token).
    go = template and template.go_template(head=not (template.head and adds_bos(tokenizer)))
    if template and '"""' in go + (template.default_system or ""):
        template = None   # it would end the Modelfile's triple-quoted string: Ollama reads the GGUF's template instead
    lines = [f"FROM ./{gguf_name}", ""]
    if template:
        lines += [f'TEMPLATE """{go}"""', ""]
        if template.default_system:
            lines += [f'SYSTEM """{template.default_system}"""', ""]
    for word in stop_words(tokenizer, template):
        lines.append(f"PARAMETER stop {_json_string(word)}")
    for name, value in (parameters or {}).items():
        lines.append(f"PARAMETER {name} {value}")
    return "\n".join(lines).rstrip() + "\n", template is not None


def adds_bos(tokenizer) -> bool:
    ids = tokenizer("x").input_ids
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def _json_string(word: str) -> str:
    import json
    return json.dumps(word, ensure_ascii=False)

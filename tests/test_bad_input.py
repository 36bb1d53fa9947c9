"""Input from the network: unbounded, wrong-typed or hostile values are refused in one short sentence, before
anything is written."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest

from pipelines import api
from pipelines.config import SECTIONS, RunConfig, parse_config_text
from pipelines.errors import QUOTE_CHARS, StudioError, quote
from tests.conftest import tiny_config

RAW_PYTHON = ("Traceback", "Errno", "object has no attribute", "NoneType", 'File "')
MEGABYTE = "x" * 1_000_000
ALIAS_BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
              + "".join(f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")))


def one_sentence(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error)   # str() of a gr.Error is its message's repr
    assert "\n" not in message and len(message) < 300, message
    assert not any(raw in message for raw in RAW_PYTHON), message
    return message


def run_folders(workspace) -> list:
    runs = workspace / "runs"   # the run queue keeps its lock file there too
    return sorted(p for p in runs.iterdir() if p.is_dir()) if runs.exists() else []


@pytest.mark.parametrize("text, words", [
    ("train: {max_steps: 1e400}", "train.max_steps"),
    ("train: {max_steps: 1000000000000}", "at most 1000000"),
    ("train: {max_steps: " + "9" * 5000 + "}", "cannot be read"),
    ("train: {epochs: 1000000000}", "train.epochs"),
    ("train: {epochs: .inf}", "finite"),
    ("train: {learning_rate: .nan}", "finite"),
    ("train: {epochs: 1e999}", "finite"),
    ("stage: dpo\ndpo: {beta: .inf}", "finite"),
    ("stage: ppo\nppo: {kl_coef: .inf}", "finite"),
    ("train: {seed: 4294967296}", "train.seed"),
    ("train: {seed: -1}", "train.seed"),
    ("peft: {r: 100000}", "peft.r"),
    ('name: "abc\\n"', "not allowed"),
    (ALIAS_BOMB, "anchor or alias"),
    ("train: &t {max_steps: 3}", "anchor or alias"),
    ("[" * 5000 + "]" * 5000, "levels deep"),
    ("x: " + "y" * 70_000, "at most 65536"),
    ("name: " + MEGABYTE[:60_000], "not allowed"),
    ("a: \x00", "not valid YAML"),
])
def test_unbounded_or_non_finite_config_is_one_sentence_before_any_run_exists(workspace, text, words):
    started = time.time()
    with pytest.raises(StudioError) as error:
        api.prepare_run(workspace, text)
    assert words in one_sentence(error.value)
    assert time.time() - started < 2, "refused before anything is expanded or loaded"
    assert not run_folders(workspace)


def test_every_numeric_setting_is_bounded_and_the_defaults_are_within_bounds():
    for section in (RunConfig, *SECTIONS.values()):
        for spec in dataclasses.fields(section):
            if spec.type in ("int", "float"):
                assert spec.metadata["minimum"] is not None and spec.metadata["maximum"] is not None, spec.name
    parse_config_text("")   # every default passes its own bounds


def test_lora_rank_beyond_the_models_hidden_size_is_refused(workspace, tiny_model):
    with pytest.raises(StudioError, match="hidden size of 64"):
        api.prepare_run(workspace, tiny_config(tiny_model).replace("r: 8", "r: 128"))
    assert not run_folders(workspace)


@pytest.mark.parametrize("spec", ["a" * 300, "/" + "a" * 300, "x/" * 600, MEGABYTE, "m\x00", 5, ["a"]])
def test_a_long_or_odd_model_name_is_one_sentence(workspace, spec):
    from pipelines.models import resolve_model
    with pytest.raises(StudioError) as error:
        resolve_model(spec, workspace)
    one_sentence(error.value)


def test_names_with_a_trailing_newline_and_huge_values_are_quoted_short(workspace):
    from pipelines.paths import check_name, inside
    with pytest.raises(StudioError):
        check_name("abc\n")
    with pytest.raises(StudioError) as error:
        inside(workspace, "a\x00b")
    one_sentence(error.value)
    assert len(quote(MEGABYTE)) == QUOTE_CHARS


def test_chat_refuses_a_long_message_and_bad_settings_before_loading_a_model(workspace):
    from pipelines.inference import chat
    # "no-such/model" is never looked up: each of these is refused first.
    for message, history, chat_settings, words in [
            (MEGABYTE, [], {}, "limit is 8000"),
            ("hi", [{"role": "user", "content": "y" * 8000}] * 5, {}, "conversation"),
            ("hi", "not a list", {}, "history"),
            ("hi", [["user", "hi"]], {}, "history"),
            ("hi", [], {"max_new_tokens": "1e9"}, "max_new_tokens"),
            ("hi", [], {"max_new_tokens": 10**9}, "max_new_tokens"),
            ("hi", [], {"seed": "x"}, "seed"),
            ("hi", [], {"seed": 2**40}, "seed"),
            ("hi", [], {"temperature": math.inf}, "temperature"),
            ("hi", [], {"top_p": math.nan}, "top_p"),
            ("hi", [], {"system_prompt": MEGABYTE}, "system_prompt"),
            ("hi", [], ["max_new_tokens", 8], "mapping"),
    ]:
        with pytest.raises(StudioError) as error:
            chat(workspace, "no-such/model", message, history, chat_settings)
        assert words in one_sentence(error.value)


def test_compare_checks_settings_with_the_same_function(workspace):
    for bad in (["x"], {"seed": "x"}, {"max_new_tokens": 10**9}):
        with pytest.raises(StudioError) as error:
            api.compare(workspace, ["no-such/model"], "hi", bad)
        one_sentence(error.value)

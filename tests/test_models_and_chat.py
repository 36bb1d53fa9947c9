import json
import re
import time
from pathlib import Path

import pytest

from pipelines import api, inference
from pipelines.errors import StudioError
from pipelines.models import estimate_training_memory, resolve_model
from tests.conftest import tiny_config

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("spec, words", [
    ("https://huggingface.co/org/model", "not a model id"),
    ("org/../model", "not a model id"),
    ("org/name/extra", "not a model id"),
    ("just-a-name", "not a model id"),
    ("./no/such/folder", "no config.json"),
])
def test_bad_model_ids_get_one_sentence(workspace, spec, words):
    with pytest.raises(StudioError, match=words):
        resolve_model(spec, workspace)


def test_unknown_hub_model_fails_fast_when_offline(workspace, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.time()
    with pytest.raises(StudioError, match="not in the local Hugging Face cache"):
        resolve_model("some-org/some-model", workspace)
    assert time.time() - started < 5


def test_memory_estimate_is_never_far_below_the_measured_peaks_nor_far_above():
    import json

    # bench/memory_estimate.py: peak RSS of SFT processes on the 2-core CPU, rows cut at max_length.
    measured = json.loads((REPO_ROOT / "bench" / "results" / "memory_estimate.json").read_text())["results"]
    shapes = {"bundled": (134_515_008, 576, 30, 49152)}
    checked = 0
    for case in measured.values():
        if case["model"] not in shapes:
            continue
        estimate = estimate_training_memory(*shapes[case["model"]], case["batch_size"], case["max_length"], bf16=False)
        # Below the peak is the costly side (a run that dies of out-of-memory); above, a needless warning.
        assert 0.9 < estimate[case["method"]] / case["peak_rss_gb"] < 1.3, case
        checked += 1
    assert checked >= 3
    small = estimate_training_memory(*shapes["bundled"], batch_size=4, seq_len=512, bf16=False)
    assert small["full"] > small["lora"] and estimate_training_memory(*shapes["bundled"], 16, 512, False)["lora"] > small["lora"]


def test_a_run_beyond_the_machines_memory_is_refused_and_one_beyond_its_free_memory_warned(tiny_model, workspace,
                                                                                            monkeypatch):
    import psutil

    from pipelines import api

    class Memory:   # the tiny model's estimate is about 0.56 GB, the process itself
        available, total = 0.3 * 1024 ** 3, 0.4 * 1024 ** 3

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory)
    with pytest.raises(StudioError, match=r"needs about 0\.6 GB at its peak and the cpu has 0\.4 GB in all"):
        api.prepare_run(workspace, tiny_config(tiny_model))
    assert not (workspace / "runs").exists() or not any((workspace / "runs").iterdir())
    Memory.total = 8 * 1024 ** 3
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model))
    assert any("0.3 GB free now" in w for w in api.run_status(workspace, run_dir.name)["warnings"])


def test_history_parts_and_roles_become_plain_messages():
    history = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}, {"role": "assistant", "content": "Hello"},
               {"role": "tool", "content": "ignored"}]
    assert inference.to_messages("Next", history, "Be brief") == [
        {"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Next"}]


def test_lora_checkpoints_share_one_base_and_differ_from_it(tiny_model, workspace):
    from pipelines.api import prepare_run
    from pipelines.train import train_run

    run_dir = prepare_run(workspace, "name: share\n" + tiny_config(tiny_model, max_steps=10))
    assert train_run(run_dir, echo=False) == "completed"
    inference.free_models()
    greedy = {"max_new_tokens": 12, "temperature": 0}
    base = inference.chat(workspace, str(tiny_model), "Say hi", [], greedy)
    tuned = inference.chat(workspace, "share/final", "Say hi", [], greedy)
    early = inference.chat(workspace, "share/checkpoint-5", "Say hi", [], greedy)
    assert len(inference._cache) == 1, "checkpoints of one base share it in memory"
    assert tuned != base
    assert inference.chat(workspace, str(tiny_model), "Say hi", [], greedy) == base, "the base answers with adapters off"
    assert isinstance(early, str)
    with pytest.raises(StudioError, match="max_new_tokens"):
        inference.chat(workspace, "share/final", "Hi", [], {"max_new_tokens": 10**6})
    with pytest.raises(StudioError, match="does not exist"):
        inference.chat(workspace, "share/checkpoint-999", "Hi", [], greedy)


def test_cached_bases_stay_within_the_memory_budget(tiny_model, workspace, monkeypatch):
    import shutil

    copy = shutil.copytree(tiny_model, workspace / "tiny-copy")
    sources = [resolve_model(str(tiny_model), workspace), resolve_model(str(copy), workspace)]
    one = inference.estimate_bytes(sources[0])
    greedy = {"max_new_tokens": 4, "temperature": 0}
    inference.free_models()
    monkeypatch.setenv("ALIGNMENT_STUDIO_MODEL_MEMORY_GB", str(100 * one / 2**30))
    for spec in (tiny_model, copy):
        inference.chat(workspace, str(spec), "Hi", [], greedy)
    assert len(inference._cache) == 2 and inference.fit_notice(sources) == ""
    loaded = next(iter(inference._cache.values()))
    assert loaded.bytes == pytest.approx(one, rel=0.05), "the estimate from the safetensors headers is what loads"

    monkeypatch.setenv("ALIGNMENT_STUDIO_MODEL_MEMORY_GB", str(1.5 * one / 2**30))
    inference.free_models()
    for spec in (tiny_model, copy):
        inference.chat(workspace, str(spec), "Hi", [], greedy)
    assert list(inference._cache) == [sources[1].base], "the least recently used base made room for the next"
    notice = inference.fit_notice(sources)
    assert "2 different bases" in notice and "one base at a time" in notice
    inference.free_models()


def test_reward_models_share_the_chat_models_memory_budget(tiny_model, workspace, monkeypatch):
    from pipelines import api
    from pipelines.train import train_run
    from tests.conftest import write_jsonl
    from tests.test_preference_stages import PAIRS, stage_config

    write_jsonl(workspace / "pairs.jsonl", PAIRS)
    reward_run = api.prepare_run(workspace, "name: rm\n" + stage_config(tiny_model, "reward", max_steps=2))
    assert train_run(reward_run, echo=False) == "completed"
    one = inference.estimate_bytes(resolve_model(str(tiny_model), workspace))
    monkeypatch.setenv("ALIGNMENT_STUDIO_MODEL_MEMORY_GB", str(1.5 * one / 2**30))
    inference.free_models()
    inference.chat(workspace, str(tiny_model), "Hi", [], {"max_new_tokens": 4, "temperature": 0})
    first = api.score(workspace, "rm/final", "Say hi", ["Hello!"])
    assert [key.split("|")[0] for key in inference._cache] == ["reward"], "the reward model made room, as a base would"
    inference.chat(workspace, str(tiny_model), "Hi", [], {"max_new_tokens": 4, "temperature": 0})
    assert list(inference._cache) == [str(tiny_model)]
    assert api.score(workspace, "rm/final", "Say hi", ["Hello!"]) == first, "reloaded, it scores the same"
    assert inference.free_models() == 1


@pytest.mark.parametrize("tied", [False, True])
def test_the_model_tab_counts_each_parameter_once(tiny_model, workspace, tied):
    import json
    import shutil

    from transformers import AutoModelForCausalLM

    from pipelines.models import describe_model

    from safetensors.torch import load_file, save_file

    folder = tiny_model
    if tied:   # as the bundled SmolLM2: the output layer is the embedding matrix, stored once
        folder = shutil.copytree(tiny_model, workspace / "tied")
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
        weights = load_file(folder / "model.safetensors")
        save_file({k: v for k, v in weights.items() if k != "lm_head.weight"}, folder / "model.safetensors",
                  metadata={"format": "pt"})
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    assert (loaded.lm_head.weight is loaded.model.embed_tokens.weight) == tied
    assert describe_model(str(folder), workspace)["parameters"] == sum(p.numel() for p in loaded.parameters())


def test_chat_lists_only_checkpoints_that_generate_and_the_reward_tab_only_reward_models(tiny_model, workspace):
    from pipelines.api import list_checkpoints

    for name, stage in (("policy", "sft"), ("judge", "reward")):   # run folders as training leaves them
        run_dir = workspace / "runs" / name
        (run_dir / "final").mkdir(parents=True)
        (run_dir / "config.yaml").write_text(tiny_config(tiny_model).replace("stage: sft", f"stage: {stage}"))
    chat = list_checkpoints(workspace, "chat")
    assert "policy/final" in chat and "judge/final" not in chat
    assert list_checkpoints(workspace, "reward") == ["judge/final"]
    assert {"judge/final", "policy/final"} <= set(list_checkpoints(workspace))
    with pytest.raises(StudioError, match="kind must be one of any, chat, reward"):
        list_checkpoints(workspace, "everything")


def test_a_model_without_a_chat_template_is_refused_in_one_sentence_everywhere(tiny_model, tmp_path, workspace):
    """One check, one wording: training, data preview and stats, chat and compare all say the same."""
    import shutil

    from transformers import AutoTokenizer

    plain = tmp_path / "no-template"
    shutil.copytree(tiny_model, plain)
    tokenizer = AutoTokenizer.from_pretrained(plain)
    tokenizer.chat_template = None
    for leftover in plain.glob("chat_template.*"):
        leftover.unlink()
    tokenizer.save_pretrained(plain)
    if "chat_template" in (config := json.loads((plain / "tokenizer_config.json").read_text())):
        del config["chat_template"]
        (plain / "tokenizer_config.json").write_text(json.dumps(config))
    sentence = rf"'{re.escape(str(plain))}' has no chat template, so conversations cannot be rendered for it"
    calls = [lambda: api.prepare_run(workspace, tiny_config(plain)),
             lambda: api.preview_dataset(workspace, "tiny.jsonl", str(plain)),
             lambda: api.dataset_stats(workspace, "tiny.jsonl", str(plain)),
             lambda: api.chat(workspace, str(plain), "Hi", [], {"max_new_tokens": 2}),
             lambda: api.compare(workspace, [str(plain)], "Hi", {"max_new_tokens": 2})]
    for call in calls:
        with pytest.raises(StudioError, match=sentence):
            call()
    inference.free_models()


def test_a_reply_says_whether_it_was_cut_at_max_new_tokens(tiny_model, workspace):
    replies = list(api.chat_stream(workspace, str(tiny_model), "Tell me a long story", [],
                                   {"max_new_tokens": 3, "temperature": 0}))
    assert replies[-1].cut and not any(reply.cut for reply in replies[:-1]), "known once generation is over"
    assert replies[-1].text == api.chat(workspace, str(tiny_model), "Tell me a long story", [],
                                        {"max_new_tokens": 3, "temperature": 0})
    assert inference.was_cut([5, 6, 7], 3, {2}) and not inference.was_cut([5, 2, 0], 3, {2})
    assert not inference.was_cut([5, 6], 3, {2}), "ended before the limit"
    inference.free_models()

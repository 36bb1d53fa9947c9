"""The next-token lens (pipelines/lens.py) against independent computations: a plain transformers forward pass,
Chat's greedy reply, transformers' own logits warpers, and TRL's DPOTrainer on the same preference pair."""

import math
import shutil

import pytest
import torch

from pipelines import inference, lens
from pipelines.errors import StudioError
from tests.conftest import TINY_ROWS, tiny_config, write_jsonl

TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def lens_workspace(tiny_model, tmp_path_factory):
    """A workspace with one LoRA checkpoint of the tiny model, 'lora/final', whose adapter is random (not zero), so
    it predicts differently from its base, as a run's checkpoint leaves it on disk."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    workspace = tmp_path_factory.mktemp("lens") / "workspace"
    run_dir = workspace / "runs" / "lora"
    run_dir.mkdir(parents=True)
    write_jsonl(workspace / "tiny.jsonl", TINY_ROWS)
    (run_dir / "config.yaml").write_text(tiny_config(tiny_model))
    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(
        r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False))
    model.save_pretrained(run_dir / "final")
    yield workspace
    inference.free_models()


def plain_model(tiny_model, adapter=None):
    """The model loaded on its own with transformers (and PEFT), outside the studio's cache."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter).eval()
    return model


def plain_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()   # (T, V)


def assert_matches_forward(result, model, tokenizer, text, top_k):
    """A plain text is read after the end-of-text token (the eos of the tiny tokenizer), so every token has a row."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert [t["id"] for t in result["tokens"]] == ids and result["n_tokens"] == len(ids)
    probs = plain_logits(model, [tokenizer.eos_token_id, *ids]).softmax(-1)   # row t predicts token t of the text
    for position in range(len(ids)):
        token, row = result["tokens"][position], probs[position]
        p = row[ids[position]].item()
        assert token["prob"] == pytest.approx(p, abs=2e-6)
        assert token["surprisal"] == pytest.approx(-math.log2(p), abs=1e-4)
        assert token["rank"] == 1 + int((row > row[ids[position]]).sum())
        assert token["token"] == tokenizer.decode([ids[position]])
        top = token["top"]
        assert [t["id"] for t in top] == torch.topk(row, top_k).indices.tolist()
        assert [t["prob"] for t in top] == sorted((t["prob"] for t in top), reverse=True)
        assert [t["prob"] for t in top] == pytest.approx(torch.topk(row, top_k).values.tolist(), abs=2e-6)
    assert [t["id"] for t in result["next"]] == torch.topk(probs[-1], top_k).indices.tolist()
    mean = sum(-math.log2(probs[i, ids[i]].item()) for i in range(len(ids))) / len(ids)
    assert result["mean_surprisal"] == pytest.approx(mean, abs=1e-4)
    assert result["perplexity"] == pytest.approx(2 ** mean, rel=1e-4)


def test_probabilities_are_the_softmax_of_a_plain_forward_pass(tiny_model, lens_workspace):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    result = lens.next_tokens(lens_workspace, str(tiny_model), TEXT, top_k=7)
    assert result["checkpoint"] == str(tiny_model)
    assert_matches_forward(result, plain_model(tiny_model), tokenizer, TEXT, 7)
    tuned = lens.next_tokens(lens_workspace, "lora/final", TEXT, top_k=3)   # the adapter is switched on for it
    assert_matches_forward(tuned, plain_model(tiny_model, lens_workspace / "runs/lora/final"), tokenizer, TEXT, 3)
    again = lens.next_tokens(lens_workspace, str(tiny_model), TEXT, top_k=7)
    assert again == result, "the base answers with the adapter disabled again"
    one = lens.next_tokens(lens_workspace, str(tiny_model), "T", top_k=2)
    assert one["n_tokens"] == 1 and one["tokens"][0]["prob"] is not None and len(one["next"]) == 2
    templated = lens.next_tokens(lens_workspace, str(tiny_model), "<|im_start|>user", top_k=2)
    assert templated["tokens"][0]["prob"] is None, "a text that opens with a special token is read as it is"
    alone = lens.next_tokens(lens_workspace, str(tiny_model), "<|im_start|>", top_k=2)
    assert alone["mean_surprisal"] is None and alone["perplexity"] is None, "no position has a probability"


@pytest.mark.parametrize("checkpoint", ["base", "lora/final"])
def test_the_greedy_next_token_is_what_chat_answers_at_temperature_0(tiny_model, lens_workspace, checkpoint):
    checkpoint = str(tiny_model) if checkpoint == "base" else checkpoint
    loaded, _ = inference.load_for_generation(inference_source(lens_workspace, checkpoint))
    tokenizer = loaded.tokenizer
    prompt_ids = inference.encode_chat(tokenizer, [{"role": "user", "content": "Say hi"}])
    rendered = tokenizer.decode(prompt_ids)
    result = lens.next_tokens(lens_workspace, checkpoint, rendered, top_k=3)
    assert [t["id"] for t in result["tokens"]] == prompt_ids, "the rendered chat prompt is the context chat uses"
    greedy = result["next"][0]["id"]
    reply = inference.chat(lens_workspace, checkpoint, "Say hi", [], {"max_new_tokens": 1, "temperature": 0})
    assert reply == tokenizer.decode([greedy], skip_special_tokens=True)
    step = lens.sample_step(lens_workspace, checkpoint, "Say hi", temperature=0)
    assert step["picked"]["id"] == greedy and step["kept_count"] == 1 and step["picked"]["final"] == 1.0


def inference_source(workspace, checkpoint):
    from pipelines.models import resolve_model
    return resolve_model(checkpoint, workspace)


def test_compare_gives_each_checkpoint_its_own_numbers_and_the_difference_in_bits(tiny_model, lens_workspace):
    base = lens.next_tokens(lens_workspace, str(tiny_model), TEXT, top_k=4)
    tuned = lens.next_tokens(lens_workspace, "lora/final", TEXT, top_k=4)
    both = lens.compare_next_tokens(lens_workspace, [str(tiny_model), "lora/final"], TEXT, top_k=4)
    assert both["checkpoints"] == [str(tiny_model), "lora/final"]
    assert both["next"] == [base["next"], tuned["next"]]
    assert both["perplexities"] == [base["perplexity"], tuned["perplexity"]]
    assert both["mean_surprisals"] == [base["mean_surprisal"], tuned["mean_surprisal"]]
    assert base["perplexity"] != tuned["perplexity"], "the adapter changes the predictions"
    for position, (row, b, t) in enumerate(zip(both["tokens"], base["tokens"], tuned["tokens"])):
        assert row["id"] == b["id"] and row["token"] == b["token"]
        assert row["probs"] == [b["prob"], t["prob"]] and row["surprisals"] == [b["surprisal"], t["surprisal"]]
        assert row["tops"] == [b["top"], t["top"]] and row["ranks"] == [b["rank"], t["rank"]]
        assert row["delta"] == pytest.approx(math.log2(t["prob"]) - math.log2(b["prob"]), abs=1e-3)
        assert row["delta"] == pytest.approx(b["surprisal"] - t["surprisal"], abs=1e-5)


def test_compare_refuses_checkpoints_whose_tokenizers_split_the_text_differently(tiny_model, lens_workspace):
    from transformers import AutoTokenizer

    other = shutil.copytree(tiny_model, lens_workspace / "other-tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(other)
    tokenizer.add_tokens(["quick brown"])   # one more token: the same text now splits differently
    tokenizer.save_pretrained(other)
    with pytest.raises(StudioError) as refused:
        lens.compare_next_tokens(lens_workspace, [str(tiny_model), str(other)], TEXT)
    assert refused.value.code == "lens.different_tokenizers"
    with pytest.raises(StudioError) as refused:
        lens.pair_logratios(lens_workspace, str(other), str(tiny_model), "quick brown", "quick brown", "no")
    assert refused.value.code == "lens.different_tokenizers"


def independent_step(model, context, temperature, top_k, top_p):
    """What transformers' warpers keep after `context`, applied here by hand in generate's order."""
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = plain_logits(model, context)[-1:]                             # (1, V)
    scores = TemperatureLogitsWarper(temperature)(None, logits)
    after_k = TopKLogitsWarper(top_k)(None, scores) if top_k else scores
    after_p = TopPLogitsWarper(top_p)(None, after_k) if top_p < 1 else after_k
    return logits[0].softmax(-1), scores[0].softmax(-1), torch.isfinite(after_k[0]), torch.isfinite(after_p[0])


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.05, 0, 0.5), (0.05, 3, 1.0), (0.05, 10, 0.6),
                                                       (1.0, 0, 0.05), (2.5, 0, 1.0)])
def test_a_sampling_step_keeps_exactly_what_transformers_warpers_keep(tiny_model, lens_workspace, temperature,
                                                                      top_k, top_p):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    step = lens.sample_step(lens_workspace, str(tiny_model), "Say hi", None, temperature, top_k, top_p, seed=3,
                            show=50)
    context = inference.encode_chat(tokenizer, [{"role": "user", "content": "Say hi"}])
    probs, tempered, kept_by_k, kept = independent_step(plain_model(tiny_model), context, temperature, top_k, top_p)
    assert step["kept_count"] == int(kept.sum())
    assert [c["id"] for c in step["candidates"]] == torch.topk(probs, 50).indices.tolist()
    for candidate in step["candidates"]:
        i = candidate["id"]
        assert candidate["prob"] == pytest.approx(probs[i].item(), abs=2e-6)
        assert candidate["tempered"] == pytest.approx(tempered[i].item(), abs=2e-6)
        assert candidate["kept"] == bool(kept[i])
        assert candidate["cut_by"] == ("" if kept[i] else "top_k" if not kept_by_k[i] else "top_p")
        assert candidate["final"] == (pytest.approx(tempered[i].item() / tempered[kept].sum().item(), abs=2e-6)
                                      if kept[i] else 0.0)
    # top-p's rule by hand: the kept tokens are the most likely ones, and just enough of them to reach top_p
    if top_p < 1 and not top_k:
        mass = sorted(tempered[kept].tolist(), reverse=True)
        assert sum(mass) >= top_p - 1e-6 and sum(mass) - mass[-1] < top_p + 1e-6
        assert tempered[~kept].max() <= min(mass)
    if step["kept_count"] <= 50:
        assert sum(c["final"] for c in step["candidates"] if c["kept"]) == pytest.approx(1.0, abs=1e-4)
    assert kept[step["picked"]["id"]], "the pick is one of the kept tokens"
    assert step["generated_ids"] == [step["picked"]["id"]]
    assert step["generated"] == tokenizer.decode(step["generated_ids"], skip_special_tokens=True).rstrip("\ufffd")


def test_a_seed_makes_the_picks_reproducible_and_steps_continue_from_the_returned_ids(tiny_model, lens_workspace):
    picks = [lens.sample_step(lens_workspace, str(tiny_model), "Hello", temperature=3.0, seed=seed, chat=False)
             for seed in range(8)]
    again = [lens.sample_step(lens_workspace, str(tiny_model), "Hello", temperature=3.0, seed=seed, chat=False)
             for seed in range(8)]
    assert [p["picked"] for p in picks] == [a["picked"] for a in again]
    assert len({p["picked"]["id"] for p in picks}) > 1, "different seeds draw different tokens from a flat distribution"
    first = picks[0]
    second = lens.sample_step(lens_workspace, str(tiny_model), "Hello", first["generated_ids"], temperature=0,
                              chat=False, show=5)
    from transformers import AutoTokenizer
    context = AutoTokenizer.from_pretrained(tiny_model)("Hello", add_special_tokens=False)["input_ids"]
    expected = plain_logits(plain_model(tiny_model), context + first["generated_ids"])[-1].softmax(-1)
    assert second["picked"]["id"] == int(expected.argmax())
    assert [c["prob"] for c in second["candidates"]] == pytest.approx(torch.topk(expected, 5).values.tolist(), abs=2e-6)
    assert second["generated_ids"] == first["generated_ids"] + [second["picked"]["id"]]
    assert [c["cut_by"] for c in second["candidates"][1:]] == ["greedy"] * 4
    with pytest.raises(StudioError) as refused:
        lens.sample_step(lens_workspace, str(tiny_model), "Hello", [10**6])
    assert refused.value.code == "lens.id_out_of_vocab"


def test_pair_logratios_equal_the_dpo_trainers_own_log_probs_on_the_same_pair(tiny_model, lens_workspace, tmp_path):
    """Compared with TRL's DPOTrainer itself: its dataset preparation tokenises the row, its data collator makes the
    batch, and its compute_ref_log_probs (the forward pass and completion-token sum that _compute_loss also uses)
    gives the sequence log-probs, called once with the policy and once with the reference model."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    prompt, chosen, rejected = "Capital of France?", "Paris. Hope this helps!", "I do not know."
    result = lens.pair_logratios(lens_workspace, "lora/final", str(tiny_model), prompt, chosen, rejected, beta=0.5)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    policy = plain_model(tiny_model, lens_workspace / "runs/lora/final").merge_and_unload()
    row = {"prompt": [{"role": "user", "content": prompt}], "chosen": [{"role": "assistant", "content": chosen}],
           "rejected": [{"role": "assistant", "content": rejected}]}
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), beta=0.5, report_to="none", bf16=False, use_cpu=True,
                     gradient_checkpointing=False, per_device_train_batch_size=1, max_length=512)
    trainer = DPOTrainer(model=policy, ref_model=plain_model(tiny_model), args=args,
                         train_dataset=Dataset.from_list([row]), processing_class=tokenizer)
    example = trainer.train_dataset[0]
    assert [t["id"] for t in result["chosen"]["tokens"]] == example["chosen_ids"]
    assert [t["id"] for t in result["rejected"]["tokens"]] == example["rejected_ids"]
    batch = trainer.data_collator([{k: example[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}])
    policy_chosen, policy_rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    reference_chosen, reference_rejected = trainer.compute_ref_log_probs(trainer.ref_model, batch)
    for side, policy_logp, reference_logp in (("chosen", policy_chosen, reference_chosen),
                                              ("rejected", policy_rejected, reference_rejected)):
        ours = result[side]
        assert ours["policy_logp"] == pytest.approx(policy_logp.item(), abs=1e-4)
        assert ours["reference_logp"] == pytest.approx(reference_logp.item(), abs=1e-4)
        assert ours["logratio"] == pytest.approx(policy_logp.item() - reference_logp.item(), abs=1e-4)
        assert sum(t["logratio"] for t in ours["tokens"]) == pytest.approx(ours["logratio"], abs=1e-4)
    expected_margin = 0.5 * ((policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)).item()
    assert result["margin"] == pytest.approx(expected_margin, abs=1e-4)
    assert result["loss"] == pytest.approx(-torch.nn.functional.logsigmoid(torch.tensor(expected_margin)).item(),
                                           abs=1e-4)
    assert result["prefers_chosen"] == (expected_margin > 0) and abs(expected_margin) > 1e-3
    assert result["policy"] == "lora/final" and result["reference"] == str(tiny_model) and result["beta"] == 0.5
    same = lens.pair_logratios(lens_workspace, str(tiny_model), str(tiny_model), prompt, chosen, rejected)
    assert same["margin"] == 0 and same["loss"] == pytest.approx(math.log(2)), "a model against itself: no margin"


def calls(tiny_model):
    model = str(tiny_model)
    return [
        (lambda ws: lens.next_tokens(ws, model, "x" * (lens.MAX_LENS_CHARS + 1)), "lens.long_text"),
        (lambda ws: lens.next_tokens(ws, model, ""), "lens.empty_text"),
        (lambda ws: lens.next_tokens(ws, model, 42), "lens.not_text"),
        (lambda ws: lens.next_tokens(ws, model, None), "lens.not_text"),
        (lambda ws: lens.next_tokens(ws, model, "Hi", top_k=0), "lens.bad_top_k"),
        (lambda ws: lens.next_tokens(ws, model, "Hi", top_k=21), "lens.bad_top_k"),
        (lambda ws: lens.next_tokens(ws, model, "Hi", top_k=2.5), "lens.bad_top_k"),
        (lambda ws: lens.next_tokens(ws, model, "Hi", top_k=True), "lens.bad_top_k"),
        (lambda ws: lens.compare_next_tokens(ws, [model], "Hi"), "lens.bad_checkpoints"),
        (lambda ws: lens.compare_next_tokens(ws, [model] * 5, "Hi"), "lens.bad_checkpoints"),
        (lambda ws: lens.compare_next_tokens(ws, model, "Hi"), "lens.bad_checkpoints"),
        (lambda ws: lens.compare_next_tokens(ws, [model, model], "Hi", top_k=21), "lens.bad_top_k"),
        (lambda ws: lens.pair_logratios(ws, model, model, "Hi", "", "No"), "lens.empty_text"),
        (lambda ws: lens.pair_logratios(ws, model, model, "Hi", "Yes", "No", beta=0), "lens.bad_beta"),
        (lambda ws: lens.pair_logratios(ws, model, model, "Hi", "Yes", "No", beta=float("nan")), "lens.bad_beta"),
        (lambda ws: lens.sample_step(ws, model, "Hi", temperature=float("nan")), "lens.bad_temperature"),
        (lambda ws: lens.sample_step(ws, model, "Hi", temperature=float("inf")), "lens.bad_temperature"),
        (lambda ws: lens.sample_step(ws, model, "Hi", temperature=-0.1), "lens.bad_temperature"),
        (lambda ws: lens.sample_step(ws, model, "Hi", top_p=0), "lens.bad_top_p"),
        (lambda ws: lens.sample_step(ws, model, "Hi", top_p=1.01), "lens.bad_top_p"),
        (lambda ws: lens.sample_step(ws, model, "Hi", top_k=-1), "lens.bad_sample_top_k"),
        (lambda ws: lens.sample_step(ws, model, "Hi", top_k=lens.MAX_SAMPLE_TOP_K + 1), "lens.bad_sample_top_k"),
        (lambda ws: lens.sample_step(ws, model, "Hi", seed=-1), "lens.bad_seed"),
        (lambda ws: lens.sample_step(ws, model, "Hi", show=0), "lens.bad_show"),
        (lambda ws: lens.sample_step(ws, model, "Hi", show=51), "lens.bad_show"),
        (lambda ws: lens.sample_step(ws, model, "Hi", chat="yes"), "lens.bad_chat"),
        (lambda ws: lens.sample_step(ws, model, "Hi", "1, 2"), "lens.bad_generated_ids"),
        (lambda ws: lens.sample_step(ws, model, "Hi", [1.5]), "lens.bad_generated_ids"),
        (lambda ws: lens.sample_step(ws, model, "Hi", [0] * 257), "lens.long_generation"),
        (lambda ws: lens.sample_step(ws, model, ""), "lens.empty_text"),
    ]


def test_bad_inputs_are_refused_in_one_sentence_before_any_model_is_loaded(tiny_model, workspace, monkeypatch):
    from pipelines import models

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was looked up for an input that should have been refused first")

    monkeypatch.setattr(models, "resolve_model", no_loading)
    monkeypatch.setattr(inference, "load_for_generation", no_loading)
    for call, code in calls(tiny_model):
        with pytest.raises(StudioError) as refused:
            call(workspace)
        assert refused.value.code == code, str(refused.value)
        assert refused.value.text("ko") != str(refused.value), "a Korean sentence too"
        assert len(str(refused.value)) < 300, "a bad input is quoted, never echoed whole"


def test_a_text_over_the_token_limit_is_refused_with_its_length(tiny_model, lens_workspace):
    long_in_tokens = "€" * 1500                     # well under the character limit, several tokens per character
    with pytest.raises(StudioError) as refused:
        lens.next_tokens(lens_workspace, str(tiny_model), long_in_tokens)
    assert refused.value.code == "lens.too_many_tokens" and str(lens.MAX_LENS_TOKENS) in str(refused.value)


def test_a_token_that_is_part_of_a_character_reads_as_its_bytes_and_the_text_reads_whole(tiny_model, lens_workspace):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    text = "뷁 ok 🎄"   # characters the tiny tokenizer never merged: several byte pieces each
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    result = lens.next_tokens(lens_workspace, str(tiny_model), text, top_k=2)
    shown = [t["token"] for t in result["tokens"]]
    assert not any("\ufffd" in piece for piece in shown), shown
    assert any(piece.startswith("⟨") and piece.endswith("⟩") for piece in shown), shown
    assert "".join(t["text"] for t in result["tokens"]) == tokenizer.decode(ids) == text
    assert "뷁" in [t["text"] for t in result["tokens"]], "the piece that completes a character carries it whole"


def test_a_candidate_piece_reads_as_the_character_it_would_complete(tiny_model, lens_workspace):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    ids = tokenizer("뷁", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1, "the syllable is split into byte pieces"
    decode = lens._Decoder(tokenizer)
    assert decode.completes(ids[:-1], ids[-1]) == "뷁", "the last piece completes the syllable begun before it"
    assert decode.completes([], ids[0]) == "", "a first piece completes nothing yet"
    whole = tokenizer("ok", add_special_tokens=False)["input_ids"][0]
    assert decode.completes(ids, whole) == decode(whole)
    result = lens.next_tokens(lens_workspace, str(tiny_model), "뷁 ok", top_k=20)
    for position, token in enumerate(result["tokens"][1:], start=1):
        before = [t["id"] for t in result["tokens"][:position]]
        for candidate in token["top"]:
            assert candidate["text"] == decode.completes(before, candidate["id"])

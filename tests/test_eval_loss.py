"""Held-out loss and perplexity as an Evaluate scorer (pipelines/eval_loss.py, job kind "evaluate_loss"): the number
is the one a plain forward pass gives on the same tokens (assistant tokens for instruction rows, as SFT trains;
every token for text, as pretraining), perplexity is its exp, the job cancels, and bad requests write nothing."""

import json
import math

import pytest

from pipelines import api
from pipelines.errors import StudioError
from tests.conftest import wait_for, write_jsonl

DOCUMENTS = [{"text": "The bees left the hive at dawn."}, {"text": "A short one."},
             {"text": "Honey is stored in wax cells, capped when it is ripe, and taken in late summer."}]


def plain_losses(model_dir, rows: list[list[int]], masks: list[list[int]]) -> list[tuple[float, int]]:
    """(mean loss, counted tokens) per row from transformers' own loss, one row at a time, no padding."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    for ids, mask in zip(rows, masks):
        labels = torch.tensor([[i if m else -100 for i, m in zip(ids, mask)]])
        with torch.no_grad():
            loss = model(input_ids=torch.tensor([ids]), labels=labels).loss.item()
        out.append((loss, sum(mask[1:])))
    return out


def token_weighted(losses: list[tuple[float, int]]) -> float:
    return sum(loss * n for loss, n in losses) / sum(n for _, n in losses)


def test_held_out_loss_is_a_plain_forward_pass_on_the_assistant_tokens_and_perplexity_its_exp(tiny_model, workspace):
    from transformers import AutoTokenizer

    from tests.conftest import TINY_ROWS

    report = api.evaluate_loss(workspace, [str(tiny_model)], "tiny.jsonl", limit=3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    encoded = [tokenizer.apply_chat_template([{"role": "user", "content": r["instruction"]},
                                              {"role": "assistant", "content": r["output"]}], tokenize=True,
                                             return_dict=True, return_assistant_tokens_mask=True) for r in TINY_ROWS[:3]]
    masks = [list(e["assistant_masks"]) for e in encoded]
    assert all(0 < sum(m) < len(m) for m in masks), "only the answer counts, not the prompt"
    expected = plain_losses(tiny_model, [list(e["input_ids"]) for e in encoded], masks)
    measured = report["checkpoints"][str(tiny_model)]
    assert report["kind"] == "instruction" and report["rows"] == 3 and report["loss_on"][str(tiny_model)] == "assistant"
    assert measured["tokens"] == sum(n for _, n in expected) and measured["rows"] == 3
    assert measured["loss"] == pytest.approx(token_weighted(expected), rel=1e-4)
    assert measured["perplexity"] == pytest.approx(math.exp(measured["loss"]), rel=1e-9)
    job = api.list_jobs(workspace, "evaluate_loss")[0]
    rows = api.job_results(workspace, job["job_id"])["rows"]
    assert [r["loss"] for r in rows] == pytest.approx([loss for loss, _ in expected], rel=1e-4), \
        "each row's own loss too, padded in one batch or not"


def test_text_rows_count_every_token_and_their_end_of_text(tiny_model, workspace):
    from transformers import AutoTokenizer

    from pipelines.stages.pretrain import separator_id

    write_jsonl(workspace / "docs.jsonl", DOCUMENTS)
    report = api.evaluate_loss(workspace, [str(tiny_model)], "docs.jsonl")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    rows = [tokenizer(d["text"], add_special_tokens=False)["input_ids"] + [separator_id(tokenizer)] for d in DOCUMENTS]
    expected = plain_losses(tiny_model, rows, [[1] * len(r) for r in rows])
    measured = report["checkpoints"][str(tiny_model)]
    assert report["kind"] == "text" and report["loss_on"][str(tiny_model)] == "all"
    assert measured["tokens"] == sum(len(r) - 1 for r in rows)
    assert measured["loss"] == pytest.approx(token_weighted(expected), rel=1e-4)


def test_a_loss_job_cancels_and_leaves_no_summary(tiny_model, workspace):
    write_jsonl(workspace / "many.jsonl", [{"text": f"Document number {i} about bees and honey."} for i in range(2000)])
    job_id = api.start_job(workspace, "evaluate_loss", {"checkpoints": [str(tiny_model)], "dataset": "many.jsonl",
                                                        "limit": 2000})
    wait_for(lambda: api.job_status(workspace, job_id)["status"] == "running", timeout=60, what="the job to start")
    status = api.cancel_job(workspace, job_id)
    assert status["status"] == "cancelled"
    job_dir = workspace / "jobs" / job_id
    pid = json.loads((job_dir / "status.json").read_text())["pid"]
    import psutil
    wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
             timeout=15, what="the job's process to end")
    assert api.job_status(workspace, job_id)["status"] == "cancelled"
    assert not (job_dir / "summary.json").exists()
    assert len(api.job_results(workspace, job_id)["rows"]) < 2000


@pytest.mark.parametrize("spec, says", [
    ({"checkpoints": [], "dataset": "tiny.jsonl"}, "at least one checkpoint"),
    ({"checkpoints": "model", "dataset": "tiny.jsonl"}, "at least one checkpoint"),
    ({"checkpoints": ["TINY"] * 9, "dataset": "tiny.jsonl"}, "at most 8"),
    ({"checkpoints": ["TINY"], "dataset": ""}, "Pick a dataset"),
    ({"checkpoints": ["TINY"], "dataset": "no-such-dataset"}, "no-such-dataset"),
    ({"checkpoints": ["TINY"], "dataset": "pairs.jsonl"}, "preference pairs.*instruction rows"),
    ({"checkpoints": ["TINY"], "dataset": "tiny.jsonl", "limit": "lots"}, "limit is a whole number"),
    ({"checkpoints": ["TINY"], "dataset": "tiny.jsonl", "max_length": 100000}, "max_length is a whole number"),
    ({"checkpoints": ["no-such-run/final"], "dataset": "tiny.jsonl"}, "no-such-run"),
])
def test_bad_requests_are_refused_before_anything_is_written(tiny_model, workspace, spec, says):
    write_jsonl(workspace / "pairs.jsonl", [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}])
    spec = {**spec, "checkpoints": [str(tiny_model) if c == "TINY" else c for c in spec["checkpoints"]]
            if isinstance(spec["checkpoints"], list) else spec["checkpoints"]}
    with pytest.raises(StudioError, match=says):
        api.start_job(workspace, "evaluate_loss", spec)
    assert not any((workspace / "jobs").glob("*")), "no job folder for a refused request"


def test_evaluate_in_the_background_returns_a_job_id_at_once(tiny_model, workspace):
    started = api.evaluate(workspace, [str(tiny_model)], ["Say hi", "Name a color"], "",
                           settings={"max_new_tokens": 3}, rules=[{"max_words": 80}], background=True)
    assert set(started) == {"job_id"}
    status = wait_for(lambda: (s := api.job_status(workspace, started["job_id"]))["status"] not in ("queued", "running")
                      and s, timeout=90, what="the evaluation")
    assert status["status"] == "completed" and status["kind"] == "evaluate"
    results = api.job_results(workspace, started["job_id"])
    assert len(results["rows"]) == 2 and str(tiny_model) in results["summary"]["means"]


def test_compare_evaluate_scores_by_held_out_loss_and_shows_it(tiny_model, workspace):
    from studio.tabs import compare

    with pytest.raises(StudioError, match="pick a dataset"):
        compare.start_evaluation(workspace, "", "Say hi", "", [str(tiny_model)], 4, score_by="loss")
    picker, timer = compare.start_evaluation(workspace, "tiny.jsonl", "", "", [str(tiny_model)], 4, score_by="loss")
    assert timer.active and api.job_status(workspace, picker["value"])["kind"] == "evaluate_loss"
    wait_for(lambda: api.job_status(workspace, picker["value"])["status"] == "completed", timeout=90, what="the job")
    _, cancel, timer, progress, summary, chart, table, files = compare.show_evaluation(workspace, picker["value"])
    assert progress == "**completed** · 4 / 4 rows" and not timer.active
    assert summary.startswith("**4 rows** of tiny.jsonl") and "the assistant's tokens" in summary
    assert table["headers"] == ["checkpoint", "perplexity", "loss", "text"]
    assert [row[3] for row in table["data"]][:2] == ["Say hi", "Add 2 and 3"] and len(files) == 2


def test_evaluate_with_a_judge_counts_wins_against_the_reference_in_both_orders(tiny_model, workspace, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    other = tmp_path / "other-model"   # the tiny model with shaken weights: other answers to the same prompts
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    model.save_pretrained(other)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(other)
    (workspace / "longer.py").write_text("def reward(prompts, completions):\n"
                                         "    return [float(len(c)) for c in completions]\n")
    prompts = ["Say hi", "Name a color", "Add 2 and 3", "Capital of France?"]
    with pytest.raises(StudioError, match="pick as reference one of the checkpoints"):
        api.evaluate(workspace, [str(tiny_model), str(other)], prompts, "", {"max_new_tokens": 6},
                     [{"max_words": 80}], judge="longer.py", reference="somebody-else")
    report = api.evaluate(workspace, [str(tiny_model), str(other)], prompts, "", {"max_new_tokens": 6},
                          [{"max_words": 80}], judge="longer.py", reference=str(tiny_model))
    answers = {(r["prompt"], r["checkpoint"]): r["answer"] for r in report["rows"]}
    expected = {"win": 0, "tie": 0, "loss": 0}
    for prompt in prompts:   # the judge prefers the longer answer, whichever order it reads them in
        mine, theirs = len(answers[(prompt, str(other))]), len(answers[(prompt, str(tiny_model))])
        expected["win" if mine > theirs else "loss" if mine < theirs else "tie"] += 1
    assert [r.get("judge") for r in report["rows"] if r["checkpoint"] == str(tiny_model)] == [None] * 4
    assert expected["win"] + expected["loss"], "the two models answer at different lengths: a real contest"
    result = report["judge"]["results"][str(other)]
    assert report["judge"]["reference"] == str(tiny_model) and list(report["judge"]["results"]) == [str(other)]
    assert (result["wins"], result["ties"], result["losses"]) == (expected["win"], expected["tie"], expected["loss"])
    assert result["win_rate"] == pytest.approx((expected["win"] + expected["tie"] / 2) / 4)

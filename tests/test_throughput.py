"""Useful tokens per second and MFU (pipelines/throughput.py): real tokens of hand-made batches, a LoRA token's
FLOPs, what every stage's forwards count, a real tiny run's logs, the runs table's tokens/s, the charts' panels."""

import math

import pytest
import torch

from pipelines import runs, throughput
from pipelines.messages import speaking
from pipelines.run_files import read_metrics, read_status
from pipelines.throughput import TokenCounter, interval_flops, real_tokens, trained_token_multiplier
from tests.conftest import tiny_config, write_jsonl
from tests.test_preference_stages import PAIRS, stage_config


def test_a_padded_batch_counts_its_real_tokens_and_each_rows_length():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    tokens, lengths = real_tokens(torch.zeros(2, 5, dtype=torch.long), mask)
    assert int(tokens) == 8, "3 + 5: the two pads are not counted"
    assert int(lengths) == 3 * 3 + 5 * 5, "each token weighs its own row's length (attention)"
    left_padded = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert int(real_tokens(torch.zeros(2, 5, dtype=torch.long), left_padded)[0]) == 8


def test_a_padding_free_batch_is_all_real_tokens_its_rows_where_positions_restart():
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4]])   # rows of 3 and 5, end to end, no attention mask
    tokens, lengths = real_tokens(torch.ones(1, 8, dtype=torch.long), None, position_ids)
    assert int(tokens) == 8
    assert int(lengths) == 8 * 8 // 2, "two rows of mean length 4"


def test_without_a_mask_the_ids_that_are_not_padding_count_and_a_generation_step_counts_its_new_tokens():
    ids = torch.tensor([[5, 6, 7, 0], [5, 0, 0, 0]])
    assert int(real_tokens(ids, pad_token_id=0)[0]) == 4
    # one new token per row after a cached context: the mask covers the context, only its last column is new
    step_mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    tokens, lengths = real_tokens(torch.ones(2, 1, dtype=torch.long), step_mask)
    assert int(tokens) == 2 and int(lengths) == 4 + 6


def test_a_lora_token_costs_two_thirds_of_a_full_fine_tunes():
    delta = {"trained": (1000, 50_000, 800)}
    per_token = (1.0e6, 2.0e3, 5.0e5)
    lora, full = interval_flops(delta, per_token, frozen_base=True), interval_flops(delta, per_token, frozen_base=False)
    assert math.isclose(lora / full, 2 / 3)
    assert (trained_token_multiplier(True), trained_token_multiplier(False)) == (2, 3)
    forward_only = interval_flops({"forward": (1000, 50_000, 800)}, per_token, frozen_base=False)
    assert math.isclose(forward_only, full / 3), "a forward without gradients is one forward's worth"


def test_flops_per_token_are_trls_split_into_backbone_attention_and_head(tiny_model):
    from transformers import AutoConfig
    from trl.trainer.utils import compute_flops_per_token

    config = AutoConfig.from_pretrained(tiny_model)
    body, attention, head = throughput.forward_flops(config)
    assert head == 2 * config.vocab_size * config.hidden_size
    assert math.isclose(3 * (body + attention * 64 + head), compute_flops_per_token(config, 64))


def tiny_lora_model(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    return get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))


def test_the_counter_tells_trained_forwards_from_those_without_gradients_and_counts_the_head_where_it_runs(tiny_model):
    from trl.trainer.utils import add_fused_lm_head

    model = tiny_lora_model(tiny_model)
    add_fused_lm_head(model.get_base_model())     # as TRL's trainers patch it in
    counter = TokenCounter(model, pad_token_id=0)
    ids = torch.randint(3, 50, (2, 6))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    model(input_ids=ids, attention_mask=mask).logits.sum().backward()
    assert counter.totals() == {"trained": (10, 4 * 4 + 6 * 6, 12)}, "the model's own head projects every position"
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    assert counter.totals()["forward"] == (10, 52, 12), "a forward without gradients: MFU's, not tokens/s's"
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :3] = -100                            # the prompt: only the answer is trained on
    model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True).loss.backward()
    assert counter.totals()["trained"] == (20, 104, 12 + 4), "TRL's fused head projects the labelled positions"
    counter.remove()
    model(input_ids=ids, attention_mask=mask)
    assert counter.totals()["trained"][0] == 20, "removed: nothing more is counted"


def run_and_capture(workspace, config: str, monkeypatch) -> tuple:
    """Train `config` through train_run; return its run folder and the token counter's totals at the end."""
    from pipelines.api import prepare_run
    from pipelines.train import train_run

    captured = {}
    original = throughput.ThroughputCallback.on_train_end

    def keep_totals(self, *args, **kwargs):
        captured.update(self.counter.totals())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(throughput.ThroughputCallback, "on_train_end", keep_totals)
    run_dir = prepare_run(workspace, config)
    assert train_run(run_dir, echo=True) == "completed", read_status(run_dir)
    return run_dir, captured


def test_a_tiny_sft_run_logs_tokens_per_second_and_mfu_and_the_runs_table_shows_its_rate(tiny_model, workspace,
                                                                                         monkeypatch, capsys):
    from studio.tabs import train as train_tab

    run_dir, totals = run_and_capture(workspace, tiny_config(tiny_model, max_steps=4), monkeypatch)
    logged = [m for m in read_metrics(run_dir) if "loss" in m]
    assert len(logged) == 4
    assert all(m["tokens_per_second"] > 0 for m in logged), logged
    assert all(0 < m["mfu"] <= 1 for m in logged), logged
    assert totals["trained"][0] == logged[-1]["num_tokens"], "the hook counts what TRL's own counter counts"
    status = read_status(run_dir)["throughput"]
    assert status["dtype"] in ("bf16", "fp32") and status["device"] == "cpu" and status["peak_gflops"] > 0
    assert f"throughput: peak {status['peak_gflops']} GFLOP/s ({status['dtype']} matmul on cpu" in capsys.readouterr().out
    row = runs.summary(run_dir)
    assert row["tokens_per_second"] == status["tokens_per_second"] > 0
    table = train_tab.runs_table_value([row])
    column = train_tab.RUN_COLUMNS.index("tokens_per_second")
    assert table["headers"][column] == "tokens/s"
    assert table["data"][0][column] == train_tab.tokens_per_second_text(row["tokens_per_second"]) != ""
    from pipelines import api

    line = train_tab.status_markdown(api.run_status(run_dir.parent.parent, run_dir.name))   # as the live view reads it
    assert f"{table['data'][0][column]} tokens/s" in line and f"GFLOP/s ({status['dtype']})" in line, line
    with speaking("ko"):
        assert train_tab.runs_table_value([row])["headers"][column] == "토큰/초"
        assert "초당" in train_tab.status_markdown(api.run_status(run_dir.parent.parent, run_dir.name))


@pytest.mark.parametrize("stage", ["dpo", "reward"])
def test_preference_stages_count_every_real_token_of_chosen_and_rejected(tiny_model, workspace, monkeypatch, stage):
    write_jsonl(workspace / "pairs.jsonl", PAIRS)
    run_dir, totals = run_and_capture(workspace, stage_config(tiny_model, stage, max_steps=2), monkeypatch)
    logged = [m for m in read_metrics(run_dir) if "loss" in m]
    assert totals["trained"][0] == logged[-1]["num_tokens"], "TRL counts the batch's attention mask: both answers"
    assert all(m["tokens_per_second"] > 0 and 0 < m["mfu"] <= 1 for m in logged), logged


@pytest.mark.parametrize("stage", ["ppo", "grpo"])
def test_rl_stages_log_their_trained_tokens_and_count_generation_towards_mfu_only(tiny_model, workspace, monkeypatch,
                                                                                   stage):
    write_jsonl(workspace / "prompts.jsonl", [{"prompt": f"Question number {i}?"} for i in range(8)])
    settings = {"ppo": "ppo_epochs: 1, minibatches: 1, response_length: 8", "grpo": "num_generations: 4, response_length: 8"}
    config = (f"stage: {stage}\nmodel: {tiny_model}\ndataset: prompts.jsonl\npeft: {{method: lora, r: 8, alpha: 16}}\n"
              "train: {max_steps: 2, batch_size: 8, learning_rate: 1.0e-2, save_steps: 2, warmup_ratio: 0.0}\n"
              f"{stage}: {{rules: [{{min_chars: 3}}], {settings[stage]}}}\n")   # a rule: no reward worker to start
    run_dir, totals = run_and_capture(workspace, config, monkeypatch)
    logged = read_metrics(run_dir)
    assert all(m["tokens_per_second"] > 0 and 0 < m["mfu"] <= 1 for m in logged), logged
    assert totals["forward"][0] > 0, "the answers were generated without gradients: forwards for MFU only"
    if stage == "grpo":
        assert totals["trained"][0] == logged[-1]["num_tokens"], "prompts and completions, as TRL counts them"


def test_rates_are_per_interval_and_skip_evaluations_and_the_closing_summary(monkeypatch):
    from transformers import TrainerControl, TrainerState

    callback = throughput.ThroughputCallback("/nonexistent", frozen_base=True, echo=False)
    callback.counter = type("Fixed", (), {"totals": lambda self: {"trained": (400, 4000, 400)}})()
    callback.per_token, callback.peak_flops = (1.0, 0.0, 0.0), 1000.0
    callback.started = callback.last_time = 10.0
    monkeypatch.setattr(throughput.time, "monotonic", lambda: 14.0)
    state, control = TrainerState(), TrainerControl()
    state.is_world_process_zero = False                  # no status file to write here
    for skipped in ({"eval_loss": 1.0}, {"train_runtime": 4.0, "train_loss": 1.0}):
        callback.on_log(None, state, control, skipped)
        assert "tokens_per_second" not in skipped
    logs = {"loss": 1.0}
    callback.on_log(None, state, control, logs)
    assert logs["tokens_per_second"] == 100.0, "400 tokens in 4 s"
    assert logs["mfu"] == 2 * 400 / 4 / 1000.0, "LoRA: 2 FLOPs a token here, against a peak of 1000 FLOP/s"
    again = {"loss": 1.0}
    callback.on_log(None, state, control, again)
    assert "tokens_per_second" not in again, "no new tokens since the last log: no rate"


def test_every_stage_draws_throughput_and_mfu_panels_when_the_run_logged_them():
    from pipelines.messages import text
    from pipelines.panels import SHARE, all_panels
    from studio.charts import training_curves

    panels = {panel.title: panel for panel in all_panels()}
    assert panels["chart.mfu"].y_range == SHARE and panels["chart.tokens_per_second"].keys == ("tokens_per_second",)
    metrics = [{"step": s, "loss": 2.0 / s, "tokens_per_second": 100.0 + s, "mfu": 0.4} for s in (1, 2, 3)]
    titles = [annotation.text for annotation in training_curves(metrics).layout.annotations]
    assert text("chart.tokens_per_second") in titles and text("chart.mfu") in titles
    assert text("chart.mfu") not in [a.text for a in training_curves([{"step": 1, "loss": 1.0}]).layout.annotations]

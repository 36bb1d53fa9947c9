"""SFT end to end on the tiny model: the headless CLI, the run layout, weights that changed, loss that fell."""

import json
import subprocess
import sys

from safetensors.torch import load_file

from pipelines.run_files import read_metrics, read_status
from tests.conftest import REPO_ROOT, tiny_config


def test_headless_sft_trains_lora_and_writes_the_whole_run_directory(tiny_model, workspace):
    config = workspace / "config.yaml"
    config.write_text("name: cli-sft\n" + tiny_config(tiny_model, max_steps=16), encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "pipelines", "--workspace", str(workspace), "train", str(config)],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "step 16/16" in result.stdout and "completed" in result.stdout

    run_dir = workspace / "runs" / "cli-sft"
    assert read_status(run_dir)["status"] == "completed"
    assert (run_dir / "config.yaml").is_file()
    assert "step 16/16" in (run_dir / "train.log").read_text(), "a foreground run keeps train.log too"
    # train.save_total_limit 3: checkpoint-5 went when checkpoint-16 was saved
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint-10", "checkpoint-15", "checkpoint-16"]
    assert "deleted checkpoint-5 (train.save_total_limit 3)" in result.stdout
    assert (run_dir / "final" / "adapter_model.safetensors").is_file()
    assert (run_dir / "final" / "tokenizer_config.json").is_file()

    metrics = read_metrics(run_dir)
    assert [m["step"] for m in metrics] == list(range(1, 17))
    assert "train_runtime" not in json.dumps(metrics), "the closing summary is not a step"
    losses = [m["loss"] for m in metrics]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.2, losses

    # LoRA B matrices start at zero: any non-zero value was learned.
    weights = load_file(run_dir / "final" / "adapter_model.safetensors")
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)


def test_full_fine_tune_changes_the_model_weights(tiny_model, workspace):
    from pipelines.api import prepare_run
    from pipelines.train import train_run

    run_dir = prepare_run(workspace, tiny_config(tiny_model, max_steps=3).replace("method: lora", "method: full"))
    assert train_run(run_dir, echo=False) == "completed"
    before = load_file(tiny_model / "model.safetensors")
    after = load_file(run_dir / "final" / "model.safetensors")
    changed = [name for name in before if name in after and not before[name].equal(after[name])]
    assert len(changed) >= len(before) // 2


def test_probe_prompts_are_answered_at_every_checkpoint(tiny_model, workspace):
    from pipelines.api import prepare_run, run_probes
    from pipelines.train import train_run

    config = tiny_config(tiny_model, max_steps=10, save_steps=5, probe_prompts='"Say hi\\nName a color"')
    run_dir = prepare_run(workspace, config)
    assert train_run(run_dir, echo=False) == "completed"
    grid = run_probes(workspace, run_dir.name)
    assert grid["steps"] == [5, 10]
    assert [row["prompt"] for row in grid["rows"]] == ["Say hi", "Name a color"]
    assert all(set(row["answers"]) == {5, 10} for row in grid["rows"])

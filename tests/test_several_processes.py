"""A run in two processes, as `accelerate launch` or `torchrun` start it on several GPUs (here two CPU processes
talking through gloo): only the main process writes metrics, status and probe answers, a Stop is agreed by both
ranks and leaves a checkpoint, a resume in two processes finishes the run, and the stages with their own loop
refuse in one sentence."""

import os
import subprocess
import sys

from pipelines import api
from pipelines.run_files import checkpoint_steps, read_metrics, read_status
from tests.conftest import REPO_ROOT, tiny_config, wait_for, write_jsonl


def launch(workspace, run_dir, *extra) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "pipelines", "--workspace", str(workspace), "train", str(run_dir), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=300)
    return output


def test_two_processes_train_stop_together_and_resume(tiny_model, workspace):
    run_dir = api.prepare_run(workspace, "name: two\n" + tiny_config(tiny_model, max_steps=600, save_steps=200, probe_prompts="Say hi",
                                                                   save_total_limit=0))
    process = launch(workspace, run_dir)
    wait_for(lambda: any(m.get("step", 0) >= 20 for m in read_metrics(run_dir)), timeout=120, what="step 20")
    api.stop_run(workspace, "two")
    output = finished(process)
    status = read_status(run_dir)
    assert status["status"] == "stopped", output[-3000:]
    stopped_at = checkpoint_steps(run_dir)[-1]
    assert 20 <= stopped_at < 600 and status["step"] == stopped_at
    assert output.count("SFT: ") == 2, "both ranks trained"

    process = launch(workspace, run_dir, "--resume")
    output = finished(process)
    assert read_status(run_dir)["status"] == "completed", output[-3000:]
    steps = [m["step"] for m in read_metrics(run_dir)]
    assert steps == list(range(1, 601)), "one metrics line per step: rank 1 writes none, and the resume goes on"
    assert checkpoint_steps(run_dir) == sorted({stopped_at, 200, 400, 600})
    assert api.run_probes(workspace, "two")["steps"] == checkpoint_steps(run_dir), "probes answered once per save"


def test_our_own_loops_refuse_two_processes_in_one_sentence(tiny_model, workspace):
    write_jsonl(workspace / "prompts.jsonl", [{"prompt": "Say hi"}] * 4)
    (workspace / "rules.py").write_text("def reward(prompts, completions):\n    return [1.0 for _ in completions]\n")
    run_dir = api.prepare_run(workspace, f"stage: rejection_sampling\nmodel: {tiny_model}\ndataset: prompts.jsonl\n"
                                         "rejection_sampling: {reward: rules.py}\n")
    finished(launch(workspace, run_dir))
    status = read_status(run_dir)
    assert status["status"] == "failed" and status["error"] == (
        "Rejection sampling runs in one process on one device; start it without accelerate launch or torchrun.")
    assert not (run_dir / "kept.jsonl").exists()

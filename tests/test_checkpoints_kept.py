"""train.save_total_limit: a long run keeps its last few checkpoints and its best one, so it cannot fill the disk."""

from pipelines import api
from pipelines.run_files import append_jsonl, checkpoint_steps, prune_checkpoints
from pipelines.train import train_run
from tests.conftest import tiny_config


def test_the_oldest_checkpoints_go_but_never_the_newest_nor_the_best_by_eval_loss(tmp_path):
    run_dir = tmp_path / "run"
    for step in (10, 20, 30, 40, 50):
        (run_dir / "checkpoints" / f"checkpoint-{step}").mkdir(parents=True)
    for step, loss in ((10, 2.0), (20, 0.5), (30, 1.0), (40, 1.2), (50, 1.1)):
        append_jsonl(run_dir / "metrics.jsonl", {"step": step, "split": "eval", "eval_loss": loss})
    (run_dir / ".deleting-checkpoint-10" / "left").mkdir(parents=True)   # an earlier crash mid-delete
    assert prune_checkpoints(run_dir, 0) == [], "0 keeps every checkpoint"
    assert prune_checkpoints(run_dir, 2) == [10, 30, 40]
    assert checkpoint_steps(run_dir) == [20, 50], "the best (step 20) and the newest stay"
    assert not list(run_dir.glob(".deleting-*")), "nothing half-deleted is left behind"


def test_a_run_keeps_as_many_checkpoints_as_it_is_told(tiny_model, workspace):
    run_dir = api.prepare_run(workspace, tiny_config(tiny_model, max_steps=10, save_steps=2, save_total_limit=2))
    assert train_run(run_dir, echo=False) == "completed"
    assert checkpoint_steps(run_dir) == [8, 10]
    assert (run_dir / "final").is_dir()

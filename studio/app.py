"""The Gradio app: seven tabs (Road, Model, Data, Train, Reward, Chat, Compare) and the public API endpoints.

Layout first, wiring after. Every handler is a plain function of plain values bound to the workspace;
per-visitor state lives in components, never in module globals.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import gradio as gr
from gradio import FileData

from pipelines import api
from pipelines.config import BUNDLED_MODEL_ID
from pipelines.inference import chat as chat_reply
from pipelines.paths import check_apart_from_uploads
from studio.choices import refresh_checkpoint_choices, refresh_dataset_choices
from studio.errors import log_errors_in, shows_errors
from studio.i18n import I18N, t
from studio.tabs import chat, compare, data, model, reward, road, train

CSS = """
.studio-header h1 { margin-bottom: 0; }
.studio-header p { margin-top: 4px; opacity: .8; }
footer { opacity: .8; }
.run-log textarea { font-family: ui-monospace, monospace; font-size: 12px; }
/* Tables one reads (probe answers, RL samples, runs): headers on one line, long text wrapped inside its column. */
.reading-table th, .reading-table th * { white-space: nowrap; }
.reading-table td, .reading-table td * { white-space: pre-wrap; overflow-wrap: anywhere; }
.reading-table td { vertical-align: top; }
"""


def build_app(workspace: Path) -> gr.Blocks:
    workspace = Path(workspace).resolve()
    check_apart_from_uploads(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    log_errors_in(workspace)
    with gr.Blocks(title="Alignment Studio") as app:
        with gr.Column(elem_classes="studio-header"):
            gr.Markdown(t("title"))
            gr.Markdown(t("subtitle"))
        with gr.Tabs(selected="train") as tabs:
            road_tab = road.build(workspace)
            model_tab = model.build(workspace)
            data_tab = data.build(workspace)
            train_model, train_dataset, train_run, runs_table = train.build(workspace)
            reward.build(workspace)
            chat.build(workspace)
            compare_tab = compare.build(workspace)
        road_tab.compare.click(shows_errors(partial(road.compare_clicked, workspace, tabs, compare_tab)), [road_tab.road],
                               road.compare_outputs(tabs, compare_tab), api_visibility="private")
        gr.Markdown(t("language_hint"))
        # Choices made on the Model and Data tabs carry over to the training form only when asked: Use in Train.
        model_tab.use_in_train.click(shows_errors(train.use_model), [model_tab.model], [train_model], api_visibility="private")
        data_tab.use_in_train.click(shows_errors(partial(train.use_dataset, workspace)), [data_tab.dataset], [train_dataset],
                                    api_visibility="private")
        # The page holds nothing the disk does not: each visit re-reads runs, checkpoints and datasets.
        app.load(partial(refresh_checkpoint_choices, workspace), [train_model], [train_model], api_visibility="private")
        app.load(partial(refresh_dataset_choices, workspace), [train_dataset], [train_dataset], api_visibility="private")
        app.load(shows_errors(partial(train.refresh_runs, workspace)), [train_run], [train_run, runs_table],
                 api_visibility="private")
        app.load(partial(road.refresh_roads, workspace), [road_tab.road], [road_tab.road], api_visibility="private")
        register_api(workspace)
    return app


def register_api(workspace: Path) -> None:
    """The public API contract (see README): names and shapes do not change; later issues only add."""

    def start_run(config: str) -> str:
        """Validate a run config (YAML or JSON text), create the run and start it in its own process; returns the run id."""
        return api.start_run(workspace, config)

    def run_status(run_id: str) -> dict:
        """Status, step, max_steps, ETA, last metrics, error and checkpoints of a run."""
        return api.run_status(workspace, run_id)

    def run_metrics(run_id: str) -> list[dict]:
        """Every logged step of a run, in step order."""
        return api.run_metrics(workspace, run_id)

    def stop_run(run_id: str) -> dict:
        """Ask a run to save a checkpoint and stop."""
        return api.stop_run(workspace, run_id)

    def resume_run(run_id: str) -> dict:
        """Continue a stopped or interrupted run from its last complete checkpoint."""
        return api.resume_run(workspace, run_id)

    def list_runs() -> list[dict]:
        """Every run in the workspace, newest first."""
        return api.list_runs(workspace)

    def list_checkpoints(kind: str = "any") -> list[str]:
        """Model ids: base models, then each run's final model and checkpoints; kind "chat" (those that generate) or "reward"."""
        return api.list_checkpoints(workspace, kind)

    def list_datasets() -> list[dict]:
        """Datasets a run can use: bundled samples and saved uploads."""
        return api.list_datasets(workspace)

    def describe_model(model: str) -> dict:
        """Parameters, dtype, device, context length, chat template and training-memory estimate of a model."""
        return api.describe_model(workspace, model)

    def preview_dataset(name: str, model: str, n: int) -> list[dict]:
        """The first n rows of a dataset rendered through a model's chat template, with token counts."""
        return api.preview_dataset(workspace, name, model, n)

    def upload_dataset(file: FileData, name: str, drop_bad_rows: bool = False, columns: str = "",
                       replace: bool = False) -> dict:
        """Check an uploaded data file (JSON, JSONL, CSV, TSV, Parquet) and save it as a named dataset; returns kind, format, rows, errors [{row, field, message}], warnings, saved. columns maps fields to file columns ("output=answer")."""
        return api.upload_dataset(workspace, uploaded_path(file), name, drop_bad_rows, columns, replace)

    def import_hub_dataset(repo_id: str, config: str, split: str, name: str, max_rows: int = 10_000,
                           drop_bad_rows: bool = False, columns: str = "", replace: bool = False) -> dict:
        """Fetch up to max_rows rows of a Hugging Face Hub dataset, check them and save them as a named dataset; the same report as upload_dataset."""
        return api.import_hub_dataset(workspace, repo_id, config, split, name, max_rows, drop_bad_rows, columns, replace)

    def dataset_stats(name: str, model: str, max_length: int = 512) -> dict:
        """Rows, kind, format, token lengths through a model's chat template, and how many rows and tokens max_length would cut."""
        return api.dataset_stats(workspace, name, model, max_length)

    def dataset_table(name: str) -> dict:
        """A dataset of single-turn rows as a table: kind, columns, rows."""
        return api.dataset_table(workspace, name)

    def save_table(kind: str, rows: list[list], name: str, drop_bad_rows: bool = False, replace: bool = False) -> dict:
        """Check table rows (columns as dataset_table gives them for the kind) and save them as a named dataset."""
        return api.save_table(workspace, kind, rows, name, drop_bad_rows, replace)

    def deduplicate_dataset(name: str, new_name: str, near: bool = True, threshold: float = 0.8) -> dict:
        """Save a copy of a dataset without exact and (optionally) near duplicates; the original stays as it is."""
        return api.deduplicate_dataset(workspace, name, new_name, near, threshold)

    def filter_dataset(name: str, new_name: str, model: str, min_tokens: int = 0, max_tokens: int = 512) -> dict:
        """Save a copy of a dataset keeping rows whose token length (model's chat template) is within [min_tokens, max_tokens]."""
        return api.filter_dataset(workspace, name, new_name, model, min_tokens, max_tokens)

    def split_dataset(name: str, new_name: str, eval_fraction: float = 0.1, seed: int = 42) -> dict:
        """Save <new_name>-train and <new_name>-eval; rows sharing a prompt stay on one side."""
        return api.split_dataset(workspace, name, new_name, eval_fraction, seed)

    def run_probes(run_id: str) -> dict:
        """Probe prompts' greedy answers at each checkpoint save of a run: steps, and per prompt {step: answer}."""
        return api.run_probes(workspace, run_id)

    def run_samples(run_id: str) -> list[dict]:
        """Generations an RL run recorded as it trained: step, prompt, response, score."""
        return api.run_samples(workspace, run_id)

    def score(reward_checkpoint: str, prompt: str, responses: list[str]) -> list[float]:
        """The reward a reward-run checkpoint gives each response to the prompt (text is re-tokenised by the reward model)."""
        return api.score(workspace, reward_checkpoint, prompt, responses)

    def evaluate_reward(reward_checkpoint: str, dataset: str, limit: int = 500) -> dict:
        """Accuracy (chosen above rejected), margins and reward-length correlation of a reward checkpoint on preference pairs."""
        return api.evaluate_reward(workspace, reward_checkpoint, dataset, limit)

    def score_dataset(reward_checkpoint: str, dataset: str, limit: int = 1000) -> list[dict]:
        """Every answer of a dataset with its reward, best first."""
        return api.score_dataset(workspace, reward_checkpoint, dataset, limit)

    def compare(checkpoints: list[str], prompt: str, settings: dict) -> list[str]:
        """One answer per checkpoint to the same prompt (LoRA checkpoints of one base in one batched pass); settings as chat's."""
        return api.compare(workspace, checkpoints, prompt, settings)

    def vote(dataset: str, prompt: str, answers: list[str], checkpoints: list[str], ranking: list[int],
             settings: dict | None = None) -> dict:
        """Append the preference rows a ranking implies (rank per answer: 1 = best, equal = tie, 0 = bad) to a dataset; settings: those compare was given (their system_prompt goes into each row's prompt)."""
        return api.vote(workspace, dataset, prompt, answers, checkpoints, ranking, settings or {})

    def evaluate(checkpoints: list[str], prompts: list[str], scorer: str) -> dict:
        """Every prompt through every checkpoint, each answer scored (reward checkpoint and/or rule file): rows, means, win_rates."""
        return api.evaluate(workspace, checkpoints, prompts, scorer)

    def start_job(kind: str, spec: dict) -> str:
        return api.start_job(workspace, kind, spec)

    def job_status(job_id: str) -> dict:
        return api.job_status(workspace, job_id)

    def cancel_job(job_id: str) -> dict:
        return api.cancel_job(workspace, job_id)

    def list_jobs(kind: str = "") -> list[dict]:
        return api.list_jobs(workspace, kind)

    def job_results(job_id: str) -> dict:
        return api.job_results(workspace, job_id)

    for job_endpoint in (start_job, job_status, cancel_job, list_jobs, job_results):   # their docstrings are api.py's
        job_endpoint.__doc__ = getattr(api, job_endpoint.__name__).__doc__

    def start_road(language: str = "en", model: str = BUNDLED_MODEL_ID, max_steps: int = 0) -> str:
        """Try the road: SFT → DPO and SFT → reward model → PPO from model on the bundled sample of language (en or ko), each stage with its defaults (max_steps 0) or at most max_steps steps, in its own process; returns the road id."""
        return api.start_road(workspace, language, model, max_steps)

    def road_status(road_id: str) -> dict:
        """A road's status, error, each step's run (step, stage, run_id, status, progress, max_steps, eta_s), its held-out prompts and the checkpoints to compare (base, sft, dpo, ppo as they complete)."""
        return api.road_status(workspace, road_id)

    def stop_road(road_id: str) -> dict:
        """Stop a road: its current run saves a checkpoint and stops, and no later step starts."""
        return api.stop_road(workspace, road_id)

    def continue_road(road_id: str) -> dict:
        """Walk a stopped, failed or interrupted road again, keeping the steps that completed."""
        return api.continue_road(workspace, road_id)

    def list_roads() -> list[dict]:
        """Every road in the workspace, newest first: road_id, language, status, created_at."""
        return api.list_roads(workspace)

    def chat(checkpoint: str, message: str, history: list[dict], settings: dict) -> str:
        """One chat reply from a checkpoint; history is a list of {role, content}; settings: max_new_tokens, temperature, top_p, system_prompt, seed."""
        return chat_reply(workspace, checkpoint, message, history, settings)

    for endpoint in (start_run, run_status, run_metrics, stop_run, resume_run, list_runs, list_checkpoints,
                     list_datasets, describe_model, preview_dataset, upload_dataset, import_hub_dataset, dataset_stats,
                     dataset_table, save_table, deduplicate_dataset, filter_dataset, split_dataset, score,
                     evaluate_reward, score_dataset, run_samples, run_probes, compare, vote, evaluate, chat,
                     start_road, road_status, stop_road, continue_road, list_roads, start_job, job_status, cancel_job,
                     list_jobs, job_results):
        gr.api(shows_errors(endpoint), api_name=endpoint.__name__)


def uploaded_path(file) -> str:
    """The server-side path of a file the client uploaded. Gradio checks paths only of payloads marked as files,
    so a bare {"path": ...} must not name any other file on this machine."""
    from gradio.utils import get_upload_folder

    from pipelines.errors import StudioError

    if not isinstance(file, dict) or not isinstance(file.get("path"), str):
        raise StudioError("Send the data file itself, with gradio_client.handle_file(path).")
    path = Path(file["path"]).resolve()
    if not path.is_relative_to(Path(get_upload_folder()).resolve()):
        raise StudioError("That file was not uploaded to this app; send it with gradio_client.handle_file(path).")
    return str(path)


def launch_app(workspace: Path, host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None,
               share: bool = False, prevent_thread_lock: bool = False) -> gr.Blocks:
    """Serve the app; returns the Blocks (its `local_url` says where) once the server is up."""
    from pipelines.run_queue import dispatch

    app = build_app(workspace)
    dispatch(workspace)   # runs that were waiting when the app last stopped start again, in their order
    app.queue(default_concurrency_limit=4)
    # show_error off: a gr.Error (a user's mistake, or shows_errors' pointer to the server log) shows all the same;
    # the text of any other exception, from a handler shows_errors does not wrap, stays on the server.
    app.launch(server_name=host, server_port=port, auth=auth, share=share, i18n=I18N,
                      theme=gr.themes.Soft(primary_hue="indigo"), css=CSS, prevent_thread_lock=prevent_thread_lock,
                      show_error=False, footer_links=["api", "settings"])
    return app

"""The Gradio app: nine tabs (Road, Model, Data, Train, Reward, Chat, Compare, Lens, Export) and the public API endpoints.

Layout first, wiring after. Every handler is a plain function of plain values bound to the workspace;
per-visitor state lives in components, never in module globals.
"""

from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path

import gradio as gr
from gradio import FileData

from pipelines import api
from pipelines.errors import StudioError
from pipelines.paths import check_apart_from_uploads
from studio.banner import storage_banner
from studio.choices import refresh_checkpoint_choices, refresh_dataset_choices
from studio.errors import log_errors_in, shows_errors
from studio.i18n import I18N, ChosenLanguageFirst, language_picker, t
from studio import account, identity
from studio.identity import in_workspace
from studio.tabs import chat, compare, data, export, lens, model, reward, road, train

CSS = """
.studio-header h1 { margin-bottom: 0; }
.studio-header p { margin-top: 4px; opacity: .8; }
#studio-language { align-self: flex-start; margin-top: 12px; }
footer { opacity: .8; }
.run-log textarea { font-family: ui-monospace, monospace; font-size: 12px; }
/* Tables one reads (probe answers, RL samples, runs): headers on one line, long text wrapped inside its column. */
.reading-table th, .reading-table th * { white-space: nowrap; }
.reading-table td, .reading-table td * { white-space: pre-wrap; overflow-wrap: anywhere; }
"""


def build_app(workspace: Path, per_user: bool = False, sandboxes: bool = False,
              admins: frozenset[str] = frozenset()) -> gr.Blocks:
    """The app on `workspace`: the one user's, or with `per_user` the server's root, under which every user has
    their own (studio/identity.py; `sandboxes`: anonymous visitors get one each)."""
    workspace = Path(workspace).resolve()
    check_apart_from_uploads(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    log_errors_in(workspace)
    identity.configure(identity.Deployment(workspace, per_user, sandboxes, frozenset(admins)))
    # What the page holds before a visitor's own choices arrive (on load, on a tab's select): on a shared server
    # an empty workspace, so that nobody's runs and datasets are written into everyone's page.
    page = workspace / ".page" if per_user else workspace
    with gr.Blocks(title="Alignment Studio") as app:
        with gr.Row(elem_classes="studio-header", equal_height=False):
            with gr.Column(scale=1):
                gr.Markdown(t("title"))
                gr.Markdown(t("subtitle"))
            if per_user:
                account.build(app)
            language_picker(app)
        storage_banner(workspace)   # on a Space without a volume: what visitors make is lost on restart
        with gr.Tabs(selected="train") as tabs:
            road_tab = road.build(page)
            model_tab = model.build(page)
            data_tab = data.build(page)
            train_model, train_dataset, train_run, runs_table = train.build(page)
            reward.build(page)
            chat.build(page)
            compare_tab = compare.build(page)
            lens.build(page)
            export.build(page)
        road_tab.compare.click(in_workspace(road.compare_clicked, tabs, compare_tab), [road_tab.road],
                               road.compare_outputs(tabs, compare_tab), api_visibility="private")
        # Choices made on the Model and Data tabs carry over to the training form only when asked: Use in Train.
        model_tab.use_in_train.click(shows_errors(train.use_model), [model_tab.model], [train_model], api_visibility="private")
        data_tab.use_in_train.click(in_workspace(train.use_dataset), [data_tab.dataset], [train_dataset],
                                    api_visibility="private")
        # The page holds nothing the disk does not: each visit re-reads runs, checkpoints and datasets.
        app.load(in_workspace(refresh_checkpoint_choices), [train_model], [train_model], api_visibility="private")
        app.load(in_workspace(refresh_dataset_choices), [train_dataset], [train_dataset], api_visibility="private")
        app.load(in_workspace(train.refresh_runs), [train_run], [train_run, runs_table],
                 api_visibility="private")
        app.load(in_workspace(road.refresh_roads), [road_tab.road], [road_tab.road], api_visibility="private")
        register_api()
    return app


def register_api() -> None:
    """The public API (see README): every @endpoint of pipelines/api.py under its own name, acting in the caller's
    workspace, with its own signature and docstring. Names and shapes do not change; later issues only add."""
    for fn in api.ENDPOINTS:
        gr.api(shows_errors(bound_endpoint(fn)), api_name=fn.__name__)


# Arguments that are files the client uploads (gradio_client.handle_file): typed FileData for the client, and
# checked on the server to be an upload before the api function sees their path.
FILE_ARGUMENTS = {"upload_dataset": "file", "upload_texts": "files"}   # upload_texts: a list of files
# Results that are files the client downloads: typed FileData, and copied where Gradio serves files from (its temp
# folder; the workspace is not among the paths it may serve).
FILE_RESULTS = {"export_dataset"}


def bound_endpoint(fn):
    """`fn(workspace, ...)` as `endpoint(...)` in the caller's workspace: the same name, docstring and parameters
    less `workspace`, their type hints resolved (gr.api reads them for the API page and gradio_client)."""
    hints = typing.get_type_hints(fn)
    file_argument = FILE_ARGUMENTS.get(fn.__name__)
    many = bool(file_argument) and typing.get_origin(hints[file_argument]) is list
    if file_argument:
        hints[file_argument] = list[FileData] if many else FileData
    returns_file = fn.__name__ in FILE_RESULTS
    if returns_file:
        hints["return"] = FileData
    parameters = [parameter.replace(annotation=hints[parameter.name])
                  for parameter in list(inspect.signature(fn).parameters.values())[1:]]
    signature = inspect.Signature(parameters, return_annotation=hints.get("return", inspect.Signature.empty))

    @functools.wraps(fn)
    def call(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs).arguments
        if file_argument in arguments:
            value = arguments[file_argument]
            arguments[file_argument] = ([uploaded_path(item) for item in (value if isinstance(value, list) else [value])]
                                        if many else uploaded_path(value))
        result = fn(identity.current_workspace(), **arguments)
        return served_file(result) if returns_file else result

    del call.__wrapped__   # gr.api must see the signature below, not fn's
    call.__signature__ = signature
    call.__annotations__ = {name: hint for name, hint in hints.items() if name != "workspace"}
    return call


def served_file(path: str) -> FileData:
    """A copy of a workspace file that Gradio may send to the client, under its own name."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="studio-download-"))
    return FileData(path=str(shutil.copy(path, folder / Path(path).name)), orig_name=Path(path).name)


def uploaded_path(file) -> str:
    """The server-side path of a file the client uploaded. Gradio checks paths only of payloads marked as files,
    so a bare {"path": ...} must not name any other file on this machine."""
    from gradio.utils import get_upload_folder

    if not isinstance(file, dict) or not isinstance(file.get("path"), str):
        raise StudioError("api.send_the_file")
    path = Path(file["path"]).resolve()
    if not path.is_relative_to(Path(get_upload_folder()).resolve()):
        raise StudioError("api.not_uploaded")
    return str(path)


def launch_app(workspace: Path, host: str = "127.0.0.1", port: int = 7860, logins: dict[str, str] | None = None,
               share: bool = False, per_user: bool = False, sandboxes: bool = False,
               admins: frozenset[str] = frozenset(), prevent_thread_lock: bool = False) -> gr.Blocks:
    """Serve the app; returns the Blocks (its `local_url` says where) once the server is up. `logins`: user →
    password or hash (studio/logins.py); the rest as build_app."""
    from pipelines.run_queue import dispatch
    from starlette.middleware import Middleware

    from pipelines.users import expire_sandboxes
    from studio.identity import SandboxCookie
    from studio.logins import checker

    app = build_app(workspace, per_user, sandboxes, admins)
    if sandboxes:
        expire_sandboxes(Path(workspace).resolve())
    dispatch(workspace)   # runs that were waiting when the app last stopped start again, in their order
    app.queue(default_concurrency_limit=4)
    # show_error off: a gr.Error (a user's mistake, or shows_errors' pointer to the server log) shows all the same;
    # the text of any other exception, from a handler shows_errors does not wrap, stays on the server.
    middleware = [Middleware(ChosenLanguageFirst)] + [Middleware(SandboxCookie)] * sandboxes
    app.launch(server_name=host, server_port=port, auth=checker(logins) if logins else None, share=share, i18n=I18N,
                      theme=gr.themes.Soft(primary_hue="indigo"), css=CSS, prevent_thread_lock=prevent_thread_lock,
                      show_error=False, footer_links=["api"],   # the header's language picker replaces Settings
                      app_kwargs={"middleware": middleware})
    return app

"""Data tab: pick a dataset and see it as the model sees it; bring data in (file, Hub, a table typed in the app);
make smaller, cleaner datasets from it (deduplicate, filter by length, split off an eval set).

What is picked here stays here until "Use in Train" hands it to the training form."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.config import BUNDLED_MODEL_ID, TrainSettings
from pipelines.data.files import SPLITS, TEXT_SUFFIXES
from pipelines.data.table import TABLE_COLUMNS
from pipelines.messages import has_message, text
from studio import hub_form
from studio.charts import length_histogram
from studio.choices import checkpoint_choices, dataset_choices, dataset_names
from studio.form import on
from studio.i18n import t
from studio.identity import for_visitor, in_workspace

FILE_TYPES = [".json", ".jsonl", ".csv", ".tsv", ".parquet", *TEXT_SUFFIXES]
MAX_ERRORS_SHOWN = 20


@dataclass
class DataTab:
    dataset: gr.Dropdown
    use_in_train: gr.Button


def build(workspace: Path) -> DataTab:
    with gr.Tab(t("tab.data"), id="data") as tab:
        with gr.Row(equal_height=True):
            dataset = gr.Dropdown(choices=dataset_names(workspace), value="alpaca-en-sample", label=t("data.pick"), scale=3)
            use_in_train = gr.Button(t("use_in_train"), scale=1)
            model = gr.Dropdown(choices=api.list_checkpoints(workspace), value=BUNDLED_MODEL_ID, allow_custom_value=True,
                                label=t("data.preview_model"), scale=3)
            max_length = gr.Number(value=TrainSettings.max_length, precision=0, minimum=1, label=t("train.max_length"), scale=1)
        with gr.Tabs():
            with gr.Tab(t("data.look")):
                with gr.Row():
                    rows = gr.Slider(1, 20, value=3, step=1, label=t("data.preview_rows"), scale=3)
                    show = gr.Button(t("data.preview"), variant="primary", scale=2)
                    measure = gr.Button(t("data.stats"), scale=2)
                stats = gr.Markdown()
                histogram = gr.Plot(show_label=False)
                preview = gr.HTML()
                with gr.Row():
                    download_jsonl = gr.Button(t("data.download_jsonl"), size="sm")
                    download_parquet = gr.Button(t("data.download_parquet"), size="sm")
                downloaded = gr.File(label=t("data.download_file"), interactive=False, visible=False)
                with gr.Accordion(t("hub.title"), open=False):
                    gr.Markdown(t("data.push_intro"))
                    push_format = gr.Radio(choices=[("JSONL", "jsonl"), ("Parquet", "parquet")], value="parquet",
                                           label=t("data.push_format"))
                    hub = hub_form.build_form("your-name/my-dataset")
            with gr.Tab(t("data.add")):
                with gr.Row():
                    with gr.Column():
                        upload = gr.File(label=t("data.upload"), file_types=FILE_TYPES, type="filepath",
                                         file_count="multiple")   # several documents make one text dataset
                        text_split = gr.Radio(choices=[(t(f"data.split.{s}"), s) for s in SPLITS], value="file",
                                              label=t("data.text_split"))
                        save_file = gr.Button(t("data.save"), variant="primary")
                    with gr.Column():
                        hub_id = gr.Textbox(label=t("data.hub_id"), placeholder="Anthropic/hh-rlhf")
                        with gr.Row():
                            hub_config = gr.Textbox(label=t("data.hub_config"), placeholder="default")
                            hub_split = gr.Textbox(label=t("data.hub_split"), value="train")
                            hub_rows = gr.Number(label=t("data.hub_rows"), value=10_000, precision=0, minimum=1)
                        save_hub = gr.Button(t("data.hub_import"), variant="primary")
                with gr.Row():
                    name = gr.Textbox(label=t("data.upload_name"), placeholder="my-dataset")
                    columns = gr.Textbox(label=t("data.columns"), placeholder="instruction=question, output=answer")
                    with gr.Column():
                        drop_bad = gr.Checkbox(label=t("data.drop_bad"), value=False)
                        replace = gr.Checkbox(label=t("data.replace"), value=False)
                add_report = gr.Markdown()
            with gr.Tab(t("data.table")):
                with gr.Row():
                    kind = gr.Dropdown(choices=[(t(f"data.kind.{k}"), k) for k in TABLE_COLUMNS], value="instruction",
                                       label=t("data.kind"), scale=2)
                    load_table = gr.Button(t("data.table_load"), scale=2)
                    new_table = gr.Button(t("data.table_new"), scale=1)
                table = gr.Dataframe(**{k: v for k, v in empty_table("instruction").items() if k != "__type__"}, type="array",
                                     interactive=True, wrap=True, show_row_numbers=True, max_height=480, label=t("data.table_hint"))
                with gr.Row():
                    table_name = gr.Textbox(label=t("data.name"), placeholder="my-typed-data")
                    with gr.Column():
                        table_drop_bad = gr.Checkbox(label=t("data.drop_bad"), value=False)
                        table_replace = gr.Checkbox(label=t("data.replace"), value=False)
                    save_rows = gr.Button(t("data.save"), variant="primary")
                table_report = gr.Markdown()
            with gr.Tab(t("data.tools")):
                gr.Markdown(t("data.tools_intro"))
                tool_name = gr.Textbox(label=t("data.new_name"), placeholder="my-dataset-clean")
                with gr.Row():
                    with gr.Column():
                        near = gr.Checkbox(label=t("data.near"), value=True)
                        threshold = gr.Slider(0.5, 1.0, value=0.8, step=0.05, label=t("data.threshold"))
                        dedupe = gr.Button(t("data.dedupe"))
                    with gr.Column():
                        with gr.Row():
                            min_tokens = gr.Number(label=t("data.min_tokens"), value=0, precision=0, minimum=0)
                            max_tokens = gr.Number(label=t("data.max_tokens"), value=TrainSettings.max_length, precision=0, minimum=1)
                        length_filter = gr.Button(t("data.filter"))
                    with gr.Column():
                        eval_fraction = gr.Slider(0.01, 0.5, value=0.1, step=0.01, label=t("data.eval_fraction"))
                        split_seed = gr.Number(label=t("train.seed"), value=42, precision=0)
                        split = gr.Button(t("data.split"))
                tool_report = gr.Markdown()

    quiet = {"api_visibility": "private", "show_progress": "hidden"}
    tab.select(in_workspace(dataset_choices), None, [dataset], **quiet)
    tab.select(in_workspace(checkpoint_choices), None, [model], **quiet)
    on(show.click, for_visitor(preview_html), [preview], dataset=dataset, model=model, n=rows)
    on(download_jsonl.click, for_visitor(download, format="jsonl"), [downloaded], dataset=dataset)
    on(download_parquet.click, for_visitor(download, format="parquet"), [downloaded], dataset=dataset)
    hub_form.wire(hub, tab)
    on(hub.push.click, for_visitor(start_push), [hub.panel.job, hub.panel.timer], dataset=dataset, repo_id=hub.repo,
       format=push_format, private=hub.private, token=hub.token)
    on(measure.click, for_visitor(length_report), [stats, histogram], dataset=dataset, model=model,
       max_length=max_length)
    adding = {"name": name, "drop_bad_rows": drop_bad, "columns": columns, "replace": replace}
    on(save_file.click, for_visitor(save_file_dataset), [add_report, dataset], file=upload, split=text_split, **adding)
    on(save_hub.click, for_visitor(save_hub_dataset), [add_report, dataset], repo_id=hub_id, config=hub_config,
       split=hub_split, max_rows=hub_rows, **adding)
    on(load_table.click, for_visitor(table_of_dataset), [table, kind, table_name], dataset=dataset)
    on(new_table.click, empty_table, [table], kind=kind)
    on(kind.input, empty_table, [table], kind=kind)
    on(save_rows.click, for_visitor(save_table_dataset), [table_report, dataset], kind=kind, rows=table,
       name=table_name, drop_bad_rows=table_drop_bad, replace=table_replace)
    on(dedupe.click, for_visitor(deduplicate), [tool_report, dataset], dataset=dataset, new_name=tool_name,
       near=near, threshold=threshold)
    on(length_filter.click, for_visitor(filter_by_length), [tool_report, dataset], dataset=dataset,
       new_name=tool_name, model=model, min_tokens=min_tokens, max_tokens=max_tokens)
    on(split.click, for_visitor(split_off_eval), [tool_report, dataset], dataset=dataset, new_name=tool_name,
       eval_fraction=eval_fraction, seed=split_seed)
    return DataTab(dataset=dataset, use_in_train=use_in_train)


def rows_text(n: int, kind: str = "") -> str:
    """n rows, or for a corpus n documents (what its rows are)."""
    if kind == "text":
        return text("data.one_document") if n == 1 else text("data.documents", rows=n)
    return text("data.one_row") if n == 1 else text("data.rows", rows=n)


def bad_rows_text(n: int) -> str:
    return text("data.one_bad_row") if n == 1 else text("data.bad_rows", rows=n)


def what_it_holds(kind: str, format_name: str | None) -> str:
    """The kind of rows and, where it says more, the source format they were read from: "preference pairs · read as
    HH-RLHF" rather than "preference · preference". A format without a catalog name (one the data pipeline
    names itself, like HH-RLHF) is shown as it is."""
    label = text(f"data.kind.{kind}") if has_message(f"data.kind.{kind}") else kind
    if not format_name or format_name in (kind, "unknown"):
        return label
    named = text(f"data.format.{format_name}") if has_message(f"data.format.{format_name}") else format_name
    return f"{label} · {text('data.in_format', format=named)}"


LOSS_STYLE = "background:#c7d2fe;border-radius:3px"   # tokens the model is trained to produce


def preview_html(workspace: Path, dataset: str, model: str, n: int) -> str:
    """Each row as the model sees it; highlighted text carries the loss, the rest is context."""
    blocks = []
    for index, row in enumerate(api.preview_dataset(workspace, dataset, model, int(n)), start=1):
        sides = [(text("data.preview_chosen"), row), (text("data.preview_rejected"), row["rejected"])] \
            if row.get("rejected") else [("", row)]   # a preference pair: both of its answers
        if row.get("truncated"):   # a long document: only its beginning travels to the page
            sides = [(text("data.preview_truncated", shown=len(row["text"]), characters=row["characters"]), row)]
        for side, shown in sides:
            body = "".join(f"<span style='{LOSS_STYLE}'>{html.escape(s['text'])}</span>" if s["loss"]
                           else html.escape(s["text"]) for s in shown["segments"])
            head = html.escape(text("data.preview_head", tokens=shown["tokens"], loss_tokens=shown["loss_tokens"]))
            label = f" · <b>{html.escape(side)}</b>" if side else ""
            blocks.append(f"<details open><summary><b>#{index}</b>{label} · {head}</summary>"
                          f"<pre style='white-space:pre-wrap'>{body}</pre></details>")
    return "\n".join(blocks)


def length_report(workspace: Path, dataset: str, model: str, max_length: int):
    stats = api.dataset_stats(workspace, dataset, model, int(max_length or TrainSettings.max_length))
    rows = f"**{rows_text(stats['rows'], stats['kind'])}**"
    if stats["measured_rows"] < stats["rows"]:
        rows += f" ({text('data.measured_on', rows=rows_text(stats['measured_rows'], stats['kind']))})"
    lengths = text("data.token_lengths", mean=stats["mean_tokens"], median=stats["median_tokens"], max=stats["max_tokens"])
    lines = [f"{rows} · {what_it_holds(stats['kind'], stats.get('format'))} · {lengths}"]
    if stats["kind"] == "text":   # what a corpus costs in this tokenizer: Korean far more per character than English
        lines.append("\n" + text("data.corpus_stats", documents=stats["documents"], tokens=stats["total_tokens"],
                          characters=stats["characters"], per_char=stats["tokens_per_char"], blocks=stats["blocks"],
                          max_length=stats["max_length"]))
    lines += [f"- ⚠️ {warning}" for warning in stats["warnings"]]
    return "\n".join(lines), length_histogram(stats["lengths"], stats["max_length"], dataset, stats["kind"] == "text")


def check_report(report: dict) -> str:
    """What the check found, errors first (row, field, message), in the words a person acts on."""
    errors = report["errors"]
    bad = bad_rows_text(len(errors))
    if report.get("saved"):
        what = what_it_holds(report["kind"], report.get("format"))
        if errors:
            what += f" · {text('data.dropped', bad=bad)}"
        if len(report.get("files") or []) > 1:
            what += f" · {text('data.from_files', count=len(report['files']))}"
        lines = [text("data.saved", name=report["name"], rows=rows_text(report["rows"], report["kind"]), what=what)]
    elif errors:
        lines = [text("data.refused_fix", bad=bad, good=rows_text(report["rows"])) if report["rows"]
                 else text("data.refused_none_usable", bad=bad), "",
                 f"| {text('data.col.row')} | {text('data.col.field')} | {text('data.col.problem')} |", "|---|---|---|"]
        lines += [f"| {e['row']} | `{e['field']}` | {html.escape(e['message'])} |" for e in errors[:MAX_ERRORS_SHOWN]]
        if len(errors) > MAX_ERRORS_SHOWN:
            lines.append(f"| … | | {text('data.more_problems', count=len(errors) - MAX_ERRORS_SHOWN)} |")
    else:
        lines = [text("data.no_usable_rows")]
    if report.get("warnings"):
        lines += [""] + [f"- ⚠️ {warning}" for warning in report["warnings"]]
    return "\n".join(lines)


def _saved(workspace: Path, report: dict):
    names = dataset_names(workspace)
    pick = gr.update(choices=names, value=report["name"]) if report.get("saved") else gr.update(choices=names)
    return check_report(report), pick


def save_file_dataset(workspace: Path, file: list[str] | str | None, name: str, drop_bad_rows: bool, columns: str,
                      replace: bool, split: str = "file"):
    """One data file as its rows say; text files, or several files, as one text dataset of their documents."""
    files = [f for f in (file if isinstance(file, list) else [file]) if f]
    name = (name or "").strip()
    if len(files) == 1 and Path(files[0]).suffix.lower() not in TEXT_SUFFIXES:
        return _saved(workspace, api.upload_dataset(workspace, files[0], name, drop_bad_rows, columns, replace))
    return _saved(workspace, api.upload_texts(workspace, files, name, split or "file", drop_bad_rows, replace))


def save_hub_dataset(workspace: Path, repo_id: str, config: str, split: str, max_rows: int, name: str,
                     drop_bad_rows: bool, columns: str, replace: bool):
    name = (name or "").strip() or (repo_id or "").strip().split("/")[-1]
    return _saved(workspace, api.import_hub_dataset(workspace, repo_id, config, split, name, int(max_rows or 1),
                                                    drop_bad_rows, columns, replace))


def save_table_dataset(workspace: Path, kind: str, rows: list[list], name: str, drop_bad_rows: bool, replace: bool):
    return _saved(workspace, api.save_table(workspace, kind, rows, (name or "").strip(), drop_bad_rows, replace))


def table_update(columns: list[str], rows: list[list]):
    """New columns and rows; widths are set every time, or long answers push the other columns out of sight."""
    widths = {"instruction": 3, "input": 2, "output": 4, "system": 1, "prompt": 3, "chosen": 4, "rejected": 4,
              "completion": 5, "label": 1, "text": 1}
    total = sum(widths[c] for c in columns)
    return gr.update(value={"headers": columns, "data": rows},
                     column_widths=[f"{100 * widths[c] / total:.0f}%" for c in columns])


def empty_table(kind: str):
    columns = list(TABLE_COLUMNS[kind])
    return table_update(columns, [[""] * len(columns)])


def table_of_dataset(workspace: Path, dataset: str):
    """Load a dataset into the table; saving under the same name updates a saved dataset (a sample gets a new name)."""
    table = api.dataset_table(workspace, dataset)
    saved = {d["name"] for d in api.list_datasets(workspace) if d["source"] != "sample"}
    return (table_update(table["columns"], table["rows"]), table["kind"],
            dataset if dataset in saved else "")


def _made(workspace: Path, report_text: str, new_name: str):
    """A tool's report, and the dataset it made picked (offered among every dataset)."""
    return report_text, gr.update(choices=dataset_names(workspace), value=new_name)


def deduplicate(workspace: Path, dataset: str, new_name: str, near: bool, threshold: float):
    new_name = (new_name or "").strip()
    report = api.deduplicate_dataset(workspace, dataset, new_name, near, threshold)
    lines = [text("data.deduplicated", name=new_name, kept=report["rows_out"], total=report["rows_in"],
                  exact=report["exact_removed"], near=report["near_removed"])]
    lines += [f"- {text('data.duplicate_of', row=e['removed_row'], copy=e['copy_of_row'])}" for e in report["examples"]]
    return _made(workspace, "\n".join(lines), new_name)


def filter_by_length(workspace: Path, dataset: str, new_name: str, model: str, min_tokens: int, max_tokens: int):
    new_name = (new_name or "").strip()
    report = api.filter_dataset(workspace, dataset, new_name, model, int(min_tokens or 0),
                                int(max_tokens) if max_tokens else None)
    counts = {"name": new_name, "kept": report["rows_out"], "total": report["rows_in"], "low": report["min_tokens"]}
    line = (text("data.filtered", high=report["max_tokens"], **counts) if report["max_tokens"]
            else text("data.filtered_no_max", **counts))
    return _made(workspace, line, new_name)


def split_off_eval(workspace: Path, dataset: str, new_name: str, eval_fraction: float, seed: int):
    report = api.split_dataset(workspace, dataset, (new_name or "").strip(), eval_fraction, int(seed or 0))
    line = text("data.split_into", train=report["train"], train_rows=rows_text(report["train_rows"]),
                eval=report["eval"], eval_rows=rows_text(report["eval_rows"]))
    return _made(workspace, line, report["train"])


def download(workspace: Path, dataset: str, format: str):
    """The dataset exported in TRL's columns, copied where Gradio serves downloads from."""
    from studio.app import served_file   # here: the app imports this tab

    return gr.update(value=served_file(api.export_dataset(workspace, dataset, format)).path, visible=True)


def start_push(workspace: Path, dataset: str, repo_id: str, format: str, private: bool, token: str):
    """Export the dataset afresh (the latest votes included), then push its folder as a job followed below."""
    folder = Path(api.export_dataset(workspace, dataset, format)).resolve().parent
    return hub_form.start(workspace, folder.relative_to(Path(workspace).resolve()).as_posix(), repo_id, private, token)

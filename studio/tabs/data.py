"""Data tab: pick a dataset and see it as the model sees it; bring data in (file, Hub, a table typed in the app);
make smaller, cleaner datasets from it (deduplicate, filter by length, split off an eval set)."""

from __future__ import annotations

import html
from functools import partial
from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.config import BUNDLED_MODEL_ID, TrainSettings
from pipelines.data.table import TABLE_COLUMNS
from studio.charts import length_histogram
from studio.choices import dataset_names, refresh_checkpoint_choices, refresh_dataset_choices
from studio.errors import shows_errors
from studio.i18n import t

FILE_TYPES = [".json", ".jsonl", ".csv", ".tsv", ".parquet"]
MAX_ERRORS_SHOWN = 20


def build(workspace: Path) -> gr.Dropdown:
    with gr.Tab(t("tab.data"), id="data") as tab:
        with gr.Row():
            dataset = gr.Dropdown(choices=dataset_names(workspace), value="alpaca-en-sample", label=t("data.pick"), scale=3)
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
            with gr.Tab(t("data.add")):
                with gr.Row():
                    with gr.Column():
                        upload = gr.File(label=t("data.upload"), file_types=FILE_TYPES, type="filepath")
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
                    kind = gr.Dropdown(choices=list(TABLE_COLUMNS), value="instruction", label=t("data.kind"), scale=2)
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

    tab.select(partial(refresh_dataset_choices, workspace), [dataset], [dataset], api_visibility="private")
    tab.select(partial(refresh_checkpoint_choices, workspace), [model], [model], api_visibility="private")
    show.click(shows_errors(partial(preview_html, workspace)), [dataset, model, rows], [preview], api_visibility="private")
    measure.click(shows_errors(partial(length_report, workspace)), [dataset, model, max_length], [stats, histogram],
                  api_visibility="private")
    save_file.click(shows_errors(partial(save_file_dataset, workspace)), [upload, name, drop_bad, columns, replace],
                    [add_report, dataset], api_visibility="private")
    save_hub.click(shows_errors(partial(save_hub_dataset, workspace)),
                   [hub_id, hub_config, hub_split, hub_rows, name, drop_bad, columns, replace], [add_report, dataset],
                   api_visibility="private")
    load_table.click(shows_errors(partial(table_of_dataset, workspace)), [dataset], [table, kind, table_name],
                     api_visibility="private")
    new_table.click(empty_table, [kind], [table], api_visibility="private")
    kind.input(empty_table, [kind], [table], api_visibility="private")
    save_rows.click(shows_errors(partial(save_table_dataset, workspace)), [kind, table, table_name, table_drop_bad, table_replace],
                    [table_report, dataset], api_visibility="private")
    dedupe.click(shows_errors(partial(run_tool, workspace, "dedupe")), [dataset, tool_name, near, threshold],
                 [tool_report, dataset], api_visibility="private")
    length_filter.click(shows_errors(partial(run_tool, workspace, "filter")), [dataset, tool_name, model, min_tokens, max_tokens],
                        [tool_report, dataset], api_visibility="private")
    split.click(shows_errors(partial(run_tool, workspace, "split")), [dataset, tool_name, eval_fraction, split_seed],
                [tool_report, dataset], api_visibility="private")
    return dataset


LOSS_STYLE = "background:#c7d2fe;border-radius:3px"   # tokens the model is trained to produce


def preview_html(workspace: Path, dataset: str, model: str, n: int) -> str:
    """Each row as the model sees it; highlighted text carries the loss, the rest is context."""
    blocks = []
    for index, row in enumerate(api.preview_dataset(workspace, dataset, model, int(n)), start=1):
        body = "".join(f"<span style='{LOSS_STYLE}'>{html.escape(s['text'])}</span>" if s["loss"] else html.escape(s["text"])
                       for s in row["segments"])
        blocks.append(f"<details open><summary><b>#{index}</b> · {row['tokens']} tokens · "
                      f"{row['loss_tokens']} with loss</summary><pre style='white-space:pre-wrap'>{body}</pre></details>")
    return "\n".join(blocks)


def length_report(workspace: Path, dataset: str, model: str, max_length: int):
    stats = api.dataset_stats(workspace, dataset, model, int(max_length or TrainSettings.max_length))
    sampled = f" (measured on {stats['measured_rows']})" if stats["measured_rows"] < stats["rows"] else ""
    lines = [f"**{stats['rows']} rows**{sampled} · {stats['kind']} · {stats['format']} · tokens: mean {stats['mean_tokens']}, "
             f"median {stats['median_tokens']}, max {stats['max_tokens']}"]
    lines += [f"- ⚠️ {warning}" for warning in stats["warnings"]]
    return "\n".join(lines), length_histogram(stats["lengths"], stats["max_length"], dataset)


def check_report(report: dict) -> str:
    """What the check found, errors first (row, field, message), in the words a person acts on."""
    bad = f"{len(report['errors'])} bad row{'' if len(report['errors']) == 1 else 's'}"
    if report.get("saved"):
        dropped = f" · {bad} dropped" if report["errors"] else ""
        lines = [f"✅ **{report['name']}** · {report['rows']} rows · {report['kind']} · {report['format']}{dropped}"]
    elif report["errors"]:
        advice = (f"fix them, or tick “drop bad rows” to save the {report['rows']} good ones" if report["rows"]
                  else "no row is usable as it is")
        lines = [f"❌ {bad}, nothing saved: {advice}.", "", "| row | field | problem |", "|---|---|---|"]
        lines += [f"| {e['row']} | `{e['field']}` | {html.escape(e['message'])} |" for e in report["errors"][:MAX_ERRORS_SHOWN]]
        if len(report["errors"]) > MAX_ERRORS_SHOWN:
            lines.append(f"| … | | {len(report['errors']) - MAX_ERRORS_SHOWN} more |")
    else:
        lines = ["❌ No usable rows, nothing saved."]
    if report.get("warnings"):
        lines += [""] + [f"- ⚠️ {warning}" for warning in report["warnings"]]
    return "\n".join(lines)


def _saved(workspace: Path, report: dict):
    names = dataset_names(workspace)
    pick = gr.update(choices=names, value=report["name"]) if report.get("saved") else gr.update(choices=names)
    return check_report(report), pick


def save_file_dataset(workspace: Path, file: str | None, name: str, drop_bad_rows: bool, columns: str, replace: bool):
    return _saved(workspace, api.upload_dataset(workspace, file, (name or "").strip(), drop_bad_rows, columns, replace))


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
              "completion": 5, "label": 1}
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


def run_tool(workspace: Path, tool: str, dataset: str, new_name: str, *settings):
    new_name = (new_name or "").strip()
    if tool == "dedupe":
        report = api.deduplicate_dataset(workspace, dataset, new_name, *settings)
        text = (f"✅ **{new_name}** · {report['rows_out']} of {report['rows_in']} rows kept · "
                f"{report['exact_removed']} exact and {report['near_removed']} near duplicates removed")
        text += "".join(f"\n- row {e['removed_row']} ≈ row {e['copy_of_row']}" for e in report["examples"])
    elif tool == "filter":
        model, low, high = settings
        report = api.filter_dataset(workspace, dataset, new_name, model, int(low or 0), int(high) if high else None)
        upper = f"{report['max_tokens']}" if report["max_tokens"] else "any number of"
        text = f"✅ **{new_name}** · {report['rows_out']} of {report['rows_in']} rows between {report['min_tokens']} and {upper} tokens"
    else:
        fraction, seed = settings
        report = api.split_dataset(workspace, dataset, new_name, fraction, int(seed or 0))
        text = f"✅ **{report['train']}** · {report['train_rows']} rows  ·  **{report['eval']}** · {report['eval_rows']} rows"
        new_name = report["train"]
    return text, gr.update(choices=dataset_names(workspace), value=new_name)

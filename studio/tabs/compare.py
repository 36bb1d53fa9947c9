"""Compare tab: one prompt, 2–4 checkpoints answering side by side (streamed, one batched pass per base), votes that
become preference data, blind mode, and an evaluation of checkpoints on a prompt set.

Blind mode shuffles which checkpoint answers in which column; the mapping lives in a gr.State (kept on the server,
never sent to the browser) until the vote reveals it.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from pipelines import api
from pipelines.errors import StudioError
from pipelines.messages import text
from studio import job_view
from studio.leaderboard_view import show_board
from studio.charts import mean_score_bars
from studio.choices import dataset_names
from studio.errors import shows_errors
from studio.i18n import t
from studio.tabs.chat import shown_reply, without_cut_marks
from studio.identity import current_workspace, in_workspace, visitor

MAX_COLUMNS = 4
LETTERS = "ABCD"


@dataclass
class CompareTab:
    """What other tabs fill in: the Road tab opens Compare with its checkpoints and held-out prompts."""
    count: gr.Slider
    pickers: list
    labels: list
    prompt: gr.Textbox
    eval_prompts: gr.Textbox


def build(workspace: Path) -> CompareTab:
    checkpoints = api.list_checkpoints(workspace, "chat")
    with gr.Tab(t("tab.compare"), id="compare") as tab:
        with gr.Row():
            count = gr.Slider(2, MAX_COLUMNS, value=2, step=1, label=t("compare.columns"), scale=2)
            blind = gr.Checkbox(label=t("compare.blind"), value=False, scale=1)
            free = gr.Button(t("compare.free"), scale=1, size="sm")
        with gr.Accordion(t("chat.settings"), open=False):
            with gr.Row():
                max_new = gr.Slider(1, 1024, value=128, step=1, label=t("chat.max_new_tokens"))
                temperature = gr.Slider(0, 2, value=0, step=0.05, label=t("chat.temperature"))
                top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label=t("chat.top_p"))
                seed = gr.Number(value=0, precision=0, label=t("train.seed"))
            system = gr.Textbox(label=t("chat.system_prompt"), lines=1)
        pickers, labels, chatbots, overrides, columns = [], [], [], [], []
        with gr.Row():
            for index in range(MAX_COLUMNS):
                with gr.Column(visible=index < 2, min_width=240) as column:
                    pickers.append(gr.Dropdown(choices=checkpoints, value=_default(checkpoints, index),
                                               allow_custom_value=True, label=t("chat.checkpoint")))
                    labels.append(gr.Textbox(value=LETTERS[index], label=t("compare.label"), max_lines=1))
                    chatbots.append(gr.Chatbot(label=LETTERS[index], height=380))
                    overrides.append(gr.Textbox(label=t("compare.override"), placeholder='{"temperature": 0.7}', max_lines=1))
                columns.append(column)
        with gr.Row():
            prompt = gr.Textbox(label=t("chat.message"), placeholder=t("compare.placeholder"), scale=5, lines=2)
            send = gr.Button(t("chat.send"), variant="primary", scale=1)
            regenerate = gr.Button(t("compare.regenerate"), scale=1)
            clear = gr.Button(t("chat.clear"), scale=1)
        with gr.Row():
            votes = gr.Textbox(value="my-votes", label=t("compare.vote_dataset"), scale=2)
            a_better = gr.Button(t("compare.a_better"), scale=1)
            b_better = gr.Button(t("compare.b_better"), scale=1)
            tie = gr.Button(t("compare.tie"), scale=1)
            both_bad = gr.Button(t("compare.both_bad"), scale=1)
        with gr.Row():
            ranking = gr.Textbox(label=t("compare.ranking"), placeholder="B > A > C", scale=3)
            rank_vote = gr.Button(t("compare.rank_vote"), scale=1)
        vote_report = gr.Markdown()
        board = gr.Markdown()         # the leaderboard of the votes dataset, redrawn after each vote
        mapping = gr.State([])        # column → checkpoint of the last round (server-side only)
        asked = gr.State({})          # what the last round was asked with and answered (server-side only)
        with gr.Accordion(t("compare.evaluate"), open=False) as evaluation:
            score_by = gr.Radio([(t("compare.by_answers"), "answers"), (t("compare.by_loss"), "loss")],
                                value="answers", label=t("compare.score_by"))
            with gr.Row():
                eval_dataset = gr.Dropdown(choices=[""] + dataset_names(workspace), value="", allow_custom_value=True,
                                           label=t("compare.eval_dataset"), scale=2)
                eval_prompts = gr.Textbox(label=t("compare.eval_prompts"), lines=3, scale=3)
                scorer = gr.Textbox(label=t("compare.scorer"), placeholder="my-rm/final + rules.py", scale=2)
                eval_rules = gr.Textbox(label=t("compare.eval_rules"), placeholder="- {max_words: 80}", lines=2,
                                        scale=2)
            with gr.Row() as judging:
                eval_judge = gr.Textbox(label=t("compare.eval_judge"), placeholder=api.BUNDLED_MODEL_ID, scale=3)
                eval_reference = gr.Dropdown(choices=[""] + checkpoints, value="", allow_custom_value=True,
                                             label=t("compare.eval_reference"), scale=2)
            run_eval = gr.Button(t("compare.run_eval"), variant="primary")
            eval_panel = job_view.build_panel()
            eval_summary = gr.Markdown()
            eval_chart = gr.Plot(show_label=False)
            eval_table = gr.Dataframe(headers=_eval_headers(), interactive=False, wrap=True, column_widths=EVAL_WIDTHS,
                                      max_height=360)
            eval_files = gr.File(label=t("compare.export"), file_count="multiple", interactive=False)
        from studio.tabs import judge_view   # the AI judge (RLAIF) accordion: judges the last round in `asked`
        judge_view.build(workspace, asked)

    private = {"api_visibility": "private"}
    tab.select(in_workspace(refresh_pickers), pickers, pickers, **private)
    count.change(lambda n: [gr.update(visible=i < n) for i in range(MAX_COLUMNS)], [count], columns, **private)
    asking = dict(prompt=prompt, count=count, blind=blind, max_new=max_new, temperature=temperature, top_p=top_p,
                  seed=seed, system=system, previous=mapping)
    per_column = dict(pickers=pickers, overrides=overrides, labels=labels, chatbots=chatbots)

    def ask_clicked(values: dict):
        yield from ask(current_workspace(), **{name: values[component] for name, component in asking.items()},
                       **{name: [values[c] for c in components] for name, components in per_column.items()})

    send.click(shows_errors(ask_clicked), {*asking.values(), *pickers, *overrides, *labels, *chatbots},
               [*chatbots, mapping, asked, vote_report, prompt], **private)
    clear.click(lambda: [[] for _ in chatbots] + [[], {}], None, [*chatbots, mapping, asked], **private)
    again = dict(asked=asked, previous=mapping, blind=blind, labels=labels, chatbots=chatbots)

    def regenerate_clicked(values: dict):
        yield from regenerate_round(current_workspace(), **{name: [values[c] for c in part] if isinstance(part, list)
                                                            else values[part] for name, part in again.items()})

    regenerate.click(shows_errors(regenerate_clicked), {asked, mapping, blind, *labels, *chatbots},
                     [*chatbots, mapping, asked, vote_report, seed], **private)
    vote_inputs, vote_outputs = [votes, asked, mapping], [vote_report, asked, *chatbots]
    for button, ranks in ((a_better, "A>B"), (b_better, "B>A"), (tie, "A=B"), (both_bad, "bad")):
        button.click(in_workspace(cast_ranking, ranks), vote_inputs, vote_outputs, **private).success(
            in_workspace(show_board), [votes], [board], **private)
    rank_vote.click(in_workspace(cast_typed_ranking), [ranking, *vote_inputs], vote_outputs, **private).success(
        in_workspace(show_board), [votes], [board], **private)
    gr.on([votes.submit, votes.blur, tab.select], in_workspace(show_board), [votes], [board], **private)
    free.click(shows_errors(free_clicked), None, [vote_report], **private)
    # Evaluate: a job in its own process, followed by the panel's timer.
    eval_shown = [eval_panel.job, eval_panel.cancel, eval_panel.timer, eval_panel.progress, eval_summary, eval_chart,
                  eval_table, eval_files]

    def evaluate_clicked(values: dict):
        return start_evaluation(current_workspace(), values[eval_dataset], values[eval_prompts], values[scorer],
                                [values[p] for p in pickers[:int(values[count])]], values[max_new], values[eval_rules],
                                values[score_by], values[eval_judge], values[eval_reference])

    run_eval.click(shows_errors(evaluate_clicked), {eval_dataset, eval_prompts, scorer, eval_rules, score_by, eval_judge,
                                                    eval_reference, count, max_new,
                                                    *pickers},
                   [eval_panel.job, eval_panel.timer], **private)
    # Held-out loss reads the dataset's rows as they are: typed prompts, a scorer and rules do not apply to it.
    score_by.change(lambda by: [gr.update(visible=by == "answers")] * 4, [score_by],
                    [eval_prompts, scorer, eval_rules, judging], **private)
    evaluation.expand(in_workspace(job_view.refresh_jobs, EVAL_KINDS), [eval_panel.job], [eval_panel.job],
                      **private)
    eval_panel.job.change(in_workspace(show_evaluation), [eval_panel.job], eval_shown, **private)
    eval_panel.timer.tick(in_workspace(show_evaluation), [eval_panel.job], eval_shown, **private)
    eval_panel.cancel.click(in_workspace(job_view.cancel), [eval_panel.job], [eval_panel.progress],
                            **private)
    return CompareTab(count=count, pickers=pickers, labels=labels, prompt=prompt, eval_prompts=eval_prompts)


def free_clicked() -> str:
    """Free the cached models: on a shared server only those of the visitor's own runs, unless an admin asks."""
    mine = visitor()
    return text("compare.freed", count=api.free_models(None if mine.admin else mine.workspace))


def _default(checkpoints: list[str], index: int) -> str:
    return checkpoints[index] if index < len(checkpoints) else api.BUNDLED_MODEL_ID


def refresh_pickers(workspace: Path, *current):
    choices = api.list_checkpoints(workspace, "chat")
    return [gr.update(choices=choices, value=value) for value in current]


def _settings(max_new, temperature, top_p, seed, system="") -> dict:
    return {"max_new_tokens": int(max_new), "temperature": float(temperature), "top_p": float(top_p),
            "seed": int(seed or 0), "system_prompt": system or ""}


def ask(workspace: Path, prompt: str, count: int, blind: bool, max_new, temperature, top_p, seed, system: str,
        pickers: list[str], overrides: list[str], labels: list[str], chatbots: list[list], previous: list[str] | None = None):
    """Stream every column's answer (the picked checkpoint, its settings override, label and conversation so far,
    one list entry per column), then clear the message box. In blind mode the checkpoints are dealt to the columns
    in a random order, and the columns are labelled only A, B, …; which is which stays in the server-side state
    (`previous`: the last round's deal) until a vote."""
    count = int(count)
    previous = list(previous or [])
    chosen = list(pickers[:count])
    order = list(range(count))
    if blind and any(chatbots[c] for c in range(count)) and sorted(previous) == sorted(chosen):
        order = _same_deal(chosen, previous)   # a conversation goes on with the checkpoint that began it
    elif blind:
        random.shuffle(order)
    mapping = [chosen[i] for i in order]                       # column → checkpoint
    column_settings = [_override(overrides[i]) for i in order]
    histories = [without_cut_marks(chatbots[c]) for c in range(count)]
    shown = [list(chatbots[c] or []) + [{"role": "user", "content": prompt}, {"role": "assistant", "content": ""}]
             for c in range(count)]
    settings = _settings(max_new, temperature, top_p, seed, system)
    notice = api.compare_notice(workspace, mapping)
    if notice:
        gr.Warning(notice)
    for answers in api.compare_stream(workspace, mapping, prompt, settings, histories, column_settings):
        for column, answer in enumerate(answers):   # the settings passed compare_stream's checks by now
            limit = column_settings[column].get("max_new_tokens") or settings["max_new_tokens"]
            shown[column][-1] = {"role": "assistant", "content": shown_reply(answer, limit)}
        # A vote records exactly what was asked and answered here, whatever the sliders say by then.
        asked = {"prompt": prompt, "answers": [answer.text for answer in answers], "settings": settings,
                 "histories": histories, "column_settings": column_settings, "voted": False, "complete": False}
        columns = [gr.update(value=shown[c], label=LETTERS[c] if blind else f"{labels[c] or LETTERS[c]} · {mapping[c]}")
                   if c < count else gr.update() for c in range(MAX_COLUMNS)]
        yield (*columns, mapping, asked, "", "")
    # Only whole answers can be voted on: a vote cast while they stream would record half an answer.
    yield (*columns, mapping, {**asked, "complete": True}, "", "")


def regenerate_round(workspace: Path, asked: dict, previous: list[str], blind: bool, labels: list[str],
                     chatbots: list[list]):
    """Throw the last round away (its turn leaves every column) and ask its question again, with its settings and
    a new seed; in blind mode the columns are dealt anew, each keeping the conversation of its checkpoint. Streams
    the columns, the round's deal and what it asked, the vote report and the new seed."""
    if not previous or not asked:
        raise StudioError("compare.ask_first")
    count = len(previous)
    earlier = [list(chatbots[c] or [])[:-2] for c in range(count)]   # less the last question and its answer
    order = list(range(count))
    if blind:
        random.shuffle(order)
    settings = {**asked["settings"], "seed": random.randint(1, 2**31 - 1)}
    if not settings.get("temperature"):
        gr.Info(text("compare.regenerate_greedy"))
    overrides = [json.dumps(asked["column_settings"][i]) if asked["column_settings"][i] else "" for i in order]
    # The round's own checkpoints, settings and overrides: what the sliders and pickers say now is a new question.
    for update in ask(workspace, asked["prompt"], count, blind, settings["max_new_tokens"], settings["temperature"],
                      settings["top_p"], settings["seed"], settings["system_prompt"],
                      pickers=[previous[i] for i in order], overrides=overrides,
                      labels=[labels[i] for i in order] if not blind else list(labels),
                      chatbots=[earlier[i] for i in order] + [[]] * (MAX_COLUMNS - count),
                      previous=[previous[i] for i in order]):
        yield (*update[:-1], settings["seed"])


def _same_deal(chosen: list[str], previous: list[str]) -> list[int]:
    """The picker index behind each column, dealt as in the previous round."""
    unused, order = list(range(len(chosen))), []
    for name in previous:
        index = next(i for i in unused if chosen[i] == name)
        unused.remove(index)
        order.append(index)
    return order


def _override(text: str) -> dict:
    if not (text or "").strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise StudioError("compare.bad_override")
    return value


def _ranks_from(spec: str, count: int) -> list[int]:
    """'B > A > C' or 'A = B' → a rank per column (1 = best); 'bad' → all 0."""
    spec = (spec or "").replace(" ", "").upper()
    if spec == "BAD":
        return [0] * count
    ranks, rank = [0] * count, 0
    for group in spec.split(">"):
        rank += 1
        for letter in group.split("="):
            if len(letter) != 1 or letter not in LETTERS[:count]:
                raise StudioError("compare.bad_ranking", letters=", ".join(LETTERS[:count]))
            ranks[LETTERS.index(letter)] = rank
    return ranks


def cast_typed_ranking(workspace: Path, spec: str, dataset, asked: dict, mapping):
    return cast_ranking(workspace, spec, dataset, asked, mapping)


def cast_ranking(workspace: Path, spec: str, dataset, asked: dict, mapping):
    if not mapping or not asked:
        raise StudioError("compare.ask_first")
    if asked.get("voted"):
        raise StudioError("compare.already_voted")
    if not asked.get("complete", True):
        raise StudioError("compare.still_answering")
    count = len(mapping)
    result = api.vote(workspace, (dataset or "").strip(), asked["prompt"], asked["answers"], mapping,
                      _ranks_from(spec, count), asked["settings"], histories=asked["histories"],
                      column_settings=asked["column_settings"])
    reveal = " · ".join(f"{LETTERS[c]} = {mapping[c]}" for c in range(count))
    notes = [result["why_none"]] if result["why_none"] else []
    if result["skipped_empty"] and result["added_rows"]:
        notes.append(text("compare.skipped_empty", count=result["skipped_empty"]))
    if result["earlier_turns_differ"] and result["added_rows"]:
        notes.append(text("compare.turns_differ"))
    report = " ".join([text("compare.voted", added=result["added_rows"], dataset=result["dataset"], rows=result["rows"]),
                       *notes, reveal])
    return (report, {**asked, "voted": True},
            *[gr.update(label=f"{LETTERS[c]} · {mapping[c]}") if c < count else gr.update() for c in range(MAX_COLUMNS)])


EVAL_KINDS = ("evaluate", "evaluate_loss")
EVAL_COLUMNS = ("prompt", "checkpoint", "score", "answer")
EVAL_WIDTHS = ["24%", "16%", "8%", "52%"]   # the answer gets the room; long text wraps inside its column
LOSS_COLUMNS = ("checkpoint", "perplexity", "loss", "text")   # in EVAL_WIDTHS' shape: the row's text gets the room


def start_evaluation(workspace: Path, dataset: str, typed: str, scorer: str, checkpoints: list[str], max_new,
                     rules: str = "", score_by: str = "answers", judge: str = "", reference: str = ""):
    """Every prompt (a dataset's, or typed one per line) through every picked checkpoint, greedy, scored by the
    scorer and/or the rules (YAML, as the Train form's); or, scored by held-out loss, the dataset's rows measured
    by each checkpoint's loss (pipelines/eval_loss.py). A job of its own (pipelines/jobs.py), which show_evaluation
    follows. With a judge and a reference column, each other column's answers are also judged against the
    reference's (a win rate)."""
    if score_by == "loss":
        if not dataset:
            raise StudioError("compare.loss_needs_dataset")
        job_id = api.start_job(workspace, "evaluate_loss", {"checkpoints": list(checkpoints), "dataset": dataset})
        return job_view.started(workspace, EVAL_KINDS, job_id)
    prompts = dataset if dataset else [line for line in (typed or "").splitlines() if line.strip()]
    job_id = api.start_job(workspace, "evaluate", {"checkpoints": list(checkpoints), "prompts": prompts,
                                                   "scorer": scorer or "", "rules": rules or "",
                                                   "judge": (judge or "").strip(), "reference": reference or "",
                                                   "settings": {"max_new_tokens": int(max_new), "temperature": 0}})
    return job_view.started(workspace, EVAL_KINDS, job_id)


def show_evaluation(workspace: Path, job_id: str | None):
    """Picker, Cancel, timer, progress, summary, chart, rows (as they are scored) and download of the picked
    evaluation."""
    job = job_view.read(workspace, job_id)
    controls = job_view.controls(workspace, EVAL_KINDS, job)
    if job is None:
        return *controls, "", "", None, job_view.table(_eval_headers(), []), None
    if job["kind"] == "evaluate_loss":
        rows = [[r["checkpoint"], _rounded(r["perplexity"]), _rounded(r["loss"]), r["text"]]
                for r in job["rows"][:job_view.SHOWN_ROWS]]
        summary = (loss_summary(job["summary"]) if job["summary"] else "") + job_view.shown_note(job)
        return (*controls, job_view.progress_line(job["status_of"]), summary.strip(), gr.update(value=None, visible=False),
                job_view.table([text(f"compare.col.{c}") for c in LOSS_COLUMNS], rows), job_view.downloads(job))
    rows = [[r["prompt"], r["checkpoint"], round(r["score"], 3), r["answer"]] for r in job["rows"][:job_view.SHOWN_ROWS]]
    report = job["summary"]
    summary = (evaluation_summary(report) if report else "") + job_view.shown_note(job)
    return (*controls, job_view.progress_line(job["status_of"]), summary.strip(),
            gr.update(value=mean_score_bars(report["means"]) if report else None, visible=True),
            job_view.table(_eval_headers(), rows),
            job_view.downloads(job))


def _rounded(value: float | None):
    return "—" if value is None else round(value, 4)


def loss_summary(report: dict) -> str:
    """Each checkpoint's mean loss per token and perplexity on the rows, best (lowest) first."""
    lines = [text("compare.loss_summary", rows=report["rows"], dataset=report["dataset"]), "",
             "| " + " | ".join(text(f"compare.col.{c}") for c in ("checkpoint", "loss_per_token", "perplexity", "tokens", "loss_on"))
             + " |", "|---|---:|---:|---:|---|"]
    measured = sorted(report["checkpoints"].items(), key=lambda kv: (kv[1]["loss"] is None, kv[1]["loss"] or 0))
    lines += [f"| {c} | {_rounded(m['loss'])} | {_rounded(m['perplexity'])} | {m['tokens']} | "
              f"{text('compare.loss_on.' + report['loss_on'][c])} |" for c, m in measured]
    return "\n".join(lines)


def _eval_headers() -> list[str]:
    return [text(f"compare.col.{c}") for c in EVAL_COLUMNS]


def evaluation_summary(report: dict) -> str:
    """The mean score of each checkpoint, best first, and how often each beat each other."""
    lines = [text("compare.eval_summary", prompts=report["prompts"], scorer=report["scorer"]), "",
             f"| {text('compare.col.checkpoint')} | {text('compare.col.mean_score')} |", "|---|---:|"]
    lines += [f"| {c} | {m:+.3f} |" for c, m in sorted(report["means"].items(), key=lambda kv: -kv[1])]
    lines += ["", f"| {text('compare.col.wins_over')} | " + " | ".join(report["win_rates"]) + " |",
              "|---|" + "---:|" * len(report["win_rates"])]
    for a, row in report["win_rates"].items():
        lines.append(f"| {a} | " + " | ".join("—" if a == b else f"{row[b]:.0%}" for b in report["win_rates"]) + " |")
    if report.get("judge"):   # the judge's tally against the reference, best first
        judged = report["judge"]
        lines += ["", text("compare.judge_summary", judge=judged["judge"], reference=judged["reference"]), "",
                  "| " + " | ".join(text(f"compare.col.{c}") for c in ("checkpoint", "wins", "ties", "losses", "win_rate"))
                  + " |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {c} | {r['wins']} | {r['ties']} | {r['losses']} | {r['win_rate']:.0%} |"
                  for c, r in sorted(judged["results"].items(), key=lambda kv: -kv[1]["win_rate"])]
    return "\n".join(lines)

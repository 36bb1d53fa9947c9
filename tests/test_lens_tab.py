"""The Lens tab: its HTML drawn from hand-made results in the shapes of pipelines/lens.py, and its handlers end to end
on the tiny model."""

import re
import shutil

import pytest

from pipelines.messages import speaking
from studio.tabs import lens


def _rgb(color: str) -> tuple[int, int, int]:
    return tuple(int(part) for part in re.fullmatch(r"rgb\((\d+), (\d+), (\d+)\)", color).groups())


def _token(id_, token, prob, surprisal, rank, top):
    return {"id": id_, "token": token, "prob": prob, "surprisal": surprisal, "rank": rank, "top": top}


EVIL = "<script>alert(1)</script>"
SINGLE = {
    "checkpoint": "base<model>",
    "tokens": [_token(1, "Hello", None, None, None, []),
               _token(2, " world", 0.25, 2.0, 2, [{"id": 9, "token": " there", "prob": 0.5},
                                                   {"id": 2, "token": " world", "prob": 0.25}]),
               _token(3, "\n" + EVIL, 0.001953125, 9.0, 7, [{"id": 4, "token": EVIL, "prob": 0.125}])],
    "next": [{"id": 5, "token": "!", "prob": 0.75}, {"id": 6, "token": "\n", "prob": 0.0001}],
    "mean_surprisal": 5.5, "perplexity": 45.25, "n_tokens": 3,
}


def _compared(delta_second, delta_third):
    return {
        "checkpoints": ["base", "sft/final"],
        "tokens": [{"id": 1, "token": "Hi", "probs": [None, None], "surprisals": [None, None], "ranks": [None, None], "tops": [[], []],
                    "delta": None},
                   {"id": 2, "token": " you", "probs": [0.125, 0.5], "surprisals": [3.0, 1.0], "ranks": [2, 1],
                    "tops": [[{"id": 7, "token": " me", "prob": 0.5}, {"id": 2, "token": " you", "prob": 0.125}],
                             [{"id": 2, "token": " you", "prob": 0.5}, {"id": 7, "token": " me", "prob": 0.25}]],
                    "delta": delta_second},
                   {"id": 3, "token": "!", "probs": [0.5, 0.125], "surprisals": [1.0, 3.0], "ranks": [1, 4],
                    "tops": [[{"id": 3, "token": "!", "prob": 0.5}], [{"id": 8, "token": ".", "prob": 0.75}]],
                    "delta": delta_third}],
        "next": [[{"id": 9, "token": "<eos>", "prob": 0.9}], [{"id": 9, "token": "<eos>", "prob": 0.95}]],
        "perplexities": [4.0, 4.0], "mean_surprisals": [2.0, 2.0],
    }


def test_tokens_are_escaped_wherever_they_are_shown():
    shown = lens.lens_html(SINGLE) + lens.position_html(SINGLE, 3) + lens.position_html(SINGLE, 4)
    assert "<script>" not in shown and "base<model>" not in shown
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown and "base&lt;model&gt;" in shown
    step = {"candidates": [{"id": 1, "token": EVIL, "prob": 0.5, "tempered": 0.6, "kept": True, "cut_by": "", "final": 1.0}],
            "kept_count": 1, "picked": {"id": 1, "token": EVIL, "final": 1.0}, "generated_ids": [1],
            "generated": EVIL, "done": False}
    assert "<script>" not in lens.step_html(step, 1.0) + lens.so_far_html(EVIL, EVIL)


def test_whitespace_is_made_visible():
    assert lens.visible(" a\tb") == '<span class="lens-ws">·</span>a<span class="lens-ws">→</span>b'
    assert lens.visible("\n") == '<span class="lens-ws">↵</span>\n', "a newline still breaks the line"
    assert "\n" not in lens.visible("a\nb", breaks=False), "not inside a tooltip or a table cell"
    assert "∅" in lens.visible("") and "␍" in lens.visible("\r") and "\x0b" not in lens.visible("\x0b")
    line = lens.lens_html(SINGLE)
    assert '<span class="lens-ws">·</span>world' in line and '<span class="lens-ws">↵</span>\n&lt;script' in line


def test_the_tooltip_lists_probability_surprisal_rank_and_the_top_k():
    tip = lens.token_tip(SINGLE["tokens"][1])
    assert "probability 25.0% · surprisal 2.00 bits · rank 2" in tip
    assert "Expected here:" in tip and '·</span>there  50.0%' in tip
    assert '<span class="lens-tip-row lens-actual"><span class="lens-ws">·</span>world  25.0%' in tip, \
        "the token that came is marked among the expected ones"
    assert "nothing before it" in lens.token_tip(SINGLE["tokens"][0])
    with speaking("ko"):
        assert "확률 25.0% · 놀람도 2.00비트 · 순위 2" in lens.token_tip(SINGLE["tokens"][1])
    line = lens.lens_html(SINGLE)
    assert line.count('class="lens-tip"') == 3 and "perplexity 45.25" in line and "!</code> 75.0%" in line
    assert "1.0e-04" in line, "a tiny probability does not read as 0.0%"


def test_surprisal_colours_grow_redder_and_the_first_token_is_grey():
    greens = [_rgb(lens.surprisal_color(bits))[1] for bits in (0, 3, 6, 9, 12, 40)]
    assert greens == sorted(greens, reverse=True) and greens[-2] == greens[-1], "saturates at MAX_BITS"
    assert _rgb(lens.surprisal_color(None)) == lens.NEUTRAL
    line = lens.lens_html(SINGLE)
    assert f"background:{lens.surprisal_color(9.0)}" in line and f"background:{lens.surprisal_color(None)}" in line


def test_the_difference_line_is_green_where_the_second_checkpoint_expects_a_token_more_and_red_where_less():
    more, less = _rgb(lens.signed_color(2.0, lens.MAX_DELTA_BITS)), _rgb(lens.signed_color(-2.0, lens.MAX_DELTA_BITS))
    assert more[1] > more[0] and less[0] > less[1]
    assert _rgb(lens.signed_color(0.0, 4)) == _rgb(lens.signed_color(None, 4)) == lens.NEUTRAL
    assert _rgb(lens.signed_color(10, 4)) == lens.GREEN, "saturates at the scale"
    shown = lens.compare_html(_compared(2.0, -2.0))
    *_, difference = shown.split("Difference A → B")
    spans = re.findall(r'class="lens-tok" style="background:(rgb\([^)]*\))', difference)
    assert [_rgb(c) for c in spans] == [lens.NEUTRAL, more, less]
    assert "A · base" in shown and "B · sft/final" in shown and shown.count("perplexity 4.00") == 2
    assert "difference +2.00 bits" in difference


def test_the_position_picker_shows_the_top_k_and_for_two_checkpoints_side_by_side_with_the_delta():
    one = lens.position_html(SINGLE, 2)
    assert "Token 2 of 3:" in one and 'class="lens-actual"' in one and "rank 2" in one
    assert one.index("there") < one.index("world</code></td>"), "ranked as the model ranked them"
    after = lens.position_html(SINGLE, 99)
    assert "After the text:" in after and "!</code>" in after, "past the end: what comes after the text"
    both = lens.position_html(_compared(2.0, -2.0), 2)
    assert "A · base" in both and "B · sft/final" in both and "A: 12.5% · B: 50.0% · difference +2.00 bits" in both
    assert "lens.ui" not in both and "Run the lens" in lens.position_html(None, 1)


def test_the_picker_opens_at_the_most_telling_token():
    assert lens.most_telling_position(SINGLE) == 3                   # the most surprising
    assert lens.most_telling_position(_compared(0.5, -3.0)) == 3     # the largest change, either way
    only = {**SINGLE, "tokens": SINGLE["tokens"][:1], "n_tokens": 1}
    assert lens.most_telling_position(only) == 2                     # one token: what comes after it


def _candidate(id_, token, prob, tempered, cut_by, final):
    return {"id": id_, "token": token, "prob": prob, "tempered": tempered, "kept": not cut_by, "cut_by": cut_by,
            "final": final}


STEP = {"candidates": [_candidate(1, "Yes", 0.6, 0.7, "", 0.8), _candidate(2, "No", 0.2, 0.175, "", 0.2),
                       _candidate(3, "Maybe", 0.1, 0.08, "top_p", 0.0), _candidate(4, " ok", 0.05, 0.03, "top_k", 0.0)],
        "kept_count": 2, "picked": {"id": 2, "token": "No", "final": 0.2}, "generated_ids": [2], "generated": "No",
        "done": False}


def test_a_sampling_step_greys_what_top_k_and_top_p_cut_and_marks_the_pick():
    shown = lens.step_html(STEP, 0.7)
    rows = re.findall(r"<tr(?: class=\"([^\"]*)\")?>(.*?)</tr>", shown.split("<tbody>")[1])
    assert [css for css, _ in rows] == ["", "lens-picked", "lens-cut", "lens-cut"]
    assert "cut by top-p" in rows[2][1] and "cut by top-k" in rows[3][1] and "kept" in rows[0][1]
    assert "No</code> ✓" in rows[1][1] and "✓" not in rows[0][1]
    assert "80.0%" in rows[0][1] and rows[2][1].endswith('<td class="lens-num">0%</td>'), "cut: nothing after renormalising"
    assert "2 tokens of the vocabulary survive" in shown and "greedy" not in shown
    assert "greedy" in lens.step_html(STEP, 0) and "ended its turn" in lens.step_html({**STEP, "done": True}, 1)
    with speaking("ko"):
        assert "top-p로 잘림" in lens.step_html(STEP, 0.7)


def test_the_pair_view_shows_each_answers_log_ratios_sums_margin_and_loss():
    def side(logratio):
        return {"tokens": [{"id": 1, "token": "A" + EVIL, "policy_logp": -1.0, "reference_logp": -1.0 - logratio,
                            "logratio": logratio}], "policy_logp": -1.0, "reference_logp": -1.0 - logratio,
                "logratio": logratio}
    result = {"policy": "dpo/final", "reference": "base", "beta": 0.1, "chosen": side(1.5), "rejected": side(-0.5),
              "margin": 0.2, "loss": 0.598139, "prefers_chosen": True}
    shown = lens.pair_html(result)
    assert "<script>" not in shown and "margin +0.2000, DPO loss 0.5981" in shown and "already favours" in shown
    assert "sum of log-ratios +1.500" in shown and "sum of log-ratios -0.500" in shown
    chosen, rejected = re.findall(r'class="lens-tok" style="background:(rgb\([^)]*\))', shown)
    assert _rgb(chosen)[1] > _rgb(chosen)[0] and _rgb(rejected)[0] > _rgb(rejected)[1]
    assert "log-ratio +1.500" in shown and "same model" not in shown
    same = lens.pair_html({**result, "policy": "base", "prefers_chosen": False})
    assert "same model" in same and "does not favour" in same


def test_the_lens_tab_comes_after_compare_and_adds_no_public_endpoint(workspace):
    import gradio as gr

    from pipelines import api
    from studio.app import build_app

    app = build_app(workspace)
    tabs = [block.label.key for block in app.blocks.values() if isinstance(block, gr.Tab) and hasattr(block.label, "key")]
    assert tabs.index("tab.lens") == tabs.index("tab.compare") + 1
    public = {d["api_name"] for d in app.config["dependencies"] if d.get("api_visibility") == "public"}
    assert public <= {fn.__name__ for fn in api.ENDPOINTS}


# --- end to end on the tiny model ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_pair(tiny_model, tmp_path_factory):
    """The tiny model and a copy of it elsewhere: two checkpoints with one tokenizer."""
    copy = tmp_path_factory.mktemp("tiny-copy") / "model"
    shutil.copytree(tiny_model, copy)
    return str(tiny_model), str(copy)


def test_run_the_lens_on_one_and_on_two_checkpoints(workspace, tiny_pair):
    first, second = tiny_pair
    shown, result, picker, table = lens.look_at(workspace, first, "", "Hello <b>world</b>\nHope this helps!", 5.0)
    assert "&lt;" in shown and "<b>" not in shown and result["n_tokens"] == len(result["tokens"]) > 3
    assert picker["maximum"] == result["n_tokens"] + 1 and picker["visible"] is True
    assert table == lens.position_html(result, picker["value"]) and "lens-table" in table
    assert lens.pick_position(result, 1) == lens.position_html(result, 1)
    shown, result, picker, _ = lens.look_at(workspace, first, second, "Hope this helps!", 3)
    assert result["checkpoints"] == [first, second] and "Difference A → B" in shown
    assert all(tok["delta"] in (None, 0.0) for tok in result["tokens"]), "a copy expects what the original does"
    assert "checkpoints" not in lens.look_at(workspace, first, first, "Hope this helps!", 3)[1], \
        "the same checkpoint twice is one"


def test_lens_mistakes_reach_the_visitor_as_one_sentence(workspace, tiny_pair):
    import gradio as gr

    from studio.errors import shows_errors
    from studio.identity import for_visitor

    look = shows_errors(for_visitor(lens.look_at))
    with pytest.raises(gr.Error) as raised:
        look(tiny_pair[0], "", "", 5)
    assert "empty" in raised.value.message and "Traceback" not in raised.value.message
    with pytest.raises(gr.Error) as raised:
        shows_errors(for_visitor(lens.pair_of_row))("alpaca-en-sample", 1)
    assert "not preference pairs" in raised.value.message
    with pytest.raises(gr.Error) as raised:
        shows_errors(for_visitor(lens.text_of_row))("preference-en-sample", 10_000)
    assert "no row 10000" in raised.value.message


def test_rows_of_a_dataset_fill_the_text_and_the_pair(workspace):
    from pipelines import api

    rows = api.dataset_table(workspace, "preference-en-sample")["rows"]
    assert lens.pair_of_row(workspace, "preference-en-sample", 2.0) == tuple(rows[1])
    assert lens.text_of_row(workspace, "preference-en-sample", 1) == rows[0][1], "a pair's chosen answer"
    assert lens.text_of_row(workspace, "alpaca-en-sample", 1) == api.dataset_table(workspace, "alpaca-en-sample")["rows"][0][2]


def test_score_a_pair_against_its_reference(workspace, tiny_pair):
    first, second = tiny_pair
    shown = lens.score_pair(workspace, first, second, "Say hi", "Hi there! Hope this helps!", "Go away.", 0.1)
    assert "margin +0.0000, DPO loss 0.6931" in shown or "margin -0.0000, DPO loss 0.6931" in shown, \
        "a copy of the reference: every log-ratio 0, the loss log 2"
    assert "Chosen answer" in shown and "Rejected answer" in shown


def test_generate_one_token_at_a_time_continues_restarts_and_replays_with_the_seed(workspace, tiny_pair):
    model = tiny_pair[0]
    settings = dict(checkpoint=model, prompt="Say hi", chat=True, temperature=1.0, top_k=20, top_p=0.9, seed=7.0)
    steps = list(lens.generate_steps(workspace, **settings, state=None, count=3))
    so_far, table, state = steps[-1]
    assert len(steps) == len(state["ids"]) == 3 and not state["done"], "the tiny model does not end its turn so soon"
    assert "lens-table" in table and "lens-so-far" in so_far
    (_, _, more), = lens.generate_steps(workspace, **settings, state=state, count=1)
    assert more["ids"][:3] == state["ids"] and len(more["ids"]) == 4, "Next token goes on from the state"
    again = list(lens.generate_steps(workspace, **settings, state=None, count=3))[-1][2]
    assert again["ids"] == state["ids"], "the same seed after a Reset: the same tokens"
    other = list(lens.generate_steps(workspace, **{**settings, "prompt": "Add 2 and 3"}, state=state, count=1))[-1][2]
    assert len(other["ids"]) == 1, "another prompt starts a new generation"
    assert lens.reset_generation()[2] is None
    from pipelines.errors import StudioError
    with pytest.raises(StudioError) as raised:
        list(lens.generate_steps(workspace, **settings, state={**state, "done": True}, count=1))
    assert "Reset" in str(raised.value)


def test_the_tip_of_a_piece_that_completes_a_syllable_names_the_syllable_beside_its_bytes():
    from studio.tabs.lens import token_tip

    piece = {"id": 1, "token": "⟨9C⟩", "text": "된", "prob": 0.5, "surprisal": 1.0, "rank": 1,
             "top": [{"id": 1, "token": "⟨9C⟩", "prob": 0.5}]}
    tip = token_tip(piece)
    assert tip.index("된") < tip.index("⟨9C⟩"), tip
    assert "된" not in token_tip({**piece, "text": ""}), "a piece that completes nothing names only its bytes"

"""The bundled preference samples load cleanly through the project's own loader and teach the house style:
chosen answers are an opening line, "- " bullets and the sign-off; rejected answers mostly are not."""

import pytest

from pipelines.data.files import read_records
from pipelines.data.store import SAMPLES_DIR, normalise_records

SIGN_OFF = {"en": "Hope this helps!", "ko": "도움이 되었길 바랍니다!"}


def _bulleted(text: str) -> bool:
    return any(line.startswith("- ") for line in text.splitlines())


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_preference_sample_is_clean_and_teaches_the_house_style(lang):
    records = read_records(SAMPLES_DIR / f"preference-{lang}-sample.json")
    kind, result = normalise_records(records)
    assert kind == "preference" and result.format == "chosen_rejected"
    assert result.errors == []
    assert result.warnings == []  # no duplicate rows and no chosen/rejected length bias
    assert len(result.rows) == 200
    assert len({r["prompt"] for r in records}) == 200, "prompts must not repeat"

    sign_off = SIGN_OFF[lang]
    chosen = [row["chosen"][0]["content"] for row in result.rows]
    rejected = [row["rejected"][0]["content"] for row in result.rows]
    assert all(text.endswith(sign_off) and "\n- " in text for text in chosen)
    assert not any(text.rstrip().endswith(sign_off) for text in rejected)
    styled = [text for text in rejected if "\n- " in text or _bulleted(text)]
    assert len(styled) <= len(rejected) // 10, f"{len(styled)} rejected answers use the house-style bullets"
    average = lambda texts: sum(map(len, texts)) / len(texts)
    assert 1 / 1.25 <= average(chosen) / average(rejected) <= 1.25


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_ranked_sample_makes_every_ordered_pair(lang):
    records = read_records(SAMPLES_DIR / f"ranked-{lang}-sample.json")
    kind, result = normalise_records(records)
    assert kind == "preference" and result.format == "ranked"
    assert result.errors == [] and result.warnings == []
    assert len(records) == 30 and len(result.rows) == 90  # three answers each: 3 pairs a row
    for record in records:
        answers = record["answers"]
        assert sorted(a["rank"] for a in answers) == [1, 2, 3]
        best = next(a["text"] for a in answers if a["rank"] == 1)
        assert best.endswith(SIGN_OFF[lang]) and "\n- " in best
    assert len({tuple(a["rank"] for a in r["answers"]) for r in records}) > 1, "the best answer should move around"

    # The first row is the InstructGPT-style dinner example: answers a, b, c ranked b > c > a.
    dinner = records[0]
    assert "dinner" in dinner["prompt"].lower() or "저녁" in dinner["prompt"]
    a, b, c = (answer["text"] for answer in dinner["answers"])
    assert [answer["rank"] for answer in dinner["answers"]] == [3, 1, 2]
    pairs = [(row["chosen"][0]["content"], row["rejected"][0]["content"]) for row in result.rows[:3]]
    assert pairs == [(b, c), (b, a), (c, a)]
    assert result.sources[:3] == [1, 1, 1]

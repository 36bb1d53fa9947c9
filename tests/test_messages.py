"""The message catalog: both languages hold the same codes with the same placeholders, and errors carry codes."""

import pytest

from pipelines.errors import StudioError
from pipelines.messages import Message, catalog, language_of, placeholders, render, speaking, text
from studio.i18n import EN, KO


def test_both_catalogs_hold_the_same_codes_with_the_same_placeholders():
    english, korean = catalog("en"), catalog("ko")
    field_help = {code for code in korean if code.startswith("help.")}   # English help is each field's own
    assert set(english) == set(korean) - field_help
    assert field_help <= set(EN)
    for code, template in english.items():
        assert placeholders(template) == placeholders(korean[code]), code
    assert set(EN) == set(KO)


def test_a_message_renders_in_the_language_being_spoken():
    code = next(code for code, template in catalog("en").items() if placeholders(template) and code in catalog("ko"))
    params = {name: 3 for name in placeholders(catalog("en")[code])}
    with speaking("ko"):
        korean = text(code, **params)
    assert korean == render(code, "ko", **params) != render(code, "en", **params)
    assert text(code, **params) == render(code, "en", **params)   # outside a visitor's request: English


def test_a_studio_error_is_english_as_a_string_and_the_visitor_language_as_text():
    code = next(code for code, template in catalog("en").items() if placeholders(template))
    params = {name: 7 for name in placeholders(catalog("en")[code])}
    error = StudioError(code, **params)
    assert str(error) == render(code, "en", **params)
    assert error.text("ko") == render(code, "ko", **params)
    assert Message.from_dict(error.catalog_message.to_dict()) == error.catalog_message
    plain = StudioError("A sentence not in the catalog.")
    assert str(plain) == plain.text("ko") == "A sentence not in the catalog." and plain.code is None


def test_an_unknown_code_with_parameters_is_a_bug_not_a_sentence():
    with pytest.raises(KeyError):
        StudioError("no.such.code", name="x")


@pytest.mark.parametrize("header, language", [("ko-KR,ko;q=0.9,en-US;q=0.8", "ko"), ("en-GB,en;q=0.9", "en"),
                                              ("fr-FR,ko;q=0.5", "ko"), ("", "en"), (None, "en"), ("de;q=x", "en")])
def test_the_browser_language_picks_a_catalog(header, language):
    assert language_of(header) == language


def _visitor(accept_language: str = "", chosen: str | None = None):
    import gradio as gr
    return gr.Request(headers={"accept-language": accept_language}, cookies={"studio_language": chosen} if chosen else {})


def _failing_run_lookup(run_id: str) -> str:
    raise StudioError("runs.not_found", run_id=run_id)


def test_shows_errors_speaks_the_visitor_language_from_the_browser_or_the_header_picker():
    import gradio as gr

    from studio.errors import shows_errors

    handler = shows_errors(_failing_run_lookup)
    for visitor, language in ((_visitor("ko-KR,ko;q=0.9"), "ko"), (_visitor("ko-KR", chosen="en"), "en"),
                              (_visitor("en-US", chosen="ko"), "ko"), (None, "en")):
        with pytest.raises(gr.Error) as raised:
            handler("r1", *[visitor] if visitor else [])   # no request: a direct call, English
        assert raised.value.message == render("runs.not_found", language, run_id="r1")
    assert shows_errors(lambda: text("chart.step"))(_visitor("ko")) == render("chart.step", "ko")
    assert shows_errors(lambda value, other: (value, other))(None, _visitor("ko"), 0) == (None, 0)   # None stays


def test_a_streaming_handler_speaks_the_language_at_every_step_on_any_thread():
    from concurrent.futures import ThreadPoolExecutor

    from studio.errors import shows_errors

    def steps():
        for _ in range(3):
            yield text("chart.step")

    stream = shows_errors(steps)(_visitor("ko-KR"))
    with ThreadPoolExecutor(max_workers=3) as pool:   # Gradio may resume a generator on another worker thread
        said = [pool.submit(next, stream).result() for _ in range(3)]
    assert said == [render("chart.step", "ko")] * 3
    assert text("chart.step") == render("chart.step", "en")   # nothing leaks out of the handler


def test_shows_errors_adds_a_request_gradio_fills_in_and_the_api_does_not_list():
    import inspect

    import gradio as gr
    from gradio.utils import get_function_params, get_type_hints

    from studio.errors import REQUEST, shows_errors

    def endpoint(run_id: str, limit: int = 5) -> dict:
        return {}

    wrapped = shows_errors(endpoint)
    assert list(inspect.signature(wrapped).parameters) == ["run_id", "limit", REQUEST]
    assert get_type_hints(wrapped)[REQUEST] is gr.Request
    assert get_function_params(wrapped) == get_function_params(endpoint)
    assert endpoint.__annotations__.get(REQUEST) is None

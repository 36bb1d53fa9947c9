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

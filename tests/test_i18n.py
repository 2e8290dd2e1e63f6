from __future__ import annotations

import pytest

from bot.i18n import STRINGS, add_strings, t


def test_every_language_has_every_key_with_the_same_placeholders() -> None:
    import string

    english = STRINGS["en"]
    for language, table in STRINGS.items():
        assert set(table) == set(english), f"{language} differs from en"
        for key, text in table.items():
            fields = {f for _, f, _, _ in string.Formatter().parse(text) if f}
            expected = {f for _, f, _, _ in string.Formatter().parse(english[key]) if f}
            assert fields == expected, f"{language}.{key}"


def test_lookup_falls_back_to_english() -> None:
    assert t("empty_message", "de") == STRINGS["en"]["empty_message"]
    assert t("empty_message", "ru-RU") == STRINGS["ru"]["empty_message"]
    assert t("unknown_command", None, command="/x").startswith("I don't know the command /x")


def test_a_key_defined_twice_fails_loudly() -> None:
    with pytest.raises(ValueError, match="empty_message"):
        add_strings({"en": {"empty_message": "dup"}})

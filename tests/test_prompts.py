from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import PromptError, PromptNotFound, PromptVariablesError
from bot.prompts import PromptRegistry


def write(folder: Path, name: str, body: str) -> None:
    (folder / name).write_text(body, encoding="utf-8")


SYSTEM_VARIABLES: dict[str, object] = {
    "bot_name": "Arium",
    "user_name": "Ann",
    "language": "ru",
    "local_time": "Monday, 2026-11-23 09:00",
    "timezone": "Europe/Moscow",
    "chat_kind": "private chat",
}


def test_shipped_system_prompt_v1_renders_every_variable() -> None:
    text = PromptRegistry().get("system", 1).render(SYSTEM_VARIABLES)
    assert "Ann" in text and "Europe/Moscow" in text and "2026-11-23 09:00" in text
    assert "$" not in text


def test_active_system_prompt_carries_memories_and_summary() -> None:
    registry = PromptRegistry()
    text, template = registry.render(
        "system",
        {**SYSTEM_VARIABLES, "memories": "- Works as a nurse", "summary": "They planned a trip to Rome."},
    )
    assert template.ref == "system@2"
    assert "Ann" in text and "Europe/Moscow" in text and "2026-11-23 09:00" in text
    assert "- Works as a nurse" in text and "They planned a trip to Rome." in text
    assert "$" not in text


@pytest.mark.parametrize(
    ("name", "variables"),
    [
        ("memory_extract", {"user_name": "Ann", "today": "2026-11-21", "exchange": "Ann: I moved to Paris"}),
        ("memory_update", {"user_name": "Ann", "memories": "M1: Lives in Berlin", "facts": "F1: Lives in Paris"}),
        ("history_summary", {"previous_summary": "(none yet)", "messages": "User: hi"}),
    ],
)
def test_memory_prompts_render(name: str, variables: dict[str, object]) -> None:
    text, _ = PromptRegistry().render(name, variables)
    assert all(str(value) in text for value in variables.values())
    assert "$" not in text


def test_missing_variables_fail_loudly_naming_them(tmp_path: Path) -> None:
    write(tmp_path, "greet.v1.md", '+++\nname = "greet"\nversion = 1\nvariables = ["name", "city"]\n+++\nHi $name from ${city}, costs $$5\n')
    registry = PromptRegistry(tmp_path)
    with pytest.raises(PromptVariablesError, match="city"):
        registry.render("greet", {"name": "Ann"})
    assert registry.render("greet", {"name": "Ann", "city": "Oslo"})[0] == "Hi Ann from Oslo, costs $5"


def test_undeclared_variable_fails_at_load(tmp_path: Path) -> None:
    write(tmp_path, "x.v1.md", '+++\nname = "x"\nversion = 1\nvariables = []\n+++\nHello $who\n')
    with pytest.raises(PromptVariablesError, match="who"):
        PromptRegistry(tmp_path)


def test_latest_version_is_active_until_another_is_activated(tmp_path: Path) -> None:
    for version in (1, 2):
        write(tmp_path, f"s.v{version}.md", f'+++\nname = "s"\nversion = {version}\n+++\nversion {version}\n')
    registry = PromptRegistry(tmp_path)
    assert registry.render("s", {})[0] == "version 2"
    registry.activate("s", 1)
    assert registry.render("s", {}) [1].ref == "s@1"
    with pytest.raises(PromptNotFound):
        registry.activate("s", 9)
    with pytest.raises(PromptNotFound):
        registry.get("nope")


@pytest.mark.parametrize(
    "content",
    [
        "no front matter",
        '+++\nname = "a"\nversion = 1\n',  # not closed
        "+++\nname = \n+++\nbody\n",  # bad TOML
        '+++\nversion = 1\n+++\nbody\n',  # no name
        '+++\nname = "a"\nversion = 1\n+++\ncosts $ 5\n',  # malformed placeholder
    ],
)
def test_broken_templates_name_their_file(tmp_path: Path, content: str) -> None:
    write(tmp_path, "broken.v1.md", content)
    with pytest.raises(PromptError, match="broken.v1.md"):
        PromptRegistry(tmp_path)

"""Plugin loading: built-ins from one tuple, modules dropped into a plugin
package, entry points of installed distributions; broken plugins are
skipped and reported, never fatal."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.doctor import _plugins
from bot.settings import Settings
from bot.tools.plugins import BUILTIN_PLUGINS, load_plugins
from bot.tools.registry import ToolRegistry
from bot.tools.sandbox import FileSandbox, SandboxLimits

_names = itertools.count()

GOOD = '''
def shout(text: str) -> str:
    """Say it louder."""
    return text.upper()

def register_tools(register):
    register(shout, hints={"en": "shouting…"})
'''
HALFWAY = '''
def first() -> str:
    """First."""
    return "1"

def register_tools(register):
    register(first)
    raise RuntimeError("the plugin's config is missing")
'''
CLASH = '''
def calculate(expression: str) -> str:
    """A second calculator."""
    return "?"

def register_tools(register):
    register(calculate)
'''


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A fresh importable package (unique name, so import caches never mix tests)."""
    name = f"extra_plugins_{next(_names)}"
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    yield package, name
    sys.path.remove(str(tmp_path))
    for module in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[module]


def registry(tmp_path: Path, disabled: frozenset[str] = frozenset()) -> ToolRegistry:
    return ToolRegistry({FileSandbox: FileSandbox(tmp_path / "files", SandboxLimits())}, disabled=disabled)


def test_builtins_load_in_their_listed_order(tmp_path: Path) -> None:
    infos = load_plugins(registry(tmp_path), packages=(), entry_points=False)
    assert [i.name for i in infos] == list(BUILTIN_PLUGINS)
    assert all(i.ok for i in infos)
    assert {"current_time", "calculate", "write_file", "read_file", "list_files", "delete_file"} <= {
        t for i in infos for t in i.tools
    }


def test_dropped_in_modules_add_tools_and_broken_ones_are_skipped(tmp_path: Path, plugin_dir: tuple[Path, str]) -> None:
    package, name = plugin_dir
    (package / "good.py").write_text(GOOD)
    (package / "broken.py").write_text("import module_that_does_not_exist\n")
    (package / "syntax.py").write_text("def register_tools(register:\n")
    (package / "halfway.py").write_text(HALFWAY)
    (package / "nohook.py").write_text("VALUE = 1\n")
    (package / "clash.py").write_text(CLASH)
    (package / "_private.py").write_text("raise SystemExit('never imported')\n")
    tools = registry(tmp_path)
    infos = {i.name.removeprefix(f"{name}."): i for i in load_plugins(tools, packages=(name,), entry_points=False)}
    assert infos["good"].ok and infos["good"].tools == ["shout"]
    assert "ModuleNotFoundError" in str(infos["broken"].error)
    assert "SyntaxError" in str(infos["syntax"].error)
    assert "config is missing" in str(infos["halfway"].error)
    assert "no register_tools" in str(infos["nohook"].error)
    assert "defined twice" in str(infos["clash"].error)
    assert "_private" not in infos
    assert tools.get("first") is None, "a plugin that fails halfway leaves nothing behind"
    assert tools.get("shout") is not None and tools.get("calculate") is not None


def test_entry_points_of_installed_distributions_add_tools(tmp_path: Path, plugin_dir: tuple[Path, str]) -> None:
    package, name = plugin_dir
    (package / "external.py").write_text(GOOD.replace("shout", "whisper").replace("upper", "lower"))
    dist = tmp_path / "arium_whisper-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: arium-whisper\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[arium.plugins]\nwhisper = {name}.external\n")
    tools = registry(tmp_path)
    infos = load_plugins(tools, packages=(), entry_points=True)
    [external] = [i for i in infos if i.source == "entry point"]
    assert external.ok and external.tools == ["whisper"]


def test_configuration_disables_tools_and_whole_plugins(tmp_path: Path) -> None:
    tools = registry(tmp_path, disabled=frozenset({"delete_file", "calc"}))
    load_plugins(tools, packages=(), entry_points=False)
    names = {t.name for t in tools.tools()}
    assert "delete_file" not in names and "calculate" not in names and "write_file" in names
    assert set(tools.skipped) == {"delete_file", "calculate"}


def test_doctor_names_a_broken_plugin(tmp_path: Path, plugin_dir: tuple[Path, str]) -> None:
    package, name = plugin_dir
    (package / "good.py").write_text(GOOD)
    (package / "broken.py").write_text("import module_that_does_not_exist\n")
    lines: list[str] = []
    settings = Settings(_env_file=None, bot_data_dir=tmp_path, bot_tools_disabled="delete_file")  # type: ignore[call-arg]
    assert _plugins(settings, lines.append, (name,)) is False
    assert f"FAIL plugin {name}.broken: ModuleNotFoundError" in lines[0]
    assert lines[-1].startswith("ok   plugins: time (current_time, convert_time); calc (calculate)")
    assert f"{name}.good (shout)" in lines[-1] and "disabled: delete_file" in lines[-1]

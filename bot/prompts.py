"""PromptRegistry: templates in prompts/, one file per name and version.

A file is TOML front matter between ``+++`` lines, then the body::

    +++
    name = "system"
    version = 1
    description = "The assistant's standing instructions"
    variables = ["user_name", "local_time"]
    +++
    You are talking to $user_name. It is $local_time.

Bodies use ``$name`` / ``${name}`` placeholders (``$$`` for a dollar sign), so
JSON and code braces need no escaping. A template that uses a variable it does
not declare fails at load; a render that misses a declared one fails naming it.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from string import Template

from bot.errors import PromptError, PromptNotFound, PromptVariablesError

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"
FENCE = "+++"


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    description: str
    variables: tuple[str, ...]
    body: str
    path: Path

    @property
    def ref(self) -> str:
        """How a turn records which template it used, e.g. ``system@2``."""
        return f"{self.name}@{self.version}"

    def render(self, variables: dict[str, object]) -> str:
        missing = [v for v in self.variables if v not in variables]
        if missing:
            raise PromptVariablesError(f"prompt {self.ref} is missing variables: {', '.join(missing)}")
        return Template(self.body).substitute({k: str(v) for k, v in variables.items()})


def parse_template(text: str, path: Path) -> PromptTemplate:
    if not text.startswith(FENCE + "\n"):
        raise PromptError(f"{path.name}: must start with a '+++' front matter line")
    front, closed, body = text[len(FENCE) + 1 :].partition("\n" + FENCE + "\n")
    if not closed:
        raise PromptError(f"{path.name}: front matter is not closed with a '+++' line")
    try:
        meta = tomllib.loads(front)
    except tomllib.TOMLDecodeError as exc:
        raise PromptError(f"{path.name}: bad front matter: {exc}") from None
    for key in ("name", "version"):
        if key not in meta:
            raise PromptError(f"{path.name}: front matter lacks '{key}'")
    declared = tuple(meta.get("variables", ()))
    used = _placeholders(body, path)
    undeclared = sorted(used - set(declared))
    if undeclared:
        raise PromptVariablesError(f"{path.name}: uses undeclared variables: {', '.join(undeclared)}")
    return PromptTemplate(
        name=str(meta["name"]),
        version=int(meta["version"]),
        description=str(meta.get("description", "")),
        variables=declared,
        body=body.strip("\n"),
        path=path,
    )


def _placeholders(body: str, path: Path) -> set[str]:
    template = Template(body)
    if not template.is_valid():
        raise PromptError(f"{path.name}: has a malformed $placeholder (write $$ for a dollar sign)")
    return set(template.get_identifiers())


class PromptRegistry:
    """All templates of a folder; the active version of a name is the highest
    unless one was activated explicitly."""

    def __init__(self, folder: Path = PROMPTS_DIR) -> None:
        self._folder = folder
        self._templates: dict[str, dict[int, PromptTemplate]] = {}
        self._active: dict[str, int] = {}
        self.reload()

    def reload(self) -> None:
        """Load every template; a broken file fails loudly, naming itself."""
        loaded: dict[str, dict[int, PromptTemplate]] = {}
        for path in sorted(self._folder.glob("*.md")):
            template = parse_template(path.read_text(encoding="utf-8"), path)
            versions = loaded.setdefault(template.name, {})
            if template.version in versions:
                raise PromptError(f"{path.name}: duplicates {template.ref} from {versions[template.version].path.name}")
            versions[template.version] = template
        self._templates = loaded
        self._active = {k: v for k, v in self._active.items() if k in loaded and v in loaded[k]}

    def get(self, name: str, version: int | None = None) -> PromptTemplate:
        versions = self._templates.get(name)
        if not versions:
            raise PromptNotFound(f"no prompt template named {name!r} in {self._folder}")
        chosen = version if version is not None else self._active.get(name, max(versions))
        if chosen not in versions:
            raise PromptNotFound(f"prompt {name!r} has no version {chosen}")
        return versions[chosen]

    def activate(self, name: str, version: int) -> PromptTemplate:
        template = self.get(name, version)
        self._active[name] = version
        return template

    def render(self, name: str, variables: dict[str, object]) -> tuple[str, PromptTemplate]:
        template = self.get(name)
        return template.render(variables), template

    def names(self) -> dict[str, list[int]]:
        return {name: sorted(versions) for name, versions in self._templates.items()}

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


Templates = dict[str, dict[int, PromptTemplate]]


@dataclass(frozen=True)
class PromptChanges:
    """What a reload changed, as template refs (``system@3``)."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    # Pinned versions that no longer exist; those names use their newest version again.
    unpinned: tuple[str, ...] = ()

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def scan(folder: Path) -> Templates:
    """Every template of ``folder``. Raises PromptError listing every broken
    file and why, so one reload shows all the mistakes at once."""
    loaded: Templates = {}
    problems: list[PromptError] = []
    for path in sorted(folder.glob("*.md")):
        try:
            template = parse_template(path.read_text(encoding="utf-8"), path)
        except PromptError as exc:
            problems.append(exc)
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(PromptError(f"{path.name}: cannot be read: {exc.__class__.__name__}"))
            continue
        versions = loaded.setdefault(template.name, {})
        if template.version in versions:
            problems.append(
                PromptError(f"{path.name}: duplicates {template.ref} from {versions[template.version].path.name}")
            )
            continue
        versions[template.version] = template
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise PromptError("\n".join(str(p) for p in problems))
    return loaded


def _same(a: PromptTemplate, b: PromptTemplate) -> bool:
    return (a.body, a.variables, a.description) == (b.body, b.variables, b.description)


def _refs(templates: Templates) -> dict[str, PromptTemplate]:
    return {t.ref: t for versions in templates.values() for t in versions.values()}


class PromptRegistry:
    """All templates of a folder; the active version of a name is the highest
    unless one was activated (pinned) explicitly."""

    def __init__(self, folder: Path = PROMPTS_DIR) -> None:
        self.folder = folder
        self._templates: Templates = {}
        self._active: dict[str, int] = {}
        # The variable names each template name was last rendered with: what
        # the bot supplies, so a new version that needs more is caught before
        # it becomes active instead of failing every turn.
        self._supplied: dict[str, frozenset[str]] = {}
        self.reload()

    def reload(self) -> PromptChanges:
        """Load every template again; a broken file fails loudly, naming itself,
        and leaves the loaded set as it was."""
        return self.install(scan(self.folder))

    def install(self, loaded: Templates) -> PromptChanges:
        """Swap in templates from ``scan`` (which may run in a thread): one
        assignment each, so a render never sees half a reload. Pinned versions
        that still exist stay pinned."""
        before, after = _refs(self._templates), _refs(loaded)
        gone = tuple(sorted(f"{k}@{v}" for k, v in self._active.items() if v not in loaded.get(k, {})))
        self._templates = loaded
        self._active = {k: v for k, v in self._active.items() if k in loaded and v in loaded[k]}
        return PromptChanges(
            added=tuple(sorted(after.keys() - before.keys())),
            changed=tuple(sorted(r for r in after.keys() & before.keys() if not _same(after[r], before[r]))),
            removed=tuple(sorted(before.keys() - after.keys())),
            unpinned=gone,
        )

    def get(self, name: str, version: int | None = None) -> PromptTemplate:
        versions = self._templates.get(name)
        if not versions:
            raise PromptNotFound(f"no prompt template named {name!r} in {self.folder}")
        chosen = version if version is not None else self._active.get(name, max(versions))
        if chosen not in versions:
            raise PromptNotFound(f"prompt {name!r} has no version {chosen}")
        return versions[chosen]

    def activate(self, name: str, version: int) -> PromptTemplate:
        template = self.get(name, version)
        self._active[name] = version
        return template

    def unpin(self, name: str) -> PromptTemplate:
        """Go back to the newest version of ``name`` (also after later reloads)."""
        versions = self._templates.get(name)
        if not versions:
            raise PromptNotFound(f"no prompt template named {name!r} in {self.folder}")
        self._active.pop(name, None)
        return versions[max(versions)]

    def pinned(self) -> dict[str, int]:
        """Versions activated explicitly (the rest use their newest)."""
        return dict(self._active)

    def render(self, name: str, variables: dict[str, object]) -> tuple[str, PromptTemplate]:
        template = self.get(name)
        supplied = self._supplied.get(name)
        if supplied is None or not supplied.issuperset(variables):
            self._supplied[name] = frozenset(variables) | (supplied or frozenset())
        return template.render(variables), template

    def unsupplied(self, template: PromptTemplate) -> list[str]:
        """Variables ``template`` declares that the bot has never passed when
        rendering its name (empty when the name was not rendered yet)."""
        supplied = self._supplied.get(template.name)
        if supplied is None:
            return []
        return [v for v in template.variables if v not in supplied]

    def active_after(self, loaded: Templates) -> list[PromptTemplate]:
        """The template of each name that would be active if ``loaded`` were installed."""
        active = []
        for name, versions in loaded.items():
            pinned = self._active.get(name)
            active.append(versions[pinned] if pinned in versions else versions[max(versions)])
        return active

    def names(self) -> dict[str, list[int]]:
        return {name: sorted(versions) for name, versions in self._templates.items()}

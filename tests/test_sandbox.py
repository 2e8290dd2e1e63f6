"""The per-user file sandbox: property-based tests for paths (traversal,
absolute, symlink escape, NUL, reserved names), quotas and isolation between
users, plus the file tools on top of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bot.tools.sandbox import FileSandbox, SandboxError, SandboxLimits, safe_file_name, split_path
from plugins import files as file_tools
from tests.support.contexts import make_ctx

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Path pieces chosen to hit every rule: separators, dots, drive letters, NUL,
# control characters, reserved device names, unicode, very long names.
PIECES = st.sampled_from(
    ["..", ".", "", "a", "notes", "x.md", "/", "\\", "~", "C:", "\x00", "\n", "\x7f", "CON", "nul.txt",
     "com1", "lpt9.log", "é", "日本", ".hidden", "trail.", "trail ", " ", "a" * 300, "%2e%2e", "..."]
)
PATHS = st.lists(PIECES, min_size=0, max_size=6).map("/".join) | st.text(max_size=40)


@pytest.fixture
def space() -> Iterator[tuple[FileSandbox, Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        outside = base / "outside"
        outside.mkdir()
        (outside / "secret.txt").write_text("top secret")
        yield FileSandbox(base / "files", SandboxLimits(max_bytes=4000, max_entries=30, max_file_bytes=1000)), outside


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def inside(path: Path, root: Path) -> bool:
    return os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)


@FAST
@given(path=PATHS)
def test_any_path_stays_inside_the_users_folder(space: tuple[FileSandbox, Path], path: str) -> None:
    sandbox, outside = space
    before = snapshot(outside)
    try:
        written = sandbox.write(1, path, "hello")
    except SandboxError:
        pass
    else:
        target = sandbox.user_root(1) / written.path
        assert inside(target, sandbox.user_root(1)) and target.read_text() == "hello"
        assert sandbox.read(1, written.path) == "hello"
        sandbox.delete(1, written.path)
    for operation in (sandbox.read, sandbox.list, sandbox.delete):
        try:
            operation(1, path)
        except SandboxError:
            pass
    assert snapshot(outside) == before
    assert not (sandbox.root / "2").exists()


@FAST
@given(
    before=st.lists(st.sampled_from(["a", "b", "notes"]), max_size=3),
    after=st.lists(st.sampled_from(["a", "b", "c.txt"]), max_size=3),
    prefix=st.sampled_from(["", "./", "/", "~/", "a/../"]),
)
def test_traversal_is_always_refused(
    space: tuple[FileSandbox, Path], before: list[str], after: list[str], prefix: str
) -> None:
    sandbox, _ = space
    path = prefix + "/".join([*before, "..", *after])
    with pytest.raises(SandboxError):
        split_path(path)
    with pytest.raises(SandboxError):
        sandbox.write(1, path, "x")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/passwd", "relative"),
        ("~/notes", "relative"),
        ("C:/Windows/win.ini", "relative"),
        ("notes\x00.txt", "NUL"),
        ("a\nb", "control"),
        ("dir\\file", "use /"),
        ("CON", "reserved"),
        ("aux.txt", "reserved"),
        (".env", "dot"),
        ("notes/", "name a file"),
        ("", "name a file"),
        ("x" * 600, "longer"),
        ("/".join("d" * 10), "nested"),
    ],
)
def test_bad_paths_get_a_clear_reason(space: tuple[FileSandbox, Path], path: str, reason: str) -> None:
    sandbox, _ = space
    with pytest.raises(SandboxError, match=reason):
        sandbox.write(1, path, "x")


@FAST
@given(
    tail=st.sampled_from(["secret.txt", "new.txt", "sub/new.txt", ".", ""]),
    link_name=st.sampled_from(["link", "notes/link"]),
)
def test_symlinks_never_lead_outside(space: tuple[FileSandbox, Path], tail: str, link_name: str) -> None:
    sandbox, outside = space
    sandbox.write(1, "notes/keep.md", "mine")
    link = sandbox.user_root(1) / link_name
    if not link.is_symlink():
        link.symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    path = f"{link_name}/{tail}".rstrip("/")
    for operation in (
        lambda: sandbox.write(1, path + "/x.txt" if tail in (".", "") else path, "pwned"),
        lambda: sandbox.read(1, path),
        lambda: sandbox.list(1, path),
    ):
        with pytest.raises(SandboxError, match="link|no file|not a regular|folder"):
            operation()
    if tail not in (".", ""):
        with pytest.raises(SandboxError, match="link"):
            sandbox.delete(1, path)
    assert snapshot(outside) == before
    assert link_name.split("/")[-1] not in [e.name for e in sandbox.list(1, "notes" if "/" in link_name else ".")]


def test_a_symlinked_file_is_not_read_and_deleting_it_removes_only_the_link(space: tuple[FileSandbox, Path]) -> None:
    sandbox, outside = space
    sandbox.write(1, "keep.md", "mine")
    (sandbox.user_root(1) / "passwd").symlink_to(outside / "secret.txt")
    with pytest.raises(SandboxError, match="link"):
        sandbox.read(1, "passwd")
    sandbox.write(1, "passwd", "replaced")  # replaces the link itself, never its target
    assert (outside / "secret.txt").read_text() == "top secret"
    assert sandbox.read(1, "passwd") == "replaced"


@FAST
@given(
    operations=st.lists(
        st.tuples(st.sampled_from(["write", "delete"]), st.sampled_from(["a", "b", "d/c", "d/e/f"]), st.integers(0, 1200)),
        max_size=25,
    )
)
def test_quotas_always_hold(space: tuple[FileSandbox, Path], operations: list[tuple[str, str, int]]) -> None:
    sandbox, _ = space
    limits = sandbox.limits
    for kind, path, size in operations:
        before = sandbox.usage(7)
        try:
            if kind == "write":
                sandbox.write(7, path, "z" * size)
            else:
                sandbox.delete(7, path)
        except SandboxError as exc:
            if kind == "write" and size > limits.max_file_bytes:
                assert "at most" in str(exc)
            assert sandbox.usage(7) == before  # a refusal changes nothing
        usage = sandbox.usage(7)
        assert usage.bytes <= limits.max_bytes and usage.entries <= limits.max_entries


def test_total_and_count_quotas_refuse_with_advice(space: tuple[FileSandbox, Path]) -> None:
    sandbox, _ = space
    for i in range(4):
        sandbox.write(3, f"f{i}.txt", "y" * 1000)
    with pytest.raises(SandboxError, match="not enough space.*delete something"):
        sandbox.write(3, "one-more.txt", "y" * 10)
    sandbox.write(3, "f0.txt", "short")  # replacing a file frees its old size
    small = FileSandbox(sandbox.root, SandboxLimits(max_bytes=10_000, max_entries=3, max_file_bytes=100))
    small.write(4, "a", "1")
    small.write(4, "b", "2")
    with pytest.raises(SandboxError, match="too many files"):
        small.write(4, "sub/c", "3")  # the folder and the file would make four


@FAST
@given(path=st.lists(st.sampled_from(["notes", "todo.md", "a", "b.txt"]), min_size=1, max_size=3).map("/".join))
def test_users_cannot_reach_each_others_files(space: tuple[FileSandbox, Path], path: str) -> None:
    sandbox, _ = space
    try:
        sandbox.write(100, path, "alice's")
    except SandboxError:
        return  # a name already used as a folder (or file) by an earlier example
    with pytest.raises(SandboxError):
        sandbox.read(200, path)
    assert sandbox.list(200) == []
    with pytest.raises(SandboxError):
        sandbox.delete(200, path)
    assert sandbox.read(100, path) == "alice's"


def test_folders_and_listing(space: tuple[FileSandbox, Path]) -> None:
    sandbox, _ = space
    sandbox.write(1, "b.md", "bb")
    sandbox.write(1, "recipes/pancakes.txt", "eggs")
    assert [(e.name, e.is_dir) for e in sandbox.list(1)] == [("recipes", True), ("b.md", False)]
    with pytest.raises(SandboxError, match="is a folder"):
        sandbox.read(1, "recipes")
    with pytest.raises(SandboxError, match="not empty"):
        sandbox.delete(1, "recipes")
    with pytest.raises(SandboxError, match="is a file, not a folder"):
        sandbox.write(1, "b.md/inner.txt", "x")
    assert sandbox.delete(1, "recipes/pancakes.txt") == "file"
    assert sandbox.delete(1, "recipes") == "folder"
    with pytest.raises(SandboxError, match="there is no"):
        sandbox.delete(1, "recipes")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("notes.md", "notes.md"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\ann\\report.csv", "report.csv"),
        (".bashrc", "bashrc"),
        ("CON.txt", "document-CON.txt"),
        ("what?.txt", "what_.txt"),
        ("", "document.txt"),
        (None, "document.txt"),
        ("...", "document.txt"),
    ],
)
def test_uploaded_names_are_made_safe(name: str | None, expected: str) -> None:
    assert safe_file_name(name) == expected


def test_documents_never_overwrite(space: tuple[FileSandbox, Path]) -> None:
    sandbox, _ = space
    assert sandbox.save_document(1, "list.csv", "a,b").path == "list.csv"
    assert sandbox.save_document(1, "list.csv", "c,d").path == "list (2).csv"
    assert sandbox.save_document(1, "README", "x").path == "README"
    assert sandbox.save_document(1, "README", "y").path == "README (2)"
    assert sandbox.read(1, "list.csv") == "a,b"


def test_the_file_tools_speak_to_the_model(space: tuple[FileSandbox, Path]) -> None:
    sandbox, _ = space
    ctx = make_ctx(user_id=9)
    assert file_tools.list_files(ctx, sandbox) == "no files here yet"
    assert file_tools.write_file(ctx, sandbox, "todo.md", "- milk").startswith("created todo.md (6 B); 6 B of")
    assert file_tools.write_file(ctx, sandbox, "todo.md", "- tea").startswith("replaced todo.md")
    assert file_tools.read_file(ctx, sandbox, "todo.md") == "- tea"
    assert file_tools.list_files(ctx, sandbox).splitlines()[0] == "todo.md (5 B)"
    assert file_tools.delete_file(ctx, sandbox, "todo.md") == "deleted the file todo.md"


def test_long_files_are_read_in_pieces(space: tuple[FileSandbox, Path]) -> None:
    sandbox, _ = space
    roomy = FileSandbox(sandbox.root, SandboxLimits(max_bytes=100_000, max_entries=10, max_file_bytes=20_000))
    ctx = make_ctx(user_id=11)
    text = "".join(f"{i:05d}\n" for i in range(1500))  # 9,000 characters
    file_tools.write_file(ctx, roomy, "long.txt", text)
    first = file_tools.read_file(ctx, roomy, "long.txt")
    assert first.startswith(text[:5000]) and first.endswith("call read_file with start=5000 to continue]")
    assert file_tools.read_file(ctx, roomy, "long.txt", start=5000) == text[5000:]
    assert file_tools.read_file(ctx, roomy, "long.txt", start=99_999) == ""


def test_a_tilde_name_is_refused_however_it_is_written(space: tuple[FileSandbox, Path]) -> None:
    sandbox, _ = space
    for path in ("~", "./~", "notes/~draft", "~/x"):
        with pytest.raises(SandboxError):
            sandbox.write(1, path, "x")


def test_a_drive_like_name_is_refused_however_it_is_written(space: tuple[FileSandbox, Path]) -> None:
    # Found by the property test above: "./C:" was written as "C:", which no path could then name.
    sandbox, _ = space
    for path in ("C:", "./C:", "notes/d:draft", "C:/x"):
        with pytest.raises(SandboxError):
            sandbox.write(1, path, "x")

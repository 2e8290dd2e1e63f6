"""A per-user file space under BOT_DATA_DIR/files/<user id>/: text notes and
files the model can write, read, list and delete, and documents the user sends.

Safety does not rest on string checks alone. Paths are validated (relative,
no ``..``, no NUL or control characters, no backslashes, no reserved or dot
names, bounded depth and length), and then every step below the user's root
is opened relative to its parent's file descriptor with O_NOFOLLOW: a
symlink anywhere on the way is refused by the kernel, even one created after
the check. A user's root comes from their id only, never from a path.

Quotas (bytes, number of entries, size of one file) are checked under a
per-user lock against what is really on disk, so they hold with parallel
calls and survive restarts without bookkeeping files."""

from __future__ import annotations

import errno
import os
import re
import stat
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bot.errors import ToolError
from bot.runtime.units import human_size

MAX_DEPTH = 8
MAX_PATH_CHARS = 512
MAX_NAME_BYTES = 255
MAX_LISTED = 200
_TEMP_PREFIX = ".sandbox-tmp-"
# Device names Windows reserves (with any extension); refused so that a
# backup copied to another system stays usable.
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_DRIVE = re.compile(r"^[A-Za-z]:")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class SandboxError(ToolError):
    """The sandbox refused a path or an operation; the message says why."""


@dataclass(frozen=True)
class SandboxLimits:
    max_bytes: int = 20 * 1024 * 1024  # all of one user's files together
    max_entries: int = 500  # files and folders of one user
    max_file_bytes: int = 1024 * 1024  # one file


@dataclass(frozen=True)
class Usage:
    bytes: int
    entries: int


@dataclass(frozen=True)
class Entry:
    name: str
    is_dir: bool
    size: int


@dataclass(frozen=True)
class Written:
    path: str
    size: int
    created: bool
    usage: Usage


def split_path(path: str, *, allow_root: bool = False) -> tuple[str, ...]:
    """The validated components of a sandbox path; raises SandboxError."""
    if not isinstance(path, str):
        raise SandboxError("the path must be text")
    text = path.strip()
    if "\x00" in text:
        raise SandboxError("the path contains a NUL character")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise SandboxError("the path contains control characters")
    if "\\" in text:
        raise SandboxError("use / to separate folders, not \\")
    if len(text) > MAX_PATH_CHARS:
        raise SandboxError(f"the path is longer than {MAX_PATH_CHARS} characters")
    if text.startswith(("/", "~")) or _DRIVE.match(text):
        raise SandboxError("use a path relative to the user's files, like notes/todo.md")
    parts = tuple(p for p in text.split("/") if p not in ("", "."))
    for part in parts:
        _check_name(part)
    if len(parts) > MAX_DEPTH:
        raise SandboxError(f"folders may be nested at most {MAX_DEPTH} deep")
    if not allow_root and (not parts or text.endswith("/")):
        raise SandboxError("name a file, like notes/todo.md")
    return parts


def _check_name(name: str) -> None:
    if name == "..":
        raise SandboxError("'..' is not allowed in paths")
    if name.startswith("."):
        raise SandboxError(f"names may not start with a dot: {name!r}")
    if name.startswith("~"):
        # A path starting with ~ is refused as a home-folder reference; a name
        # like "./~" must not sneak in a file that cannot then be named.
        raise SandboxError(f"names may not start with '~': {name!r}")
    if name.endswith(" ") or name.endswith("."):
        raise SandboxError(f"names may not end with a space or a dot: {name!r}")
    if _DRIVE.match(name):
        # Refused at the start of a path as a drive letter; "./C:" must not
        # sneak in a file that the returned path "C:" cannot then name.
        raise SandboxError(f"names may not start with a drive letter and ':': {name!r}")
    if _RESERVED.match(name):
        raise SandboxError(f"{name!r} is a reserved name")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise SandboxError("a file or folder name is too long")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise SandboxError("the path is not valid text") from None


class FileSandbox:
    def __init__(self, root: Path, limits: SandboxLimits) -> None:
        self.root = root
        self.limits = limits
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ---- public operations (blocking: call from a thread) ---------------

    def write(self, user_id: int, path: str, content: str) -> Written:
        parts = split_path(path)
        data = content.encode("utf-8", "replace")
        if len(data) > self.limits.max_file_bytes:
            raise SandboxError(
                f"the file would be {human_size(len(data))}; one file may be at most "
                f"{human_size(self.limits.max_file_bytes)}"
            )
        with self._user_lock(user_id):
            usage = self.usage(user_id)
            with self._directory(user_id, parts[:-1], create_with_budget=usage) as parent:
                previous = _existing_size(parent, parts[-1])
                created = previous is None
                after_bytes = usage.bytes - (previous or 0) + len(data)
                after_entries = self.usage(user_id).entries + (1 if created else 0)
                self._check_quota(after_bytes, after_entries)
                _replace_file(parent, parts[-1], data)
        return Written("/".join(parts), len(data), created, Usage(after_bytes, after_entries))

    def read(self, user_id: int, path: str) -> str:
        parts = split_path(path)
        with self._directory(user_id, parts[:-1]) as parent:
            fd = _open_in(parent, parts[-1], os.O_RDONLY)
            try:
                info = os.fstat(fd)
                if stat.S_ISDIR(info.st_mode):
                    raise SandboxError(f"{'/'.join(parts)} is a folder; use list_files")
                if not stat.S_ISREG(info.st_mode):
                    raise SandboxError(f"{'/'.join(parts)} is not a regular file")
                if info.st_size > self.limits.max_file_bytes:
                    raise SandboxError(f"{'/'.join(parts)} is too large to read ({human_size(info.st_size)})")
                with os.fdopen(os.dup(fd), "rb") as handle:
                    data = handle.read(self.limits.max_file_bytes + 1)
            finally:
                os.close(fd)
        return data.decode("utf-8", "replace")

    def list(self, user_id: int, path: str = ".") -> list[Entry]:
        parts = split_path(path, allow_root=True)
        entries: list[Entry] = []
        with self._directory(user_id, parts, create_root=not parts) as folder:
            with os.scandir(folder) as scan:
                for item in scan:
                    if item.name.startswith("."):
                        continue  # temp files of an interrupted write; never user names
                    info = item.stat(follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode):
                        entries.append(Entry(item.name, True, 0))
                    elif stat.S_ISREG(info.st_mode):
                        entries.append(Entry(item.name, False, info.st_size))
        entries.sort(key=lambda e: (not e.is_dir, e.name.lower()))
        return entries[:MAX_LISTED]

    def delete(self, user_id: int, path: str) -> str:
        parts = split_path(path)
        with self._user_lock(user_id), self._directory(user_id, parts[:-1]) as parent:
            name = parts[-1]
            try:
                info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                raise SandboxError(f"there is no {'/'.join(parts)}") from None
            try:
                if stat.S_ISDIR(info.st_mode):
                    os.rmdir(name, dir_fd=parent)
                    return "folder"
                os.unlink(name, dir_fd=parent)  # a symlink is removed itself, never its target
            except OSError as exc:
                if exc.errno == errno.ENOTEMPTY:
                    raise SandboxError(f"the folder {'/'.join(parts)} is not empty; delete its files first") from None
                raise
        return "file"

    def usage(self, user_id: int) -> Usage:
        root = self.user_root(user_id)
        total = entries = 0
        for folder, dirs, files in os.walk(root, followlinks=False):
            for name in dirs + files:
                if name.startswith(_TEMP_PREFIX):
                    continue
                try:
                    info = os.lstat(os.path.join(folder, name))
                except FileNotFoundError:
                    continue
                entries += 1
                if stat.S_ISREG(info.st_mode):
                    total += info.st_size
        return Usage(total, entries)

    def save_document(self, user_id: int, file_name: str, content: str) -> Written:
        """Store a document the user sent, under a safe, unused name."""
        base = safe_file_name(file_name)
        stem, dot, suffix = base.rpartition(".")
        if not dot or not stem:
            stem, suffix = base, ""
        existing = {e.name for e in self.list(user_id)}
        name, copy = base, 2
        while name in existing:
            name = f"{stem} ({copy}).{suffix}" if suffix else f"{stem} ({copy})"
            copy += 1
        return self.write(user_id, name, content)

    def adopt(self, absorbed: int, survivor: int) -> int:
        """Moves ``absorbed``'s files to ``survivor`` (after /link): the whole
        tree when the survivor has none, else into a folder ``linked-<id>``
        of theirs, so no file of either is overwritten. Returns how many
        files moved. The quota is not checked: nothing is lost by a link."""
        source, target = self.user_root(absorbed), self.user_root(survivor)
        first, second = sorted((absorbed, survivor))
        with self._user_lock(first), self._user_lock(second):
            if not source.is_dir():
                return 0
            count = sum(1 for p in source.rglob("*") if p.is_file())
            if not target.exists():
                source.rename(target)
                return count
            folder, attempt = target / f"linked-{absorbed}", 1
            while folder.exists():
                attempt += 1
                folder = target / f"linked-{absorbed}-{attempt}"
            source.rename(folder)
            return count

    def user_root(self, user_id: int) -> Path:
        if not isinstance(user_id, int) or isinstance(user_id, bool):
            raise TypeError("user_id must be an int")
        return self.root / str(user_id)

    # ---- internals ---------------------------------------------------------

    def _check_quota(self, after_bytes: int, after_entries: int) -> None:
        if after_bytes > self.limits.max_bytes:
            raise SandboxError(
                f"not enough space: the user's files would take {human_size(after_bytes)}, "
                f"the limit is {human_size(self.limits.max_bytes)}; delete something first"
            )
        if after_entries > self.limits.max_entries:
            raise SandboxError(
                f"too many files and folders (limit {self.limits.max_entries}); delete something first"
            )

    def _user_lock(self, user_id: int) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(user_id, threading.Lock())

    @contextmanager
    def _directory(
        self,
        user_id: int,
        parts: tuple[str, ...],
        *,
        create_with_budget: Usage | None = None,
        create_root: bool = False,
    ) -> Iterator[int]:
        """A descriptor of the folder ``parts`` below the user's root, every
        step opened without following symlinks. With a budget, missing
        folders are created (each counts as an entry against the quota)."""
        root = self.user_root(user_id)
        if create_with_budget is not None or create_root:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(root, _DIR_FLAGS)
        except FileNotFoundError:
            raise SandboxError("there are no files yet") from None
        try:
            entries = create_with_budget.entries if create_with_budget else 0
            for depth, name in enumerate(parts):
                if create_with_budget is not None:
                    entries += self._make_folder(fd, name, create_with_budget.bytes, entries)
                child = _open_folder(fd, name, "/".join(parts[: depth + 1]))
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _make_folder(self, parent: int, name: str, used_bytes: int, entries: int) -> int:
        try:
            os.stat(name, dir_fd=parent, follow_symlinks=False)
            return 0
        except FileNotFoundError:
            pass
        self._check_quota(used_bytes, entries + 1)
        try:
            os.mkdir(name, 0o700, dir_fd=parent)
        except FileExistsError:
            return 0
        return 1


def _open_folder(parent: int, name: str, shown: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        raise SandboxError(f"there is no folder {shown}") from None
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        # Linux answers ENOTDIR for a symlink opened with O_DIRECTORY|O_NOFOLLOW.
        if _is_link(parent, name):
            raise SandboxError(f"{shown} is a link; links are not followed") from None
        raise SandboxError(f"{shown} is a file, not a folder") from None


def _is_link(parent: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_in(parent: int, name: str, flags: int) -> int:
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    except FileNotFoundError:
        raise SandboxError(f"there is no file {name}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SandboxError(f"{name} is a link; links are not followed") from None
        raise


def _existing_size(parent: int, name: str) -> int | None:
    try:
        info = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(info.st_mode):
        raise SandboxError(f"{name} is a folder")
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def _replace_file(parent: int, name: str, data: bytes) -> None:
    """Write to a temp file beside the target, then rename over it: a reader
    never sees half a file, and a crash leaves the old version."""
    temp = f"{_TEMP_PREFIX}{uuid.uuid4().hex}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        try:
            os.unlink(temp, dir_fd=parent)
        except FileNotFoundError:
            pass
        raise


_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def safe_file_name(name: str | None) -> str:
    """A file name from a user's upload, made acceptable to split_path."""
    base = (name or "").replace("\\", "/").split("/")[-1]
    base = _UNSAFE_CHARS.sub("_", base).strip().lstrip(".").rstrip(" .")
    while len(base.encode("utf-8", "replace")) > 120:
        base = base[:-1]
    if not base or _RESERVED.match(base):
        base = f"document-{base}" if base else "document.txt"
    try:
        _check_name(base)
    except SandboxError:
        return "document.txt"
    return base

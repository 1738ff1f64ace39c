"""sam2ui's temporary folders: one parent of this user's, one folder per use, none left over.

Folders that a session writes (the app's downloads, a video's tracking memories moved to disk)
live in ``<temporary directory>/sam2ui-<uid>`` (created for this user only, mode 0700; where
that name is taken by something else, the temporary directory itself), each named
``sam2ui-<kind>-<pid>-<random>``. Whoever makes a folder removes it when done; what is still
there when the process exits normally (also after SIGTERM or Ctrl-C turned into an exit, see
:func:`sam2ui.app.launcher.exit_on_signals`) goes at exit; and a process killed before it
could clean up leaves folders whose process id no longer runs, which the next process to
make a folder (or :func:`sweep_stale`) removes. Only the standard library is imported.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import stat
import tempfile
import threading
from pathlib import Path

__all__ = ["make_folder", "pid_alive", "remove_own", "scratch_root", "sweep_stale"]

_NAME = re.compile(r"^sam2ui-[a-z]+-(\d+)-")
_KIND = re.compile(r"^[a-z]+$")
_lock = threading.Lock()
_prepared: set[str] = set()  # the roots this process has swept (and removes its folders of)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (True when that cannot be told: keep its files)."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def scratch_root() -> Path:
    """The parent of sam2ui's folders: ``sam2ui-<uid>`` in the temporary directory, made
    for this user alone; the temporary directory itself when that name cannot be trusted (a
    link, a file, or another user's folder)."""
    base = Path(tempfile.gettempdir())
    getuid = getattr(os, "getuid", None)
    root = base / (f"sam2ui-{getuid()}" if getuid is not None else "sam2ui")
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(root)
    except OSError:
        return base
    if not stat.S_ISDIR(info.st_mode) or (getuid is not None and info.st_uid != getuid()):
        return base
    return root


def _owner(name: str) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def _remove(root: Path, keep: object) -> list[str]:
    """Remove the folders of ``root`` whose owning pid ``keep(pid)`` says to drop."""
    removed: list[str] = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        pid = _owner(name)
        if pid is None or keep(pid):  # type: ignore[operator]
            continue
        path = root / name
        if path.is_symlink() or not path.is_dir():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(str(path))
    return removed


def sweep_stale(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Remove the folders in ``root`` (default :func:`scratch_root`) of processes that no
    longer run; returns their paths."""
    me = os.getpid()
    return _remove(
        Path(root) if root is not None else scratch_root(),
        lambda pid: pid == me or pid_alive(pid),
    )


def remove_own(root: str | os.PathLike[str] | None = None) -> list[str]:
    """Remove this process's folders in ``root`` (default: every root it made folders in);
    returns their paths. Runs at exit."""
    me = os.getpid()
    with _lock:
        roots = [Path(root)] if root is not None else [Path(r) for r in _prepared]
    return [p for r in roots for p in _remove(r, lambda pid: pid != me)]


def make_folder(kind: str) -> Path:
    """A new, empty folder ``sam2ui-<kind>-<pid>-<random>`` under :func:`scratch_root`
    (``kind``: lowercase letters, e.g. "image", "video", "mem"). The first one of a process
    sweeps the folders of dead processes and arranges for this process's to go at exit."""
    if not _KIND.match(kind):
        raise ValueError(f"a folder kind is lowercase letters, got {kind!r}")
    root = scratch_root()
    with _lock:
        first = not _prepared
        new = str(root) not in _prepared
        _prepared.add(str(root))
    if first:
        atexit.register(remove_own)
    if new:
        sweep_stale(root)
    return Path(tempfile.mkdtemp(prefix=f"sam2ui-{kind}-{os.getpid()}-", dir=root))

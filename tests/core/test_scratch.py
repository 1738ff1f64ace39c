"""sam2ui's temporary folders: one parent of the user's, per-process names, stale ones swept."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sam2ui.core import scratch


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory moved to ``tmp_path``, as a process that made no folder yet."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(scratch, "_prepared", set())
    return tmp_path


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


@pytest.mark.skipif(os.name != "posix", reason="uids, modes and pid checks are POSIX")
def test_folders_live_in_a_private_parent_and_stale_ones_go(fresh: Path) -> None:
    root = fresh / f"sam2ui-{os.getuid()}"
    root.mkdir(mode=0o700)
    gone = dead_pid()
    stale = root / f"sam2ui-video-{gone}-abc"
    alive = root / f"sam2ui-image-{os.getppid()}-def"  # the test runner's parent runs
    other = root / f"notes-{gone}-x"
    for folder in (stale, alive, other):
        folder.mkdir()
        (folder / "f.bin").write_bytes(b"x")

    made = scratch.make_folder("image")  # the first of this process sweeps
    assert made.parent == root and made.name.startswith(f"sam2ui-image-{os.getpid()}-")
    assert not stale.exists() and alive.exists() and other.exists()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert scratch.scratch_root() == root

    mem = scratch.make_folder("mem")
    (mem / "0-0.bin").write_bytes(b"x")
    assert sorted(scratch.remove_own()) == sorted([str(made), str(mem)])  # what exit does
    assert not made.exists() and not mem.exists() and alive.exists()
    with pytest.raises(ValueError, match="lowercase letters"):
        scratch.make_folder("../x")


@pytest.mark.skipif(os.name != "posix", reason="links and uids are POSIX")
def test_an_untrusted_parent_is_not_used(fresh: Path) -> None:
    elsewhere = fresh / "elsewhere"
    elsewhere.mkdir()
    (fresh / f"sam2ui-{os.getuid()}").symlink_to(elsewhere)
    made = scratch.make_folder("video")
    assert made.parent == fresh and made.name.startswith(f"sam2ui-video-{os.getpid()}-")
    assert list(elsewhere.iterdir()) == []
    scratch.remove_own()
    assert not made.exists()


@pytest.mark.skipif(os.name != "posix", reason="pid checks are POSIX")
def test_sweep_stale_keeps_running_processes(tmp_path: Path) -> None:
    gone = dead_pid()
    names = [f"sam2ui-mem-{gone}-a", f"sam2ui-image-{os.getpid()}-b", f"sam2ui-x-{gone}-c"]
    for name in names:
        (tmp_path / name).mkdir()
    (tmp_path / f"sam2ui-video-{gone}-file").write_bytes(b"not a folder")
    removed = scratch.sweep_stale(tmp_path)
    assert sorted(removed) == sorted([str(tmp_path / names[0]), str(tmp_path / names[2])])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [names[1], f"sam2ui-video-{gone}-file"]
    )
    assert scratch.pid_alive(os.getpid()) and not scratch.pid_alive(gone)

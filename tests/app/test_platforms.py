"""The app where ZeroGPU cannot run (macOS, Windows, no ``fork``), simulated on this machine:
``SPACES_ZERO_GPU`` set and ``spaces`` installed, and still every call runs in this process."""

from __future__ import annotations

import logging
import multiprocessing
import runpy
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sam2ui.app import compat, zerogpu
from sam2ui.app.video_handlers import VideoHandlers, VideoWork

REPO = Path(__file__).resolve().parents[2]
FAKE_SPACES = Path(__file__).parent / "fake_spaces"


@pytest.fixture
def zero_gpu_asked(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``SPACES_ZERO_GPU=true`` with a ``spaces`` package to be found (the tests' stand-in)."""
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.syspath_prepend(str(FAKE_SPACES))
    sys.modules.pop("spaces", None)
    zerogpu._warn_in_process.cache_clear()
    zerogpu._gpu_tasks.cache_clear()
    yield
    sys.modules.pop("spaces", None)
    zerogpu._gpu_tasks.cache_clear()


def _no_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])


@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
@pytest.mark.parametrize("fork", [True, False])
def test_zero_gpu_unsupported(monkeypatch: pytest.MonkeyPatch, platform: str, fork: bool) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    if not fork:
        _no_fork(monkeypatch)
    assert compat.fork_supported() == (fork and "fork" in multiprocessing.get_all_start_methods())
    reason = compat.zero_gpu_unsupported()
    if platform == "linux" and compat.fork_supported():
        assert reason is None
    elif platform == "linux":
        assert reason is not None and "cannot fork" in reason
    else:
        assert reason is not None and "only on Linux" in reason and platform in reason


def test_zero_gpu_flag_is_read_as_spaces_reads_it() -> None:
    assert compat.zero_gpu_requested({"SPACES_ZERO_GPU": "True "})
    assert compat.zero_gpu_requested({"SPACES_ZERO_GPU": "1"})
    for off in ("", "0", "false", "no"):
        assert not compat.zero_gpu_requested({"SPACES_ZERO_GPU": off})
    assert not compat.zero_gpu_requested({})


@pytest.mark.usefixtures("zero_gpu_asked")
@pytest.mark.parametrize("where", ["win32", "darwin", "no-fork"])
def test_off_linux_model_calls_run_in_this_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    if where == "no-fork":
        _no_fork(monkeypatch)
    else:
        monkeypatch.setattr(sys, "platform", where)
    calls: list[int] = []

    def work(x: int) -> int:  # a local function: it could not be pickled for a worker
        calls.append(x)
        return x + 1

    def items(n: int) -> Any:
        yield from range(n)

    with caplog.at_level(logging.WARNING, logger=zerogpu.__name__):
        assert not zerogpu.on_zero_gpu() and not zerogpu.offload_state()
        assert not zerogpu.on_zero_gpu()
    (record,) = caplog.records  # once, however often it is asked
    assert "SPACES_ZERO_GPU is set" in record.getMessage()
    assert "in this process" in record.getMessage()
    zerogpu.prepare()  # declares no GPU functions
    assert zerogpu._gpu_tasks.cache_info().currsize == 0
    assert zerogpu.run(work, 1) == 2 and calls == [1]
    assert list(zerogpu.iterate(items, 3)) == [0, 1, 2]
    assert "spaces" not in sys.modules


@pytest.mark.usefixtures("zero_gpu_asked")
def test_on_linux_the_flag_still_means_zero_gpu() -> None:
    if compat.zero_gpu_unsupported() is not None:
        pytest.skip(compat.zero_gpu_unsupported() or "")
    assert zerogpu.on_zero_gpu()


@pytest.mark.usefixtures("zero_gpu_asked")
@pytest.mark.parametrize("platform", ["linux", "darwin", "win32"])
def test_spaces_app_imports_spaces_on_linux_only(
    monkeypatch: pytest.MonkeyPatch, platform: str
) -> None:
    monkeypatch.setattr(sys, "platform", platform)
    runpy.run_path(str(REPO / "spaces_app.py"), run_name="spaces_app")  # not __main__
    assert ("spaces" in sys.modules) == (compat.zero_gpu_unsupported() is None)


def test_the_zero_gpu_glue_imports_and_runs_on_a_spawn_only_platform() -> None:
    """In a fresh interpreter that looks like Windows (no fork, ``sys.platform`` win32, no
    ``os.fork``), with ZeroGPU asked for: spaces_app.py, the glue and the handoff import and
    work, in-process."""
    code = textwrap.dedent(
        f"""
        import multiprocessing, os, runpy, sys
        import torch  # first: torch reads sys.platform when it loads
        sys.path.insert(0, {str(FAKE_SPACES)!r})
        os.environ["SPACES_ZERO_GPU"] = "true"
        sys.platform = "win32"
        multiprocessing.get_all_start_methods = lambda: ["spawn"]
        del os.fork
        runpy.run_path({str(REPO / "spaces_app.py")!r}, run_name="spaces_app")
        from sam2ui.app import zerogpu
        from sam2ui.core import handoff
        state = handoff.loads(handoff.dumps({{"t": torch.ones(2)}}))
        assert state["t"].tolist() == [1.0, 1.0]
        assert zerogpu.run(lambda: 3) == 3 and not zerogpu.on_zero_gpu()
        print("spaces" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    assert "ZeroGPU runs only on Linux" in out.stderr  # the warning, through logging


def test_an_old_overlay_that_cannot_be_removed_is_left_to_the_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Windows refuses to delete a file that is open elsewhere: a new overlay is still made."""

    def write(path: Path) -> Path:
        Path(path).write_bytes(b"mp4")
        return Path(path)

    annotator: Any = SimpleNamespace(write_overlay_mp4=write, close=lambda: None)
    work = VideoWork(annotator, folder=tmp_path)
    handlers = VideoHandlers(ctx=None)  # type: ignore[arg-type]
    first = handlers._overlay_mp4(work)
    work.version += 1

    def locked(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(13, "The process cannot access the file", str(self))

    monkeypatch.setattr(Path, "unlink", locked)
    second = handlers._overlay_mp4(work)
    assert second != first and second.exists() and first.exists()
    assert work.mp4 == (1, second)

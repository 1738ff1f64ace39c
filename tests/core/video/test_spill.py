"""The disk tier of tracking memory (:class:`SpillStore`): exact round trips, the budget,
disk errors, and the temporary files gone after close, collection, exit or a killed process.

Store-level tests with small tensors; the predictor-level behaviour (exact corrections
behind the RAM window, a budget hit during propagation) is in ``test_memory.py``.
"""

from __future__ import annotations

import builtins
import gc
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sam2ui.core import scratch
from sam2ui.core.video.spill import SpillError, SpillStore, sweep_orphans


def _tensors(seed: int, dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, 1, 16, 16, generator=g) * 10
    features = torch.randn(1, 64, 8, 8, generator=g).to(dtype)
    return logits, features


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_round_trip_is_bit_exact(dtype: torch.dtype) -> None:
    store = SpillStore()
    logits, features = _tensors(0, dtype)
    ref = store.put("car", 7, logits, features)
    assert torch.equal(store.logits(ref), logits)
    got = store.features(ref)
    assert got.dtype == dtype and torch.equal(got, features)
    assert len(store) == 1 and store.nbytes == 16 * 16 * 4 + features.numel() * (
        features.element_size()
    )
    assert os.path.getsize(os.path.join(store.directory, "0-7.bin")) == store.nbytes
    # Another object gets its own slot; the same (object, frame) is overwritten in place.
    other = store.put(("tuple", "id"), 7, *_tensors(1, dtype))
    assert other.key == (1, 7)
    again = store.put("car", 7, *_tensors(2, dtype))
    assert len(store) == 2 and torch.equal(store.logits(again), _tensors(2, dtype)[0])
    store.close()


def test_budget_is_enforced_and_nothing_is_half_written() -> None:
    logits, features = _tensors(0)
    one = logits.numel() * 4 + features.numel() * 2
    store = SpillStore(budget_bytes=2 * one)
    first = store.put(1, 0, logits, features)
    store.put(1, 1, logits, features)
    with pytest.raises(SpillError, match=r"disk budget .* exceeded .*spill_budget_bytes"):
        store.put(1, 2, logits, features)
    assert len(store) == 2 and store.nbytes == 2 * one
    assert sorted(os.listdir(store.directory)) == ["0-0.bin", "0-1.bin"]
    # Rewriting a frame already stored fits (it replaces its own bytes); freeing makes room.
    store.put(1, 1, logits, features)
    store.discard(first)
    store.put(1, 2, logits, features)
    assert len(store) == 2
    with pytest.raises(ValueError, match="budget"):
        SpillStore(budget_bytes=-1)
    store.close()


def test_disk_error_is_a_spill_error_and_the_store_stays_usable(monkeypatch) -> None:
    store = SpillStore()
    logits, features = _tensors(3)
    kept = store.put(5, 0, logits, features)
    real_open = builtins.open

    def full_disk(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).endswith(".bin"):
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk)
    with pytest.raises(SpillError, match="No space left on device"):
        store.put(5, 1, logits, features)
    monkeypatch.setattr(builtins, "open", real_open)
    assert len(store) == 1 and torch.equal(store.features(kept), features)
    store.put(5, 1, logits, features)
    assert len(store) == 2
    store.close()


def test_files_go_with_close_drop_and_garbage_collection() -> None:
    store = SpillStore()
    refs = [store.put(obj, t, *_tensors(t)) for obj in (1, 2) for t in range(3)]
    directory = store.directory
    assert directory is not None and len(os.listdir(directory)) == 6
    assert os.path.basename(directory).startswith(f"sam2ui-mem-{os.getpid()}-")
    store.discard(refs[0])
    store.discard(refs[0])  # twice: nothing happens
    store.drop_object(2)
    assert sorted(os.listdir(directory)) == ["0-1.bin", "0-2.bin"]
    with pytest.raises(KeyError, match="frame 0"):
        store.logits(refs[0])
    store.close()
    assert not os.path.exists(directory) and len(store) == 0 and store.directory is None
    # Usable again after close, in a new directory; collected -> deleted.
    store.put(1, 0, *_tensors(0))
    directory = store.directory
    assert directory is not None and os.path.isdir(directory)
    del store
    gc.collect()
    assert not os.path.exists(directory)


def test_pickle_carries_the_files_inline() -> None:
    store = SpillStore(budget_bytes=10**6)
    refs = {t: store.put("a", t, *_tensors(t)) for t in range(3)}
    clone = pickle.loads(pickle.dumps(store))
    assert clone.directory != store.directory and clone.budget_bytes == 10**6
    for t, ref in refs.items():
        assert torch.equal(clone.logits(ref), _tensors(t)[0])
        assert torch.equal(clone.features(ref), _tensors(t)[1])
    assert clone.slot("a") == 0 and clone.slot("b") == 1
    store.close()
    assert torch.equal(clone.features(refs[2]), _tensors(2)[1])  # its own files
    clone.close()


def test_sweep_deletes_only_directories_of_dead_processes(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    orphan = tmp_path / f"sam2ui-mem-{dead_pid}-abc"
    mine = tmp_path / f"sam2ui-mem-{os.getpid()}-def"
    parent = tmp_path / f"sam2ui-mem-{os.getppid()}-ghi"  # alive
    unrelated = tmp_path / f"other-{dead_pid}-x"
    for d in (orphan, mine, parent, unrelated):
        d.mkdir()
        (d / "0-0.bin").write_bytes(b"x" * 10)
    assert sweep_orphans(str(tmp_path)) == [str(orphan)]
    assert not orphan.exists() and mine.exists() and parent.exists() and unrelated.exists()
    assert sweep_orphans(str(tmp_path / "missing")) == []


_CHILD = textwrap.dedent(
    """
    import sys, torch
    from sam2ui.core.video.spill import SpillStore
    store = SpillStore()
    store.put(1, 0, torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 2, 2))
    print(store.directory, flush=True)
    sys.stdin.readline()  # until the test says so (or a signal comes)
    """
)


def _child(tmp_path: Path) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    directory = proc.stdout.readline().strip()
    assert directory.startswith(str(tmp_path)) and os.path.isdir(directory), directory
    return proc, directory


@pytest.mark.skipif(os.name != "posix", reason="signals and pid checks are POSIX")
def test_exit_interrupt_and_kill_leave_no_files(tmp_path: Path, monkeypatch) -> None:
    proc, directory = _child(tmp_path)
    proc.communicate("go\n", timeout=60)  # a normal exit
    assert proc.returncode == 0 and not os.path.exists(directory)

    proc, directory = _child(tmp_path)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: KeyboardInterrupt, exit handlers run
    assert proc.wait(60) != 0 and not os.path.exists(directory)

    proc, directory = _child(tmp_path)
    proc.kill()  # no handler can run: the files stay until another process sweeps
    proc.wait(60)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{proc.pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.isdir(directory)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(scratch, "_prepared", set())  # as in a new process
    store = SpillStore()
    store.put(1, 0, *_tensors(0))  # the first folder of a process sweeps
    assert not os.path.exists(directory)
    assert os.path.dirname(store.directory) == os.path.dirname(directory)
    assert os.path.dirname(directory) == str(tmp_path / f"sam2ui-{os.getuid()}")
    store.close()

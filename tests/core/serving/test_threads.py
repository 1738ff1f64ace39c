"""torch's threads follow the CPUs the process may use and those others leave free."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sam2ui.core.serving import threads
from sam2ui.core.serving.lanes import Lane, ModelScheduler
from sam2ui.core.serving.threads import FreeCpus, cgroup_cpu_limit, configure_threads


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _cgroup(tmp_path: Path, limits: dict[str, str]) -> tuple[Path, Path]:
    """A fake cgroup v2 tree with ``cpu.max`` files at the given relative folders."""
    root = tmp_path / "cgroup"
    for rel, text in limits.items():
        folder = root / rel if rel else root
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.max").write_text(text + "\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/pod/app\n")
    return root, proc


def test_the_tightest_cgroup_quota_of_the_process_and_its_parents(tmp_path: Path) -> None:
    root, proc = _cgroup(tmp_path, {"": "max 100000", "pod": "250000 100000", "pod/app": "max"})
    assert cgroup_cpu_limit(root, proc) == pytest.approx(2.5)
    root, proc = _cgroup(tmp_path / "b", {"pod": "400000 100000", "pod/app": "150000 100000"})
    assert cgroup_cpu_limit(root, proc) == pytest.approx(1.5)
    root, proc = _cgroup(tmp_path / "c", {"": "max 100000"})
    assert cgroup_cpu_limit(root, proc) is None


def test_usable_cpus_is_capped_by_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "_affinity_cpus", lambda: 64)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1.5)
    assert threads.usable_cpus() == 2  # a quota of 1.5 CPUs still runs two threads
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.usable_cpus() == 64
    monkeypatch.setattr(threads, "_affinity_cpus", lambda: 3)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 8.0)
    assert threads.usable_cpus() == 3


def test_configure_threads_from_argument_environment_or_machine(
    monkeypatch: pytest.MonkeyPatch, restore_threads
) -> None:
    monkeypatch.setattr(threads, "usable_cpus", lambda: 1)
    monkeypatch.delenv(threads.THREADS_VARIABLE, raising=False)
    assert configure_threads() == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv(threads.THREADS_VARIABLE, "2")
    assert configure_threads() == 2 and torch.get_num_threads() == 2
    assert configure_threads(1) == 1 and torch.get_num_threads() == 1  # the argument wins
    monkeypatch.setenv(threads.THREADS_VARIABLE, "many")
    with pytest.raises(ValueError, match="SAM2UI_THREADS must be a whole number"):
        configure_threads()
    with pytest.raises(ValueError, match="threads must be >= 1"):
        configure_threads(0)


def test_free_cpus_subtracts_what_other_processes_keep_busy() -> None:
    cpus = FreeCpus(cpus=4, window_s=1.0)
    hz = cpus._hz
    assert cpus.others_busy(busy=0, own=0, now=10.0) is None  # the first sample
    assert cpus.others_busy(busy=hz, own=0, now=10.5) is None  # the window is too short
    # Over 2 s the machine was busy 5 CPU-seconds, 2 of them ours: others kept 1.5 CPUs.
    assert cpus.others_busy(busy=5 * hz, own=2 * hz, now=12.0) == pytest.approx(1.5)
    # Only our own work: nobody else is busy.
    assert cpus.others_busy(busy=9 * hz, own=6 * hz, now=14.0) == pytest.approx(0.0)


def test_free_cpus_sets_torch_threads_before_each_model_call(
    monkeypatch: pytest.MonkeyPatch, restore_threads
) -> None:
    cpus = FreeCpus(cpus=2, window_s=0.0)
    samples = iter([(0, 0), (2 * cpus._hz, 0), (2 * cpus._hz, 0)])
    clock = iter([0.0, 1.0, 2.0])
    monkeypatch.setattr(threads, "_busy_ticks", lambda: next(samples))
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    sched = ModelScheduler(on_grant=cpus.apply)
    with sched.slot(Lane.HEAVY):
        assert torch.get_num_threads() == 2  # no measure yet: every usable CPU
    with sched.slot(Lane.INTERACTIVE):
        assert torch.get_num_threads() == 1  # neighbours held both CPUs: one thread, not two
    with sched.slot(Lane.INTERACTIVE):
        assert torch.get_num_threads() == 2  # the neighbour stopped


def test_quick_thread_switches_from_argument_environment_or_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    before = sys.getswitchinterval()
    try:
        monkeypatch.delenv(threads.SWITCH_INTERVAL_VARIABLE, raising=False)
        assert threads.quick_thread_switches() == pytest.approx(before * 1e3)
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        monkeypatch.setenv(threads.SWITCH_INTERVAL_VARIABLE, "2")
        assert threads.quick_thread_switches() == pytest.approx(0.5)
        assert sys.getswitchinterval() == pytest.approx(0.002)
        assert threads.quick_thread_switches(1.0) == pytest.approx(2.0)
        assert sys.getswitchinterval() == pytest.approx(0.001)
        monkeypatch.setenv(threads.SWITCH_INTERVAL_VARIABLE, "fast")
        with pytest.raises(ValueError, match="SAM2UI_SWITCH_INTERVAL_MS must be a number"):
            threads.quick_thread_switches()
        for bad in (0.0, -1.0, float("nan"), 5000.0):
            with pytest.raises(ValueError, match="switch interval"):
                threads.quick_thread_switches(bad)
        assert sys.getswitchinterval() == pytest.approx(0.001)  # left as it was
    finally:
        sys.setswitchinterval(before)

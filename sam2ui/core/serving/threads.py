"""torch's thread count from the CPUs this process may actually use.

torch starts one intra-op thread per core it sees, and it sees the host's cores: a container
limited to two CPUs by a cgroup quota on a 64-core host runs 64 threads that take turns on two
CPUs, and every parallel region waits for the slowest of them. :func:`usable_cpus` counts the
CPUs of the process's affinity mask and caps them by the cgroup's CPU quota (v2 ``cpu.max`` or
v1 ``cpu.cfs_quota_us``, the process's own group and its parents); :func:`configure_threads`
sets torch's intra-op threads to that, or to what the user asked (an argument, else the
``SAM2UI_THREADS`` environment variable).

Even inside its own CPUs a server shares the machine: a CPU-bound neighbour holding one of two
cores makes a two-thread encoding wait at every parallel region for the thread that is not
running (measured here: 2.6 s with one thread, 5 to 9 s with two, beside two busy
neighbours). :class:`FreeCpus` follows the CPUs that other processes leave free, from the
machine's and this process's CPU time in ``/proc``, and the serving layer sets torch's threads
to that count before each model call.

Python's own threads matter too: a thread that wants the interpreter lock waits up to the
switch interval (5 ms by default) before the holder is asked to let go. On a server, model
work holds the lock in the Python between its torch calls while a click's request passes
through the event loop, a handler thread and the streaming of its answer, each a hand-over
that could wait that long. :func:`quick_thread_switches` shortens the interval for a
serving process.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from pathlib import Path

__all__ = [
    "SWITCH_INTERVAL_VARIABLE",
    "THREADS_VARIABLE",
    "FreeCpus",
    "cgroup_cpu_limit",
    "configure_threads",
    "quick_thread_switches",
    "usable_cpus",
]

THREADS_VARIABLE = "SAM2UI_THREADS"
SWITCH_INTERVAL_VARIABLE = "SAM2UI_SWITCH_INTERVAL_MS"
DEFAULT_SWITCH_INTERVAL_MS = 0.5
_CGROUP_ROOT = Path("/sys/fs/cgroup")


def _affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _quota(text: str) -> float | None:
    """CPUs allowed by a ``cpu.max`` line (``"max 100000"`` or ``"150000 100000"``)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    quota, period = float(parts[0]), float(parts[1])
    return quota / period if quota > 0 and period > 0 else None


def _own_groups(root: Path, proc_cgroup: Path) -> list[Path]:
    """This process's cgroup v2 folder and its parents up to ``root``, innermost first."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return [root]
    rel = next((line.split(":", 2)[2] for line in lines if line.startswith("0::")), "/")
    group = root / rel.lstrip("/")
    found = [group, *group.parents]
    return [g for g in found if g == root or root in g.parents]


def cgroup_cpu_limit(
    root: Path = _CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """The tightest CPU quota of this process's cgroups, in CPUs (``None``: no quota)."""
    limits: list[float] = []
    for group in _own_groups(root, proc_cgroup):
        try:
            found = _quota((group / "cpu.max").read_text())
        except OSError:
            continue
        if found is not None:
            limits.append(found)
    try:  # cgroup v1
        v1 = root / "cpu"
        quota = float((v1 / "cpu.cfs_quota_us").read_text())
        period = float((v1 / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            limits.append(quota / period)
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by its cgroup quota (rounded
    up: a quota of 1.5 CPUs still runs two threads well), at least 1."""
    cpus = _affinity_cpus()
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit - 1e-9)))
    return max(1, cpus)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads: ``threads``, else ``$SAM2UI_THREADS``, else
    :func:`usable_cpus`. Returns the count set."""
    import torch

    if threads is None:
        env = os.environ.get(THREADS_VARIABLE, "").strip()
        if env and env.lower() != "auto":  # auto: the serving layer follows free CPUs
            try:
                threads = int(env)
            except ValueError:
                raise ValueError(
                    f"{THREADS_VARIABLE} must be a whole number, got {env!r}"
                ) from None
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    count = threads if threads is not None else usable_cpus()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


def _busy_ticks() -> tuple[int, int] | None:
    """(ticks every CPU spent busy, ticks this process spent) since boot, or None."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # cpu  user nice system idle iowait irq softirq steal ...: all but idle and iowait.
    values = [int(v) for v in fields[1:9]]
    busy = sum(values) - values[3] - values[4]
    return busy, int(own[11]) + int(own[12])  # utime + stime (fields 14 and 15)


class FreeCpus:
    """The CPUs of :func:`usable_cpus` that other processes leave free, over the last
    ``window_s`` seconds or more (at least 1). Cheap to call often: ``/proc`` is read at most
    once per window.

    Args:
        cpus: the CPUs this process may use (default: :func:`usable_cpus`).
        window_s: the shortest span the busy time is measured over.
    """

    def __init__(self, cpus: int | None = None, window_s: float = 1.0) -> None:
        self.cpus = int(cpus) if cpus is not None else usable_cpus()
        self.window_s = float(window_s)
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._lock = threading.Lock()
        self._last: tuple[float, int, int] | None = None
        self._free = self.cpus

    def others_busy(self, busy: int, own: int, now: float) -> float | None:
        """Update from a sample; the CPUs other processes kept busy since the last one
        (None while the window is short)."""
        if self._last is None:
            self._last = (now, busy, own)
            return None
        then, busy0, own0 = self._last
        if now - then < self.window_s:
            return None
        self._last = (now, busy, own)
        return max(0.0, ((busy - busy0) - (own - own0)) / (self._hz * (now - then)))

    def free(self) -> int:
        """How many threads to run now: the usable CPUs minus those others keep busy."""
        with self._lock:
            sample = _busy_ticks()
            if sample is None:
                return self.cpus
            others = self.others_busy(*sample, time.monotonic())
            if others is not None:
                self._free = max(1, min(self.cpus, round(self.cpus - others)))
            return self._free

    def apply(self) -> int:
        """Set torch's intra-op threads to :meth:`free`; returns the count."""
        return configure_threads(self.free())


def quick_thread_switches(interval_ms: float | None = None) -> float:
    """Set Python's thread switch interval for a serving process: ``interval_ms``, else
    ``$SAM2UI_SWITCH_INTERVAL_MS``, else 0.5 ms (Python's default is 5 ms). Returns the
    interval it replaced, in ms.

    With 8 users uploading and clicking on one 2-core server (``benchmarks/bench_load.py``),
    0.5 ms took the clicks' p95 from 526-587 ms to 440-452 ms and the uploads' median from
    33-37 s to 29-32 s: the interpreter lock changes hands at tens of points in each request.
    """
    if interval_ms is None:
        env = os.environ.get(SWITCH_INTERVAL_VARIABLE, "").strip()
        try:
            interval_ms = float(env) if env else DEFAULT_SWITCH_INTERVAL_MS
        except ValueError:
            raise ValueError(
                f"{SWITCH_INTERVAL_VARIABLE} must be a number of milliseconds, got {env!r}"
            ) from None
    if not 0 < interval_ms <= 1000:  # also NaN
        raise ValueError(f"the thread switch interval must be in (0, 1000] ms, got {interval_ms}")
    previous = sys.getswitchinterval() * 1e3
    sys.setswitchinterval(interval_ms / 1e3)
    return previous

"""``sam2ui batch`` on Ray Data: a local cluster sized to this machine, or an existing one.

The lines to run become a dataset of one block per line; ``map_batches`` runs
:class:`~sam2ui.cli.batch_worker.BatchWorker` on an actor pool (one actor per worker, each
loading the model once, with its share of the CPUs or ``--gpus-per-worker`` GPUs), one line per
task, and the driver takes the result rows as they finish. A worker process that dies is
restarted by Ray and its line run again; the worker counts each line's tries
(:data:`~sam2ui.cli.batch_worker.MAX_TRIES`), so a line that kills every worker running it comes
back as failed, and the others go on. Ray is imported only here, inside the functions.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, replace
from typing import Any

from .batch_worker import (
    MAX_TRIES,
    BatchItem,
    BatchOptions,
    BatchWorker,
    options_dict,
    result_row,
    switch_policy,
)

# How long to wait for a cluster's address to answer before saying it does not.
CONNECT_SECONDS = 5.0
# Ray starts its worker processes at niceness 15, below its own daemons, the driver and any
# other process; a tracking worker that uses every core then waits each time one of them
# wakes (about +20% per video on 2 cores). The workers run at the normal priority instead.
WORKER_NICENESS = "RAY_worker_niceness"
# Ray's processes (the raylet, the GCS, the agents, Ray Data's helper actors, the driver's
# threads) also wake hundreds of times a second between them. At the normal scheduling policy
# each wake takes a core from a tracking thread at once; at SCHED_BATCH a woken thread waits for
# the scheduler's next tick or an idle core, so one such preemption serves several wakes, and
# the tracking threads were preempted half as often (issue 17 in benchmarks/RESULTS.md). The
# driver therefore starts a local cluster at SCHED_BATCH, which its processes inherit, and the
# workers move their tracking threads back to the normal policy (``normal_policy``); neither
# move needs any privilege. A cluster joined by address is left as it is.
_DRIVER: dict[str, bool] = {"batch_policy": False}

__all__ = ["ClusterPlan", "plan_cluster", "run_on_ray", "start_ray", "stop_ray"]


class ClusterPlan:
    """How many workers, with how many CPUs (torch threads) and GPUs each."""

    def __init__(self, workers: int, cpus: int, gpus: float) -> None:
        self.workers, self.cpus, self.gpus = workers, cpus, gpus

    def __repr__(self) -> str:
        gpus = f", {self.gpus:g} GPU" if self.gpus else ""
        return f"{self.workers} worker(s), {self.cpus} CPU(s){gpus} each"


def start_ray(address: str | None, quiet: bool = True) -> dict[str, float]:
    """Connect to the cluster at ``address`` ("auto" or host:port), or start a local one sized
    to the CPUs this process may use and the GPUs torch sees; the cluster's resources."""
    import ray

    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.INFO)
    common: dict[str, Any] = {
        "logging_level": logging.WARNING,
        "log_to_driver": not quiet,
        "configure_logging": True,
    }
    if address:
        _check_reachable(address)
        ray.init(address=address, **common)
    else:
        from sam2ui.core import usable_cpus

        _DRIVER["batch_policy"] = switch_policy("SCHED_OTHER", "SCHED_BATCH")
        ray.init(
            num_cpus=usable_cpus(),
            num_gpus=_local_gpus(),
            include_dashboard=False,
            **common,
        )
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Ray Data otherwise polls each worker's memory (USS, from /proc/<pid>/smaps: ~14 ms for a
    # process holding a model) every second, beside the torch threads, for metrics unused here.
    context.memory_usage_poll_interval_s = None
    context.print_on_execution_start = False
    # A line whose every run killed its worker comes back as failed; the rest go on.
    context.max_errored_blocks = -1
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def _check_reachable(address: str) -> None:
    """Raise ConnectionError at once when nothing answers at a host:port address (Ray itself
    keeps retrying for minutes); "auto" and ray:// addresses are left to Ray."""
    if address == "auto" or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS):
            pass
    except (OSError, ValueError) as err:
        raise ConnectionError(f"nothing answers at {address} ({err})") from None


def _local_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA setup: run on the CPUs
        return 0


def plan_cluster(
    resources: dict[str, float], workers: int | None, gpus_per_worker: float | None
) -> ClusterPlan:
    """Workers: ``workers``, else one per ``gpus_per_worker`` GPUs (one GPU each by default)
    when the cluster has GPUs, else one (torch uses every CPU core of one process better than
    several processes share them). Each worker gets an equal share of the CPUs."""
    cpus = max(1, int(resources.get("CPU", 1)))
    gpus = resources.get("GPU", 0.0)
    per_gpu = (1.0 if gpus else 0.0) if gpus_per_worker is None else gpus_per_worker
    if workers is None:
        workers = max(1, int(gpus // per_gpu)) if per_gpu and gpus else 1
    if per_gpu * workers > gpus + 1e-9 and per_gpu:
        raise ValueError(
            f"{workers} worker(s) with {per_gpu:g} GPU each need {per_gpu * workers:g} GPUs; "
            f"the cluster has {gpus:g}"
        )
    return ClusterPlan(workers, max(1, cpus // workers), per_gpu)


def run_on_ray(
    items: Sequence[BatchItem],
    options: BatchOptions,
    out: str,
    plan: ClusterPlan,
    on_row: Callable[[dict[str, Any]], None],
) -> None:
    """Run ``items`` on the connected cluster, calling ``on_row`` with each result row as it
    arrives (one per item: a line whose worker died on every try comes back as failed)."""
    import ray

    gpu = plan.gpus and options.device in ("auto", "cpu")
    options = replace(
        options,
        threads=options.threads or plan.cpus,
        device="cuda" if gpu else options.device,
        normal_policy=_DRIVER["batch_policy"],
    )
    rows = [asdict(item) for item in items]
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, len(rows)))
    results = dataset.map_batches(
        BatchWorker,
        fn_constructor_kwargs={"options": options_dict(options), "out": out},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=plan.workers),
        num_cpus=plan.cpus,
        num_gpus=plan.gpus or None,
        runtime_env={"env_vars": {WORKER_NICENESS: "0"}},
    )
    pending = {item.id for item in items}
    for row in _rows(results.iter_rows()):
        pending.discard(row["id"])
        on_row(row)
    for item in items:  # lines Ray gave up on (their worker died every time)
        if item.id in pending:
            error = f"the worker process died while running it, {MAX_TRIES} times or more"
            on_row(result_row(item.id, "failed", error=error))


def _rows(source: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Ray's rows (numpy scalars) as plain Python values."""
    for row in source:
        error = row.get("error")
        yield result_row(
            str(row["id"]),
            str(row["status"]),
            frames=int(row["frames"]),
            objects=int(row["objects"]),
            seconds=float(row["seconds"]),
            error=None if error is None or error != error else str(error),  # NaN: no error
        )


def stop_ray() -> None:
    """Disconnect (a local cluster stops with its workers)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    if _DRIVER["batch_policy"]:
        switch_policy("SCHED_BATCH", "SCHED_OTHER")
        _DRIVER["batch_policy"] = False

"""``sam2ui batch`` on a local Ray cluster against ``sam2ui track`` on the same videos.

For each worker count W, the same videos three times: tracked without Ray, as W processes at
once would (W terminals each running ``sam2ui track`` on a share of the videos: the batch
worker's own code, the threads a batch worker gets, the machine's CPUs / W, the model loaded
before the first video); then the whole batch job on Ray, timed from the command's start to its
end; then without Ray again (the mean of the two runs without Ray is the tracking time, so that
the machine's drift over those minutes cancels out). Printed per W: videos per minute, the
job's fixed cost (the job's time less the videos' time in the workers, per worker: starting
Ray and the worker processes, loading the model once per worker), and Ray's overhead per video:
a video's time in a batch worker (its results.jsonl "seconds") less its tracking time without
Ray, against that tracking time (target: <= 5%), every video's times, the CPU seconds the
workers, the job's driver and Ray's other processes used during the job, and how often the
tracking threads were preempted per second of tracking, alone and in the batch workers.

    python benchmarks/bench_batch.py --videos 6 --frames 8 --workers 1,2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_load import build_checkpoint, cpu_ticks, write_video  # noqa: E402

OVERHEAD_TARGET = 0.05
WORKER_NAME = "ray::MapWorker"  # how Ray names the batch workers' processes


def _manifest(folder: Path, videos: int, frames: int, height: int, width: int) -> Path:
    prompts = folder / "prompts.json"
    objects = [
        {"id": 1, "points": [[width * 0.4, height * 0.5]]},
        {"id": 2, "box": [width * 0.6, height * 0.2, width * 0.9, height * 0.6]},
    ]
    prompts.write_text(json.dumps({"objects": objects}))
    lines = []
    for n in range(videos):
        write_video(folder / f"v{n}.mp4", frames, height, width)
        lines.append({"id": f"v{n}", "video": f"v{n}.mp4", "prompts": "prompts.json"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def _tracking_times(
    manifest: Path,
    source: str,
    device: str,
    threads: int,
    formats: list[str],
    share: tuple[int, int],
) -> tuple[float, dict[str, float], int]:
    """(model load seconds, tracking seconds per video id, the process's involuntary context
    switches over the videos) of the videos of one worker's ``share`` (index, count: every
    count-th line from index), the model loaded once, before the first video, as `sam2ui
    batch` starts its workers."""
    import resource

    from sam2ui.cli.batch_worker import BatchOptions, BatchWorker, options_dict, read_manifest

    index, count = share
    items = read_manifest(manifest)[index::count]
    options = BatchOptions(
        source=source, device=device, formats=tuple(formats), threads=threads, preload=("video",)
    )
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        worker = BatchWorker(options_dict(options), out)
        load = time.perf_counter() - start
        seconds = {}
        switched = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        for item in items:
            start = time.perf_counter()
            row = worker.run(item)
            seconds[item.id] = time.perf_counter() - start
            assert row["status"] == "ok", row
        switched = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - switched
    return load, seconds, switched


def _alone(
    manifest: Path, source: str, device: str, threads: int, formats: list[str], workers: int
) -> tuple[float, dict[str, float], int]:
    """The videos tracked without Ray as `workers` separate processes at once would (what
    running `sam2ui track` on a share of the videos in each of `workers` terminals does):
    (the slowest model load, tracking seconds per video id, the processes' involuntary
    context switches while tracking)."""
    context = multiprocessing.get_context("spawn")
    jobs = [(manifest, source, device, threads, formats, (i, workers)) for i in range(workers)]
    with context.Pool(workers) as pool:
        results = pool.starmap(_tracking_times, jobs)
    times = {k: v for _, share_times, _ in results for k, v in share_times.items()}
    return max(r[0] for r in results), times, sum(r[2] for r in results)


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _cpu_ticks(names: dict[int, str] | None = None) -> dict[int, int]:
    """CPU ticks (user + system) of every process, from /proc (Linux); ``names``, when
    given, gets each process's name (Ray names its workers ``ray::<class>``)."""
    ticks = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name, used = cpu_ticks(entry.name)
                if names is not None:
                    names[int(entry.name)] = (entry / "cmdline").read_bytes()[:64].decode(
                        errors="replace"
                    ) or name
            except OSError:
                continue
            ticks[int(entry.name)] = used
    return ticks


def _involuntary_switches(pid: int) -> int:
    """How many times the threads of a process were preempted (taken off a core while they
    could run), from /proc/<pid>/task/*/status; Linux only."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        # A thread that ends while it is read gives an error or a cut-off file: skipped.
        with contextlib.suppress(OSError, IndexError, ValueError):
            status = (task / "status").read_text()
            total += int(status.split("nonvoluntary_ctxt_switches:")[1].split()[0])
    return total


class _JobCpu:
    """CPU seconds used while a job runs, sampled every second from /proc (Ray's processes
    end with the job): the workers (``ray::MapWorker``), this process (the job's driver) and
    the other processes that started with the job (Ray's daemons, agents and actors); and
    how often the workers' threads were preempted."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}
        self.before = _cpu_ticks()
        self.last: dict[int, int] = dict(self.before)
        self.switches: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.last.update(_cpu_ticks(self.names))
        for pid, name in self.names.items():
            if name.startswith(WORKER_NAME) and pid not in self.before:
                # The largest count seen: the threads that end as the job stops take
                # their counts with them.
                with contextlib.suppress(OSError):  # the process ended
                    count = _involuntary_switches(pid)
                    self.switches[pid] = max(self.switches.get(pid, 0), count)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def __enter__(self) -> _JobCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def seconds(self) -> dict[str, float]:
        import os

        hz = os.sysconf("SC_CLK_TCK")
        out = {"workers": 0.0, "driver": 0.0, "Ray's other processes": 0.0}
        for pid, ticks in self.last.items():
            if pid == os.getpid():
                key = "driver"
            elif pid in self.before:
                continue
            else:
                name = self.names.get(pid, "")
                key = "workers" if name.startswith(WORKER_NAME) else "Ray's other processes"
            out[key] += (ticks - self.before.get(pid, 0)) / hz
        return out


def _ray_start_seconds(idle_s: float = 0.0) -> tuple[float, float | None]:
    """(seconds to start a local cluster, the share of one core every process but this one
    used over ``idle_s`` seconds of the idle cluster, 5 s after it started; None if not
    measured)."""
    import os

    from sam2ui.cli.batch_ray import start_ray, stop_ray

    start = time.perf_counter()
    start_ray(None)
    took = time.perf_counter() - start
    idle = None
    if idle_s > 0 and Path("/proc/self/stat").exists():
        time.sleep(5)
        before = _cpu_ticks()
        time.sleep(idle_s)
        after = _cpu_ticks()
        used = sum(
            t - before[pid] for pid, t in after.items() if pid in before and pid != os.getpid()
        )
        idle = used / os.sysconf("SC_CLK_TCK") / idle_s
    stop_ray()
    return took, idle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", default="240x320", help="HEIGHTxWIDTH of the videos")
    parser.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated")
    parser.add_argument("--formats", default="json,zip")
    parser.add_argument("--checkpoint", help="weights (default: random sam2.1-hiera-tiny)")
    parser.add_argument("--model", help="a model id of the hub instead of --checkpoint")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default: cpu)")
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        help="measure the CPU the idle cluster uses over this long (0: not)",
    )
    parser.add_argument("--idle-only", action="store_true", help="only start Ray and measure")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))

    from sam2ui.cli import main as cli
    from sam2ui.core import usable_cpus

    cpus = usable_cpus()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ray_start, idle = _ray_start_seconds(args.idle_seconds)
        print(f"starting a local Ray cluster: {ray_start:.1f} s ({cpus} CPUs)")
        if idle is not None:
            print(f"the machine's other processes with the cluster idle: {idle:.1%} of one core")
        if args.idle_only:
            return
        source = args.model or args.checkpoint or str(build_checkpoint(folder))
        source_args = ["--model" if args.model else "--checkpoint", source]
        gpus = _gpus() if args.device.startswith("cuda") else 0
        manifest = _manifest(folder, args.videos, args.frames, height, width)
        print(f"{args.videos} videos of {args.frames} frames at {width}x{height}")
        header = (
            "workers | threads | track s/video | load s | batch job s | fixed s | videos/min "
            "| Ray overhead s/video | overhead / tracking"
        )
        print(header)
        print("|".join("---" for _ in header.split("|")))
        details: list[str] = []
        for workers in (int(w) for w in args.workers.split(",")):
            threads = max(1, cpus // workers)
            formats = args.formats.split(",")
            # The videos alone before and after the batch job, so that the machine's drift over
            # the minutes between cancels out of the comparison.
            load, before, switched = _alone(
                manifest, source, args.device, threads, formats, workers
            )
            out = folder / f"out-{workers}"
            argv = ["batch", str(manifest), "--out", str(out), "--formats", args.formats]
            argv += [*source_args, "--device", args.device, "--workers", str(workers)]
            if gpus:  # the workers share the GPUs
                argv += ["--gpus-per-worker", f"{min(1.0, gpus / workers):g}"]
            start = time.perf_counter()
            with (
                contextlib.redirect_stderr(io.StringIO()),
                contextlib.redirect_stdout(io.StringIO()),
                _JobCpu() as cpu,
            ):
                status = cli([*argv, "--quiet"])
            job = time.perf_counter() - start
            used = ", ".join(f"{k} {v:.1f}" for k, v in cpu.seconds().items())
            details.append(f"{workers} worker(s), CPU seconds during the {job:.0f} s job: {used}")
            assert status == 0, f"batch exit status {status}"
            _, after, switched_after = _alone(
                manifest, source, args.device, threads, formats, workers
            )
            rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
            in_batch = {row["id"]: float(row["seconds"]) for row in rows}
            ids = sorted(in_batch)
            per_video = statistics.mean((before[i] + after[i]) / 2 for i in ids)
            overhead = statistics.mean(in_batch[i] for i in ids) - per_video
            fixed = job - sum(in_batch.values()) / workers
            alone_rate = (switched + switched_after) / sum(before[i] + after[i] for i in ids)
            batch_rate = sum(cpu.switches.values()) / sum(in_batch.values())
            details.append(
                f"{workers} worker(s), the tracking threads preempted per second of tracking "
                f"(a process's involuntary context switches): alone {alone_rate:.0f}, in the "
                f"batch workers {batch_rate:.0f} (the latter counts the workers' whole life)"
            )
            for name, times in (("alone before", before), ("in the batch", in_batch)):
                listed = " ".join(f"{times[i]:.2f}" for i in ids)
                details.append(f"{workers} worker(s), {name}: {listed}")
            details.append(
                f"{workers} worker(s), alone after: " + " ".join(f"{after[i]:.2f}" for i in ids)
            )
            print(
                f"{workers} | {threads} | {per_video:.2f} | {load:.1f} | {job:.1f} | {fixed:.1f} "
                f"| {60 * args.videos / job:.2f} | {overhead:+.2f} | {overhead / per_video:+.1%}"
            )
    print(*details, sep="\n")
    print(f"target: Ray overhead <= {OVERHEAD_TARGET:.0%} of a video's tracking time")


if __name__ == "__main__":
    main()

"""``sam2ui batch`` on a local Ray cluster against ``sam2ui track`` on the same videos.

For each worker count W: first the tracking time of every video with the model already loaded
and the threads a batch worker gets (the machine's CPUs / W), done by the batch worker's own
code in this process (what ``sam2ui track`` does after loading its model); then the whole batch
job on Ray, timed from the command's start to its end. Printed per W: videos per minute, the
job's fixed cost (the job's time less the videos' time in the workers, per worker: starting
Ray and the worker processes, loading the model once per worker), and Ray's overhead per video:
a video's time in a batch worker (its results.jsonl "seconds") less its tracking time alone,
against the tracking time (target: <= 5%).

    python benchmarks/bench_batch.py --videos 6 --frames 8 --workers 1,2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_load import build_checkpoint, write_video  # noqa: E402

OVERHEAD_TARGET = 0.05


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
    manifest: Path, checkpoint: str, threads: int, formats: list[str]
) -> tuple[float, list[float]]:
    """(model load seconds, per-video tracking seconds) with the model loaded once."""
    from sam2ui.cli.batch_worker import BatchOptions, BatchWorker, options_dict, read_manifest

    items = read_manifest(manifest)
    options = BatchOptions(source=checkpoint, formats=tuple(formats), threads=threads)
    with tempfile.TemporaryDirectory() as out:
        worker = BatchWorker(options_dict(options), out)
        start = time.perf_counter()
        worker.predictor("video")
        load = time.perf_counter() - start
        seconds = []
        for item in items:
            start = time.perf_counter()
            row = worker.run(item)
            seconds.append(time.perf_counter() - start)
            assert row["status"] == "ok", row
    return load, seconds


def _cpu_ticks() -> dict[int, int]:
    """CPU ticks (user + system) of every process, from /proc (Linux)."""
    ticks = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    return ticks


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
        checkpoint = args.checkpoint or str(build_checkpoint(folder))
        manifest = _manifest(folder, args.videos, args.frames, height, width)
        print(f"{args.videos} videos of {args.frames} frames at {width}x{height}")
        header = (
            "workers | threads | track s/video | load s | batch job s | fixed s | videos/min "
            "| Ray overhead s/video | overhead / tracking"
        )
        print(header)
        print("|".join("---" for _ in header.split("|")))
        for workers in (int(w) for w in args.workers.split(",")):
            threads = max(1, cpus // workers)
            load, seconds = _tracking_times(manifest, checkpoint, threads, args.formats.split(","))
            out = folder / f"out-{workers}"
            argv = ["batch", str(manifest), "--out", str(out), "--formats", args.formats]
            argv += ["--checkpoint", checkpoint, "--device", "cpu", "--workers", str(workers)]
            start = time.perf_counter()
            with (
                contextlib.redirect_stderr(io.StringIO()),
                contextlib.redirect_stdout(io.StringIO()),
            ):
                status = cli([*argv, "--quiet"])
            job = time.perf_counter() - start
            assert status == 0, f"batch exit status {status}"
            rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
            in_batch = [float(row["seconds"]) for row in rows]
            per_video = statistics.mean(seconds)
            overhead = statistics.mean(in_batch) - per_video
            fixed = job - sum(in_batch) / workers
            print(
                f"{workers} | {threads} | {per_video:.2f} | {load:.1f} | {job:.1f} | {fixed:.1f} "
                f"| {60 * args.videos / job:.2f} | {overhead:+.2f} | {overhead / per_video:+.1%}"
            )
    print(f"target: Ray overhead <= {OVERHEAD_TARGET:.0%} of a video's tracking time")


if __name__ == "__main__":
    main()

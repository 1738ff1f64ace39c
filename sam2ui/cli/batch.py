"""``sam2ui batch``: ``sam2ui track`` (and ``segment``) over a manifest of videos and images, on
Ray Data (:mod:`sam2ui.cli.batch_ray`): a local cluster by default, any cluster by address.

DIR/<id>/ holds what ``sam2ui track --out`` writes for the line (an image line: one
``object_<id>.png`` per object, as ``sam2ui segment`` writes a mask), and appears only once
complete; DIR/results.jsonl has one row per manifest id. A rerun skips the ids already done and
runs the others again. Ray and the engine load inside the handler.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from .batch_worker import (
    PARTIAL_PREFIX,
    TRIES_FOLDER,
    BatchItem,
    BatchOptions,
    ManifestError,
    read_manifest,
    result_row,
)
from .common import add_model_options, model_source
from .track import add_tracking_options, check_max_frames
from .track_output import FORMATS

__all__ = ["RESULTS_FILE", "add_batch", "run_batch"]

RESULTS_FILE = "results.jsonl"
NEEDS_RAY = "sam2ui batch needs Ray Data: pip install 'sam2ui[scale]'"


def add_batch(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``batch`` subcommand's parser, with :func:`run_batch` as its handler."""
    parser = subparsers.add_parser(
        "batch",
        help="track objects in many videos (and images) on a Ray cluster",
        description=(
            "Run `sam2ui track` for every line of MANIFEST.jsonl on Ray Data: a local Ray\n"
            "cluster sized to this machine, or an existing cluster with --address.\n\n"
            "manifest (one JSON object per line; paths relative to the manifest's folder):\n"
            '  {"id": "clip-001", "video": "clips/001.mp4", "prompts": "prompts/001.json"}\n'
            '  {"id": "photo-7", "image": "photos/7.jpg", "prompts": "prompts/7.json"}\n'
            "  video: a video file or a folder of frames; prompts: a `sam2ui track --prompts`\n"
            "  file (an image line: clicks and boxes on frame 0, one entry per object).\n\n"
            "DIR/<id>/ gets what `sam2ui track --out` writes (an image: object_<n>.png per\n"
            "object); it appears only when complete. DIR/results.jsonl gets one row per id:\n"
            '  {"id", "status": "ok" | "failed" | "skipped", "frames", "objects", "seconds",\n'
            '   "error"}\n'
            "A rerun skips the ids already done and runs the failed ones again.\n\n"
            "exit status: 0 every line ok or skipped, 1 some line failed, 2 bad usage or\n"
            "manifest, 130 interrupted (rerun the same command to resume)."
        ),
        epilog=(
            "examples:\n"
            "  sam2ui batch manifest.jsonl --out results\n"
            "  sam2ui batch manifest.jsonl --out results --formats json --workers 2\n"
            "  sam2ui batch manifest.jsonl --out results --address auto --gpus-per-worker 1"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("manifest", type=Path, metavar="MANIFEST.jsonl", help="the lines to run")
    add_tracking_options(parser, per=" per video")
    parser.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="let prompt files name mask files outside their own folders",
    )
    parser.add_argument(
        "--address",
        metavar="ADDR",
        help="the Ray cluster to use: auto, or the head's host:port (default: start a local one)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes, each loading the model once (default: one per GPU, else 1)",
    )
    parser.add_argument(
        "--gpus-per-worker",
        type=float,
        metavar="G",
        help="GPUs each worker takes (default: 1 when the cluster has GPUs, else 0)",
    )
    add_model_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.set_defaults(handler=run_batch, command_parser=parser)


class _Report:
    """results.jsonl written as rows come (a line each, flushed), and the progress lines."""

    def __init__(self, out: Path, total: int, to_run: int, quiet: bool) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.total, self.to_run, self.quiet = total, to_run, quiet
        self.done = 0
        self.start = time.monotonic()
        self.file: IO[str] = (out / RESULTS_FILE).open("w", encoding="utf-8")

    def add(self, row: dict[str, Any], announce: bool = True) -> None:
        self.rows[row["id"]] = row
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if row["status"] == "skipped" or not announce:
            return
        self.done += 1
        if row["status"] == "failed":
            print(f"sam2ui batch: {row['id']}: failed: {row['error']}", file=sys.stderr)
        if not self.quiet:
            print(self.line(row), file=sys.stderr, flush=True)

    def line(self, row: dict[str, Any]) -> str:
        elapsed = time.monotonic() - self.start
        left = (self.to_run - self.done) * elapsed / self.done if self.done else 0.0
        eta = f"{int(left) // 60:d}:{int(left) % 60:02d}"
        return (
            f"[{self.done}/{self.to_run}] {row['id']}: {row['status']}, {row['frames']} frames "
            f"in {row['seconds']:.1f} s; ETA {eta}"
        )

    def close(self) -> None:
        self.file.close()


def _prepare_out(out: Path, parser: argparse.ArgumentParser) -> None:
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file, not a folder")
    if not out.absolute().parent.is_dir():
        parser.error(f"folder for {out} does not exist")
    out.mkdir(exist_ok=True)
    _tidy(out)


def _tidy(out: Path) -> None:
    """Delete what workers leave while they run, or when they are killed: half-written
    folders and the count of tries."""
    for stale in [*out.glob(f"{PARTIAL_PREFIX}*"), out / TRIES_FOLDER]:
        shutil.rmtree(stale, ignore_errors=True)


def run_batch(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Check the arguments and the manifest, then run the lines not done yet on Ray."""
    if importlib.util.find_spec("ray") is None:
        print(NEEDS_RAY, file=sys.stderr)
        return 1
    try:
        items = read_manifest(args.manifest)
    except ManifestError as err:
        parser.error(str(err))
    check_max_frames(args, parser)
    if args.workers is not None and args.workers < 1:
        parser.error(f"argument --workers: must be >= 1, got {args.workers}")
    if args.gpus_per_worker is not None and args.gpus_per_worker < 0:
        parser.error(f"argument --gpus-per-worker: must be >= 0, got {args.gpus_per_worker}")
    formats: tuple[str, ...] = args.formats or FORMATS
    if "mp4" in formats and importlib.util.find_spec("av") is None:
        parser.error("writing overlay.mp4 needs PyAV: pip install 'sam2ui[video]'")
    options = BatchOptions(
        source=model_source(args, parser),
        device=args.device,
        dtype=args.dtype,
        formats=formats,
        direction=args.direction,
        max_frames=args.max_frames,
        allow_outside_paths=args.allow_outside_paths,
        compile=args.compile,
    )
    _prepare_out(args.out, parser)
    done = [item for item in items if (args.out / item.id).is_dir()]
    to_run = [item for item in items if not (args.out / item.id).is_dir()]
    options = replace(options, preload=tuple(sorted({item.kind for item in to_run})))
    report = _Report(args.out, len(items), len(to_run), args.quiet)
    try:
        for item in done:
            report.add(result_row(item.id, "skipped"))
        if to_run:
            status = _run(to_run, options, args, parser, report)
            if status:
                return status
    finally:
        report.close()
        _tidy(args.out)  # the workers have stopped
    failed = [row["id"] for row in report.rows.values() if row["status"] == "failed"]
    ok = sum(row["status"] == "ok" for row in report.rows.values())
    print(
        f"{ok} done, {len(done)} skipped (done before), {len(failed)} failed; "
        f"{args.out / RESULTS_FILE}"
    )
    if failed:
        print(
            f"sam2ui batch: {len(failed)} line(s) failed ({', '.join(failed[:5])}"
            f"{', ...' if len(failed) > 5 else ''}); rerun the same command to try them again",
            file=sys.stderr,
        )
        return 1
    return 0


def _run(
    items: list[BatchItem],
    options: BatchOptions,
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    report: _Report,
) -> int:
    """Start or join the cluster and run ``items``; 130 when interrupted, else 0."""
    from .batch_ray import plan_cluster, run_on_ray, start_ray, stop_ray

    try:
        try:
            resources = start_ray(args.address, quiet=args.quiet)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {args.address}" if args.address else "a local cluster"
            message = f"cannot start {where}: {err}"
            for item in items:  # one row per id: none of them ran
                report.add(result_row(item.id, "failed", error=message), announce=False)
            print(f"sam2ui batch: error: {message}", file=sys.stderr)
            return 1
        try:
            plan = plan_cluster(resources, args.workers, args.gpus_per_worker)
        except ValueError as err:
            parser.error(str(err))
        if not args.quiet:
            print(
                f"sam2ui batch: {len(items)} line(s) to run on {plan}", file=sys.stderr, flush=True
            )
        run_on_ray(items, options, str(args.out.absolute()), plan, report.add)
    except KeyboardInterrupt:
        left = [item.id for item in items if item.id not in report.rows]
        for item_id in left:  # one row per id, the unfinished ones failed
            report.add(result_row(item_id, "failed", error="interrupted"), announce=False)
        print(
            f"\nsam2ui batch: interrupted with {len(left)} of {len(items)} line(s) not done; "
            "nothing unfinished is marked done. Rerun the same command to resume: the ids "
            "done are skipped.",
            file=sys.stderr,
        )
        return 130
    finally:
        stop_ray()
    return 0

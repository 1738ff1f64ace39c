"""Resident memory of the correction loop on long videos: does RAM stay flat?

One fresh process per measurement (so that nothing else is resident), on the synthetic
video of ``bench_video.py`` written as an H.264 mp4 (read lazily), with random weights:

1. two objects clicked on frame 0, tracked forward over the whole video;
2. a correction (a second positive click on object 1) on the middle frame, then tracking
   forward again from there to the end;
3. a reverse pass from the last frame over the whole video.

The process's current resident set (``VmRSS``) is read after every yielded frame, and its
peak (``VmHWM``) at the end. Reported, per mode (sam2ui's default: a RAM window with the
rest of each object's memories on disk; ``keep_all_memories=True``: all in RAM):

- growth per frame: the least-squares slope of RSS against the number of frames processed,
  over every frame of the loop from frame ``--settle`` of the first pass on (forward,
  correction and reverse passes in the order they ran), in MB (10^6 bytes) a frame. The
  first frames are left out: the allocator's pools and the model's buffers fill while the
  memory bank grows to its full size (about 18 frames);
- peak over settle: peak RSS over the whole loop minus RSS after frame ``--settle``, in MB
  (this one also holds the allocator's jitter from frame to frame, tens of MB at 1024);
- growth from frame 60: peak RSS over the whole loop minus RSS after frame 60 of the first
  pass (for videos of more than 60 frames);
- the disk the session's spill files took at the end, and the time of each step.

    python benchmarks/bench_video_memory.py --quick          # < 2 minutes: checks the script
    python benchmarks/bench_video_memory.py --frames 120     # the per-frame target
    python benchmarks/bench_video_memory.py --frames 600 --modes default
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_image import command_line, cpu_model  # noqa: E402
from benchmarks.bench_video import (  # noqa: E402
    VARIANT,
    _centres,
    clicks,
    load_ours,
    prompt_all,
    write_mp4,
)

PER_FRAME_MB = 0.25  # the target: RSS growth per frame, default mode
FROM_60_MB = 150.0  # the target: RSS growth from frame 60 to the end, default mode


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (this benchmark needs Linux)")


def rss_mb() -> float:
    return _status_kib("VmRSS") * 1024 / 1e6


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """The correction loop in this (fresh) process; RSS after every yielded frame."""
    torch.set_num_threads(spec["threads"])
    predictor = load_ours(Path(spec["checkpoint"]), getattr(torch, spec["dtype"]), spec["size"])
    predictor.keep_all_memories = spec["mode"] == "keep_all"
    n, h, w = spec["frames"], spec["height"], spec["width"]
    rss: list[tuple[str, int, float]] = []  # (step, frame, MB)
    times: dict[str, float] = {}
    with torch.inference_mode():
        state = predictor.init_state(spec["video"])
        prompt_all(predictor, state, clicks(2, h, w))
        start = time.perf_counter()
        for t, _, _ in predictor.propagate_in_video(state):
            rss.append(("forward", t, rss_mb()))
        times["forward_s"] = time.perf_counter() - start
        middle = n // 2
        # The object's centre on the middle frame (the synthetic shapes move).
        cx, cy = _centres(middle, h, w)[0]
        start = time.perf_counter()
        predictor.add_new_points_or_box(
            state, middle, 1, points=[[cx, cy]], labels=[1], clear_old_points=False
        )
        for t, _, _ in predictor.propagate_in_video(state, start_frame_idx=middle):
            rss.append(("after correction", t, rss_mb()))
        times["correction_and_repropagation_s"] = time.perf_counter() - start
        start = time.perf_counter()
        for t, _, _ in predictor.propagate_in_video(state, start_frame_idx=n - 1, reverse=True):
            rss.append(("reverse", t, rss_mb()))
        times["reverse_s"] = time.perf_counter() - start
        spilled = state.spill.nbytes
        files = len(state.spill)
    return {
        "rss": rss,
        "peak_mb": _status_kib("VmHWM") * 1024 / 1e6,
        "spill_bytes": spilled,
        "spill_files": files,
        **times,
    }


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measurement {spec['mode']} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(result: dict[str, Any], frames: int, settle: int) -> dict[str, float]:
    rss = result["rss"]
    first = {t: mb for step, t, mb in rss if step == "forward"}
    top = max(mb for _, _, mb in rss)
    start = next(i for i, (step, t, _) in enumerate(rss) if step == "forward" and t == settle)
    tail = [mb for _, _, mb in rss[start:]]
    slope = float(np.polyfit(np.arange(len(tail), dtype=np.float64), tail, 1)[0])
    out = {
        "rss_at_settle_mb": first[settle],
        "max_rss_mb": top,
        "per_frame_mb": slope,
        "peak_over_settle_mb": top - first[settle],
    }
    if frames > 61:
        out["rss_at_60_mb"] = first[60]
        out["from_60_mb"] = top - first[60]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="tiny sizes, to check the script")
    add("--frames", type=int, default=120, help="video length (default 120)")
    add("--size", default="480x854", help="HEIGHTxWIDTH of the video (default 480p)")
    add("--model-size", type=int, default=1024, help="model input side (default 1024)")
    add("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    add("--modes", nargs="+", default=["default", "keep_all"], choices=["default", "keep_all"])
    add("--settle", type=int, default=20, help="first-pass frame the growth is counted from")
    add("--threads", type=int, default=2, help="torch.set_num_threads")
    add("--json", type=Path, help="write every figure to this file")
    add("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if args.quick:
        args.frames, args.size, args.model_size, args.settle = 30, "72x128", 256, 18
    if not 0 < args.settle < args.frames - 1:
        parser.error("need 0 < --settle < --frames - 1")
    height, width = (int(v) for v in args.size.lower().split("x"))
    env = {
        "command": command_line(),
        "torch": torch.__version__,
        "cpu": cpu_model(),
        "video": f"{args.frames} frames of {height}x{width}",
        "model_size": args.model_size,
        "dtype": args.dtype,
    }
    print("\n".join(f"- {k}: {v}" for k, v in env.items()) + "\n", flush=True)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        from tests.reference_models import make_meta_checkpoint

        checkpoint = make_meta_checkpoint(VARIANT, Path(tmp) / "weights")
        video = write_mp4(Path(tmp) / "video.mp4", args.frames, height, width)
        for mode in args.modes:
            spec = {
                "mode": mode, "checkpoint": str(checkpoint), "video": str(video),
                "frames": args.frames, "height": height, "width": width,
                "size": args.model_size, "dtype": args.dtype, "threads": args.threads,
            }  # fmt: skip
            results[mode] = run_child(spec)
            results[mode]["summary"] = summarize(results[mode], args.frames, args.settle)
    print(report(results, args))
    if args.json is not None:
        args.json.write_text(json.dumps({**env, "results": results}, indent=2) + "\n")
    return 0


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"| mode | RSS after frame {args.settle} | peak RSS in the loop | peak over settle "
        "| growth per frame (slope) | growth from frame 60 | on disk at the end "
        "| forward / correction / reverse |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, r in results.items():
        s = r["summary"]
        from60 = f"{s['from_60_mb']:.1f} MB" if "from_60_mb" in s else "-"
        lines.append(
            f"| {mode} | {s['rss_at_settle_mb']:.0f} MB | {s['max_rss_mb']:.0f} MB "
            f"| {s['peak_over_settle_mb']:.1f} MB | {s['per_frame_mb']:.3f} MB | {from60} "
            f"| {r['spill_bytes'] / 1e6:.0f} MB in {r['spill_files']} files "
            f"| {r['forward_s']:.0f} / {r['correction_and_repropagation_s']:.0f} "
            f"/ {r['reverse_s']:.0f} s |"
        )
    default = results.get("default")
    if default is not None:
        s = default["summary"]
        ok = s["per_frame_mb"] < PER_FRAME_MB
        lines.append(
            f"\n- {'PASS' if ok else 'FAIL'}: default mode grows {s['per_frame_mb']:.3f} MB "
            f"a frame (target < {PER_FRAME_MB})"
        )
        if "from_60_mb" in s:
            ok = s["from_60_mb"] < FROM_60_MB
            lines.append(
                f"- {'PASS' if ok else 'FAIL'}: default mode grows {s['from_60_mb']:.1f} MB "
                f"from frame 60 to the end (target < {FROM_60_MB:g})"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

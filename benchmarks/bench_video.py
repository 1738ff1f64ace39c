"""Side-by-side CPU benchmark of the video predictors: sam2ui and Meta's reference `sam2`.

Both sides run the same random weights (the reference model's perturbed random weights, saved
as a Meta ``.pt`` that sam2ui loads), on the same synthetic video (shapes moving over a
gradient, with a little noise), written as a JPEG folder (the reference's loader needs one,
or decord for mp4) and as an H.264 mp4 (read lazily by sam2ui).

1. Propagation time per frame, with 1 and 3 objects (clicks on frame 0): reference float32,
   optionally reference bfloat16 (CPU autocast), sam2ui float32 and bfloat16. Each frame is
   timed as it is yielded; the median over the frames after the first ``--warmup`` ones (by
   then the memory bank is full) is reported, and beside it the TFLOP/s it stands for: the
   work of one more frame, tracked untimed after sam2ui float32's first timing run, counted
   with ``torch.utils.flop_counter`` on sam2ui's public operators (the reference's
   arithmetic; the fast CPU path does fewer), over each time.
2. Peak RSS, each run in a fresh subprocess (``ru_maxrss`` / ``VmHWM``) so that peaks do not
   mix: sam2ui (bfloat16, 1 object) tracks the whole mp4 of each ``--rss-frames`` length; the
   reference, whose ``init_state`` loads every frame (about 12 MiB each at 1024), does
   ``init_state`` plus ``--ref-track`` tracked frames on the JPEG folder of each length.
3. Time from ``init_state`` to the first mask (one click on frame 0) on the longest video:
   sam2ui float32 on the mp4 (and how many frames it decoded), the reference on the JPEGs.

Hole filling is off on both sides (the reference skips it on CPU: it needs a CUDA extension);
the reference's bfloat16 memory is upcast before memory attention, as in the parity tests.

    python benchmarks/bench_video.py --quick                  # < 1 minute: checks the script
    python benchmarks/bench_video.py --json bench_video.json  # the full run (long)
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # sam2ui, tests.reference_models, benchmarks.bench_image
if importlib.util.find_spec("torchvision") is None:  # the reference imports a few pieces of it
    sys.path.insert(0, str(ROOT / "tests" / "_stubs"))

import sam2ui  # noqa: E402
from benchmarks.bench_image import command_line, cpu_model, row  # noqa: E402
from benchmarks.bench_peers import counting_flops  # noqa: E402
from sam2ui.core.loading.build import build_sam2  # noqa: E402
from sam2ui.core.modeling.config import get_config  # noqa: E402
from sam2ui.core.video.predictor import SAM2VideoPredictor  # noqa: E402

VARIANT = "sam2.1-hiera-tiny"
FP32_RATIO = 0.8  # sam2ui float32 ms/frame vs the reference's float32
# Mask logits this close to the threshold are undecided at float32 precision (the parity
# tests' tolerance): kernels that round differently may put such a pixel on either side.
UNDECIDED_BAND = 1e-4
BF16_RATIO = 0.35  # sam2ui bfloat16 ms/frame vs the reference's float32
RSS_GROWTH_MB = 150.0  # sam2ui peak RSS, longest minus shortest video, in MB (10^6 bytes)
MIB = 1 << 20


# ---------------------------------------------------------------------------- the video


def synthetic_frame(t: int, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 frame t: a disc moving right, a box moving down and an ellipse moving
    diagonally over a gradient, plus a little noise (so the encoder has real work)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([200 * x / width + 30, 160 * y / height + 40, 60 + 0 * x], -1)
    for (cx, cy), (rx, ry), color in zip(_centres(t, height, width), _radii(height, width), COLORS):
        img[((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1] = color
    img += np.random.default_rng(t).normal(0, 4, img.shape).astype(np.float32)
    return img.clip(0, 255).astype(np.uint8)


COLORS = [(220, 60, 50), (40, 200, 80), (60, 80, 220)]


def _centres(t: int, h: int, w: int) -> list[tuple[float, float]]:
    phase = (t % 200) / 200  # shapes wrap around every 200 frames
    return [
        (w * (0.2 + 0.5 * phase), h * 0.35),
        (w * 0.75, h * (0.2 + 0.5 * phase)),
        (w * (0.3 + 0.3 * phase), h * (0.55 + 0.3 * phase)),
    ]


def _radii(h: int, w: int) -> list[tuple[float, float]]:
    return [(w * 0.08, h * 0.12), (w * 0.07, h * 0.1), (w * 0.1, h * 0.07)]


def clicks(num_objects: int, height: int, width: int) -> list[dict[str, Any]]:
    """One positive click on each of the first ``num_objects`` shapes on frame 0."""
    return [
        {"points": [[cx, cy]], "labels": [1]} for cx, cy in _centres(0, height, width)[:num_objects]
    ]


def write_jpegs(folder: Path, num_frames: int, height: int, width: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(num_frames):
        Image.fromarray(synthetic_frame(t, height, width)).save(folder / f"{t:05d}.jpg", quality=90)
    return folder


def write_mp4(path: Path, num_frames: int, height: int, width: int) -> Path:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(num_frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(t, height, width), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


# ---------------------------------------------------------------------------- predictors


def load_ours(checkpoint: Path, dtype: torch.dtype, image_size: int) -> SAM2VideoPredictor:
    config = replace(
        get_config(VARIANT), image_size=image_size, binarize_mask_from_pts_for_mem_enc=True
    )
    model = build_sam2(config)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    model.eval().set_compute_dtype(dtype)
    return SAM2VideoPredictor(model, fill_hole_area=0)


def load_reference(checkpoint: Path, image_size: int) -> Any:
    from tests.core.video.test_predictor_parity import _upcast_memory_reads
    from tests.reference_models import build_reference_model

    state_dict = torch.load(checkpoint, weights_only=True)["model"]
    ref: Any = build_reference_model(
        VARIANT, video=True, state_dict=state_dict, overrides=[f"++model.image_size={image_size}"]
    )
    ref.fill_hole_area = 0
    _upcast_memory_reads(ref)
    return ref


def prompt_all(predictor: Any, state: Any, prompts: list[dict[str, Any]]) -> torch.Tensor:
    masks = torch.empty(0)
    for obj_id, prompt in enumerate(prompts, start=1):
        _, _, masks = predictor.add_new_points_or_box(state, 0, obj_id, **prompt)
    return masks


# ---------------------------------------------------------------------------- 1. ms per frame


def time_propagation(
    predictor: Any,
    video: Path,
    prompts: list[dict[str, Any]],
    frames: int,
    autocast: bool,
    count: bool = False,
) -> tuple[list[float], torch.Tensor, float | None]:
    """Milliseconds of each tracked frame (frames 1..frames-1) and the last frame's logits;
    with ``count``, also the GFLOPs of one more, untimed frame (``frames``: the video has it),
    counted on sam2ui's public operators (``bench_peers.counting_flops``), which do the
    reference's arithmetic: the work behind the "TFLOP/s" row."""
    context = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    with torch.inference_mode(), context:
        state = predictor.init_state(str(video))
        prompt_all(predictor, state, prompts)
        times, last = [], torch.empty(0)
        steps = predictor.propagate_in_video(state, max_frame_num_to_track=frames - 1 + count)
        start = time.perf_counter()
        for t, _, masks in itertools.islice(steps, frames):  # frames 0 .. frames - 1
            now = time.perf_counter()
            if t > 0:  # frame 0 is the prompted frame (its memory is encoded first)
                times.append((now - start) * 1e3)
            start, last = now, masks
        gflops = None
        if count:
            with counting_flops() as counter:
                next(steps)  # frame ``frames`` is computed here
            gflops = counter.get_total_flops() / 1e9
    return times, last.float(), gflops


def bench_per_frame(args: argparse.Namespace, checkpoint: Path, video: Path) -> dict[str, Any]:
    cases: dict[str, tuple[Any, bool]] = {
        "ref_fp32": (load_reference(checkpoint, args.model_size), False),
        "sam2ui_fp32": (load_ours(checkpoint, torch.float32, args.model_size), False),
        "sam2ui_bf16": (load_ours(checkpoint, torch.bfloat16, args.model_size), False),
    }
    if args.ref_bf16:
        cases["ref_bf16"] = (cases["ref_fp32"][0], True)
    h, w = args.height, args.width
    out: dict[str, Any] = {}
    for num_objects in args.objects:
        prompts = clicks(num_objects, h, w)
        runs: dict[str, list[float]] = {name: [] for name in cases}
        last: dict[str, torch.Tensor] = {}
        gflops: float | None = None
        names = list(cases)
        for r in range(args.repeats):  # the order rotates between repeats
            for name in names[r % len(names) :] + names[: r % len(names)]:
                predictor, autocast = cases[name]
                count = name == "sam2ui_fp32" and gflops is None
                times, last[name], counted = time_propagation(
                    predictor, video, prompts, args.frames, autocast, count
                )
                runs[name] += times[args.warmup :]
                gflops = gflops if counted is None else counted
        ms = {name: statistics.median(v) for name, v in runs.items()}
        ref, ours32, ours16 = last["ref_fp32"], last["sam2ui_fp32"], last["sam2ui_bf16"]
        out[str(num_objects)] = {
            "ms_per_frame": ms,
            "runs_ms": runs,
            "ratios": {name: ms[name] / ms["ref_fp32"] for name in ms},
            "sam2ui_gflops_per_frame": gflops,
            "last_frame_fp32_max_abs_diff": float((ref - ours32).abs().max()),
            "last_frame_fp32_pixels_differing": int(((ref > 0) != (ours32 > 0)).sum()),
            # Flips where the reference logit is farther than UNDECIDED_BAND from the threshold
            # are real differences; inside the band float32 rounding decides (as in bench_image).
            "last_frame_fp32_pixels_differing_outside_band": int(
                (((ref > 0) != (ours32 > 0)) & (ref.abs() > UNDECIDED_BAND)).sum()
            ),
            "last_frame_pixels": int(ref.numel()),
            "last_frame_bf16_iou": [
                float(((a > 0) & (b > 0)).sum() / max(int(((a > 0) | (b > 0)).sum()), 1))
                for a, b in zip(ours16, ours32)
            ],
        }
        print(per_frame_report(num_objects, out[str(num_objects)], args), flush=True)
    return out


def per_frame_report(num_objects: int, r: dict[str, Any], args: argparse.Namespace) -> str:
    cols = ["ref_fp32", "ref_bf16", "sam2ui_fp32", "sam2ui_bf16"]
    ms, ratios = r["ms_per_frame"], r["ratios"]
    gflops = r["sam2ui_gflops_per_frame"]
    tflops = {name: gflops / v for name, v in ms.items()}  # GFLOP per ms = TFLOP/s
    return "\n".join(
        [
            f"### Propagation, {num_objects} object(s), {args.height}x{args.width} video, "
            f"model input {args.model_size}, median of frames {args.warmup + 1}.."
            f"{args.frames - 1} x {args.repeats} run(s)",
            "",
            "| | reference fp32 | reference bf16 | sam2ui fp32 | sam2ui bf16 |",
            "|---|---:|---:|---:|---:|",
            row("ms per frame", [ms.get(c) for c in cols], ".1f"),
            row("vs ref fp32", [ratios.get(c) for c in cols], ".2f"),
            row("TFLOP/s (the frame's work / ms)", [tflops.get(c) for c in cols], ".3f"),
            "",
            f"- the frame's work: {gflops:.1f} GFLOPs, one frame past the timed ones counted by "
            "torch.utils.flop_counter on the public operators (a multiply-add counts two): the "
            "reference's arithmetic, so its rate is real; sam2ui's fast CPU path does fewer "
            "(memory attention reads its values at 64 dimensions, not 256), so its rate is an "
            "effective one",
            f"- last frame, fp32 vs reference: logits max |Δ| "
            f"{r['last_frame_fp32_max_abs_diff']:.2e}, "
            f"{r['last_frame_fp32_pixels_differing']} of {r['last_frame_pixels']} mask pixels "
            f"differ, {r['last_frame_fp32_pixels_differing_outside_band']} of them with reference "
            f"|logit| > {UNDECIDED_BAND:g}; bf16 vs "
            f"fp32 IoU {', '.join(f'{v:.4f}' for v in r['last_frame_bf16_iou'])}",
            "",
        ]
    )


# ---------------------------------------------------------------------------- 2./3. children


def peak_rss_mib() -> float:
    """Peak resident set size of this process: VmHWM where /proc has it, else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, else KiB


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement in this (fresh) process: init_state, one click on frame 0 (the first
    mask), then tracking ``spec["track"]`` frames (all of them when None)."""
    torch.set_num_threads(spec["threads"])
    checkpoint, size = Path(spec["checkpoint"]), spec["model_size"]
    if spec["side"] == "ref":
        predictor = load_reference(checkpoint, size)
    else:
        predictor = load_ours(checkpoint, getattr(torch, spec["dtype"]), size)
    result: dict[str, Any] = {"rss_loaded_mib": peak_rss_mib()}
    prompts = clicks(1, spec["height"], spec["width"])
    with torch.inference_mode():
        start = time.perf_counter()
        state = predictor.init_state(spec["video"])
        result["init_state_s"] = time.perf_counter() - start
        prompt_all(predictor, state, prompts)
        result["first_mask_s"] = time.perf_counter() - start
        if spec["side"] != "ref":
            result["frames_decoded"] = state.source.stats["decoded"]
        tracked, start = 0, time.perf_counter()
        if spec["track"] != 0:
            limit = spec["track"] if spec["track"] is not None else None
            for _ in predictor.propagate_in_video(state, max_frame_num_to_track=limit):
                tracked += 1
        result["tracked_frames"] = tracked
        result["track_s"] = time.perf_counter() - start
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measurement {spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_memory(args: argparse.Namespace, checkpoint: Path, videos: dict[int, Path]) -> dict:
    base = {
        "checkpoint": str(checkpoint), "model_size": args.model_size, "threads": args.threads,
        "height": args.height, "width": args.width,
    }  # fmt: skip
    out: dict[str, Any] = {"sam2ui_bf16": {}, "ref_fp32": {}}
    for n in args.rss_frames:
        spec = {**base, "side": "ours", "dtype": "bfloat16", "track": None}
        out["sam2ui_bf16"][n] = run_child({**spec, "video": str(videos[n] / "video.mp4")})
        spec = {**base, "side": "ref", "dtype": "float32", "track": args.ref_track}
        out["ref_fp32"][n] = run_child({**spec, "video": str(videos[n] / "jpeg")})
    longest = max(args.rss_frames)
    spec = {**base, "side": "ours", "dtype": "float32", "track": 0}
    out["first_mask_sam2ui_fp32"] = run_child({**spec, "video": str(videos[longest] / "video.mp4")})
    print(memory_report(out, args), flush=True)
    return out


def memory_report(m: dict[str, Any], args: argparse.Namespace) -> str:
    ns = sorted(args.rss_frames)
    ours, ref = m["sam2ui_bf16"], m["ref_fp32"]
    lines = [
        f"### Peak RSS (MiB), {args.height}x{args.width} video, model input {args.model_size}, "
        "1 object, each in a fresh process",
        "",
        "| frames | sam2ui bf16, whole video tracked | reference fp32, init_state + "
        f"{args.ref_track} tracked frames |",
        "|---:|---:|---:|",
    ]
    for n in ns:
        lines.append(f"| {n} | {ours[n]['peak_rss_mib']:.0f} | {ref[n]['peak_rss_mib']:.0f} |")
    first = m["first_mask_sam2ui_fp32"]
    longest = ns[-1]
    tracked = ", ".join(str(ours[n]["tracked_frames"]) for n in ns)
    seconds = ", ".join(f"{ours[n]['track_s']:.1f}" for n in ns)
    lines += [
        "",
        f"- sam2ui tracked {tracked} frames in {seconds} s",
        f"- time to the first mask on {longest} frames (init_state + one click): sam2ui fp32 "
        f"{first['first_mask_s']:.2f} s (decoded {first['frames_decoded']} frame(s)), "
        f"reference fp32 {ref[longest]['first_mask_s']:.2f} s (its init_state "
        f"{ref[longest]['init_state_s']:.2f} s loads every frame)",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- targets, main


def targets(per_frame: dict[str, Any], memory: dict[str, Any] | None) -> list[tuple[bool, str]]:
    out = []
    for k, r in per_frame.items():
        fp32, bf16 = r["ratios"]["sam2ui_fp32"], r["ratios"]["sam2ui_bf16"]
        same = r["last_frame_fp32_pixels_differing_outside_band"] == 0
        out.append(
            (
                fp32 <= FP32_RATIO and same,
                f"{k} object(s): fp32 <= {FP32_RATIO}x ref ({fp32:.2f}x), same masks outside "
                f"the |logit| <= {UNDECIDED_BAND:g} band ({'yes' if same else 'no'})",
            )
        )
        out.append((bf16 <= BF16_RATIO, f"{k} object(s): bf16 <= {BF16_RATIO}x ref ({bf16:.2f}x)"))
    if memory is not None:
        ours = memory["sam2ui_bf16"]
        lo, hi = min(ours), max(ours)
        growth = (ours[hi]["peak_rss_mib"] - ours[lo]["peak_rss_mib"]) * MIB / 1e6
        out.append(
            (
                growth < RSS_GROWTH_MB,
                f"peak RSS growth {lo} -> {hi} frames < {RSS_GROWTH_MB:g} MB ({growth:.0f} MB)",
            )
        )
        first = memory["first_mask_sam2ui_fp32"]
        out.append(
            (
                first["frames_decoded"] < hi,
                f"first mask without decoding the whole video ({first['frames_decoded']} of "
                f"{hi} frames decoded)",
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="tiny sizes, to check the script (< 1 minute)")
    add("--size", default="480x854", help="HEIGHTxWIDTH of the video (default 480p)")
    add("--model-size", type=int, default=1024, help="model input side (default 1024)")
    add("--frames", type=int, default=12, help="frames per propagation timing run")
    add("--warmup", type=int, default=6, help="tracked frames left out of each timing")
    add("--objects", type=int, nargs="+", default=[1, 3], help="object counts to time")
    add("--repeats", type=int, default=1, help="timing runs per case")
    add("--ref-bf16", action="store_true", help="also time the reference under CPU autocast")
    add("--rss-frames", type=int, nargs="+", default=[60, 600], help="video lengths for RSS")
    add("--ref-track", type=int, default=3, help="frames the reference tracks in RSS runs")
    add("--skip-memory", action="store_true", help="only the per-frame timings")
    add("--threads", type=int, default=2, help="torch.set_num_threads")
    add("--json", type=Path, help="write every figure to this file")
    add("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    if args.quick:
        args.size, args.model_size, args.frames, args.warmup = "72x128", 256, 3, 1
        args.rss_frames, args.ref_track = [3, 8], 1
    args.height, args.width = (int(v) for v in args.size.lower().split("x"))
    if args.frames - 1 <= args.warmup or args.repeats < 1 or min(args.objects) not in (1, 2, 3):
        parser.error("need --frames > --warmup + 1, --repeats >= 1 and 1 to 3 objects")
    if max(args.objects) > 3:
        parser.error("at most 3 objects (the synthetic video has three shapes)")

    torch.set_num_threads(args.threads)
    env = {
        "command": command_line(),
        "torch": torch.__version__,
        "sam2ui": sam2ui.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "video": f"{args.height}x{args.width}",
        "model_size": args.model_size,
    }
    print("\n".join(f"- {k}: {v}" for k, v in env.items()) + "\n", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from tests.reference_models import make_meta_checkpoint

        checkpoint = make_meta_checkpoint(VARIANT, work / "weights")
        # One frame more than the timed ones: sam2ui's work is counted on it, untimed.
        timing_video = write_jpegs(work / "timing", args.frames + 1, args.height, args.width)
        per_frame = bench_per_frame(args, checkpoint, timing_video)
        memory = None
        if not args.skip_memory:
            videos = {}
            for n in args.rss_frames:
                videos[n] = work / f"v{n}"
                write_jpegs(videos[n] / "jpeg", n, args.height, args.width)
                write_mp4(videos[n] / "video.mp4", n, args.height, args.width)
            memory = bench_memory(args, checkpoint, videos)
    for ok, text in targets(per_frame, memory):
        print(f"- {'PASS' if ok else 'FAIL'}: {text}")
    if args.json is not None:
        args.json.write_text(
            json.dumps({**env, "per_frame": per_frame, "memory": memory}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

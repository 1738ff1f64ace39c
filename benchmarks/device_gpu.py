"""sam2ui against Meta's ``sam2`` 1.1.0 on one GPU: parity, then speed, in one process.

Both sides load the same random weights (a Meta ``.pt`` made from the reference model's
perturbed random weights, as in the parity tests) onto the same card:

1. Parity, float32 with TF32 off: one click on an image (mask logits, max |d| <= 1e-4) and
   8 tracked frames of one object (logits); bfloat16 (sam2ui's dtype against the reference
   under autocast, as its README runs it): IoU of the masks >= 0.98.
2. Speed, as Meta's ``sam2/benchmark.py`` times it (bfloat16 autocast, TF32 on, one clicked
   object, whole-video propagations after warm-up runs): video FPS, eager on both sides and,
   for ``--compiled`` variants, the reference's ``vos_optimized=True`` against
   ``compile=True``; peak GPU memory of a propagation; ``set_image`` and one click (median
   ms); automatic masks of one image (s).

Prints a table per variant and a verdict per target (>= 1.5x the reference's eager FPS, >= its
compiled FPS, automatic masks <= 0.3x its time). Stops starting new steps once ``--budget``
seconds have passed, so a lent machine's time is not overrun. Without CUDA it says "no CUDA"
and exits 0, unless ``--device cpu`` asks for the CPU (a quick check of the script itself).

    python benchmarks/device_gpu.py                       # on the GPU machine
    python benchmarks/device_gpu.py --device cpu --quick  # here, to check the script
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if importlib.util.find_spec("torchvision") is None:  # the reference imports a few pieces of it
    sys.path.insert(0, str(ROOT / "tests" / "_stubs"))

from tests.reference_models import make_meta_checkpoint, reference_config_file  # noqa: E402

START = time.monotonic()
RESULTS: list[tuple[str, str, str]] = []  # (variant, what, value)
CLICK = np.array([[210.0, 240.0]], dtype=np.float32)


def _out_of_time(args: argparse.Namespace) -> bool:
    return time.monotonic() - START > args.budget


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _video(folder: Path, count: int) -> Path:
    """``count`` JPEG frames (480x640) of two shapes moving over a gradient."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:480, :640]
    base = np.stack([xx * 255 // 640, yy * 255 // 480, np.full_like(xx, 90)], -1).astype(np.uint8)
    for t in range(count):
        frame = base.copy()
        frame[180:300, 150 + 4 * t : 280 + 4 * t] = (240, 220, 40)
        frame[(yy - 330) ** 2 + (xx - 450 + 3 * t) ** 2 < 60**2] = (30, 40, 200)
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    return folder


def _autocast(device: torch.device, on: bool) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=torch.bfloat16) if on else contextlib.nullcontext()


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0, b > 0
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


@contextlib.contextmanager
def _tf32(on: bool) -> Iterator[None]:
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _reference(variant: str, ckpt: Path, device: torch.device, video: bool, compiled: bool) -> Any:
    from sam2.build_sam import build_sam2, build_sam2_video_predictor
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    config = reference_config_file(variant)
    if video:
        return build_sam2_video_predictor(config, str(ckpt), device=device, vos_optimized=compiled)
    return SAM2ImagePredictor(build_sam2(config, str(ckpt), device=device))


def _ours(ckpt: Path, device: torch.device, video: bool, dtype: torch.dtype, compiled: bool) -> Any:
    from sam2ui.core import SAM2ImagePredictor, SAM2VideoPredictor, warm_up

    if video:
        predictor: Any = SAM2VideoPredictor.from_pretrained(
            ckpt, device=device, dtype=dtype, compile=compiled, fill_hole_area=0
        )
    else:
        predictor = SAM2ImagePredictor.from_pretrained(ckpt, device=device, dtype=dtype)
    if compiled:
        RESULTS.append(
            (ckpt.parent.name, "sam2ui compile warm-up (s)", f"{warm_up(predictor):.1f}")
        )
    return predictor


def _propagate(predictor: Any, state: Any) -> dict[int, torch.Tensor]:
    out = {}
    for t, _, logits in predictor.propagate_in_video(state):
        out[t] = logits.float().cpu()
    return out


def _prompt(predictor: Any, state: Any) -> None:
    predictor.add_new_points_or_box(state, 0, 1, points=CLICK, labels=np.array([1], np.int32))


def parity(variant: str, ckpt: Path, frames: Path, device: torch.device) -> None:
    image = np.array(Image.open(frames / "00000.jpg"))
    for bf16 in (False, True):
        name = "bfloat16" if bf16 else "float32"
        with _tf32(False), torch.inference_mode():
            ref = _reference(variant, ckpt, device, video=False, compiled=False)
            ours = _ours(ckpt, device, False, torch.bfloat16 if bf16 else torch.float32, False)
            logits = []
            for side, predictor in (("ref", ref), ("ours", ours)):
                with _autocast(device, bf16 and side == "ref"):
                    predictor.set_image(image)
                    _, _, low = predictor.predict(
                        point_coords=CLICK, point_labels=np.array([1]), return_logits=True
                    )
                logits.append(torch.as_tensor(np.asarray(low, dtype=np.float32)))
            _parity_row(variant, f"image click {name}", logits[0], logits[1], bf16)
            ref_v = _reference(variant, ckpt, device, video=True, compiled=False)
            ours_v = _ours(ckpt, device, True, torch.bfloat16 if bf16 else torch.float32, False)
            runs = []
            for side, predictor in (("ref", ref_v), ("ours", ours_v)):
                with _autocast(device, bf16 and side == "ref"):
                    state = predictor.init_state(str(frames))
                    _prompt(predictor, state)
                    runs.append(_propagate(predictor, state))
            worst = max(runs[0], key=lambda t: (runs[0][t] - runs[1][t]).abs().max().item())
            _parity_row(
                variant, f"video {len(runs[0])} frames {name}", runs[0][worst], runs[1][worst], bf16
            )


def _parity_row(variant: str, what: str, ref: torch.Tensor, ours: torch.Tensor, bf16: bool) -> None:
    if bf16:
        iou = _iou(ref, ours)
        RESULTS.append(
            (variant, f"parity {what}: mask IoU", f"{iou:.4f} ({'ok' if iou >= 0.98 else 'FAIL'})")
        )
    else:
        diff = (ref - ours).abs().max().item()
        RESULTS.append(
            (
                variant,
                f"parity {what}: max |d| logits",
                f"{diff:.2e} ({'ok' if diff <= 1e-4 else 'FAIL'})",
            )
        )


def _fps(
    predictor: Any, frames: Path, ours: bool, args: argparse.Namespace, device: torch.device
) -> tuple[float, float]:
    """Meta's method: frames per second over ``--runs`` propagations after ``--warmup``; and
    the peak GPU memory (MiB) of a propagation."""
    with torch.inference_mode(), _autocast(device, not ours):
        state = predictor.init_state(str(frames))
        _prompt(predictor, state)
        count = len(list(frames.glob("*.jpg")))
        total = 0.0
        for run in range(args.warmup + args.runs):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            _sync(device)
            start = time.perf_counter()
            for _ in predictor.propagate_in_video(state):
                pass
            _sync(device)
            if run >= args.warmup:
                total += time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return count * args.runs / total, peak


def _median_ms(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[1:])


def speed(
    variant: str, ckpt: Path, frames: Path, device: torch.device, args: argparse.Namespace
) -> None:
    compiled_too = variant in args.compiled.split(",")
    fps: dict[str, float] = {}
    for label, compiled in (("eager", False), ("compiled", True)):
        if compiled and not compiled_too:
            continue
        for side in ("reference", "sam2ui"):
            if _out_of_time(args):
                RESULTS.append((variant, f"{side} {label} FPS", "skipped: out of time"))
                continue
            with _tf32(True):
                if side == "reference":
                    predictor = _reference(variant, ckpt, device, video=True, compiled=compiled)
                else:
                    predictor = _ours(ckpt, device, True, torch.bfloat16, compiled)
                value, peak = _fps(predictor, frames, side == "sam2ui", args, device)
            fps[f"{side} {label}"] = value
            RESULTS.append((variant, f"{side} {label} FPS", f"{value:.1f}"))
            RESULTS.append((variant, f"{side} {label} peak memory (MiB)", f"{peak:.0f}"))
            del predictor
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if "reference eager" in fps and "sam2ui eager" in fps:
        ratio = fps["sam2ui eager"] / fps["reference eager"]
        RESULTS.append((variant, "eager FPS vs reference (target >= 1.5x)", f"{ratio:.2f}x"))
    if "reference compiled" in fps and "sam2ui compiled" in fps:
        ratio = fps["sam2ui compiled"] / fps["reference compiled"]
        RESULTS.append((variant, "compiled FPS vs reference (target >= 1.0x)", f"{ratio:.2f}x"))
    if _out_of_time(args):
        return
    image = np.array(Image.open(frames / "00000.jpg"))
    times: dict[str, tuple[float, float, float]] = {}
    with _tf32(True), torch.inference_mode():
        for side in ("reference", "sam2ui"):
            ours = side == "sam2ui"
            predictor = (
                _ours(ckpt, device, False, torch.bfloat16, False)
                if ours
                else _reference(variant, ckpt, device, False, False)
            )
            with _autocast(device, not ours):
                set_ms = _median_ms(lambda p=predictor: p.set_image(image), args.repeats, device)
                click_ms = _median_ms(
                    lambda p=predictor: p.predict(point_coords=CLICK, point_labels=np.array([1])),
                    args.repeats,
                    device,
                )
                amg_s = _amg_seconds(predictor, image, ours, device, args.points_per_side)
            times[side] = (set_ms, click_ms, amg_s)
            RESULTS.append(
                (variant, f"{side} set_image / click (ms)", f"{set_ms:.1f} / {click_ms:.2f}")
            )
            RESULTS.append((variant, f"{side} automatic masks (s)", f"{amg_s:.2f}"))
    ratio = times["sam2ui"][2] / times["reference"][2]
    RESULTS.append((variant, "automatic masks vs reference (target <= 0.3x)", f"{ratio:.2f}x"))


def _amg_seconds(
    predictor: Any, image: np.ndarray, ours: bool, device: torch.device, points: int
) -> float:
    if ours:
        from sam2ui.core import SAM2AutomaticMaskGenerator

        generator: Any = SAM2AutomaticMaskGenerator(predictor, points_per_side=points)
    else:
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as Reference

        generator = Reference(predictor.model, points_per_side=points)
    _sync(device)
    start = time.perf_counter()
    generator.generate(image)
    _sync(device)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--variants", default="sam2.1-hiera-tiny,sam2.1-hiera-large")
    parser.add_argument(
        "--compiled", default="sam2.1-hiera-tiny", help="variants also timed compiled"
    )
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10, help="set_image and click timings")
    parser.add_argument("--points-per-side", type=int, default=32, help="automatic masks")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds; then no new step")
    parser.add_argument("--skip-parity", action="store_true", help="speed only")
    parser.add_argument(
        "--quick", action="store_true", help="tiny, 4 frames, 1 run, 4x4 points, no compile"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA: the GPU checks need a CUDA device (--device cpu checks the script)")
        return 0
    if args.quick:
        args.variants, args.compiled, args.frames = "sam2.1-hiera-tiny", "", 4
        args.warmup, args.runs, args.repeats, args.points_per_side = 0, 1, 2, 4
        args.budget = float("inf")  # a check of the script: every step runs
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    print(f"{name}; torch {torch.__version__}; python {sys.version.split()[0]}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frames = _video(root / "frames", args.frames)
        parity_frames = _video(root / "parity", min(8, args.frames))
        shown = 0
        for variant in args.variants.split(","):
            ckpt = make_meta_checkpoint(variant, root / variant)
            if not args.skip_parity:
                parity(variant, ckpt, parity_frames, device)
            speed(variant, ckpt, frames, device, args)
            for row in RESULTS[shown:]:
                print(f"{row[0]:22} {row[1]:48} {row[2]}", flush=True)
            shown = len(RESULTS)
    return 1 if any("FAIL" in value for _, _, value in RESULTS) else 0


if __name__ == "__main__":
    sys.exit(main())

"""The compile switch against eager, in one process: same weights, same inputs, interleaved.

For each dtype: the warm-up of the compiled model (``warm_up``, the compiling included), then
``set_image`` (ms, median of ``--repeats``) and tracking with two objects (ms per frame,
median over the frames of ``--frames``-frame runs), eager and compiled alternating, with the
largest difference of their mask logits. On a GPU it runs there (``--device cuda``).

    python benchmarks/bench_compile.py --quick       # a minute or two: checks the script
    python benchmarks/bench_compile.py --dtypes float32,bfloat16 --repeats 5 --frames 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sam2ui.core import (  # noqa: E402
    SAM2ImagePredictor,
    SAM2VideoPredictor,
    build_sam2,
    compile_model,
    warm_up,
)
from sam2ui.core.modeling.config import get_config  # noqa: E402
from tests.reference_models import perturbed_state_dict  # noqa: E402


def _frames(count: int, height: int = 480, width: int = 640) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    base = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 90)], -1)
    frames = np.repeat(base[None].astype(np.uint8), count, axis=0)
    for t in range(count):
        frames[t, 120:260, 100 + 6 * t : 260 + 6 * t] = (240, 220, 40)
        frames[t][(yy - 330) ** 2 + (xx - 450 + 4 * t) ** 2 < 70**2] = (30, 40, 200)
    return frames


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _set_image_ms(predictor: SAM2ImagePredictor, image: np.ndarray) -> tuple[float, torch.Tensor]:
    _sync(predictor.device)
    start = time.perf_counter()
    predictor.set_image(image)
    _sync(predictor.device)
    ms = (time.perf_counter() - start) * 1e3
    return ms, predictor.features.image_embed.float().cpu()


def _track(predictor: SAM2VideoPredictor, frames: np.ndarray) -> tuple[list[float], torch.Tensor]:
    state = predictor.init_state(frames)
    predictor.add_new_points_or_box(state, 0, 1, points=[[180, 190]], labels=[1])
    predictor.add_new_points_or_box(state, 0, 2, points=[[450, 330]], labels=[1])
    times, last = [], torch.empty(0)
    _sync(predictor.device)
    start = time.perf_counter()
    for _, _, logits in predictor.propagate_in_video(state):
        _sync(predictor.device)
        now = time.perf_counter()
        times.append((now - start) * 1e3)
        start, last = now, logits.float().cpu()
    predictor.reset_state(state)
    return times[1:], last  # frame 0 is the prompted frame, not a tracked one


def run(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    config = get_config(args.variant)
    state = perturbed_state_dict(build_sam2(config), seed=0)
    frames = _frames(args.frames)
    print(
        f"{args.variant} on {device} ({torch.get_num_threads()} threads), torch {torch.__version__}"
    )
    print(f"{'dtype':9} {'work':22} {'eager':>10} {'compiled':>10} {'ratio':>6} {'max |d|':>9}")
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        models = []
        for _ in range(2):
            model = build_sam2(config, device=device)
            model.load_state_dict(state)
            models.append(model.eval().set_compute_dtype(dtype))
        eager, fast = models
        compile_model(fast)
        video = [SAM2VideoPredictor(m, fill_hole_area=0) for m in (eager, fast)]
        image = [SAM2ImagePredictor(m) for m in (eager, fast)]
        seconds = warm_up(video[1]) + warm_up(image[1])
        warm_up(video[0])
        warm_up(image[0])
        print(f"{dtype_name:9} {'warm-up (compiling)':22} {'':>10} {seconds:9.1f}s")
        set_ms: list[list[float]] = [[], []]
        frame_ms: list[list[float]] = [[], []]
        outs: list[list[torch.Tensor]] = [[], []]
        for _ in range(args.repeats):
            for side in (0, 1):
                ms, embed = _set_image_ms(image[side], frames[0])
                set_ms[side].append(ms)
                outs[side].append(embed)
        diff = max((a - b).abs().max().item() for a, b in zip(outs[0], outs[1]))
        _row(dtype_name, "set_image (ms)", set_ms, diff)
        last: list[torch.Tensor] = [torch.empty(0), torch.empty(0)]
        for _ in range(args.runs):
            for side in (0, 1):
                ms_list, last[side] = _track(video[side], frames)
                frame_ms[side] += ms_list
        _row(
            dtype_name, "track, 2 objects (ms/fr)", frame_ms, (last[0] - last[1]).abs().max().item()
        )


def _row(dtype: str, work: str, times: list[list[float]], diff: float) -> None:
    eager, fast = (statistics.median(t) for t in times)
    print(f"{dtype:9} {work:22} {eager:10.1f} {fast:10.1f} {fast / eager:6.2f} {diff:9.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="sam2.1-hiera-tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=5, help="set_image runs per side")
    parser.add_argument("--frames", type=int, default=8, help="frames per tracking run")
    parser.add_argument("--runs", type=int, default=2, help="tracking runs per side")
    parser.add_argument("--quick", action="store_true", help="float32, 2 repeats, 4 frames")
    args = parser.parse_args()
    if args.quick:
        args.dtypes, args.repeats, args.frames, args.runs = "float32", 2, 4, 1
    run(args)


if __name__ == "__main__":
    main()

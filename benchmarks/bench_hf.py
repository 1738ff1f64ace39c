"""sam2ui.hf against transformers' own SAM 2 models and against sam2ui's engine, in one run.

The same random-weight checkpoint (written by transformers' ``save_pretrained``) is loaded by
transformers' ``Sam2Model`` / ``Sam2VideoModel``, by ``sam2ui.hf`` and, for the engine, is the
model ``sam2ui.hf`` holds. Three pieces of work, each given the same inputs by all three, the
calls interleaved:

* image embedding: ``get_image_embeddings(pixel_values)`` / ``SAM2Model.image_features``;
* one click (three masks) on embeddings computed before: ``model(image_embeddings=...)`` /
  ``SAM2ImagePredictor.predict_low_res``, the median of 10 back-to-back clicks;
* one propagated frame with two objects (the frame's image encoding included): the session's
  ``model(inference_session, frame_idx=t)`` / the next frame of
  ``SAM2VideoPredictor.propagate_in_video`` (``fill_hole_area=0``: transformers fills none).

Reports the median milliseconds, sam2ui.hf's ratio to the engine (target: within 5%) and to
transformers. ``python benchmarks/bench_hf.py --repeats 3 --frames 3`` for the figures in
RESULTS.md; ``--size 256 --repeats 1`` checks that it runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # sam2ui and tests.hf.checkpoints

import transformers  # noqa: E402

from sam2ui.core import SAM2ImagePredictor, SAM2VideoPredictor  # noqa: E402
from sam2ui.hf import (  # noqa: E402
    Sam2ImageProcessor,
    Sam2Model,
    Sam2Processor,
    Sam2VideoInferenceSession,
    Sam2VideoModel,
    Sam2VideoProcessor,
)
from tests.hf.checkpoints import random_state, save_video_checkpoint  # noqa: E402

WITHIN_ENGINE = 0.05  # sam2ui.hf may cost at most this much more than the engine
HEIGHT, WIDTH = 720, 1280  # the picture and video frames the prompts are given for
POINTS = [[[[400, 300]], [[900, 500]]]]  # two objects, one click each (video)
CLICK = [[[[640, 360]]]]
CLICK_BURST = 10  # clicks timed back to back per round (their median is the round's figure)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def frames(count: int, size: int) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Preprocessed frames (T, 3, S, S) and the same frames as uint8 pictures (H, W, 3)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    pictures = []
    for t in range(count):
        smooth = np.stack([(xx // 3 + 7 * t) % 256, (yy // 2) % 256, ((xx + yy) // 4) % 256], -1)
        noisy = smooth + rng.normal(0, 6, smooth.shape)
        pictures.append(np.clip(noisy, 0, 255).astype(np.uint8))
    processor = Sam2Processor(Sam2ImageProcessor(size=size))
    pixel_values = processor(images=pictures, return_tensors="pt")["pixel_values"]
    return pixel_values, pictures


def bench_image(
    folder: Path, size: int, repeats: int, pixel_values: torch.Tensor, pictures: list
) -> dict:
    ours = Sam2Model.from_pretrained(folder)
    theirs = transformers.Sam2Model.from_pretrained(folder).eval()
    engine = ours.core
    predictor = SAM2ImagePredictor(engine)
    one = pixel_values[:1]
    processor = Sam2Processor(target_size=size)
    prompts = processor.encode_prompts(CLICK, [[[1]]], None, [[HEIGHT, WIDTH]])
    points, labels = prompts["input_points"], prompts["input_labels"]
    times: dict[str, list[float]] = {}

    def record(name: str, fn: Callable[[], Any], burst: int = 1) -> None:
        """One figure per round: the median of ``burst`` back-to-back calls. Single clicks
        right after an image encoding would time whose weights the encoder evicted."""
        times.setdefault(name, []).append(statistics.median(timed(fn) for _ in range(burst)))

    with torch.no_grad():
        ours_embeddings = ours.get_image_embeddings(one)
        theirs_embeddings = theirs.get_image_embeddings(one)
        predictor.set_image(pictures[0])  # a click costs the same whatever the pixels
        for i in range(repeats + 1):  # the first round warms up
            record("embed/hf", lambda: ours.get_image_embeddings(one))
            record("embed/engine", lambda: engine.image_features(one))
            record("embed/transformers", lambda: theirs.get_image_embeddings(one))
            record("click/hf", lambda: ours(image_embeddings=ours_embeddings, **prompts),
                   CLICK_BURST)  # fmt: skip
            record("click/engine", lambda: predictor.predict_low_res(points[0], labels[0]),
                   CLICK_BURST)  # fmt: skip
            record("click/transformers",
                   lambda: theirs(image_embeddings=theirs_embeddings, **prompts),
                   CLICK_BURST)  # fmt: skip
            if i == 0:
                times = {}
    return {k: statistics.median(v) for k, v in times.items()}


def bench_video(
    folder: Path, size: int, repeats: int, pixel_values: torch.Tensor, pictures: list
) -> dict:
    ours = Sam2VideoModel.from_pretrained(folder)
    theirs = transformers.Sam2VideoModel.from_pretrained(folder).eval()
    engine = SAM2VideoPredictor(ours.core, fill_hole_area=0)
    processor = Sam2VideoProcessor(target_size=size)
    their_processor = object.__new__(transformers.Sam2VideoProcessor)
    their_processor.point_pad_value, their_processor.target_size = -10, size
    times: dict[str, list[float]] = {}
    for i in range(repeats + 1):
        # Fresh lists each round: transformers' session takes obj_ids and empties it.
        prompt = {"frame_idx": 0, "obj_ids": [1, 2], "input_points": POINTS,
                  "input_labels": [[[1], [1]]]}  # fmt: skip
        s1 = Sam2VideoInferenceSession(pixel_values, HEIGHT, WIDTH)
        s2 = transformers.Sam2VideoInferenceSession(
            pixel_values, HEIGHT, WIDTH, dtype=torch.float32
        )
        processor.add_inputs_to_inference_session(s1, **prompt)
        their_processor.add_inputs_to_inference_session(s2, **{**prompt, "obj_ids": [1, 2]})
        state = engine.init_state(pictures)
        engine.add_new_points_or_box(
            state, 0, obj_id=[1, 2], points=[np.array([p[0]]) for p in POINTS[0]],
            labels=[np.array([1]), np.array([1])],
        )  # fmt: skip
        with torch.inference_mode():
            ours(inference_session=s1, frame_idx=0)
            theirs(inference_session=s2, frame_idx=0)
        tracked = engine.propagate_in_video(state)
        next(tracked)  # frame 0: the prompted frame, already segmented
        for t in range(1, len(pictures)):
            times.setdefault("frame/hf", []).append(
                timed(lambda: ours(inference_session=s1, frame_idx=t))  # noqa: B023
            )
            times.setdefault("frame/engine", []).append(timed(lambda: next(tracked)))  # noqa: B023
            with torch.inference_mode():
                times.setdefault("frame/transformers", []).append(
                    timed(lambda: theirs(inference_session=s2, frame_idx=t))  # noqa: B023
                )
        if i == 0:
            times = {}
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="model input side (1024)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after a warm-up")
    parser.add_argument("--frames", type=int, default=3, help="propagated frames per round")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_video_checkpoint(Path(tmp), random_state(size=args.size), size=args.size)
        pixel_values, pictures = frames(args.frames + 1, args.size)
        results = bench_image(folder, args.size, args.repeats, pixel_values, pictures)
        results |= bench_video(folder, args.size, args.repeats, pixel_values, pictures)
    print(f"sam2.1-hiera-tiny, input {args.size}, {args.threads} threads, float32, "
          f"median ms of {args.repeats} rounds after a warm-up")  # fmt: skip
    print("| work | sam2ui.hf | engine | transformers | hf / engine | hf / transformers |")
    print("|---|---:|---:|---:|---:|---:|")
    ok = True
    for work in ("embed", "click", "frame"):
        hf, engine, tf = (results[f"{work}/{k}"] for k in ("hf", "engine", "transformers"))
        ok = ok and hf <= engine * (1 + WITHIN_ENGINE)
        print(f"| {work} | {hf:.1f} | {engine:.1f} | {tf:.1f} | {hf / engine:.3f} | "
              f"{hf / tf:.2f}x |")  # fmt: skip
    print(f"sam2ui.hf within {WITHIN_ENGINE:.0%} of the engine: {'yes' if ok else 'NO'}")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                         "median_ms": results}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The same prompt gives the same bits whatever torch's thread count.

The serving layer sets torch's intra-op threads before each model call from the CPUs other
processes leave free, so one user's click may run on two threads alone and on one beside a
busy neighbour. The BLAS products of a few rows and the 1x1 convolutions used to sum in a
thread-dependent order (logits 1e-6 apart, now and then a pixel across the threshold); the
model now runs them on kernels whose sums do not depend on the thread count. These tests run
every kind of work at 1 and 2 threads and compare the results bit for bit.

Random (perturbed) weights from the Meta-layout checkpoint fixture; the image model at its real
1024-pixel input (the shapes decide which kernels run), the video model at 256 pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from sam2ui.core.image.predictor import SAM2ImagePredictor
from sam2ui.core.loading.build import build_sam2
from sam2ui.core.modeling.config import get_config
from sam2ui.core.video.predictor import SAM2VideoPredictor

VARIANT = "sam2.1-hiera-tiny"


@contextmanager
def threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _picture(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], axis=-1).astype(np.uint8)
    for _ in range(6):  # a few flat shapes to segment
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(h // 10, h // 4)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(0, 256, 3)
    return img


def _model(meta_checkpoint, **overrides: Any) -> torch.nn.Module:
    net = build_sam2(replace(get_config(VARIANT), **overrides))
    net.load_state_dict(torch.load(meta_checkpoint(VARIANT), weights_only=True)["model"])
    return net.eval()


def _prompts(h: int, w: int) -> list[dict[str, Any]]:
    """Points (1 to 12, so every padded token count), boxes, both, one or three masks."""
    rng = np.random.default_rng(7)
    out: list[dict[str, Any]] = []
    for n in (1, 2, 3, 5, 6, 9, 12):
        pts = rng.uniform([0, 0], [w, h], size=(n, 2)).astype(np.float32)
        out.append(dict(point_coords=pts, point_labels=(np.arange(n) % 3 != 2).astype(np.int64)))
    out.append(dict(box=np.array([w * 0.2, h * 0.3, w * 0.7, h * 0.8])))
    out.append(dict(box=np.array([w * 0.1, h * 0.1, w * 0.5, h * 0.6]), **out[1]))
    return [*out, dict(out[3], multimask_output=True)]


def _run_image(predictor: SAM2ImagePredictor, image: np.ndarray) -> list[np.ndarray]:
    predictor.set_image(image)
    results: list[np.ndarray] = [
        predictor.get_image_embedding().float().numpy(),
        *(f.float().numpy() for f in predictor._features.high_res_feats),
    ]
    h, w = image.shape[:2]
    for prompt in _prompts(h, w):
        kwargs = {"multimask_output": False, **prompt}
        masks, scores, low = predictor.predict(return_logits=True, **kwargs)
        # The previous logits as a mask prompt, as a correction click passes them.
        again, _, _ = predictor.predict(mask_input=low[:1], return_logits=True, **kwargs)
        results += [masks, scores, low, again]
    return results


def _assert_same_bits(one: list[np.ndarray], two: list[np.ndarray]) -> None:
    assert len(one) == len(two)
    for i, (a, b) in enumerate(zip(one, two, strict=True)):
        assert a.shape == b.shape, i
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64)).max() if a.size else 0.0
        assert np.array_equal(a, b), f"result {i} differs between 1 and 2 threads by {diff:.3g}"


def _at_both(run: Callable[[], list[np.ndarray]]) -> None:
    with threads(2):
        two = run()
    with threads(1):
        one = run()
    _assert_same_bits(one, two)


def test_image_predictions_do_not_depend_on_the_thread_count(meta_checkpoint):
    predictor = SAM2ImagePredictor(_model(meta_checkpoint))
    image = _picture(600, 800, seed=1)
    _at_both(lambda: _run_image(predictor, image))


def test_bfloat16_image_predictions_do_not_depend_on_the_thread_count(meta_checkpoint):
    net = _model(meta_checkpoint, image_size=512).set_compute_dtype(torch.bfloat16)
    predictor = SAM2ImagePredictor(net)
    image = _picture(300, 400, seed=2)
    _at_both(lambda: _run_image(predictor, image))


def _frames(n: int = 6, h: int = 96, w: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 2, yy * 2, (xx + yy) % 256], axis=-1).clip(0, 255).astype(np.uint8)
    frames = np.repeat(base[None], n, axis=0)
    for t in range(n):
        frames[t][(xx - 30 - 3 * t) ** 2 + (yy - 48) ** 2 <= 15**2] = (230, 40, 40)
        frames[t, 10 + 2 * t : 40 + 2 * t, 80:110] = (30, 200, 60)
    return frames


def test_video_tracking_does_not_depend_on_the_thread_count(meta_checkpoint):
    net = _model(meta_checkpoint, image_size=256, binarize_mask_from_pts_for_mem_enc=True)
    predictor = SAM2VideoPredictor(net, fill_hole_area=0)
    video = _frames()

    def run() -> list[np.ndarray]:
        session = predictor.init_state(video)
        _, _, first = predictor.add_new_points_or_box(
            session, 0, 1, points=[[30.0, 48.0]], labels=[1]
        )
        _, _, second = predictor.add_new_points_or_box(session, 0, 2, box=[80.0, 10.0, 110.0, 40.0])
        out = [first.numpy(), second.numpy()]
        for _, ids, masks in predictor.propagate_in_video(session):
            assert list(ids) == [1, 2]
            out.append(masks.numpy())
        return out

    _at_both(run)

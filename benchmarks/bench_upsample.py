"""A/B benchmark of the last step of a click: F.interpolate + threshold (what the reference
does) vs sam2ui's upsample_masks, which gives the same masks.

Same process, interleaved (the order alternates every round), medians. Logits: (1) the
random-weight sam2.1-tiny predictor's, for the click at (0.35 W, 0.45 H) of the synthetic
1080x1920 image of benchmarks/bench_image.py; (2) smooth stand-ins for a trained model's
logits for the same click (signed distance to the red ellipse and to two larger regions).

    python benchmarks/bench_upsample.py --repeats 200 --clicks 40
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "_stubs")]

from benchmarks.bench_image import synthetic_image  # noqa: E402
from sam2ui.core.image import predictor as ip  # noqa: E402
from sam2ui.core.image.predictor import SAM2ImagePredictor  # noqa: E402
from sam2ui.core.image.upsample import upsample_masks  # noqa: E402
from tests.reference_models import make_meta_checkpoint  # noqa: E402


def old_step(low: torch.Tensor, size: tuple[int, int], thr: float) -> torch.Tensor:
    return F.interpolate(low, size, mode="bilinear", align_corners=False) > thr


def smooth_logits(h: int = 256, w: int = 256) -> torch.Tensor:
    """Logits like a trained decoder's for the click inside the ellipse: +-20 far from the
    boundary, a ramp of about two low-res pixels across it; three nested candidates."""
    y, x = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    ellipse = 1 - (((x - 0.35) / 0.15) ** 2 + ((y - 0.45) / 0.22) ** 2).sqrt()
    box = 0.25 - torch.maximum((x - 0.5).abs() - 0.25, (y - 0.45).abs() - 0.3)
    masks = [ellipse * 60, torch.maximum(ellipse, box - 0.25) * 60, box * 40]
    return torch.stack(masks).clamp(-20, 20)[None]


def interleaved(cases: dict, repeats: int) -> dict[str, list[float]]:
    names = list(cases)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats + 2):
        order = names if r % 2 else names[::-1]
        for name in order:
            gc.collect()
            start = time.perf_counter()
            result = cases[name]()
            elapsed = (time.perf_counter() - start) * 1e3
            del result
            if r >= 2:
                times[name].append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clicks", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = synthetic_image(1080, 1920)
    h, w = image.shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_meta_checkpoint("sam2.1-hiera-tiny", Path(tmp))
        pred = SAM2ImagePredictor.from_pretrained(ckpt, device="cpu")
    pred.set_image(image)
    click = {"point_coords": np.array([[0.35 * w, 0.45 * h]]), "point_labels": np.array([1])}
    captured = {}
    clean = pred._clean_low_res

    def spy(low_res: torch.Tensor) -> torch.Tensor:
        captured["low"] = low_res.clone()
        return clean(low_res)

    pred._clean_low_res = spy  # type: ignore[method-assign]
    pred.predict(**click)
    del pred._clean_low_res
    size, thr = (h, w), pred.mask_threshold
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, size {size}")
    for name, low in (("random-weight", captured["low"]), ("smooth", smooth_logits())):
        assert torch.equal(old_step(low, size, thr), upsample_masks(low, size, thr))
        t = interleaved(
            {
                "old": lambda low=low: old_step(low, size, thr),
                "new": lambda low=low: upsample_masks(low, size, thr),
            },
            args.repeats,
        )
        med = {k: statistics.median(v) for k, v in t.items()}
        q = {k: np.percentile(v, [25, 75]).round(2).tolist() for k, v in t.items()}
        print(f"{name:14s} old {med['old']:.2f} ms {q['old']}  new {med['new']:.2f} ms {q['new']}")
    # The whole click, old step patched in vs new.
    new_fn = ip.upsample_masks

    def click_with(fn):
        def run():
            ip.upsample_masks = fn
            try:
                return pred.predict(**click)
            finally:
                ip.upsample_masks = new_fn

        return run

    t = interleaved({"old": click_with(old_step), "new": click_with(new_fn)}, args.clicks)
    med = {k: statistics.median(v) for k, v in t.items()}
    print(f"{'click':14s} old {med['old']:.2f} ms  new {med['new']:.2f} ms (random weights)")


if __name__ == "__main__":
    main()

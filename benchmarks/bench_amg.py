"""Automatic mask generation, sam2ui against Meta's reference `sam2`, same weights, one process.

The reference model gets deterministic random weights (no official weights are needed); they
are saved as a Meta ``.pt`` and loaded by sam2ui, so both generators run the same numbers on
the same synthetic image. Reference and sam2ui runs alternate (the order rotates each round)
so that they share any drift of the machine. Each side's ``generate`` includes its own image
encoding, as a caller of either generator pays it.

Two threshold settings per grid size:

- ``defaults``: the reference's defaults (predicted IoU > 0.8, stability >= 0.95). With
  random weights no mask passes them, so this times the prompting of the grid alone;
- ``permissive``: thresholds under which random-weight masks pass (those of the parity
  tests), so that upsampling, scoring, NMS and RLE have masks to work on, as with trained
  weights, where a few hundred masks of a 32 x 32 grid survive the default filters.

    python benchmarks/bench_amg.py --points-per-side 16 32 --repeats 1 --image-size 540x960
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # sam2ui, tests.reference_models and benchmarks
if importlib.util.find_spec("torchvision") is None:  # the reference imports a few pieces of it
    sys.path.insert(0, str(ROOT / "tests" / "_stubs"))

from sam2.automatic_mask_generator import (  # noqa: E402
    SAM2AutomaticMaskGenerator as RefGenerator,
)

import sam2ui  # noqa: E402
from benchmarks.bench_image import command_line, cpu_model, synthetic_image  # noqa: E402
from sam2ui.core.image.mask_generator import SAM2AutomaticMaskGenerator  # noqa: E402
from sam2ui.core.image.predictor import SAM2ImagePredictor  # noqa: E402
from sam2ui.core.modeling.config import get_config  # noqa: E402
from tests.reference_models import build_reference_model, save_meta_checkpoint  # noqa: E402

# Target: sam2ui's time over the reference's, same settings, same run.
TARGET_RATIO = 0.5
SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "permissive": dict(
        pred_iou_thresh=0.45,
        stability_score_thresh=0.01,
        stability_score_offset=0.05,
        mask_threshold=0.4,
    ),
}


def compare(ours: list[dict[str, Any]], ref: list[dict[str, Any]]) -> str:
    """How the two record lists agree (different float32 kernels: a few ulps apart)."""
    if len(ours) != len(ref):
        return f"{len(ours)} vs {len(ref)} records"
    same_boxes = sum(a["bbox"] == b["bbox"] and a["area"] == b["area"] for a, b in zip(ours, ref))
    pixels = sum(int((a["segmentation"] != b["segmentation"]).sum()) for a, b in zip(ours, ref))
    return f"{len(ours)} records, {same_boxes} with equal box and area, {pixels} pixels differ"


def bench(
    ref_model: torch.nn.Module,
    ours_pred: SAM2ImagePredictor,
    image: np.ndarray,
    points_per_side: int,
    settings: dict[str, Any],
    repeats: int,
) -> dict[str, Any]:
    kwargs = dict(points_per_side=points_per_side, **settings)
    ref = RefGenerator(ref_model, **kwargs)
    ours = SAM2AutomaticMaskGenerator(ours_pred, **kwargs)
    cases = {"reference": ref.generate, "sam2ui": ours.generate}
    times: dict[str, list[float]] = {name: [] for name in cases}
    outputs: dict[str, list[dict[str, Any]]] = {}
    names = list(cases)
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            start = time.perf_counter()
            outputs[name] = cases[name](image)
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(v) for name, v in times.items()}
    return {
        "seconds": med,
        "runs": times,
        "ratio": med["sam2ui"] / med["reference"],
        "agreement": compare(outputs["sam2ui"], outputs["reference"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", default="sam2.1-hiera-tiny")
    parser.add_argument("--points-per-side", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=1, help="runs per side (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--image-size", default="540x960", help="HEIGHTxWIDTH of the image")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    try:
        height, width = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        parser.error("--image-size must be HEIGHTxWIDTH, e.g. 540x960")

    torch.set_num_threads(args.threads)
    env = {
        "command": command_line(),
        "torch": torch.__version__,
        "sam2ui": sam2ui.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "model": f"{args.variant}, random weights, float32",
        "image_size": f"{height}x{width}",
        "repeats": args.repeats,
    }
    print("\n".join(f"- {k}: {v}" for k, v in env.items()) + "\n", flush=True)
    image = synthetic_image(height, width)
    ref_model = build_reference_model(args.variant, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_meta_checkpoint(
            ref_model.state_dict(), Path(tmp) / get_config(args.variant).checkpoint_filename
        )
        ours_pred = SAM2ImagePredictor.from_pretrained(path, device="cpu", dtype=torch.float32)
    print("| points per side | settings | reference (s) | sam2ui (s) | ratio | records |")
    print("|---:|---|---:|---:|---:|---|", flush=True)
    verdicts = []
    for n in args.points_per_side:
        for name in args.settings:
            r = bench(ref_model, ours_pred, image, n, SETTINGS[name], args.repeats)
            s = r["seconds"]
            print(
                f"| {n} | {name} | {s['reference']:.1f} | {s['sam2ui']:.1f} | "
                f"{r['ratio']:.2f} | {r['agreement']} |",
                flush=True,
            )
            ok = r["ratio"] <= TARGET_RATIO
            verdicts.append(
                f"- {'PASS' if ok else 'FAIL'}: {n} points per side, {name}: "
                f"sam2ui <= {TARGET_RATIO}x the reference ({r['ratio']:.2f}x)"
            )
    print("\n" + "\n".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

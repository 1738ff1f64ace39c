"""Side-by-side CPU benchmark of sam2ui and Meta's reference `sam2`, same weights, one process.

For each variant the reference model gets deterministic random weights (no official weights are
needed), which are saved as a Meta ``.pt`` and loaded by sam2ui, so both sides run the same
numbers. Reference and sam2ui calls are interleaved so that they share any drift of the machine.

One click is timed two ways, the same for both sides: "first", a single click right after the
other side's work (its weights and features mostly out of cache), and "repeated", the median
of 10 back-to-back clicks on the same image, as a user clicking through one picture.

    python benchmarks/bench_image.py --variants sam2.1-hiera-tiny --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import shlex
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
sys.path.insert(0, str(ROOT))  # sam2ui and tests.reference_models
if importlib.util.find_spec("torchvision") is None:  # the reference imports a few pieces of it
    sys.path.insert(0, str(ROOT / "tests" / "_stubs"))

from sam2.sam2_image_predictor import SAM2ImagePredictor as RefPredictor  # noqa: E402

import sam2ui  # noqa: E402
from sam2ui.core.image.predictor import SAM2ImagePredictor  # noqa: E402
from sam2ui.core.modeling.config import get_config  # noqa: E402
from tests.reference_models import build_reference_model, save_meta_checkpoint  # noqa: E402

# Targets: (ratio to the reference's float32 set_image, or absolute milliseconds).
FP32_SET_IMAGE_RATIO = 0.8
BF16_SET_IMAGE_RATIO = 0.4
BF16_MIN_IOU = 0.98
ONE_CLICK_MS = 20.0
# Clicks per burst for the repeated-click figure (see repeated()).
CLICK_BURST = 10
# Mask logits this close to the threshold are undecided at float32 precision (the parity
# tests' tolerance): kernels that round differently may put such a pixel on either side.
UNDECIDED_BAND = 1e-4


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like RGB image: smooth gradients, a few flat shapes, sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    y, x = y / height, x / width
    img = np.stack([200 * x + 30, 160 * y + 40, 120 * (1 - x) * y + 60], -1)
    ellipse = ((x - 0.35) / 0.15) ** 2 + ((y - 0.45) / 0.22) ** 2 < 1
    img[ellipse] = (220, 60, 50)
    img[(abs(x - 0.72) < 0.1) & (abs(y - 0.6) < 0.18)] = (40, 90, 200)
    img[(abs(x - 0.6) < 0.3) & (abs(y - 0.12) < 0.03)] = (240, 230, 90)
    img += rng.normal(0, 8, img.shape).astype(np.float32)
    return img.clip(0, 255).astype(np.uint8)


def interleaved(cases: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Milliseconds of each case per round, after one warm-up round; the order rotates."""
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats + 1):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            start = time.perf_counter()
            cases[name]()
            elapsed = (time.perf_counter() - start) * 1e3
            if r > 0:
                times[name].append(elapsed)
    return times


def repeated(
    cases: dict[str, Callable[[], Any]], rounds: int, burst: int
) -> dict[str, list[float]]:
    """Per round and case, the median milliseconds of ``burst`` back-to-back calls (as a user
    clicking through one image): after the first call of a burst, caches hold that side's
    weights and features. Cases alternate by round, as in :func:`interleaved`."""
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            runs = []
            for _ in range(burst + 1):
                start = time.perf_counter()
                cases[name]()
                runs.append((time.perf_counter() - start) * 1e3)
            times[name].append(statistics.median(runs[1:]))
    return times


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def bench_variant(
    variant: str, image: np.ndarray, repeats: int, workdir: Path, burst: int = CLICK_BURST
) -> dict[str, Any]:
    ref_model = build_reference_model(variant, seed=0)
    path = save_meta_checkpoint(
        ref_model.state_dict(), workdir / get_config(variant).checkpoint_filename
    )
    ref32, ref16 = (
        RefPredictor(ref_model),
        RefPredictor(ref_model),
    )  # same model, two feature caches
    ours32 = SAM2ImagePredictor.from_pretrained(path, device="cpu", dtype=torch.float32)
    ours16 = SAM2ImagePredictor.from_pretrained(path, device="cpu", dtype=torch.float32)
    ours16.model.set_compute_dtype(torch.bfloat16)
    assert ours32.model.config.name == variant, ours32.model.config.name

    def ref_bf16_set_image() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref16.set_image(image)

    set_times = interleaved(
        {
            "ref_fp32": lambda: ref32.set_image(image),
            "ref_bf16": ref_bf16_set_image,
            "sam2ui_fp32": lambda: ours32.set_image(image),
            "sam2ui_bf16": lambda: ours16.set_image(image),
        },
        repeats,
    )
    h, w = image.shape[:2]
    # One positive click inside the red ellipse of the synthetic image.
    click: dict[str, Any] = {
        "point_coords": np.array([[0.35 * w, 0.45 * h]]),
        "point_labels": np.array([1]),
    }
    clicks = {
        "ref_fp32": lambda: ref32.predict(**click, multimask_output=True),
        "sam2ui_fp32": lambda: ours32.predict(**click, multimask_output=True),
        "sam2ui_bf16": lambda: ours16.predict(**click, multimask_output=True),
    }
    predict_times = interleaved(clicks, repeats)
    repeated_times = repeated(clicks, repeats, burst)

    ref_logits = ref32.predict(**click, multimask_output=True, return_logits=True)[0]
    our_logits = ours32.predict(**click, multimask_output=True, return_logits=True)[0]
    ref_masks = ref32.predict(**click, multimask_output=True)[0]
    masks32 = ours32.predict(**click, multimask_output=True)[0]
    masks16 = ours16.predict(**click, multimask_output=True)[0]
    ref_embed, our_embed = ref32.get_image_embedding(), ours32.get_image_embedding()
    set_ms = {k: statistics.median(v) for k, v in set_times.items()}
    predict_ms = {k: statistics.median(v) for k, v in predict_times.items()}
    repeated_ms = {k: statistics.median(v) for k, v in repeated_times.items()}
    return {
        "set_image_ms": set_ms,
        "predict_ms": predict_ms,
        "set_image_runs_ms": set_times,
        "predict_runs_ms": predict_times,
        "repeated_click_ms": repeated_ms,
        "repeated_click_runs_ms": repeated_times,
        "ratios": {
            "set_image_sam2ui_fp32_vs_ref_fp32": set_ms["sam2ui_fp32"] / set_ms["ref_fp32"],
            "set_image_sam2ui_bf16_vs_ref_fp32": set_ms["sam2ui_bf16"] / set_ms["ref_fp32"],
            "set_image_ref_bf16_vs_ref_fp32": set_ms["ref_bf16"] / set_ms["ref_fp32"],
            "predict_sam2ui_fp32_vs_ref_fp32": predict_ms["sam2ui_fp32"] / predict_ms["ref_fp32"],
            "predict_sam2ui_bf16_vs_ref_fp32": predict_ms["sam2ui_bf16"] / predict_ms["ref_fp32"],
        },
        "fp32_embedding_max_abs_diff": float((ref_embed - our_embed).abs().max()),
        "fp32_mask_logits_max_abs_diff": float(np.abs(ref_logits - our_logits).max()),
        "fp32_masks_identical": bool(np.array_equal(ref_masks, masks32)),
        "fp32_mask_pixels": int(ref_masks.size),
        "fp32_mask_pixels_differing": int((ref_masks != masks32).sum()),
        # Pixels that differ although the reference logit is farther than UNDECIDED_BAND from
        # the threshold: these would be real disagreements, not float32 rounding.
        "fp32_mask_pixels_differing_outside_band": int(
            ((ref_masks != masks32) & (np.abs(ref_logits) > UNDECIDED_BAND)).sum()
        ),
        "bf16_vs_fp32_mask_iou": [mask_iou(a, b) for a, b in zip(masks16, masks32)],
    }


def targets(r: dict[str, Any]) -> list[tuple[bool, str]]:
    """(passed, description) of each target."""
    fp32 = r["ratios"]["set_image_sam2ui_fp32_vs_ref_fp32"]
    bf16 = r["ratios"]["set_image_sam2ui_bf16_vs_ref_fp32"]
    iou = min(r["bf16_vs_fp32_mask_iou"])
    same = r["fp32_mask_pixels_differing_outside_band"] == 0
    out = [
        (
            fp32 <= FP32_SET_IMAGE_RATIO and same,
            f"fp32 set_image <= {FP32_SET_IMAGE_RATIO}x ref fp32 with identical masks outside "
            f"the |logit| <= {UNDECIDED_BAND:g} band ({fp32:.2f}x, {masks_summary(r)})",
        ),
        (
            bf16 <= BF16_SET_IMAGE_RATIO and iou >= BF16_MIN_IOU,
            f"bf16 set_image <= {BF16_SET_IMAGE_RATIO}x ref fp32 with IoU >= {BF16_MIN_IOU} "
            f"({bf16:.2f}x, IoU {iou:.4f})",
        ),
    ]
    for key in ("sam2ui_fp32", "sam2ui_bf16"):
        for label, figures in (("first", "predict_ms"), ("repeated", "repeated_click_ms")):
            ms = r[figures][key]
            out.append(
                (
                    ms <= ONE_CLICK_MS,
                    f"one click ({label}) {key} <= {ONE_CLICK_MS:g} ms ({ms:.1f} ms)",
                )
            )
    return out


def masks_summary(r: dict[str, Any]) -> str:
    if r["fp32_masks_identical"]:
        return "thresholded masks identical"
    return (
        f"{r['fp32_mask_pixels_differing']} of {r['fp32_mask_pixels']} mask pixels differ, "
        f"{r['fp32_mask_pixels_differing_outside_band']} of them with reference |logit| > "
        f"{UNDECIDED_BAND:g}"
    )


def row(label: str, values: list[float | None], fmt: str) -> str:
    cells = ["-" if v is None else format(v, fmt) for v in values]
    return f"| {label} | " + " | ".join(cells) + " |"


def report(variant: str, r: dict[str, Any], size: str, repeats: int) -> str:
    """Markdown table and checks for one variant."""
    s, p, q = r["set_image_ms"], r["predict_ms"], r["repeated_click_ms"]
    cols = ["ref_fp32", "ref_bf16", "sam2ui_fp32", "sam2ui_bf16"]
    ious = r["bf16_vs_fp32_mask_iou"]
    lines = [
        f"### {variant} (image {size}, median of {repeats} after 1 warm-up)",
        "",
        "| step | reference fp32 | reference bf16 | sam2ui fp32 | sam2ui bf16 |",
        "|---|---:|---:|---:|---:|",
        row("set_image (ms)", [s[c] for c in cols], ".1f"),
        row("set_image vs ref fp32", [s[c] / s["ref_fp32"] for c in cols], ".2f"),
        row("one click, first (ms)", [p.get(c) for c in cols], ".1f"),
        row(
            "first click vs ref fp32",
            [p[c] / p["ref_fp32"] if c in p else None for c in cols],
            ".2f",
        ),
        row("one click, repeated (ms)", [q.get(c) for c in cols], ".1f"),
        row(
            "repeated vs ref fp32", [q[c] / q["ref_fp32"] if c in q else None for c in cols], ".2f"
        ),
        "",
        f"- fp32 vs reference: embedding max |Δ| {r['fp32_embedding_max_abs_diff']:.2e}, "
        f"mask logits max |Δ| {r['fp32_mask_logits_max_abs_diff']:.2e}, {masks_summary(r)}",
        f"- bf16 vs fp32 (sam2ui) mask IoU: {', '.join(f'{v:.4f}' for v in ious)} "
        f"(min {min(ious):.4f})",
        f"- one click, first: a single click after the other side's work; repeated: the "
        f"median of {CLICK_BURST} back-to-back clicks (median over {repeats} rounds)",
        "",
    ]
    lines += [f"- {'PASS' if ok else 'FAIL'}: {text}" for ok, text in targets(r)]
    return "\n".join(lines)


def cpu_model() -> str:
    """CPU model, logical CPU count and the AVX-512 / AMX flags that matter for bfloat16."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        import platform

        return platform.processor() or "unknown"
    names = [ln.split(":", 1)[1].strip() for ln in info if ln.startswith("model name")]
    flags = next((ln.split(":", 1)[1].split() for ln in info if ln.startswith("flags")), [])
    extras = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    name = names[0] if names else "unknown"
    return f"{name} ({len(names)} logical CPUs; {' '.join(extras) or 'no AVX-512'})"


def command_line() -> str:
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        script = Path(script.name)
    return shlex.join(["python", str(script), *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--variants", nargs="+", default=["sam2.1-hiera-tiny", "sam2.1-hiera-base-plus"]
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--image-size", default="1080x1920", help="HEIGHTxWIDTH of the test image")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    try:
        height, width = (int(v) for v in args.image_size.lower().split("x"))
    except ValueError:
        parser.error("--image-size must be HEIGHTxWIDTH, e.g. 1080x1920")

    torch.set_num_threads(args.threads)
    env = {
        "command": command_line(),
        "torch": torch.__version__,
        "sam2ui": sam2ui.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "image_size": f"{height}x{width}",
        "repeats": args.repeats,
    }
    print("\n".join(f"- {k}: {v}" for k, v in env.items()) + "\n", flush=True)
    image = synthetic_image(height, width)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            results[variant] = bench_variant(variant, image, args.repeats, Path(tmp) / variant)
            print(
                report(variant, results[variant], env["image_size"], args.repeats) + "\n",
                flush=True,
            )
    if args.json is not None:
        args.json.write_text(json.dumps({**env, "variants": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

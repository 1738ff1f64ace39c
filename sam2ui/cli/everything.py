"""``sam2ui everything``: automatic masks of a whole image, written as COCO RLE JSON (and, with
``--overlay``, the image with every mask tinted), with a progress bar over the grid points.

Ctrl-C stops the run after its current batch of points and writes the masks found so far;
a second Ctrl-C interrupts at once. numpy, Pillow and torch load inside the handler.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .common import add_model_options, compile_now, load_failed, model_source, pick_device

__all__ = ["add_everything", "run_everything"]

OVERLAY_ALPHA = 0.5


def add_everything(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``everything`` subcommand's parser, with :func:`run_everything` as its handler."""
    parser = subparsers.add_parser(
        "everything",
        help="find every object in an image (automatic masks)",
        description=(
            "Prompt the model with a grid of points over IMAGE and keep the good, distinct "
            "masks (SAM 2's automatic mask generator). Writes a JSON list of records: "
            "segmentation (COCO RLE), area, bbox (XYWH), predicted_iou, point_coords, "
            "stability_score, crop_box. Ctrl-C stops after the current batch of points and "
            "writes the masks found so far."
        ),
        epilog=(
            "examples:\n"
            "  sam2ui everything photo.jpg --out masks.json\n"
            "  sam2ui everything photo.jpg --points-per-side 16 --out masks.json "
            "--overlay overlay.png"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", type=Path, metavar="IMAGE", help="image file to segment")
    parser.add_argument(
        "--out", type=Path, required=True, metavar="MASKS.json", help="where to write the masks"
    )
    parser.add_argument(
        "--overlay", type=Path, metavar="OVERLAY.png", help="also write the masks drawn on it"
    )
    parser.add_argument(
        "--points-per-side",
        type=int,
        default=32,
        metavar="N",
        help="grid of N x N points (default: 32)",
    )
    parser.add_argument(
        "--points-per-batch", type=int, default=64, metavar="N", help="points per batch"
    )
    parser.add_argument(
        "--pred-iou-thresh",
        type=float,
        default=0.8,
        metavar="T",
        help="keep masks whose predicted IoU is above T (default: 0.8)",
    )
    parser.add_argument(
        "--stability-score-thresh",
        type=float,
        default=0.95,
        metavar="T",
        help="keep masks whose stability score is at least T (default: 0.95)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(parser)
    parser.set_defaults(handler=run_everything, command_parser=parser)


@contextmanager
def _stop_on_interrupt() -> Iterator[threading.Event]:
    """An event the first Ctrl-C sets (the default handler comes back for the second)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def first(signum: int, frame: Any) -> None:
        stop.set()
        signal.signal(signal.SIGINT, previous)
        print("\nstopping after the current batch of points…", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def run_everything(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Check the arguments, load the model, generate, write the JSON (and overlay)."""
    if not 1 <= args.points_per_side <= 256:
        parser.error("--points-per-side must be 1 to 256")
    if args.points_per_batch < 1:
        parser.error("--points-per-batch must be at least 1")
    for flag, value in (
        ("--pred-iou-thresh", args.pred_iou_thresh),
        ("--stability-score-thresh", args.stability_score_thresh),
    ):
        if not 0.0 <= value <= 1.0:
            parser.error(f"{flag} must be in [0, 1]")
    for target in (args.out, args.overlay):
        if target is not None and not target.absolute().parent.is_dir():
            parser.error(f"folder for {target} does not exist")
    source = model_source(args, parser)

    from .segment import _load_rgb

    rgb = _load_rgb(args.image, parser)

    from tqdm import tqdm

    from sam2ui.core import (
        MaskGenerationCancelled,
        SAM2AutomaticMaskGenerator,
        SAM2ImagePredictor,
        resolve_dtype,
    )

    device = pick_device(args.device, parser)
    try:
        predictor = SAM2ImagePredictor.from_pretrained(
            source, device=device, dtype=resolve_dtype(args.dtype), compile=args.compile
        )
        compile_now("sam2ui everything", predictor, args)
    except (OSError, ValueError, RuntimeError) as err:
        return load_failed("sam2ui everything", source, err)
    generator = SAM2AutomaticMaskGenerator(
        predictor,
        points_per_side=args.points_per_side,
        points_per_batch=args.points_per_batch,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=args.stability_score_thresh,
        output_mode="coco_rle",
    )
    bar = tqdm(total=None, unit="point", desc="points", file=sys.stderr, disable=args.quiet)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    with _stop_on_interrupt() as stop:
        try:
            records = generator.generate(rgb, progress=progress, should_stop=stop.is_set)
            note = ""
        except MaskGenerationCancelled as stopped:
            records = stopped.records
            note = f" (stopped after {stopped.points_done} of {stopped.points_total} points)"
        finally:
            bar.close()
    args.out.write_text(json.dumps(records), encoding="utf-8")
    height, width = rgb.shape[:2]
    print(f"{args.out}: {len(records)} masks of a {width}x{height} image{note}")
    if args.overlay is not None:
        _overlay(rgb, records).save(args.overlay, format="PNG")
        print(f"{args.overlay}: overlay")
    return 0


def _overlay(rgb: Any, records: list[dict[str, Any]]) -> Any:
    """The image with each mask tinted in the palette's colours, largest drawn first."""
    from PIL import Image

    from sam2ui.core import palette_color, rle_to_mask, tint

    order = sorted(range(len(records)), key=lambda i: -int(records[i]["area"]))
    masks = {n + 1: rle_to_mask(records[i]["segmentation"]) for n, i in enumerate(order)}
    colors = {k: palette_color(k) for k in masks}
    return Image.fromarray(tint(rgb, masks, colors, OVERLAY_ALPHA))

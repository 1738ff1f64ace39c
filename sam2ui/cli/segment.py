"""``sam2ui segment``: one object in one image from clicks and/or a box, written as a mask PNG
(and, with ``--overlay``, the image with the mask and prompts drawn by the engine's renderer).

numpy, Pillow and torch load inside the handler, so building the parser stays light.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam2ui.core import Box, Click

from .common import (
    add_model_options,
    add_prompt_options,
    compile_now,
    load_failed,
    model_source,
    pick_device,
)

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "BOX_COLOR",
    "MASK_ALPHA",
    "MASK_COLOR",
    "add_segment",
    "predict_mask",
    "render_overlay",
    "save_mask",
]

# Overlay colours (RGB): mask tint and box outline. Clicks are drawn in the renderer's
# POSITIVE_COLOR / NEGATIVE_COLOR, as in the app and the widgets.
MASK_COLOR = (30, 144, 255)
MASK_ALPHA = 0.5
BOX_COLOR = (255, 215, 0)


def add_segment(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``segment`` subcommand's parser, with :func:`run_segment` as its handler."""
    parser = subparsers.add_parser(
        "segment",
        help="segment one object in an image from clicks and/or a box",
        description=(
            "Segment one object in IMAGE from point prompts and/or a box and write the mask as "
            "an 8-bit PNG (255 = object, 0 = background) of the image's size. Coordinates are "
            "pixels of the image as a viewer shows it (EXIF rotation applied), x to the right "
            "and y down from the top-left corner."
        ),
        epilog=(
            "examples:\n"
            "  sam2ui segment photo.jpg --point 320,240 --out mask.png\n"
            "  sam2ui segment photo.jpg --point 320,240 --point 100,80,0 --out mask.png\n"
            "  sam2ui segment photo.jpg --box 50,40,400,300 --multimask --out mask.png \\\n"
            "      --overlay overlay.png --model sam2.1-hiera-large\n"
            "  sam2ui segment photo.jpg --point 320,240 --checkpoint sam2.1_hiera_tiny.pt "
            "--out mask.png"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("image", type=Path, metavar="IMAGE", help="image file to segment")
    add_prompt_options(parser)
    parser.add_argument(
        "--out", type=Path, required=True, metavar="MASK.png", help="where to write the mask"
    )
    parser.add_argument(
        "--overlay",
        type=Path,
        metavar="OVERLAY.png",
        help="also write the image with the mask and prompts drawn on it",
    )
    add_model_options(parser)
    parser.add_argument(
        "--multimask",
        action="store_true",
        help="predict three candidate masks and save the one with the best predicted IoU",
    )
    parser.set_defaults(handler=run_segment, command_parser=parser)


def render_overlay(
    rgb: np.ndarray,
    mask: np.ndarray,
    points: Sequence[Click] = (),
    box: Box | None = None,
) -> Image.Image:
    """The image with the mask tinted over it and the prompts drawn on top."""
    from PIL import Image

    from sam2ui.core import draw_box, draw_click, marker_sizes, tint

    height, width = mask.shape
    radius, line_width, _ = marker_sizes(height, width)
    overlay = tint(rgb, {1: mask}, {1: MASK_COLOR}, MASK_ALPHA)
    if box is not None:
        draw_box(overlay, box, BOX_COLOR, line_width)
    for point in points:
        draw_click(overlay, point.x, point.y, point.positive, radius)
    return Image.fromarray(overlay)


def _to_numpy(value: Any) -> np.ndarray:
    """A numpy array from either a numpy array or a torch tensor (of any dtype and device)."""
    import numpy as np

    if hasattr(value, "detach"):
        # numpy has no bfloat16; float32 holds every value the predictor can return.
        value = value.detach().float().cpu().numpy()
    return np.asarray(value)


def predict_mask(
    predictor: Any, points: Sequence[Click], box: Box | None, multimask: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """One object's mask on the image ``predictor`` holds: (the mask as bool HxW, every
    candidate's predicted IoU, the index of the mask chosen: the best with ``multimask``)."""
    import numpy as np

    masks, scores, _ = predictor.predict(
        point_coords=np.array([[p.x, p.y] for p in points], dtype=np.float32) if points else None,
        point_labels=np.array([p.label for p in points], dtype=np.int64) if points else None,
        box=np.array(box, dtype=np.float32) if box is not None else None,
        multimask_output=multimask,
    )
    masks_np = _to_numpy(masks)
    scores_np = _to_numpy(scores).reshape(-1)
    best = int(np.argmax(scores_np)) if multimask else 0
    # Masks come back binarised (bool or 0./1.); "> 0" also reads raw logits correctly.
    return masks_np[best] > 0, scores_np, best


def save_mask(mask: np.ndarray, path: Path) -> None:
    """The mask as an 8-bit PNG: 255 = object, 0 = background."""
    import numpy as np
    from PIL import Image

    Image.fromarray(mask.astype(np.uint8) * 255).save(path, format="PNG")


def _load_rgb(path: Path, parser: argparse.ArgumentParser) -> np.ndarray:
    """The image as an HWC uint8 RGB array, upright as viewers show it, any file mode."""
    from sam2ui.core import ImageReadError, ImageTooLargeError, load_image

    if not path.exists():
        parser.error(f"image file not found: {path}")
    if not path.is_file():
        parser.error(f"not an image file: {path}")
    try:
        # a fresh array: torch warns when handed a read-only buffer
        return load_image(path)
    except (ImageReadError, ImageTooLargeError) as err:
        parser.error(f"cannot read image {path}: {err}")


def run_segment(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Check the arguments, load the model, predict, write the mask (and overlay)."""
    points: list[Click] = args.points
    box: Box | None = args.box
    if not points and box is None:
        parser.error("give at least one --point or a --box")
    for target in (args.out, args.overlay):
        if target is not None and not target.absolute().parent.is_dir():
            parser.error(f"folder for {target} does not exist")
    source = model_source(args, parser)
    rgb = _load_rgb(args.image, parser)
    height, width = rgb.shape[:2]

    from sam2ui.core import PromptError, check_prompts_inside

    try:
        check_prompts_inside(points, box, width, height, "image")
    except PromptError as err:
        parser.error(str(err))

    from sam2ui.core import SAM2ImagePredictor, resolve_dtype

    device = pick_device(args.device, parser)
    try:
        predictor = SAM2ImagePredictor.from_pretrained(
            source, device=device, dtype=resolve_dtype(args.dtype), compile=args.compile
        )
        compile_now("sam2ui segment", predictor, args)
    except (OSError, ValueError, RuntimeError) as err:
        return load_failed("sam2ui segment", source, err)

    predictor.set_image(rgb)
    mask, scores_np, best = predict_mask(predictor, points, box, args.multimask)
    save_mask(mask, args.out)
    if args.overlay is not None:
        render_overlay(rgb, mask, points, box).save(args.overlay, format="PNG")

    area = int(mask.sum())
    print(
        f"{args.out}: {width}x{height} mask, {area} pixels ({100 * area / mask.size:.1f}%), "
        f"predicted IoU {float(scores_np[best]):.3f}"
    )
    if args.multimask:
        listed = ", ".join(
            f"{score:.3f}{' (saved)' if i == best else ''}" for i, score in enumerate(scores_np)
        )
        print(f"candidates: {listed}")
    if args.overlay is not None:
        print(f"{args.overlay}: overlay")
    return 0

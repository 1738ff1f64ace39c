"""The ``sam2ui`` command line.

``sam2ui segment IMAGE --point X,Y --out mask.png`` segments one object in one image and writes
the mask as an 8-bit PNG. Every subcommand is one ``_add_*`` function in :data:`SUBCOMMANDS`
that builds its parser and names its handler, so new commands slot in beside ``segment``.

Only the standard library is imported at module level: numpy, Pillow and torch load inside the
handler that needs them, so ``sam2ui --help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam2ui import __version__

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "DEFAULT_MODEL",
    "Box",
    "Point",
    "build_parser",
    "main",
    "parse_box",
    "parse_point",
    "render_overlay",
    "resolve_device",
]

DEFAULT_MODEL = "facebook/sam2.1-hiera-tiny"
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float32", "bfloat16")

# Overlay colours (RGB): mask tint, positive and negative clicks, box outline.
MASK_COLOR = (30, 144, 255)
MASK_ALPHA = 0.5
POSITIVE_COLOR = (0, 200, 0)
NEGATIVE_COLOR = (220, 0, 0)
BOX_COLOR = (255, 215, 0)


@dataclass(frozen=True)
class Point:
    """A click in image pixels; ``label`` 1 marks the object, 0 marks background."""

    x: float
    y: float
    label: int = 1


@dataclass(frozen=True)
class Box:
    """A box in image pixels, corners (x0, y0) top-left and (x1, y1) bottom-right."""

    x0: float
    y0: float
    x1: float
    y1: float


def _numbers(text: str, what: str, syntax: str, counts: tuple[int, ...]) -> list[str]:
    """Split ``text`` on commas, checking the count; raise argparse's type error otherwise."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) not in counts:
        raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: expected {syntax}")
    return parts


def _finite(part: str, text: str, what: str) -> float:
    try:
        value = float(part)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid {what} {text!r}: {part!r} is not a number"
        ) from None
    # float() accepts "nan" and "inf", which would reach the model as garbage coordinates.
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"invalid {what} {text!r}: {part!r} is not finite")
    return value


def parse_point(text: str) -> Point:
    """Parse ``X,Y`` or ``X,Y,LABEL`` (LABEL 1 = object, the default; 0 = background)."""
    parts = _numbers(text, "point", "X,Y or X,Y,LABEL", (2, 3))
    x, y = (_finite(part, text, "point") for part in parts[:2])
    label = 1
    if len(parts) == 3:
        if parts[2] not in ("0", "1"):
            raise argparse.ArgumentTypeError(
                f"invalid point {text!r}: label must be 1 (object) or 0 (background), "
                f"got {parts[2]!r}"
            )
        label = int(parts[2])
    return Point(x, y, label)


def parse_box(text: str) -> Box:
    """Parse ``X0,Y0,X1,Y1`` with the top-left corner first."""
    parts = _numbers(text, "box", "X0,Y0,X1,Y1", (4,))
    x0, y0, x1, y1 = (_finite(part, text, "box") for part in parts)
    if x1 < x0:
        raise argparse.ArgumentTypeError(
            f"invalid box {text!r}: x1 ({x1:g}) is left of x0 ({x0:g})"
        )
    if y1 < y0:
        raise argparse.ArgumentTypeError(f"invalid box {text!r}: y1 ({y1:g}) is above y0 ({y0:g})")
    return Box(x0, y0, x1, y1)


def resolve_device(name: str) -> str:
    """Map ``auto`` to the best available device (cuda, then mps, then cpu); keep others."""
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def _device_available(name: str) -> bool:
    import torch

    if name == "cuda":
        return bool(torch.cuda.is_available())
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        return bool(mps is not None and mps.is_available())
    return True


def render_overlay(
    rgb: np.ndarray,
    mask: np.ndarray,
    points: Sequence[Point] = (),
    box: Box | None = None,
) -> Image.Image:
    """The image with the mask tinted over it and the prompts drawn on top."""
    import numpy as np
    from PIL import Image, ImageDraw

    blended = rgb.astype(np.float32)
    tint = np.asarray(MASK_COLOR, dtype=np.float32)
    blended[mask] = (1 - MASK_ALPHA) * blended[mask] + MASK_ALPHA * tint
    overlay = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))

    draw = ImageDraw.Draw(overlay)
    height, width = mask.shape
    radius = max(3, round(min(width, height) / 100))  # visible on small and large images alike
    if box is not None:
        draw.rectangle(
            (box.x0, box.y0, box.x1, box.y1), outline=BOX_COLOR, width=max(1, radius // 2)
        )
    for point in points:
        color = POSITIVE_COLOR if point.label == 1 else NEGATIVE_COLOR
        corners = (point.x - radius, point.y - radius, point.x + radius, point.y + radius)
        draw.ellipse(corners, fill=color, outline=(255, 255, 255))
    return overlay


def _to_numpy(value: Any) -> np.ndarray:
    """A numpy array from either a numpy array or a torch tensor (of any dtype and device)."""
    import numpy as np

    if hasattr(value, "detach"):
        # numpy has no bfloat16; float32 holds every value the predictor can return.
        value = value.detach().float().cpu().numpy()
    return np.asarray(value)


# --------------------------------------------------------------------------- segment


def _add_segment(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    parser.add_argument(
        "--point",
        dest="points",
        type=parse_point,
        action="append",
        default=[],
        metavar="X,Y[,LABEL]",
        help="a click; LABEL 1 (default) marks the object, 0 marks background; repeatable",
    )
    parser.add_argument(
        "--box", type=parse_box, metavar="X0,Y0,X1,Y1", help="a box around the object"
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="MASK.png", help="where to write the mask"
    )
    parser.add_argument(
        "--overlay",
        type=Path,
        metavar="OVERLAY.png",
        help="also write the image with the mask and prompts drawn on it",
    )
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--model",
        metavar="NAME",
        help=f"hub id or variant name, e.g. sam2.1-hiera-small (default: {DEFAULT_MODEL})",
    )
    weights.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="local weights instead: a Meta .pt file or a transformers-format folder",
    )
    parser.add_argument(
        "--device", choices=DEVICES, default="auto", help="where to run (default: auto)"
    )
    parser.add_argument(
        "--dtype", choices=DTYPES, default="float32", help="compute precision (default: float32)"
    )
    parser.add_argument(
        "--multimask",
        action="store_true",
        help="predict three candidate masks and save the one with the best predicted IoU",
    )
    parser.set_defaults(handler=_run_segment, command_parser=parser)


def _model_source(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """What to pass to ``from_pretrained``: a local path, or a hub id."""
    from sam2ui.core.config import get_config

    if args.checkpoint is not None:
        if not args.checkpoint.exists():
            parser.error(f"checkpoint not found: {args.checkpoint}")
        return str(args.checkpoint)
    name: str = args.model or DEFAULT_MODEL
    if Path(name).exists() or "/" in name:
        return name  # a local path, or a hub repository id (official or not)
    try:
        return get_config(name).hub_id  # a variant name such as "sam2.1-hiera-small"
    except ValueError as err:
        parser.error(str(err))


def _check_inside(
    points: Sequence[Point],
    box: Box | None,
    width: int,
    height: int,
    parser: argparse.ArgumentParser,
) -> None:
    """Reject prompts outside the image: the model would silently segment something else."""
    for point in points:
        if not (0 <= point.x <= width and 0 <= point.y <= height):
            parser.error(f"point {point.x:g},{point.y:g} lies outside the {width}x{height} image")
    # x0 <= x1 and y0 <= y1 already hold (parse_box), so the chains check both corners.
    if box is not None and not (0 <= box.x0 <= box.x1 <= width and 0 <= box.y0 <= box.y1 <= height):
        parser.error(
            f"box {box.x0:g},{box.y0:g},{box.x1:g},{box.y1:g} reaches outside the "
            f"{width}x{height} image"
        )


def _load_rgb(path: Path, parser: argparse.ArgumentParser) -> np.ndarray:
    """The image as an HWC uint8 RGB array, upright as viewers show it."""
    import numpy as np
    from PIL import Image, ImageOps

    if not path.exists():
        parser.error(f"image file not found: {path}")
    if not path.is_file():
        parser.error(f"not an image file: {path}")
    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image)
            # a writable copy: torch warns when handed a read-only buffer
            return np.array(upright.convert("RGB"))
    except (OSError, Image.DecompressionBombError) as err:
        # UnidentifiedImageError (not an image) and truncated files are both OSErrors.
        parser.error(f"cannot read image {path}: {err}")


def _run_segment(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    points: list[Point] = args.points
    box: Box | None = args.box
    if not points and box is None:
        parser.error("give at least one --point or a --box")
    for target in (args.out, args.overlay):
        if target is not None and not target.absolute().parent.is_dir():
            parser.error(f"folder for {target} does not exist")
    source = _model_source(args, parser)
    rgb = _load_rgb(args.image, parser)
    height, width = rgb.shape[:2]
    _check_inside(points, box, width, height, parser)

    import numpy as np
    import torch
    from PIL import Image

    device = resolve_device(args.device)
    if not _device_available(device):
        parser.error(f"--device {device}: no such device is available here")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]

    from sam2ui.core.image_predictor import SAM2ImagePredictor

    try:
        predictor = SAM2ImagePredictor.from_pretrained(source, device=device, dtype=dtype)
    except (OSError, ValueError, RuntimeError) as err:
        # Missing files, no network with an empty cache, or weights of the wrong shape: the
        # message says which, and a traceback would only bury it.
        print(f"sam2ui segment: error: cannot load model {source}: {err}", file=sys.stderr)
        return 1

    predictor.set_image(rgb)
    masks, scores, _ = predictor.predict(
        point_coords=np.array([[p.x, p.y] for p in points], dtype=np.float32) if points else None,
        point_labels=np.array([p.label for p in points], dtype=np.int64) if points else None,
        box=np.array([box.x0, box.y0, box.x1, box.y1], dtype=np.float32)
        if box is not None
        else None,
        multimask_output=args.multimask,
    )
    masks_np = _to_numpy(masks)
    scores_np = _to_numpy(scores).reshape(-1)
    best = int(np.argmax(scores_np)) if args.multimask else 0
    # Masks come back binarised (bool or 0./1.); "> 0" also reads raw logits correctly.
    mask = masks_np[best] > 0

    Image.fromarray(mask.astype(np.uint8) * 255).save(args.out, format="PNG")
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


# --------------------------------------------------------------------------- entry point

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_segment,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``sam2ui`` parser with every subcommand in :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="sam2ui",
        description="Segment Anything 2 (SAM 2 / SAM 2.1) from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits with 2 on bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace, argparse.ArgumentParser], int] = args.handler
    return handler(args, args.command_parser)

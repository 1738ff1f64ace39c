"""The ``sam2ui`` command line.

``sam2ui segment IMAGE --point X,Y --out mask.png`` segments one object in one image and writes
the mask as an 8-bit PNG. ``sam2ui track VIDEO --point X,Y --out DIR`` (or ``--prompts
prompts.json`` for several objects and frames) tracks objects through a video and writes a
DAVIS PNG zip, an SA-V JSON and an overlay MP4. ``sam2ui`` with no command (or ``sam2ui
app``, or only the app's options such as ``sam2ui --port 8000``) starts the Gradio app. Every
subcommand is one ``_add_*`` function in :data:`SUBCOMMANDS` that builds its parser and names
its handler, so new commands slot in beside the others.

Only the standard library is imported at module level: numpy, Pillow and torch load inside the
handler that needs them, so ``sam2ui --help`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam2ui import __version__

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

__all__ = [
    "DEFAULT_MODEL",
    "FORMATS",
    "Box",
    "ObjectPrompt",
    "Point",
    "PromptError",
    "build_parser",
    "load_prompt_file",
    "main",
    "parse_box",
    "parse_formats",
    "parse_point",
    "render_overlay",
    "resolve_device",
    "validate_prompts",
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


def add_prompt_options(parser: argparse.ArgumentParser, where: str = "") -> None:
    """--point (repeatable) and --box for one object; ``where`` names the frame they are on."""
    parser.add_argument(
        "--point",
        dest="points",
        type=parse_point,
        action="append",
        default=[],
        metavar="X,Y[,LABEL]",
        help=f"a click{where}; LABEL 1 (default) marks the object, 0 background; repeatable",
    )
    parser.add_argument(
        "--box", type=parse_box, metavar="X0,Y0,X1,Y1", help=f"a box around the object{where}"
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model/--checkpoint (one or the other), --device and --dtype, shared by the commands."""
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


# --------------------------------------------------------------------------- track

FORMATS = ("zip", "json", "mp4")
DIRECTIONS = ("forward", "backward", "both")
PROMPT_KEYS = frozenset({"id", "name", "frame", "points", "box", "mask"})
# Largest object id a DAVIS indexed PNG can hold.
MAX_PNG_ID = 255


class PromptError(ValueError):
    """A prompt file or inline prompt that cannot be used; the message says what and where."""


@dataclass(frozen=True, eq=False)
class ObjectPrompt:
    """Prompts for one object on one frame: clicks and/or a box, or a mask.

    ``where`` names the prompt's origin for error messages (``prompts.json: objects[2]``).
    """

    obj_id: int
    frame: int
    points: tuple[Point, ...] = ()
    box: Box | None = None
    mask: np.ndarray | None = field(default=None, repr=False)  # (H, W) bool
    name: str | None = None
    where: str = "prompt"


def parse_formats(text: str) -> tuple[str, ...]:
    """Parse ``--formats``: a comma-separated subset of zip, json, mp4 (order kept, no repeats)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in FORMATS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"invalid formats {text!r}: choose one or more of {', '.join(FORMATS)}, "
            "separated by commas"
        )
    return tuple(dict.fromkeys(names))


def _json_int(value: Any, where: str, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PromptError(f"{where}: {what} must be an integer, got {value!r}")
    if value < minimum:
        raise PromptError(f"{where}: {what} must be >= {minimum}, got {value}")
    return value


def _json_numbers(value: Any, where: str, counts: tuple[int, ...], syntax: str) -> list[float]:
    ok = isinstance(value, list) and len(value) in counts
    ok = ok and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )
    if not ok:
        raise PromptError(f"{where}: expected {syntax}, got {value!r}")
    return [float(v) for v in value]


def _load_mask_png(path: Path, where: str) -> np.ndarray:
    """A mask image as (H, W) bool: nonzero pixels (palette indices for "P" images) are the
    object."""
    import numpy as np
    from PIL import Image

    if not path.is_file():
        raise PromptError(f"{where}: mask file not found: {path}")
    try:
        with Image.open(path) as image:
            if image.mode in ("P", "L", "1"):
                return np.array(image) > 0
            return np.array(image.convert("L")) > 0
    except (OSError, Image.DecompressionBombError) as err:
        raise PromptError(f"{where}: cannot read mask {path}: {err}") from None


def _parse_object(entry: Any, where: str, folder: Path) -> ObjectPrompt:
    """One entry of the ``objects`` list of a prompt file."""
    if not isinstance(entry, dict):
        raise PromptError(f"{where}: expected an object ({{...}}), got {entry!r}")
    unknown = sorted(set(entry) - PROMPT_KEYS)
    if unknown:
        raise PromptError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(PROMPT_KEYS))})"
        )
    if "id" not in entry:
        raise PromptError(f"{where}: 'id' is missing")
    obj_id = _json_int(entry["id"], where, "'id'", 1)
    frame = _json_int(entry.get("frame", 0), where, "'frame'", 0)
    name = entry.get("name")
    if name is not None and not isinstance(name, str):
        raise PromptError(f"{where}: 'name' must be a string, got {name!r}")
    raw_points = entry.get("points", [])
    if not isinstance(raw_points, list):
        raise PromptError(f"{where}: 'points' must be a list of [x, y] or [x, y, label]")
    points = []
    for j, raw in enumerate(raw_points):
        at = f"{where}.points[{j}]"
        x, y, *rest = _json_numbers(raw, at, (2, 3), "[x, y] or [x, y, label]")
        if rest and rest[0] not in (0.0, 1.0):
            raise PromptError(f"{at}: label must be 1 (object) or 0 (background), got {raw[2]!r}")
        points.append(Point(x, y, int(rest[0]) if rest else 1))
    box = None
    if entry.get("box") is not None:
        x0, y0, x1, y1 = _json_numbers(entry["box"], f"{where}.box", (4,), "[x0, y0, x1, y1]")
        if x1 < x0 or y1 < y0:
            raise PromptError(
                f"{where}.box: the top-left corner must come first, got {entry['box']}"
            )
        box = Box(x0, y0, x1, y1)
    mask = None
    if entry.get("mask") is not None:
        if not isinstance(entry["mask"], str):
            raise PromptError(f"{where}.mask: expected a PNG path, got {entry['mask']!r}")
        if points or box is not None:
            raise PromptError(f"{where}: give either a 'mask' or 'points'/'box', not both")
        mask = _load_mask_png(folder / entry["mask"], f"{where}.mask")
    if not points and box is None and mask is None:
        raise PromptError(f"{where}: object {obj_id} has no prompt: give 'points', 'box' or 'mask'")
    return ObjectPrompt(obj_id, frame, tuple(points), box, mask, name, where)


def _sav_prompts(data: dict[str, Any], where: str) -> list[ObjectPrompt]:
    """Prompts from an SA-V masklet JSON: each object's mask where it first appears."""
    from sam2ui.core.exports import masks_as_prompts

    try:
        found = masks_as_prompts(data)
        names = (data.get("sam2ui") or {}).get("object_names") or {}
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise PromptError(f"{where}: not a valid SA-V masklet JSON: {err}") from None
    if not found:
        raise PromptError(f"{where}: the SA-V file holds no visible object")
    shift = 1 if min(found) == 0 else 0  # SA-V's own files number objects from 0
    return [
        ObjectPrompt(
            oid + shift,
            int(p.frame_idx),
            mask=p.mask,
            name=names.get(str(oid)),
            where=f"{where}: masklet {oid}",
        )
        for oid, p in sorted(found.items())
    ]


def load_prompt_file(path: Path) -> list[ObjectPrompt]:
    """Read a ``--prompts`` file: the sam2ui schema or an SA-V masklet JSON.

    Schema: ``{"objects": [{"id": 1, "name": "dog", "frame": 0, "points": [[x, y], [x, y, 0]],
    "box": [x0, y0, x1, y1]}, {"id": 2, "frame": 12, "mask": "mask.png"}]}``. ``id`` (>= 1) is
    required; ``frame`` defaults to 0; each entry needs ``points``, ``box`` or ``mask`` (a PNG
    relative to the JSON file, nonzero = object; not with points or box). An id may appear in
    several entries to prompt one object on several frames. A file with a ``masklet`` key is
    read as SA-V (as :func:`~sam2ui.core.exports.write_sav_json` writes): each object's mask
    where it first appears becomes its prompt. Raises :class:`PromptError`.
    """
    where = str(path)
    if not path.is_file():
        raise PromptError(f"prompt file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PromptError(
            f"{where}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise PromptError(f"cannot read prompt file {path}: {err}") from None
    if isinstance(data, dict) and "masklet" in data:
        return _sav_prompts(data, where)
    if not isinstance(data, dict) or "objects" not in data:
        raise PromptError(
            f'{where}: expected {{"objects": [...]}} or an SA-V masklet JSON at the top level'
        )
    unknown = sorted(set(data) - {"objects"})
    if unknown:
        raise PromptError(f"{where}: unknown top-level key {unknown[0]!r} (known: 'objects')")
    objects = data["objects"]
    if not isinstance(objects, list) or not objects:
        raise PromptError(f"{where}: 'objects' must be a non-empty list")
    prompts = [
        _parse_object(e, f"{where}: objects[{i}]", path.parent) for i, e in enumerate(objects)
    ]
    seen: dict[tuple[int, int], str] = {}
    names: dict[int, str] = {}
    for p in prompts:
        key = (p.obj_id, p.frame)
        if key in seen:
            raise PromptError(
                f"{p.where}: object {p.obj_id} is already prompted on frame {p.frame} "
                f"({seen[key]}); put all its points on that frame in one entry"
            )
        seen[key] = p.where
        if p.name is not None and names.setdefault(p.obj_id, p.name) != p.name:
            raise PromptError(
                f"{p.where}: object {p.obj_id} is named both {names[p.obj_id]!r} and {p.name!r}"
            )
    return prompts


def validate_prompts(
    prompts: Sequence[ObjectPrompt], num_frames: int, width: int, height: int
) -> None:
    """Check every prompt against the video: frame in range, points and box inside the frame,
    masks of the frame's size. Raises :class:`PromptError`."""
    for p in prompts:
        if p.frame >= num_frames:
            raise PromptError(
                f"{p.where}: frame {p.frame} is out of range: the video has {num_frames} frames "
                f"(0..{num_frames - 1})"
            )
        for point in p.points:
            if not (0 <= point.x <= width and 0 <= point.y <= height):
                raise PromptError(
                    f"{p.where}: point {point.x:g},{point.y:g} lies outside the "
                    f"{width}x{height} frame"
                )
        box = p.box
        if box is not None and not (
            0 <= box.x0 <= box.x1 <= width and 0 <= box.y0 <= box.y1 <= height
        ):
            raise PromptError(
                f"{p.where}: box {box.x0:g},{box.y0:g},{box.x1:g},{box.y1:g} reaches outside "
                f"the {width}x{height} frame"
            )
        if p.mask is not None and p.mask.shape != (height, width):
            mh, mw = p.mask.shape[:2]
            raise PromptError(
                f"{p.where}: the mask is {mw}x{mh}, the video's frames are {width}x{height}"
            )


def _add_track(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "track",
        help="track objects through a video from clicks, boxes or masks",
        description=(
            "Track objects through VIDEO (a video file or a folder of JPEG/PNG frames) from\n"
            "prompts on some of its frames, and write the masks to DIR: masks.zip (DAVIS\n"
            "indexed PNGs, plus one folder of 1-bit PNGs per object), masks.json (SA-V\n"
            "masklet JSON, COCO RLE) and overlay.mp4 (the tracked frames with the masks\n"
            "tinted). One object from --point/--box on --frame, or several from --prompts.\n\n"
            "prompt file (JSON):\n"
            '  {"objects": [\n'
            '    {"id": 1, "name": "dog", "frame": 0, "points": [[x, y], [x, y, 0]],\n'
            '     "box": [x0, y0, x1, y1]},\n'
            '    {"id": 2, "frame": 12, "mask": "mask.png"}]}\n'
            "  id >= 1 is required; frame defaults to 0; each entry needs points (label 1 =\n"
            "  object, the default, 0 = background), a box, or a mask (a PNG relative to the\n"
            "  JSON file, nonzero = object). Repeat an id to prompt an object on more frames.\n"
            "  An SA-V JSON (e.g. a masks.json written before) also works: each object's mask\n"
            "  where it first appears is its prompt.\n\n"
            "Tracking starts at the earliest prompted frame: forward to the end, then (with\n"
            "both) backward to frame 0; backward alone starts at the latest prompted frame.\n"
            "Ctrl-C stops and writes the frames tracked so far (exit status 130)."
        ),
        epilog=(
            "examples:\n"
            "  sam2ui track clip.mp4 --point 320,240 --out results\n"
            "  sam2ui track frames/ --box 50,40,400,300 --frame 10 --out results --formats zip\n"
            "  sam2ui track clip.mp4 --prompts prompts.json --out results --direction forward\n"
            "  sam2ui track clip.mp4 --prompts results/masks.json --out refined"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "video", type=Path, metavar="VIDEO", help="video file or folder of frames to track in"
    )
    parser.add_argument(
        "--prompts",
        type=Path,
        metavar="FILE.json",
        help="prompts for one or more objects (see above), instead of --point/--box",
    )
    add_prompt_options(parser, where=" on --frame")
    parser.add_argument(
        "--frame",
        type=int,
        metavar="N",
        help="the frame --point/--box refer to (default: 0, the first)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder for the results (created)"
    )
    parser.add_argument(
        "--formats",
        type=parse_formats,
        metavar="LIST",
        help="what to write, comma-separated: zip, json, mp4 (default: all three)",
    )
    parser.add_argument(
        "--direction",
        choices=DIRECTIONS,
        default="both",
        help="which way to track from the prompted frames (default: both)",
    )
    parser.add_argument(
        "--max-frames",
        type=int,
        metavar="N",
        help="track at most N frames beyond the start frame in each direction (default: all)",
    )
    add_model_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_run_track, command_parser=parser)


class _Progress:
    """Frames done / total, fps and ETA on stderr: tqdm when installed, else a ``\\r`` line."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total = total
        self.done = 0
        self.quiet = quiet
        self.start = time.monotonic()
        self.last_draw = 0.0
        self.bar: Any = None
        if not quiet and importlib.util.find_spec("tqdm") is not None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="frame", desc="tracking", file=sys.stderr)

    def update(self) -> None:
        self.done += 1
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.update(1)
            return
        now = time.monotonic()
        if now - self.last_draw >= 0.2 or self.done == self.total:
            self.last_draw = now
            print(f"\r{self.line(now - self.start)}", end="", file=sys.stderr, flush=True)

    def line(self, elapsed: float) -> str:
        """The text of the plain progress line after ``elapsed`` seconds."""
        fps = self.done / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = f"{int(left / fps) // 60:d}:{int(left / fps) % 60:02d}" if fps > 0 else "?"
        return f"tracking {self.done}/{self.total} frames, {fps:.2f} fps, ETA {eta}"

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif not self.quiet and self.done:
            print(file=sys.stderr)


_END = object()
_ABORT = object()


class _Aborted(Exception):
    """Raised inside a writer thread to drop its half-written output."""


# One tracked frame: (frame index, {object id: (H, W) bool mask}, the frame's RGB image).
_Item = tuple[int, dict[int, "np.ndarray"], "np.ndarray"]


class _WriterThread:
    """One output writer consuming frames from a bounded queue in its own thread."""

    def __init__(self, name: str, write: Callable[[Iterator[_Item]], object]) -> None:
        self.name = name
        self.write = write
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"sam2ui-{name}", daemon=True)
        self.thread.start()

    def _items(self) -> Iterator[_Item]:
        while True:
            item = self.queue.get()
            if item is _END:
                return
            if item is _ABORT:
                raise _Aborted
            yield item

    def _run(self) -> None:
        try:
            self.write(self._items())
        except _Aborted:
            pass
        except BaseException as err:  # reported by the main thread
            self.error = err

    def put(self, item: object) -> None:
        while self.thread.is_alive():  # a writer that failed takes nothing more
            try:
                self.queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self, abort: bool = False) -> None:
        self.put(_ABORT if abort else _END)
        self.thread.join()


def _start_writers(
    formats: Sequence[str],
    out: Path,
    *,
    height: int,
    width: int,
    fps: float,
    video_id: str,
    frame_count: int,
    names: dict[int, str],
) -> list[_WriterThread]:
    """A writer thread per output format, each fed (frame, masks, rgb) in frame order."""
    from sam2ui.core.exports import write_davis_png_zip, write_sav_json

    def masks_only(items: Iterator[_Item]) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        return ((f, masks) for f, masks, _ in items)

    def zip_writer(items: Iterator[_Item]) -> object:
        return write_davis_png_zip(masks_only(items), out / "masks.zip", height=height, width=width)

    def json_writer(items: Iterator[_Item]) -> object:
        return write_sav_json(
            masks_only(items),
            out / "masks.json",
            height=height,
            width=width,
            video_id=video_id,
            fps=fps,
            frame_count=frame_count,
            object_names=names,
        )

    def mp4_writer(items: Iterator[_Item]) -> object:
        from sam2ui.core.overlays import write_overlay_mp4

        # The mp4 holds the tracked frames only: its frame n is the n-th tracked frame.
        current: dict[int, dict[int, np.ndarray]] = {}

        def frames() -> Iterator[np.ndarray]:
            for n, (_, masks, rgb) in enumerate(items):
                current.clear()
                current[n] = masks
                yield rgb

        return write_overlay_mp4(frames(), current, out / "overlay.mp4", fps=fps)

    writers = {"zip": zip_writer, "json": json_writer, "mp4": mp4_writer}
    return [_WriterThread(name, writers[name]) for name in formats]


def _plan(
    starts: tuple[int, int], num_frames: int, direction: str, max_frames: int | None
) -> list[tuple[int, bool, int]]:
    """The propagation passes: (start frame, reverse, frames yielded)."""
    first, last = starts
    span = num_frames if max_frames is None else max_frames
    passes = []
    if direction in ("forward", "both"):
        passes.append((first, False, min(first + span, num_frames - 1) - first + 1))
    if direction == "both" and first > 0:
        passes.append((first, True, first - max(first - span, 0) + 1))
    if direction == "backward":
        passes.append((last, True, last - max(last - span, 0) + 1))
    return passes


def _inline_prompts(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> list[ObjectPrompt]:
    if args.prompts is not None:
        if args.points or args.box is not None or args.frame is not None:
            parser.error("give either --prompts or --point/--box/--frame, not both")
        try:
            return load_prompt_file(args.prompts)
        except PromptError as err:
            parser.error(str(err))
    if not args.points and args.box is None:
        parser.error("give at least one --point or a --box, or a --prompts file")
    frame = 0 if args.frame is None else args.frame
    if frame < 0:
        parser.error(f"argument --frame: must be >= 0, got {frame}")
    return [ObjectPrompt(1, frame, tuple(args.points), args.box, where="--point/--box")]


def _run_track(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    prompts = _inline_prompts(args, parser)
    if args.max_frames is not None and args.max_frames < 0:
        parser.error(f"argument --max-frames: must be >= 0, got {args.max_frames}")
    formats: tuple[str, ...] = args.formats or FORMATS
    has_av = importlib.util.find_spec("av") is not None
    if "mp4" in formats and not has_av:
        if args.formats:
            parser.error("--formats mp4 needs PyAV: pip install 'sam2ui[video]'")
        formats = tuple(f for f in formats if f != "mp4")
        print("sam2ui track: note: PyAV is not installed, skipping overlay.mp4", file=sys.stderr)
    too_big = [p for p in prompts if p.obj_id > MAX_PNG_ID]
    if "zip" in formats and too_big:
        parser.error(
            f"{too_big[0].where}: object id {too_big[0].obj_id} does not fit the zip's 8-bit "
            f"PNGs (ids <= {MAX_PNG_ID}); leave zip out of --formats"
        )
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file, not a folder")
    if not args.out.absolute().parent.is_dir():
        parser.error(f"folder for {args.out} does not exist")
    source_name = _model_source(args, parser)

    from sam2ui.core.video_io import open_frames

    if not args.video.exists():
        parser.error(f"video not found: {args.video}")
    try:
        frames = open_frames(args.video)
    except (OSError, ValueError, ImportError) as err:
        parser.error(f"cannot read video {args.video}: {err}")
    try:
        num_frames, height, width = len(frames), frames.height, frames.width
        if num_frames == 0:
            parser.error(f"the video {args.video} has no frames")
        try:
            validate_prompts(prompts, num_frames, width, height)
        except PromptError as err:
            parser.error(str(err))
        device = resolve_device(args.device)
        if not _device_available(device):
            parser.error(f"--device {device}: no such device is available here")
        args.out.mkdir(exist_ok=True)
        return _track(args, prompts, frames, source_name, device, formats)
    finally:
        frames.close()


def _track(
    args: argparse.Namespace,
    prompts: Sequence[ObjectPrompt],
    frames: Any,
    source_name: str,
    device: str,
    formats: Sequence[str],
) -> int:
    """Load the model, prompt, propagate and write; the exit status."""
    import numpy as np
    import torch

    from sam2ui.core.video_predictor import SAM2VideoPredictor

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    num_frames, height, width = len(frames), frames.height, frames.width
    prog = "sam2ui track"
    try:
        predictor = SAM2VideoPredictor.from_pretrained(source_name, device=device, dtype=dtype)
        state = predictor.init_state(frames)
        for p in prompts:
            if p.mask is not None:
                predictor.add_new_mask(state, p.frame, p.obj_id, p.mask)
                continue
            predictor.add_new_points_or_box(
                state,
                p.frame,
                p.obj_id,
                points=np.array([[q.x, q.y] for q in p.points], np.float32) if p.points else None,
                labels=np.array([q.label for q in p.points], np.int32) if p.points else None,
                box=np.array([p.box.x0, p.box.y0, p.box.x1, p.box.y1], np.float32)
                if p.box is not None
                else None,
                clear_old_points=True,
            )
    except (OSError, ValueError, RuntimeError) as err:
        print(f"{prog}: error: cannot load model {source_name}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted before tracking; nothing written", file=sys.stderr)
        return 130

    frame_list = sorted({p.frame for p in prompts})
    passes = _plan((frame_list[0], frame_list[-1]), num_frames, args.direction, args.max_frames)
    total = sum(count for _, _, count in passes) - (len(passes) - 1)  # the start frame once
    stream = len(passes) == 1 and not passes[0][1]  # forward only: frames come in order
    names = {p.obj_id: p.name for p in prompts if p.name is not None}
    writers = _start_writers(
        formats,
        args.out,
        height=height,
        width=width,
        fps=float(frames.fps),
        video_id=args.video.stem if args.video.is_file() else args.video.name,
        frame_count=num_frames,
        names=names,
    )

    def emit(frame_idx: int, masks: dict[int, np.ndarray]) -> None:
        item = (frame_idx, masks, frames.get(frame_idx))
        for writer in writers:
            writer.put(item)

    packed: dict[int, dict[int, np.ndarray]] = {}  # frame -> {id: bit-packed mask}
    progress = _Progress(total, args.quiet)
    interrupted = False
    failure: BaseException | None = None
    try:
        for start, reverse, count in passes:
            span = count - 1
            for frame_idx, obj_ids, logits in predictor.propagate_in_video(
                state, start_frame_idx=start, max_frame_num_to_track=span, reverse=reverse
            ):
                if frame_idx in packed:
                    continue  # the start frame, already given by the forward pass
                binary = (logits > 0).cpu().numpy().reshape(len(obj_ids), height, width)
                ids: list[Any] = list(obj_ids)  # our prompts use int ids
                masks = {int(oid): binary[i] for i, oid in enumerate(ids)}
                if stream:
                    emit(frame_idx, masks)
                    packed[frame_idx] = {}
                else:
                    packed[frame_idx] = {oid: np.packbits(m) for oid, m in masks.items()}
                progress.update()
    except KeyboardInterrupt:
        interrupted = True
    except (OSError, ValueError, RuntimeError) as err:
        failure = err
    finally:
        progress.close()

    if failure is not None:
        for writer in writers:
            writer.finish(abort=True)
        print(f"{prog}: error: tracking failed: {failure}", file=sys.stderr)
        return 1
    if not stream:
        for frame_idx in sorted(packed):
            masks = {
                oid: np.unpackbits(bits, count=height * width).reshape(height, width).view(bool)
                for oid, bits in packed[frame_idx].items()
            }
            emit(frame_idx, masks)
    for writer in writers:
        writer.finish(abort=not packed)

    written = []
    for writer, name in zip(writers, formats):
        if writer.error is not None:
            print(f"{prog}: error: writing {name} failed: {writer.error}", file=sys.stderr)
            return 1
        written.append(
            args.out / {"zip": "masks.zip", "json": "masks.json", "mp4": "overlay.mp4"}[name]
        )
    if interrupted:
        if not packed:
            print(
                f"{prog}: interrupted before any frame was tracked; nothing written",
                file=sys.stderr,
            )
        else:
            print(
                f"{prog}: interrupted after {len(packed)} of {total} frames; wrote the frames "
                "tracked so far",
                file=sys.stderr,
            )
        return 130
    lo, hi = min(packed), max(packed)
    count = len({p.obj_id for p in prompts})
    print(f"tracked {count} object(s) on frames {lo}..{hi} ({len(packed)} frames)")
    for path in written:
        print(f"{path}")
    return 0


# --------------------------------------------------------------------------- app

APP_INSTALL_HINT = 'the app needs gradio: pip install "sam2ui[app]"'


def _add_app(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from sam2ui.app.options import add_app_arguments

    parser = subparsers.add_parser(
        "app",
        help="start the web app (the default when no command is given)",
        description=(
            "Start the Gradio app: click to segment images, track objects through videos, "
            "download masks. `sam2ui` with no command, or with only these options, does the "
            "same. It listens on 127.0.0.1 unless --host says otherwise."
        ),
        epilog=(
            "examples:\n"
            "  sam2ui\n"
            "  sam2ui --port 8000 --model sam2.1-hiera-large --device cuda\n"
            "  sam2ui app --checkpoint sam2.1_hiera_tiny.pt --host 0.0.0.0"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    add_app_arguments(parser, model_options=False)
    parser.set_defaults(handler=_run_app, command_parser=parser)


def _run_app(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if importlib.util.find_spec("gradio") is None:
        print(f"{parser.prog}: error: {APP_INSTALL_HINT}", file=sys.stderr)
        return 1
    from sam2ui.app import options

    if args.device != "auto" and not _device_available(args.device):
        parser.error(f"device {args.device!r} is not available on this machine")
    args.model = _model_source(args, parser)
    args.checkpoint = None  # resolved into args.model
    options.launch(options.config_from_args(args))
    return 0


# --------------------------------------------------------------------------- entry point

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_segment,
    _add_track,
    _add_app,
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


_TOP_LEVEL_FLAGS = ("-h", "--help", "--version")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (argparse exits with 2 on bad usage).

    No argument at all, or a first argument that is an option other than --help/--version,
    means ``app``: ``sam2ui`` alone starts the web app."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in _TOP_LEVEL_FLAGS):
        argv.insert(0, "app")
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace, argparse.ArgumentParser], int] = args.handler
    return handler(args, args.command_parser)

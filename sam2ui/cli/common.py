"""What the ``sam2ui`` subcommands share: the ``--point``/``--box`` parsers, the model and
device options, and turning those options into a model source and a device name.

Only the standard library and the light prompt types of :mod:`sam2ui.core` are imported at
module level; torch loads (through the engine's device check) inside :func:`resolve_device`
and :func:`device_available`.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from sam2ui.core import Box, Click, configure_threads

__all__ = [
    "DEFAULT_MODEL",
    "DEVICES",
    "DTYPES",
    "Box",
    "Point",
    "add_model_options",
    "add_prompt_options",
    "compile_now",
    "device_available",
    "load_failed",
    "model_source",
    "parse_box",
    "parse_point",
    "pick_device",
    "resolve_device",
]

DEFAULT_MODEL = "facebook/sam2.1-hiera-tiny"
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float32", "bfloat16")
# Characters no variant name has: a --model with one is a path (POSIX, or Windows as in
# C:\models\m.pt) or a hub id, passed on to the loader as it is.
_PATH_MARKS = ("/", "\\", ":")

# The command line's name for a click: ``Point(x, y, 1)`` is ``Click(x, y, positive=True)``.
Point = Click


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


def parse_point(text: str) -> Click:
    """Parse ``X,Y`` or ``X,Y,LABEL`` (LABEL 1 = object, the default; 0 = background)."""
    parts = _numbers(text, "point", "X,Y or X,Y,LABEL", (2, 3))
    x, y = (_finite(part, text, "point") for part in parts[:2])
    if len(parts) == 3 and parts[2] not in ("0", "1"):
        raise argparse.ArgumentTypeError(
            f"invalid point {text!r}: label must be 1 (object) or 0 (background), got {parts[2]!r}"
        )
    return Click(x, y, len(parts) == 2 or parts[2] == "1")


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
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the model with torch.compile before the work starts (takes tens of "
        "seconds, reported; needs a C++ compiler on a CPU, where eager is often as fast)",
    )


def model_source(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """What to pass to ``from_pretrained``: a local path, or a hub id."""
    from sam2ui.core import get_config

    if args.checkpoint is not None:
        if not args.checkpoint.exists():
            parser.error(f"checkpoint not found: {args.checkpoint}")
        return str(args.checkpoint)
    name: str = args.model or DEFAULT_MODEL
    if Path(name).exists() or any(mark in name for mark in _PATH_MARKS):
        return name  # a local path, or a hub repository id (official or not)
    try:
        return get_config(name).hub_id  # a variant name such as "sam2.1-hiera-small"
    except ValueError as err:
        parser.error(str(err))


def resolve_device(name: str) -> str:
    """Map ``auto`` to the best available device, as the engine picks it (cuda, then mps, then
    cpu); keep other names as given (:func:`pick_device` checks them)."""
    if name != "auto":
        return name
    from sam2ui.core import resolve_device as engine_device

    return engine_device(None).type


def device_available(name: str) -> bool:
    """Whether the device ``name`` (cpu, cuda or mps) can be used here, as the engine decides."""
    from sam2ui.core import resolve_device as engine_device

    try:
        engine_device(name)
    except RuntimeError:  # the engine's "was requested but ... is not available"
        return False
    return True


def pick_device(name: str, parser: argparse.ArgumentParser) -> str:
    """The device for ``--device name``; a usage error when it is not available here.
    On the CPU, torch's threads are set from the CPUs this process may use (affinity and
    cgroup quota) or ``$SAM2UI_THREADS``."""
    device = resolve_device(name)
    if not device_available(device):
        parser.error(f"--device {device}: no such device is available here")
    if device == "cpu":
        try:
            configure_threads()
        except ValueError as err:
            parser.error(str(err))
    return device


def compile_now(prog: str, predictor: Any, args: argparse.Namespace) -> None:
    """With ``--compile``, warm the compiled model up now and say how long it took (on
    stderr, unless ``--quiet``), so that the time is not hidden in the first frame."""
    if not getattr(args, "compile", False):
        return
    from sam2ui.core import warm_up

    quiet = getattr(args, "quiet", False)
    if not quiet:
        print(f"{prog}: compiling the model...", file=sys.stderr, flush=True)
    seconds = warm_up(predictor)
    if not quiet:
        print(f"{prog}: compiled in {seconds:.1f} s", file=sys.stderr, flush=True)


def load_failed(prog: str, source: str, err: BaseException) -> int:
    """Report a model that could not be loaded and return the exit status 1.

    Missing files, no network with an empty cache, or weights of the wrong shape: the
    message says which, and a traceback would only bury it."""
    print(f"{prog}: error: cannot load model {source}: {err}", file=sys.stderr)
    return 1

"""The ``sam2ui`` command line.

``sam2ui segment IMAGE --point X,Y --out mask.png`` segments one object in one image and writes
the mask as an 8-bit PNG. ``sam2ui everything IMAGE --out masks.json`` writes the automatic
masks of a whole image as COCO RLE, with a progress bar. ``sam2ui track VIDEO --point X,Y
--out DIR`` (or ``--prompts prompts.json`` for several objects and frames) tracks objects
through a video and writes a DAVIS PNG zip, an SA-V JSON and an overlay MP4. ``sam2ui batch
MANIFEST.jsonl --out DIR`` runs ``track`` over many videos (and images) on Ray. ``sam2ui`` with
no command (or ``sam2ui app``, or only the app's options such as ``sam2ui --port 8000``)
starts the Gradio app.

One module per subcommand: :mod:`~sam2ui.cli.segment`, :mod:`~sam2ui.cli.everything`,
:mod:`~sam2ui.cli.track` (with
:mod:`~sam2ui.cli.track_output` for its progress line and writer threads, and
:mod:`~sam2ui.cli.track_run` for one video's run with a loaded model), :mod:`~sam2ui.cli.batch`
(with :mod:`~sam2ui.cli.batch_worker`, the per-line work, and :mod:`~sam2ui.cli.batch_ray`,
Ray Data) and :mod:`~sam2ui.cli.app`; :mod:`~sam2ui.cli.common` holds the options and parsers
they share.
Each has an ``add_*`` function in :data:`SUBCOMMANDS` that builds its parser and names its
handler, so new commands slot in beside the others. This module holds :func:`main` and
:func:`build_parser`, and re-exports the command line's public names.

Only the standard library (and the engine's light prompt types) is imported when the parser is
built: numpy, Pillow and torch load inside the handler that needs them, so ``sam2ui --help``
and argument errors answer at once. The names below that come from numpy-backed engine modules
(the click colours, the prompt-file reader) load on first use (PEP 562).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sam2ui import __version__
from sam2ui.core import ObjectPrompt

from .app import add_app
from .batch import add_batch
from .common import DEFAULT_MODEL, Box, Point, parse_box, parse_point, resolve_device
from .everything import add_everything
from .segment import BOX_COLOR, MASK_COLOR, add_segment, render_overlay
from .track import add_track, parse_formats
from .track_output import FORMATS
from .track_output import _Progress as _Progress  # for the tests

if TYPE_CHECKING:
    from sam2ui.core import (
        NEGATIVE_COLOR,
        POSITIVE_COLOR,
        PromptError,
        load_prompt_file,
        validate_prompts,
    )

__all__ = [
    "BOX_COLOR",
    "DEFAULT_MODEL",
    "FORMATS",
    "MASK_COLOR",
    "NEGATIVE_COLOR",
    "POSITIVE_COLOR",
    "SUBCOMMANDS",
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

# Names the engine defines in modules that import numpy: taken from sam2ui.core on first use.
_FROM_CORE = frozenset(
    {"NEGATIVE_COLOR", "POSITIVE_COLOR", "PromptError", "load_prompt_file", "validate_prompts"}
)

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    add_segment,
    add_everything,
    add_track,
    add_batch,
    add_app,
]


def __getattr__(name: str) -> Any:
    """Load the engine names of ``_FROM_CORE`` on first use, then keep them here."""
    if name not in _FROM_CORE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("sam2ui.core"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | _FROM_CORE)


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

"""``sam2ui track``: objects through a video from clicks, boxes or masks (``--point``/``--box``
on ``--frame``, or a ``--prompts`` file read by :func:`sam2ui.core.load_prompt_file`), written
as a DAVIS PNG zip, an SA-V JSON and an overlay MP4 (:mod:`sam2ui.cli.track_output`).

numpy, torch and the prompt-file reader load inside the handler, so building the parser stays
light.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sam2ui.core import ObjectPrompt

from .common import (
    add_model_options,
    add_prompt_options,
    compile_now,
    load_failed,
    model_source,
    pick_device,
)
from .track_output import FORMATS
from .track_run import TrackFailed, add_prompts, track_into, video_name

__all__ = [
    "DIRECTIONS",
    "FORMATS",
    "MAX_PNG_ID",
    "add_track",
    "add_tracking_options",
    "check_max_frames",
    "parse_formats",
]

DIRECTIONS = ("forward", "backward", "both")
# Largest object id the zip's PNGs hold (ids over 255 get 16-bit PNGs instead of indexed ones).
MAX_PNG_ID = 65535


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


def add_tracking_options(parser: argparse.ArgumentParser, per: str = "") -> None:
    """--out, --formats, --direction and --max-frames, shared by ``track`` and ``batch``
    (``per``: what each format is written for, in --formats' help)."""
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder for the results (created)"
    )
    parser.add_argument(
        "--formats",
        type=parse_formats,
        metavar="LIST",
        help=f"what to write{per}, comma-separated: zip, json, mp4 (default: all three)",
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


def check_max_frames(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """A usage error for a negative --max-frames."""
    if args.max_frames is not None and args.max_frames < 0:
        parser.error(f"argument --max-frames: must be >= 0, got {args.max_frames}")


def add_track(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``track`` subcommand's parser, with :func:`run_track` as its handler."""
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
            "  JSON file and in its folder, nonzero = object; --allow-outside-paths lifts the\n"
            "  folder rule). Repeat an id to prompt an object on more frames.\n"
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
    parser.add_argument(
        "--allow-outside-paths",
        action="store_true",
        help="let the prompt file name mask files outside its own folder",
    )
    add_prompt_options(parser, where=" on --frame")
    parser.add_argument(
        "--frame",
        type=int,
        metavar="N",
        help="the frame --point/--box refer to (default: 0, the first)",
    )
    add_tracking_options(parser)
    add_model_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_track, command_parser=parser)


def _inline_prompts(
    args: argparse.Namespace, parser: argparse.ArgumentParser
) -> list[ObjectPrompt]:
    """The prompts of ``--prompts``, or the one object of ``--point``/``--box``/``--frame``."""
    if args.prompts is not None:
        if args.points or args.box is not None or args.frame is not None:
            parser.error("give either --prompts or --point/--box/--frame, not both")
        from sam2ui.core import PromptError, load_prompt_file

        try:
            return load_prompt_file(args.prompts, allow_outside_paths=args.allow_outside_paths)
        except PromptError as err:
            parser.error(str(err))
    if not args.points and args.box is None:
        parser.error("give at least one --point or a --box, or a --prompts file")
    frame = 0 if args.frame is None else args.frame
    if frame < 0:
        parser.error(f"argument --frame: must be >= 0, got {frame}")
    return [ObjectPrompt(1, frame, tuple(args.points), args.box, where="--point/--box")]


def run_track(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Check the arguments and the prompts against the video, then track (:func:`_track`)."""
    prompts = _inline_prompts(args, parser)
    check_max_frames(args, parser)
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
            f"{too_big[0].where}: object id {too_big[0].obj_id} does not fit the zip's 16-bit "
            f"PNGs (ids <= {MAX_PNG_ID}); leave zip out of --formats"
        )
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file, not a folder")
    if not args.out.absolute().parent.is_dir():
        parser.error(f"folder for {args.out} does not exist")
    source_name = model_source(args, parser)

    from sam2ui.core import PromptError, open_frames, validate_prompts

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
        device = pick_device(args.device, parser)
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
    """Load the model, prompt, propagate and write (:func:`track_into`); the exit status."""
    from sam2ui.core import SAM2VideoPredictor, resolve_dtype

    prog = "sam2ui track"
    try:
        predictor = SAM2VideoPredictor.from_pretrained(
            source_name, device=device, dtype=resolve_dtype(args.dtype), compile=args.compile
        )
        compile_now(prog, predictor, args)
        state = predictor.init_state(frames)
        add_prompts(predictor, state, prompts)
    except (OSError, ValueError, RuntimeError) as err:
        return load_failed(prog, source_name, err)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted before tracking; nothing written", file=sys.stderr)
        return 130
    try:
        run = track_into(
            predictor,
            state,
            frames,
            prompts,
            args.out,
            formats=formats,
            direction=args.direction,
            max_frames=args.max_frames,
            video_id=video_name(args.video),
            quiet=args.quiet,
        )
    except TrackFailed as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    if run.interrupted:
        if not run.frames:
            print(
                f"{prog}: interrupted before any frame was tracked; nothing written",
                file=sys.stderr,
            )
        else:
            print(
                f"{prog}: interrupted after {len(run.frames)} of {run.total} frames; wrote the "
                "frames tracked so far",
                file=sys.stderr,
            )
        return 130
    lo, hi = run.frames[0], run.frames[-1]
    print(f"tracked {run.objects} object(s) on frames {lo}..{hi} ({len(run.frames)} frames)")
    for path in run.written:
        print(f"{path}")
    return 0

"""Prompts read from files, parsed into the vocabulary of :mod:`sam2ui.core.annotate.prompts`.

:func:`load_prompt_file` reads a prompts JSON (the sam2ui schema, or an SA-V masklet JSON whose
masks become mask prompts) into :class:`~sam2ui.core.annotate.prompts.ObjectPrompt`, and
:func:`validate_prompts` checks them against a video's size and length; both raise
:class:`PromptError` with a message that says what is wrong and where. The command line's
``--prompts`` goes through them. :func:`masks_as_prompts` gives an SA-V file's masks as
:class:`~sam2ui.core.annotate.prompts.MaskPrompt`.

This module imports numpy and Pillow; :mod:`~sam2ui.core.annotate.prompts` alone does not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sam2ui.core.exports import PathLike, load_sav
from sam2ui.core.masks import rle_area, rle_to_mask

from .prompts import Box, Click, MaskPrompt, ObjectPrompt

__all__ = [
    "PROMPT_KEYS",
    "PromptError",
    "check_prompts_inside",
    "load_prompt_file",
    "masks_as_prompts",
    "validate_prompts",
]

# The keys of one entry of a prompt file's "objects" list.
PROMPT_KEYS = frozenset({"id", "name", "frame", "points", "box", "mask"})


class PromptError(ValueError):
    """A prompt file or inline prompt that cannot be used; the message says what and where."""


def masks_as_prompts(
    path_or_data: PathLike | Mapping[str, Any], frame_idx: int | None = None
) -> dict[int, MaskPrompt]:
    """Masks of an SA-V JSON as prompts, ``{obj_id: MaskPrompt(frame_idx, mask)}``.

    With ``frame_idx`` (a video frame index present in the file): the objects visible in
    that frame (possibly none). Without: each object's mask where it first appears, so the
    frames differ between objects; objects never visible are left out. Only the masks
    returned are decoded.
    """
    frames, ids, masklet = load_sav(path_or_data)
    if frame_idx is not None:
        if frame_idx not in frames:
            raise ValueError(
                f"frame {frame_idx} is not in the file (it has {len(frames)} frames, "
                f"indices {frames[0] if frames else '-'}..{frames[-1] if frames else '-'})"
            )
        row = masklet[frames.index(frame_idx)]
        return {
            i: MaskPrompt(frame_idx, rle_to_mask(r)) for i, r in zip(ids, row) if rle_area(r) > 0
        }
    out: dict[int, MaskPrompt] = {}
    for j, oid in enumerate(ids):
        for f, row in zip(frames, masklet):
            if rle_area(row[j]) > 0:
                out[oid] = MaskPrompt(f, rle_to_mask(row[j]))
                break
    return out


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
    if not path.is_file():
        raise PromptError(f"{where}: mask file not found: {path}")
    try:
        with Image.open(path) as image:
            if image.mode in ("P", "L", "1"):
                return np.array(image) > 0
            return np.array(image.convert("L")) > 0
    except (OSError, Image.DecompressionBombError) as err:
        raise PromptError(f"{where}: cannot read mask {path}: {err}") from None


def _mask_path(name: str, folder: Path, where: str, allow_outside: bool) -> Path:
    """Where a prompt file's ``"mask"`` names: a path relative to the file's ``folder``,
    which it must not leave (``..``, an absolute path, a link pointing out) unless
    ``allow_outside``."""
    path = folder / name
    if allow_outside:
        return path
    inside = folder.resolve()
    if not path.resolve().is_relative_to(inside):
        raise PromptError(
            f"{where}: the mask {name!r} lies outside the prompt file's folder; put the mask "
            "in that folder (or below it) and name it relative to the file, or allow paths "
            "outside it (sam2ui track --allow-outside-paths)"
        )
    return path


def _parse_object(
    entry: Any, where: str, folder: Path, allow_outside: bool = False
) -> ObjectPrompt:
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
        points.append(Click(x, y, not rest or rest[0] == 1.0))
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
        at = f"{where}.mask"
        mask = _load_mask_png(_mask_path(entry["mask"], folder, at, allow_outside), at)
    if not points and box is None and mask is None:
        raise PromptError(f"{where}: object {obj_id} has no prompt: give 'points', 'box' or 'mask'")
    return ObjectPrompt(obj_id, frame, tuple(points), box, mask, name, where)


def _sav_prompts(data: dict[str, Any], where: str) -> list[ObjectPrompt]:
    """Prompts from an SA-V masklet JSON: each object's mask where it first appears."""
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


def load_prompt_file(path: PathLike, *, allow_outside_paths: bool = False) -> list[ObjectPrompt]:
    """Read a prompts file: the sam2ui schema or an SA-V masklet JSON.

    Schema: ``{"objects": [{"id": 1, "name": "dog", "frame": 0, "points": [[x, y], [x, y, 0]],
    "box": [x0, y0, x1, y1]}, {"id": 2, "frame": 12, "mask": "mask.png"}]}``. ``id`` (>= 1) is
    required; ``frame`` defaults to 0; each entry needs ``points``, ``box`` or ``mask`` (a PNG
    relative to the JSON file, nonzero = object; not with points or box). A mask must lie in
    the JSON file's folder or below it (a file from elsewhere cannot make a program read any
    picture of the machine) unless ``allow_outside_paths``. An id may appear in
    several entries to prompt one object on several frames. A file with a ``masklet`` key is
    read as SA-V (as :func:`~sam2ui.core.exports.write_sav_json` writes): each object's mask
    where it first appears becomes its prompt. Raises :class:`PromptError`.
    """
    path = Path(path)
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
        _parse_object(e, f"{where}: objects[{i}]", path.parent, allow_outside_paths)
        for i, e in enumerate(objects)
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


def check_prompts_inside(
    points: Sequence[Click], box: Box | None, width: int, height: int, image: str = "frame"
) -> None:
    """Raise :class:`PromptError` when a click or the box lies outside a ``width`` x
    ``height`` image (called ``image`` in the message): the model would silently segment
    something else."""
    for point in points:
        if not (0 <= point.x <= width and 0 <= point.y <= height):
            raise PromptError(
                f"point {point.x:g},{point.y:g} lies outside the {width}x{height} {image}"
            )
    # With x0 <= x1 and y0 <= y1 (as parsed), the chains check both corners.
    if box is not None and not (0 <= box.x0 <= box.x1 <= width and 0 <= box.y0 <= box.y1 <= height):
        raise PromptError(
            f"box {box.x0:g},{box.y0:g},{box.x1:g},{box.y1:g} reaches outside the "
            f"{width}x{height} {image}"
        )


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
        try:
            check_prompts_inside(p.points, p.box, width, height)
        except PromptError as err:
            raise PromptError(f"{p.where}: {err}") from None
        if p.mask is not None and p.mask.shape != (height, width):
            mh, mw = p.mask.shape[:2]
            raise PromptError(
                f"{p.where}: the mask is {mw}x{mh}, the video's frames are {width}x{height}"
            )

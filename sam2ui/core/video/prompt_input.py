"""Reading and checking the prompts of the video predictor, before any state changes.

:meth:`~sam2ui.core.video.predictor.SAM2VideoPredictor.add_new_points_or_box` and
:meth:`~sam2ui.core.video.predictor.SAM2VideoPredictor.add_new_mask` take one object id with
its prompt, or several ids (a list, or ``obj_ids=``) with one prompt per object: ``points`` a
list of (N_i, 2) arrays (the numbers of points may differ), ``labels`` a list of (N_i,)
arrays, ``box`` a list of boxes (None for an object without one), ``mask`` a list of masks.
Everything is read and checked here first, so that a bad prompt for any object changes
nothing. Every error names the argument (and the object's entry) and what was received.
:func:`frame_count` checks a propagation's length the same way.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sam2ui.core.transforms import check_point_labels, check_prompt_points

from .state import ObjectId, PointInputs


def _tensor(value: Any, name: str) -> torch.Tensor:
    """A numeric array-like as a CPU tensor of its own dtype; TypeError when not numeric."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        array = np.asarray(value)
    except ValueError as exc:  # ragged nesting
        raise ValueError(f"{name} is not a regular array: {exc}") from exc
    if array.dtype == object or array.dtype.kind in "USVc":
        raise TypeError(f"{name} must be numeric, got {type(value).__name__} of {array.dtype}")
    return torch.as_tensor(array)


def frame_count(max_frame_num_to_track: Any, num_frames: int) -> int:
    """How many frames a propagation may track after its first (``num_frames`` for None);
    ValueError unless a non-negative integer."""
    if max_frame_num_to_track is None:
        return num_frames
    span = -1
    if not isinstance(max_frame_num_to_track, (bool, np.bool_)):
        with contextlib.suppress(TypeError):
            span = operator.index(max_frame_num_to_track)
    if span < 0:
        raise ValueError(
            f"max_frame_num_to_track must be a non-negative integer, got {max_frame_num_to_track!r}"
        )
    return span


def object_ids(obj_id: Any, obj_ids: Any) -> tuple[list[ObjectId], bool]:
    """The object ids of a call, and whether several were given (a list, a 1-D array, or any
    sequence as ``obj_ids``; a tuple given as ``obj_id`` is one id, as it may name one)."""
    if obj_id is not None and obj_ids is not None:
        raise TypeError("give obj_id or obj_ids, not both")
    value = obj_ids if obj_ids is not None else obj_id
    if value is None:
        raise TypeError("an object id is needed: give obj_id (one id or a list) or obj_ids")
    if isinstance(value, (np.ndarray, torch.Tensor)):
        value = value.tolist()  # numbers as Python ints, so ids compare and print as given
    many = isinstance(value, list) or (obj_ids is not None and isinstance(value, tuple))
    ids = list(value) if many else [value]
    for oid in ids:
        if not isinstance(oid, Hashable):
            raise TypeError(f"object ids must be hashable (e.g. ints), got {oid!r}")
    if many:
        if not ids:
            raise ValueError("obj_ids is empty: give at least one object id")
        repeated = [oid for i, oid in enumerate(ids) if oid in ids[:i]]
        if repeated:
            raise ValueError(
                f"object id {repeated[0]!r} appears twice in {ids}: give each object's "
                "prompts in one entry"
            )
    return ids, many


def per_object(value: Any, name: str, ids: list[ObjectId]) -> list[Any]:
    """``value`` split into one entry per object of ``ids`` (None for every object when
    ``value`` is None)."""
    n = len(ids)
    if value is None:
        return [None] * n
    if isinstance(value, (np.ndarray, torch.Tensor)):
        if value.ndim == 0 or len(value) != n:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)} for the {n} objects {ids}: "
                "give one entry per object"
            )
        return list(value)
    if not isinstance(value, (list, tuple)):
        raise TypeError(
            f"{name} must be a list with one entry per object of {ids}, got {type(value).__name__}"
        )
    if len(value) != n:
        raise ValueError(
            f"{name} has {len(value)} entries for the {n} objects {ids}: "
            "give one entry per object (None where an object has none)"
        )
    return list(value)


def _labels(labels: Any, name: str) -> torch.Tensor:
    """Point labels as int32 (see :func:`~sam2ui.core.transforms.check_point_labels`)."""
    return check_point_labels(_tensor(labels, name), name)


def _indexed(prefix: str) -> Callable[[int], str]:
    return lambda k: f"{prefix}[{k}]"


def point_inputs(
    points: Any,
    labels: Any,
    box: Any,
    clear_old_points: bool,
    image_size: int,
    frame_wh: tuple[int, int],
    normalized: bool,
    entry: str = "",
) -> PointInputs:
    """Clicks ``points`` (N, 2) x, y with ``labels`` (N,) and/or a ``box`` (x0, y0, x1, y1)
    -> model-frame inputs; the box comes first as two corner points (labels 2 and 3).
    Coordinates are pixels of a ``frame_wh`` (W, H) frame, or [0, 1] fractions when
    ``normalized``. ``entry`` (e.g. ``"[1]"``) follows the argument names in messages."""
    pname, lname, bname = f"points{entry}", f"labels{entry}", f"box{entry}"
    if (points is None) != (labels is None):
        raise ValueError(f"{pname} and {lname} must be given together")
    if points is None and box is None:
        raise ValueError(f"give points{entry} (with labels{entry}), box{entry}, or both")
    coords = torch.zeros(1, 0, 2)
    labs = torch.zeros(1, 0, dtype=torch.int32)
    if points is not None:
        coords = _tensor(points, pname).to(torch.float32)
        labs = _labels(labels, lname)
        coords = coords[None] if coords.ndim == 2 else coords
        labs = labs[None] if labs.ndim == 1 else labs
        if coords.ndim != 3 or coords.shape[0] != 1 or coords.shape[-1] != 2:
            raise ValueError(f"{pname} must have shape (N, 2), got {tuple(coords.shape)}")
        if labs.shape != coords.shape[:2]:
            raise ValueError(
                f"{coords.shape[1]} points in {pname} but {lname} of shape {tuple(labs.shape)}: "
                "give one label per point"
            )
        check_prompt_points(coords[0], _indexed(pname), frame_wh, normalized, "frame")
    if box is not None:
        if not clear_old_points:
            raise ValueError("a box must come before any click: use clear_old_points=True")
        box_t = _tensor(box, bname).to(torch.float32)
        if box_t.numel() != 4:
            raise ValueError(
                f"{bname} must have 4 values (x0, y0, x1, y1), got shape {tuple(box_t.shape)}"
            )
        corners = box_t.reshape(2, 2)
        check_prompt_points(
            corners,
            lambda k: f"{bname} corner {'(x0, y0)' if k == 0 else '(x1, y1)'}",
            frame_wh,
            normalized,
            "frame",
        )
        if bool((corners[1] < corners[0]).any()):
            raise ValueError(f"{bname} must be XYXY with x1 >= x0 and y1 >= y0")
        coords = torch.cat([corners[None], coords], dim=1)
        labs = torch.cat([torch.tensor([[2, 3]], dtype=torch.int32), labs], dim=1)
    if not normalized:
        # Divide by the size, then scale, so rounding matches the reference exactly.
        coords = coords / torch.tensor([frame_wh[0], frame_wh[1]])
    return PointInputs(coords * image_size, labs)


def object_point_inputs(
    ids: list[ObjectId],
    many: bool,
    points: Any,
    labels: Any,
    box: Any,
    clear_old_points: bool,
    image_size: int,
    frame_wh: tuple[int, int],
    normalized: bool,
) -> list[PointInputs]:
    """:func:`point_inputs` of every object of ``ids``; with ``many``, ``points``,
    ``labels`` and ``box`` hold one entry per object."""
    if not many:
        return [
            point_inputs(points, labels, box, clear_old_points, image_size, frame_wh, normalized)
        ]
    columns = zip(
        per_object(points, "points", ids),
        per_object(labels, "labels", ids),
        per_object(box, "box", ids),
    )
    out = []
    for i, (oid, (p, lab, b)) in enumerate(zip(ids, columns)):
        if p is None and lab is None and b is None:
            raise ValueError(
                f"object {oid!r} has no prompt: give points[{i}] (with labels[{i}]), "
                f"box[{i}], or both"
            )
        out.append(
            point_inputs(p, lab, b, clear_old_points, image_size, frame_wh, normalized, f"[{i}]")
        )
    return out


def mask_prompt(mask: Any, image_size: int, name: str = "mask") -> torch.Tensor:
    """A user mask (H, W), bool or 0/1 of any size -> (1, 1, S, S) float 0/1 on the CPU,
    resized (antialiased bilinear, then >= 0.5) when it is not already S x S."""
    if mask is None:
        raise ValueError(f"{name} is missing: give an (H, W) mask")
    m = mask if isinstance(mask, torch.Tensor) else _tensor(mask, name).to(torch.bool)
    if m.ndim != 2 or m.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (H, W) array, got shape {tuple(m.shape)}")
    m = m.detach().cpu()[None, None].float()
    size = (image_size, image_size)
    if tuple(m.shape[-2:]) != size:
        m = F.interpolate(m, size, mode="bilinear", align_corners=False, antialias=True)
        m = (m >= 0.5).float()
    return m


def object_masks(ids: list[ObjectId], many: bool, mask: Any, image_size: int) -> list[torch.Tensor]:
    """:func:`mask_prompt` of every object of ``ids``; with ``many``, ``mask`` holds one
    mask per object."""
    if not many:
        return [mask_prompt(mask, image_size)]
    if mask is None:
        raise ValueError(f"mask is missing: give one (H, W) mask per object of {ids}")
    masks = per_object(mask, "mask", ids)
    return [mask_prompt(m, image_size, f"mask[{i}]") for i, m in enumerate(masks)]

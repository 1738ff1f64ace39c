"""Reading and checking the prompts of :meth:`SAM2ImagePredictor.predict` for one image.

Points come in three forms:

* ``point_coords`` (N, 2) with ``point_labels`` (N,): one object;
* (B, N, 2) with (B, N): B objects with N points each;
* a list of B arrays (N_i, 2) with a list of B arrays (N_i,): B objects with different numbers
  of points ("ragged"). The predictor decodes the objects with the same number of points
  together, so each object's masks are those it gets alone (up to float32 rounding of the
  batch): padding the short ones with "not a point" tokens (label -1) would change them, since
  the decoder's tokens attend to every padding token.

Boxes are (4,) or (B, 4) XYXY (or a list of B boxes), masks (1, 256, 256) or (B, 1, 256, 256)
low-res logits; one mask may serve every object. Every error names the argument, the entry
and the shape or value received; coordinates must lie on the image (see
:func:`~sam2ui.core.transforms.check_prompt_points`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sam2ui.core.transforms import check_point_labels, check_prompt_points

Prompt = Any  # numpy array, sequence or torch tensor


@dataclass(frozen=True)
class ImagePrompts:
    """Checked prompts of one image, on the CPU, coordinates as given (pixels or fractions).

    ``points``: per object (coords (N_i, 2) float32, labels (N_i,) int32), or None; ``boxes``
    (B, 4) float32 XYXY or None; ``masks`` (B or 1, 1, S/4, S/4) float32 or None.
    """

    points: list[tuple[torch.Tensor, torch.Tensor]] | None
    boxes: torch.Tensor | None
    masks: torch.Tensor | None

    @property
    def ragged(self) -> bool:
        """Whether the objects have different numbers of points."""
        return self.points is not None and len({len(c) for c, _ in self.points}) > 1

    def groups(self) -> list[list[int]]:
        """Object indices by number of points (each group decodes as one batch), in order of
        first appearance."""
        if self.points is None:
            return []
        by_count: dict[int, list[int]] = {}
        for i, (coords, _) in enumerate(self.points):
            by_count.setdefault(len(coords), []).append(i)
        return list(by_count.values())

    def stacked_points(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Coordinates (G, N, 2) and labels (G, N) of objects ``rows`` (same N)."""
        assert self.points is not None
        coords = torch.stack([self.points[i][0] for i in rows])
        labels = torch.stack([self.points[i][1] for i in rows])
        return coords, labels


def _tensor(value: Prompt, name: str) -> torch.Tensor:
    """Any numeric array-like as a CPU tensor (its own dtype); TypeError when not numeric."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
    else:
        array = np.asarray(value)  # ValueError when ragged: the callers read entry by entry
        if array.dtype == object or array.dtype.kind in "USV":
            kind = type(value).__name__
            raise TypeError(f"{name} must be numeric, got a {kind} of dtype {array.dtype}")
        tensor = torch.as_tensor(array)
    if tensor.dtype == torch.bool:
        raise TypeError(f"{name} must be numbers, not booleans")
    if not (
        tensor.is_floating_point()
        or tensor.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
    ):
        raise TypeError(f"{name} must be numeric, got dtype {tensor.dtype}")
    return tensor


def _entries(value: Prompt, name: str) -> list[torch.Tensor] | torch.Tensor:
    """``value`` as one tensor or, when it is a list that is not one regular array (entries
    of different shapes, tensors on another device), as a list of per-entry tensors."""
    try:
        return _tensor(value, name)
    except (TypeError, ValueError) as exc:
        if not isinstance(value, (list, tuple)) or not value:
            if isinstance(exc, TypeError):
                raise
            raise TypeError(f"{name} must be numeric, got {type(value).__name__}") from None
    return [_tensor(v, f"{name}[{i}]") for i, v in enumerate(value)]


def _coords(point_coords: Prompt, name: str) -> tuple[list[torch.Tensor], bool]:
    """Per-object (N_i, 2) float32 coordinates, and whether a batch dimension was given."""
    read = _entries(point_coords, name)
    if isinstance(read, torch.Tensor):
        if read.ndim == 2 and read.shape[-1] == 2:
            return [read.float()], False
        if read.ndim == 3 and read.shape[-1] == 2:
            return [c.float() for c in read], True
        raise ValueError(
            f"{name} must have shape (N, 2) or (B, N, 2), or be a list of (N_i, 2) arrays "
            f"(one per object); got shape {tuple(read.shape)}"
        )
    if any(c.ndim < 2 for c in read):
        raise ValueError(
            f"{name} is not a regular array (entries of shapes {[tuple(c.shape) for c in read]}): "
            "give (N, 2) points, or a list of (N_i, 2) arrays (one per object)"
        )
    for i, c in enumerate(read):
        if c.ndim != 2 or c.shape[-1] != 2:
            raise ValueError(
                f"{name}[{i}] must have shape (N, 2): the points of object {i}; "
                f"got shape {tuple(c.shape)}"
            )
    if not read:
        raise ValueError(f"{name} is an empty list: give at least one object's points")
    return [c.float() for c in read], True


def _shape_of(coords: list[torch.Tensor], batched: bool) -> str:
    if not batched:
        return f"shape {tuple(coords[0].shape)}"
    if len({len(c) for c in coords}) == 1:
        return f"shape {(len(coords), *coords[0].shape)}"
    return f"(a list of {len(coords)} arrays of shapes {[tuple(c.shape) for c in coords]})"


def _labels(
    point_labels: Prompt, name: str, coords: list[torch.Tensor], batched: bool, cname: str
) -> list[torch.Tensor]:
    """Per-object (N_i,) int32 labels matching ``coords``."""
    read = _entries(point_labels, name)
    entries: list[torch.Tensor] | None = None
    if isinstance(read, list):
        if not batched or len(read) != len(coords):
            raise ValueError(
                f"{name} is a list of {len(read)} label arrays but {cname} has "
                f"{len(coords) if batched else 'one object'}: give one label array per object"
            )
        entries = read
    elif not batched and (read.ndim == 1 or (read.ndim == 2 and read.shape[0] == 1)):
        entries = [read.reshape(-1)]
    elif batched and read.ndim == 2 and read.shape[0] == len(coords):
        entries = list(read)
    if entries is None or (not batched and entries[0].shape != coords[0].shape[:1]):
        got = tuple(read.shape) if isinstance(read, torch.Tensor) else ()
        raise ValueError(
            f"{name} shape {got} does not match {cname} {_shape_of(coords, batched)}: "
            "give one label per point"
        )
    for i, (lab, c) in enumerate(zip(entries, coords)):
        if lab.shape != c.shape[:1]:
            raise ValueError(
                f"{name}[{i}] shape {tuple(lab.shape)} does not match {cname}[{i}] shape "
                f"{tuple(c.shape)}: give one label per point"
            )
    return [check_point_labels(lab, name, "point label") for lab in entries]


def _boxes(box: Prompt, name: str) -> tuple[torch.Tensor, bool]:
    """(B, 4) float32 XYXY boxes, and whether one box (4,) was given."""
    read = _entries(box, name)
    if isinstance(read, list):
        bad = next((i for i, b in enumerate(read) if tuple(b.shape) != (4,)), None)
        if bad is not None:
            raise ValueError(
                f"{name}[{bad}] must be 4 numbers in XYXY (x0, y0, x1, y1); "
                f"got shape {tuple(read[bad].shape)}"
            )
        read = torch.stack([b.float() for b in read])
    boxes = read.float()
    if boxes.ndim == 1:
        boxes = boxes[None]
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(
            f"{name} must have shape (4,) or (B, 4) in XYXY (x0, y0, x1, y1); "
            f"got shape {tuple(read.shape)}"
        )
    return boxes, read.ndim == 1


def _indexed(prefix: str) -> Callable[[int], str]:
    return lambda k: f"{prefix}[{k}]"


def box_corner_name(name: str, single: bool) -> Callable[[int], str]:
    """Names of the corners of ``name`` (one box, or (B, 4)) as rows 2b, 2b + 1."""

    def corner(k: int) -> str:
        which = "(x0, y0)" if k % 2 == 0 else "(x1, y1)"
        return f"{name if single else f'{name}[{k // 2}]'} corner {which}"

    return corner


def _masks(mask_input: Prompt, name: str, low: int) -> torch.Tensor:
    """(B, 1, low, low) float32 mask logits."""
    read = _entries(mask_input, name)
    if isinstance(read, list):
        if len({tuple(m.shape) for m in read}) > 1:
            shapes = [tuple(m.shape) for m in read]
            raise ValueError(f"{name} entries have different shapes: {shapes}")
        read = torch.stack([m.float() for m in read])
    masks = read.float()
    if masks.ndim == 3:
        masks = masks[None]
    if masks.ndim != 4 or masks.shape[1:] != (1, low, low):
        raise ValueError(
            f"{name} must be low-res logits of shape (1, {low}, {low}) or "
            f"(B, 1, {low}, {low}), e.g. low_res_masks of a previous predict; "
            f"got shape {tuple(read.shape)}"
        )
    if not torch.isfinite(masks).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return masks


def read_prompts(
    point_coords: Prompt | None,
    point_labels: Prompt | None,
    box: Prompt | None,
    mask_input: Prompt | None,
    *,
    size: tuple[int, int],
    normalized: bool,
    low_res: int,
    names: tuple[str, str, str, str] = ("point_coords", "point_labels", "box", "mask_input"),
) -> ImagePrompts:
    """Check the prompts of one image of ``size`` (W, H) (coordinates in [0, 1] when
    ``normalized``) and read them into :class:`ImagePrompts`. ``names`` are the arguments'
    names in messages. ValueError (TypeError for non-numbers) on anything that is not a
    prompt, before any work is done."""
    cname, lname, bname, mname = names
    points = None
    if point_coords is not None:
        if point_labels is None:
            raise ValueError(f"{lname} must be given with {cname}")
        coords, batched = _coords(point_coords, cname)
        labels = _labels(point_labels, lname, coords, batched, cname)
        for i, c in enumerate(coords):
            prefix = f"{cname}[{i}]" if batched else cname
            check_prompt_points(c, _indexed(prefix), size, normalized)
        points = list(zip(coords, labels))
    elif point_labels is not None:
        raise ValueError(f"{lname} given without {cname}")
    boxes = None
    if box is not None:
        boxes, single = _boxes(box, bname)
        check_prompt_points(boxes.reshape(-1, 2), box_corner_name(bname, single), size, normalized)
        if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
            raise ValueError(f"{bname} must be XYXY with x1 >= x0 and y1 >= y0")
    masks = None if mask_input is None else _masks(mask_input, mname, low_res)
    if points is not None and boxes is not None and len(points) != boxes.shape[0]:
        raise ValueError(
            f"{boxes.shape[0]} boxes but {len(points)} sets of points: "
            "give one set of points per box"
        )
    count = len(points) if points is not None else None if boxes is None else len(boxes)
    if masks is not None and count is not None and masks.shape[0] not in (1, count):
        raise ValueError(
            f"{mname} has {masks.shape[0]} masks for {count} prompts: give one mask per "
            "prompt, or one for all"
        )
    return ImagePrompts(points, boxes, masks)

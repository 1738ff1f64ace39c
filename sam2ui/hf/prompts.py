"""Nested prompt lists as transformers' processors take them: checked, padded, scaled.

Points are ``[image][object][point][x, y]``, labels ``[image][object][point]`` and boxes
``[image][box][x0, y0, x1, y1]``, as lists, numpy arrays or tensors of that depth. Ragged
lists are padded to the longest entry of each level with the padding value -10 (coordinates
and labels alike), which the model reads as "no point"; boxes cannot be padded. Errors name the
argument, the level and the first entry that is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["BOXES", "LABELS", "PAD_VALUE", "POINTS", "PromptSpec", "read_nested", "scale_coords"]

PAD_VALUE = -10


class PromptSpec:
    """One nested argument: its name, the names of its levels and its leaf width."""

    def __init__(self, name: str, levels: tuple[str, ...], width: int | None) -> None:
        self.name = name
        self.levels = levels  # outermost first; the last one holds numbers
        self.width = width  # how many numbers the innermost list holds (None: any)

    @property
    def depth(self) -> int:
        return len(self.levels)

    def layout(self) -> str:
        return "[" + ", ".join(self.levels) + "]"


POINTS = PromptSpec(
    "input_points", ("image level", "object level", "point level", "point coordinates"), 2
)
LABELS = PromptSpec("input_labels", ("image level", "object level", "point level"), None)
BOXES = PromptSpec("input_boxes", ("image level", "box level", "box coordinates"), 4)


def _where(spec: PromptSpec, path: Sequence[int]) -> str:
    return spec.name + "".join(f"[{i}]" for i in path)


def _as_lists(value: Any, spec: PromptSpec) -> Any:
    """Arrays and tensors become nested lists after their number of dimensions is checked."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.ndim != spec.depth:
            raise ValueError(
                f"{spec.name} must have {spec.depth} dimensions {spec.layout()}; "
                f"got a {type(value).__name__} of shape {tuple(value.shape)}"
            )
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
        return value.tolist()
    return value


def _check(value: Any, spec: PromptSpec, level: int, path: list[int]) -> None:
    """Raise ValueError at the first entry whose nesting differs from ``spec``."""
    where = _where(spec, path)
    if level == spec.depth - 1:  # the innermost list: numbers
        if not isinstance(value, (list, tuple)):
            raise ValueError(
                f"{where} must be a list ({spec.levels[level]} of {spec.layout()}), got "
                f"{value!r}: {spec.name} needs {spec.depth} levels of nesting"
            )
        for i, item in enumerate(value):
            if isinstance(item, (list, tuple, np.ndarray, torch.Tensor)):
                raise ValueError(
                    f"{_where(spec, [*path, i])} is a list where a number was expected: "
                    f"{spec.name} has more than {spec.depth} levels of nesting "
                    f"{spec.layout()}"
                )
            if isinstance(item, bool) or not isinstance(item, (int, float, np.number)):
                raise ValueError(f"{_where(spec, [*path, i])} must be a number, got {item!r}")
        if spec.width is not None and len(value) != spec.width:
            raise ValueError(
                f"{where} has {len(value)} numbers; the {spec.levels[level]} of {spec.name} "
                f"holds {spec.width}"
            )
        return
    if not isinstance(value, (list, tuple)):
        raise ValueError(
            f"{where} must be a list ({spec.levels[level]} of {spec.layout()}), got {value!r}: "
            f"{spec.name} has fewer than {spec.depth} levels of nesting"
        )
    for i, item in enumerate(value):
        _check(item, spec, level + 1, [*path, i])


def _depth(value: Any) -> int:
    """Levels of nesting along the first entries (a number is 0, an empty list 1)."""
    depth = 0
    while isinstance(value, (list, tuple)):
        depth += 1
        if not value:
            break
        value = value[0]
    return depth


def _max_sizes(value: Any, depth: int) -> list[int]:
    """The longest list at each level above the numbers (depth - 1 levels)."""
    sizes = [0] * (depth - 1)

    def walk(node: Any, level: int) -> None:
        if level >= depth - 1:
            return
        sizes[level] = max(sizes[level], len(node))
        for item in node:
            walk(item, level + 1)

    walk(value, 0)
    return sizes


def _pad(value: Any, sizes: list[int], leaf: int, level: int = 0) -> list[Any]:
    """``value`` padded with PAD_VALUE to ``sizes`` at each level (leaf lists of ``leaf``)."""
    if level == len(sizes):
        return list(value) if leaf else value
    out = [_pad(item, sizes, leaf, level + 1) for item in value]
    missing = sizes[level] - len(out)
    if missing > 0:
        filler = _filled(sizes[level + 1 :], leaf)
        out.extend(_filled_copy(filler) for _ in range(missing))
    return out


def _filled(sizes: list[int], leaf: int) -> Any:
    if not sizes:
        return [PAD_VALUE] * leaf if leaf else PAD_VALUE
    return [_filled(sizes[1:], leaf) for _ in range(sizes[0])]


def _filled_copy(value: Any) -> Any:
    return [_filled_copy(v) for v in value] if isinstance(value, list) else value


def read_nested(value: Any, spec: PromptSpec, *, pad: bool) -> tuple[torch.Tensor, list[int]]:
    """A checked nested prompt as a padded float32 tensor, and its padded sizes per level.

    Labels keep their innermost list as numbers to pad (their ``width`` is None); points and
    boxes pad whole coordinate pairs. With ``pad=False`` (boxes) every list of a level must
    have the same length.
    """
    value = _as_lists(value, spec)
    got = _depth(value)
    try:
        _check(value, spec, 0, [])
    except ValueError as exc:
        if got != spec.depth:
            raise ValueError(
                f"{spec.name} must be nested {spec.depth} levels deep {spec.layout()}; got "
                f"{got} levels ({exc})"
            ) from None
        raise
    if spec.width is None:  # labels: the innermost lists are what is padded
        sizes = _max_sizes(value, spec.depth + 1)
        leaf = 0
    else:
        sizes = _max_sizes(value, spec.depth)
        leaf = spec.width
    if not pad:
        for level in range(1, len(sizes)):
            _require_equal(value, spec, level)
    padded = _pad(value, sizes, leaf)
    return torch.tensor(padded, dtype=torch.float32), sizes


def _require_equal(value: Any, spec: PromptSpec, level: int) -> None:
    lengths: list[tuple[list[int], int]] = []

    def walk(node: Any, depth: int, path: list[int]) -> None:
        if depth == level:
            lengths.append((path, len(node)))
            return
        for i, item in enumerate(node):
            walk(item, depth + 1, [*path, i])

    walk(value, 0, [])
    first_path, first = lengths[0]
    for path, n in lengths[1:]:
        if n != first:
            raise ValueError(
                f"{_where(spec, path)} has {n} entries but {_where(spec, first_path)} has "
                f"{first}: every {spec.levels[level - 1]} of {spec.name} needs the same number "
                "(boxes cannot be padded)"
            )


def scale_coords(
    coords: torch.Tensor, original_sizes: Sequence[Sequence[int]], target: int, *, boxes: bool
) -> torch.Tensor:
    """Pixel coordinates of each image (first dimension) scaled to the ``target`` x ``target``
    model input; points that are padding (both coordinates -10) stay as they are."""
    out = coords.clone()
    for i, (height, width) in enumerate(original_sizes):
        pairs = out[i].reshape(-1, 2, 2) if boxes else out[i]
        scaled = pairs.clone()
        scaled[..., 0] = scaled[..., 0] * (target / width)
        scaled[..., 1] = scaled[..., 1] * (target / height)
        if not boxes:
            keep = (pairs != PAD_VALUE).all(dim=-1, keepdim=True)
            scaled = torch.where(keep.expand_as(scaled), scaled, pairs)
        out[i] = scaled.reshape(out[i].shape)
    return out

"""The automatic mask generator's machinery: per-mask records, point grids, crops, and the
filters it applies (stability score, mask boxes and non-maximum suppression).

Coordinates: points are (x, y) pixels; boxes are XYXY in pixel units, with the right/bottom
edge *inclusive* for boxes derived from masks (as the reference does). Crop boxes are XYXY
ints in pixels of the original image, max corner exclusive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import product
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "MaskRecords",
    "batched_mask_to_box",
    "batched_nms",
    "box_area",
    "box_xyxy_to_xywh",
    "build_all_layer_point_grids",
    "build_point_grid",
    "calculate_stability_score",
    "generate_crop_boxes",
    "is_box_near_crop_edge",
    "nms",
    "uncrop_boxes_xyxy",
    "uncrop_masks",
    "uncrop_points",
]

# ---------------------------------------------------------------------------------------------
# Batched per-mask records
# ---------------------------------------------------------------------------------------------

Column = torch.Tensor | np.ndarray | list[Any]


class MaskRecords:
    """Named columns of per-mask data (tensors, arrays or lists) sharing their first axis."""

    def __init__(self, **columns: Column) -> None:
        self._cols: dict[str, Column] = {}
        for name, col in columns.items():
            self[name] = col

    def __setitem__(self, name: str, col: Column) -> None:
        if not isinstance(col, (torch.Tensor, np.ndarray, list)):
            raise TypeError(f"column {name!r} must be a tensor, array or list, not {type(col)}")
        self._cols[name] = col

    def __getitem__(self, name: str) -> Any:
        return self._cols[name]

    def __delitem__(self, name: str) -> None:
        del self._cols[name]

    def __contains__(self, name: object) -> bool:
        return name in self._cols

    def __len__(self) -> int:
        return len(next(iter(self._cols.values()))) if self._cols else 0

    def keys(self) -> list[str]:
        return list(self._cols)

    def filter(self, keep: torch.Tensor) -> None:
        """Keep the rows selected by a bool mask or, in that order, by int64 indices."""
        keep_np = keep.detach().cpu().numpy()
        for name, col in self._cols.items():
            if isinstance(col, torch.Tensor):
                self._cols[name] = col[keep.to(col.device)]
            elif isinstance(col, np.ndarray):
                self._cols[name] = col[keep_np]
            else:
                rows = np.flatnonzero(keep_np) if keep_np.dtype == bool else keep_np
                self._cols[name] = [col[i] for i in rows]

    def cat(self, other: MaskRecords) -> None:
        """Append the rows of ``other`` (columns missing here are taken over). Rows are
        shared, not copied: list items (RLE dicts) are the same objects in both."""
        for name, col in other._cols.items():
            mine = self._cols.get(name)
            if mine is None:
                self._cols[name] = list(col) if isinstance(col, list) else col
            elif isinstance(mine, torch.Tensor) and isinstance(col, torch.Tensor):
                self._cols[name] = torch.cat([mine, col.to(mine.device)])
            elif isinstance(mine, np.ndarray) and isinstance(col, np.ndarray):
                self._cols[name] = np.concatenate([mine, col])
            elif isinstance(mine, list) and isinstance(col, list):
                self._cols[name] = mine + col
            else:
                raise TypeError(f"column {name!r}: cannot append {type(col)} to {type(mine)}")

    def to_numpy(self) -> None:
        """Tensors become float32 numpy arrays on the CPU (as the reference's records)."""
        for name, col in self._cols.items():
            if isinstance(col, torch.Tensor):
                self._cols[name] = col.float().detach().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Point grids and crops
# ---------------------------------------------------------------------------------------------


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``(n*n, 2)`` float64 (x, y) points at cell centres of an n x n grid over [0, 1]^2.

    x varies fastest.
    """
    half_cell = 1 / (2 * n_per_side)
    centres = np.linspace(half_cell, 1 - half_cell, n_per_side)
    xs, ys = np.meshgrid(centres, centres)
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def build_all_layer_point_grids(
    n_per_side: int, n_layers: int, scale_per_layer: int
) -> list[np.ndarray]:
    """Grids for crop layers 0..n_layers; layer i has ``int(n / scale**i)`` points a side."""
    return [build_point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def generate_crop_boxes(
    im_size: tuple[int, int], n_layers: int, overlap_ratio: float
) -> tuple[list[list[int]], list[int]]:
    """XYXY crop boxes (ints) and their layer index: the whole image, then layer i >= 1 as a
    2**i x 2**i grid of overlapping crops. ``im_size`` is (H, W)."""
    im_h, im_w = im_size
    short_side = min(im_h, im_w)
    boxes, layers = [[0, 0, im_w, im_h]], [0]
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = math.ceil((overlap * (per_side - 1) + im_w) / per_side)
        crop_h = math.ceil((overlap * (per_side - 1) + im_h) / per_side)
        x0s = [int((crop_w - overlap) * i) for i in range(per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, im_w), min(y0 + crop_h, im_h)])
            layers.append(layer)
    return boxes, layers


def uncrop_boxes_xyxy(boxes: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """Boxes ``(..., 4)`` from crop pixels to image pixels."""
    x0, y0 = crop_box[:2]
    return boxes + torch.tensor([x0, y0, x0, y0], device=boxes.device)


def uncrop_points(points: torch.Tensor, crop_box: Sequence[int]) -> torch.Tensor:
    """Points ``(..., 2)`` (x, y) from crop pixels to image pixels."""
    x0, y0 = crop_box[:2]
    return points + torch.tensor([x0, y0], device=points.device)


def uncrop_masks(
    masks: torch.Tensor, crop_box: Sequence[int], orig_h: int, orig_w: int
) -> torch.Tensor:
    """Masks ``(..., h, w)`` of a crop, zero-padded to ``(..., orig_h, orig_w)``."""
    x0, y0, x1, y1 = crop_box
    if (x0, y0, x1, y1) == (0, 0, orig_w, orig_h):
        return masks
    return F.pad(masks, (x0, orig_w - x1, y0, orig_h - y1), value=0)


def is_box_near_crop_edge(
    boxes: torch.Tensor, crop_box: Sequence[int], orig_box: Sequence[int], atol: float = 20.0
) -> torch.Tensor:
    """Bool ``(N,)``: an XYXY box (crop pixels) lies within ``atol`` of a crop side that is
    not also a side of the original image."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    boxes = uncrop_boxes_xyxy(boxes, crop_box).float()
    near_crop = (boxes - crop).abs() <= atol
    near_image = (boxes - orig).abs() <= atol
    return (near_crop & ~near_image).any(dim=1)


# ---------------------------------------------------------------------------------------------
# Filters: stability score, mask boxes and non-maximum suppression
# ---------------------------------------------------------------------------------------------


def calculate_stability_score(
    masks: torch.Tensor, mask_threshold: float, threshold_offset: float
) -> torch.Tensor:
    """IoU between the masks binarised at ``threshold +/- offset``, for logits ``(..., H, W)``.

    The stricter mask lies inside the looser one, so the IoU is the ratio of their areas.
    Areas are summed along W in int16 and then along H in int32, like the reference, so that
    scores (and threshold decisions) match it bit for bit. Returns float32 ``(...)``.
    """
    strict = (masks > (mask_threshold + threshold_offset)).sum(-1, dtype=torch.int16)
    loose = (masks > (mask_threshold - threshold_offset)).sum(-1, dtype=torch.int16)
    return strict.sum(-1, dtype=torch.int32) / loose.sum(-1, dtype=torch.int32)


def batched_mask_to_box(masks: torch.Tensor) -> torch.Tensor:
    """XYXY boxes (int64, max corner inclusive) of bool masks ``(..., H, W)`` -> ``(..., 4)``.

    Empty masks give ``[0, 0, 0, 0]``.
    """
    h, w = masks.shape[-2:]
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, dtype=torch.int64, device=masks.device)
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    y0 = torch.where(rows, ys, h).amin(dim=-1)
    y1 = torch.where(rows, ys, -1).amax(dim=-1)
    x0 = torch.where(cols, xs, w).amin(dim=-1)
    x1 = torch.where(cols, xs, -1).amax(dim=-1)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1)
    return torch.where(rows.any(dim=-1, keepdim=True), boxes, 0)


def box_xyxy_to_xywh(boxes: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """XYXY -> XYWH on the last axis (``w = x1 - x0``), same type and dtype as the input."""
    if isinstance(boxes, torch.Tensor):
        return torch.cat([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], dim=-1)
    return np.concatenate([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], axis=-1)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Area ``(x1 - x0) * (y1 - y0)`` of XYXY boxes ``(N, 4)``, in the boxes' dtype."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression with torchvision's semantics.

    Boxes ``(N, 4)`` XYXY are visited by decreasing score (stable on ties); a box is dropped
    when its IoU with an already kept box is > ``iou_threshold``. IoU is computed in the
    boxes' dtype with torchvision's formula, so decisions at the threshold agree. Returns the
    kept indices (int64, on the boxes' device) by decreasing score.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order]
    areas = box_area(b)
    suppress = np.empty((n, n), dtype=bool)
    chunk = max(1, (1 << 24) // n)  # bounds the temporary IoU block to 64 MB
    for i in range(0, n, chunk):
        bi = b[i : i + chunk, None, :]
        wh = (
            torch.minimum(bi[..., 2:], b[None, :, 2:]) - torch.maximum(bi[..., :2], b[None, :, :2])
        ).clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]
        iou = inter / (areas[i : i + chunk, None] + areas[None, :] - inter)
        suppress[i : i + chunk] = (iou > iou_threshold).cpu().numpy()
    removed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if not removed[i]:
            keep.append(i)
            removed |= suppress[i]
    return order[torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)]


def batched_nms(
    boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """NMS applied independently per category ``idxs`` (torchvision's ``batched_nms``).

    Boxes of different categories are shifted apart by ``idxs * (max coordinate + 1)`` so a
    single pass never compares them. Returns kept indices by decreasing score.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)

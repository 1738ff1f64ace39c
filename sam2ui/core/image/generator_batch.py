"""One batch of grid points through the automatic mask generator: prompt, filter, encode.

The reference upsamples every candidate mask of a batch (points x 3 masks) to the crop size
in float32 before its first filter, though the predicted-IoU filter needs no pixels, and it
keeps them all in memory at once (1.6 GB for 64 points on a 1080p image). Here the masks
stay at the decoder's 256 x 256 until the IoU filter has run, and only the masks that pass
it are upsampled, a few at a time. Every decision is the reference's, in its order, on the
same float32 values: upsampling is per mask the same ``F.interpolate``, the stability score
the same int16/int32 sums, and each filter keeps or drops one mask by its own values only,
so moving the IoU filter first and cutting the rest into chunks changes no record.

A predictor without ``predict_low_res`` (the reference's, behind an adapter) is prompted
through ``predict_torch`` and its full-size logits go through the same filters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sam2ui.core.masks import masks_to_rle

from .generator_parts import (
    MaskRecords,
    batched_mask_to_box,
    calculate_stability_score,
    is_box_near_crop_edge,
    uncrop_masks,
)
from .upsample import upsample_logits

__all__ = ["BatchFilters", "process_batch"]

# Float32 pixels of the upsampled logits held at once (128 MB).
CHUNK_PIXELS = 1 << 25


@dataclass(frozen=True)
class BatchFilters:
    """The generator's settings that act on one batch of points."""

    points_per_batch: int
    pred_iou_thresh: float
    stability_score_thresh: float
    stability_score_offset: float
    mask_threshold: float
    use_m2m: bool
    multimask_output: bool


@dataclass
class _Candidates:
    """Masks of one batch before any pixel is looked at: ``logits`` (M, h, w) to be
    upsampled to the crop size by ``upsample`` (or already at that size), IoU predictions
    (M,) and the prompt point (M, 2) of each."""

    logits: torch.Tensor
    iou_preds: torch.Tensor
    points: torch.Tensor
    upsample: Callable[[torch.Tensor], torch.Tensor]


def _decoder(predictor: Any) -> tuple[Callable[..., Any], bool]:
    """A function ``(points, labels, mask_input, multimask) -> (logits, iou, low_res)`` and
    whether its logits still need upsampling."""
    low_res = getattr(predictor, "predict_low_res", None)
    if callable(low_res):

        def decode_low(points: Any, labels: Any, mask_input: Any, multimask: bool) -> Any:
            return low_res(points, labels, mask_input=mask_input, multimask_output=multimask)

        return decode_low, True

    def decode_full(points: Any, labels: Any, mask_input: Any, multimask: bool) -> Any:
        return predictor.predict_torch(
            points, labels, mask_input=mask_input, multimask_output=multimask, return_logits=True
        )

    return decode_full, False


def _candidates(
    predictor: Any, points: np.ndarray, crop_size: tuple[int, int], f: BatchFilters
) -> _Candidates:
    decode, needs_upsampling = _decoder(predictor)
    pts = torch.as_tensor(points, dtype=torch.float32, device=predictor.device)
    in_points = predictor.transform_coords(pts, normalize=True, orig_hw=crop_size)
    labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
    logits, iou_preds, low_res = decode(
        in_points[:, None, :], labels[:, None], None, f.multimask_output
    )
    per_point = logits.shape[1]
    logits, iou_preds = logits.flatten(0, 1), iou_preds.flatten(0, 1)
    mask_points = pts.repeat_interleave(per_point, dim=0)
    if f.use_m2m:
        # Every mask is refined once, before any filter, prompted by its point and its own
        # low-resolution logits, in batches of points_per_batch masks.
        low_res = low_res.flatten(0, 1)
        in_points = predictor.transform_coords(mask_points, normalize=True, orig_hw=crop_size)
        labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
        parts = []
        for i in range(0, len(in_points), f.points_per_batch):
            s = slice(i, i + f.points_per_batch)
            parts.append(decode(in_points[s, None, :], labels[s, None], low_res[s, None], False))
        logits = torch.cat([p[0] for p in parts]).squeeze(1)
        iou_preds = torch.cat([p[1] for p in parts]).squeeze(1)
    if needs_upsampling:

        def upsample(x: torch.Tensor) -> torch.Tensor:
            return upsample_logits(x[:, None], crop_size)[:, 0]

    else:

        def upsample(x: torch.Tensor) -> torch.Tensor:
            return x

    return _Candidates(logits, iou_preds, mask_points, upsample)


def process_batch(
    predictor: Any,
    points: np.ndarray,
    crop_size: tuple[int, int],
    crop_box: list[int],
    orig_size: tuple[int, int],
    f: BatchFilters,
) -> MaskRecords:
    """The records of one batch of points ``(K, 2)`` (crop pixels) that pass the filters:
    ``iou_preds``, ``points``, ``stability_score``, ``boxes`` (XYXY, crop pixels) and
    ``rles`` (uncompressed, at the original image size), in the reference's order."""
    orig_h, orig_w = orig_size
    c = _candidates(predictor, points, crop_size, f)
    keep = torch.arange(len(c.iou_preds), device=c.iou_preds.device)
    if f.pred_iou_thresh > 0.0:
        keep = keep[c.iou_preds > f.pred_iou_thresh]
    h, w = crop_size
    chunk = max(1, CHUNK_PIXELS // max(1, h * w))
    kept: list[torch.Tensor] = []
    scores: list[torch.Tensor] = []
    boxes: list[torch.Tensor] = []
    rles: list[dict[str, Any]] = []
    for i in range(0, len(keep), chunk):
        idx = keep[i : i + chunk]
        logits = c.upsample(c.logits[idx])
        stability = calculate_stability_score(logits, f.mask_threshold, f.stability_score_offset)
        if f.stability_score_thresh > 0.0:
            stable = stability >= f.stability_score_thresh
            idx, stability, logits = idx[stable], stability[stable], logits[stable]
        masks = logits > f.mask_threshold
        del logits
        mask_boxes = batched_mask_to_box(masks)
        inside = ~is_box_near_crop_edge(mask_boxes, crop_box, [0, 0, orig_w, orig_h])
        if not bool(inside.all()):
            idx, stability, masks, mask_boxes = (
                idx[inside],
                stability[inside],
                masks[inside],
                mask_boxes[inside],
            )
        kept.append(idx)
        scores.append(stability)
        boxes.append(mask_boxes)
        rles.extend(masks_to_rle(uncrop_masks(masks, crop_box, orig_h, orig_w)))
    if not kept:
        return MaskRecords()
    rows = torch.cat(kept)
    return MaskRecords(
        iou_preds=c.iou_preds[rows],
        points=c.points[rows],
        stability_score=torch.cat(scores),
        boxes=torch.cat(boxes),
        rles=rles,
    )

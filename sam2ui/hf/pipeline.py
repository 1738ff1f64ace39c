"""``pipeline("mask-generation", model=...)``: "segment everything" with transformers' call.

The work is the engine's :class:`~sam2ui.core.SAM2AutomaticMaskGenerator` (Meta's automatic
mask generator: a grid of clicks, filters on predicted IoU and stability, NMS); this module
maps transformers' arguments onto it and returns what transformers' pipeline returns.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import torch

from sam2ui.core import SAM2AutomaticMaskGenerator, SAM2ImagePredictor, load_image

from .modeling import Sam2Model

__all__ = ["MaskGenerationPipeline", "pipeline"]


def _device(device: Any) -> str | torch.device | None:
    """transformers' device argument: an int is a CUDA device index, -1 the CPU."""
    if isinstance(device, int):
        return "cpu" if device < 0 else f"cuda:{device}"
    return device


def _picture(image: Any, timeout: float | None) -> np.ndarray:
    """An RGB uint8 array from a path, an http(s) URL, a PIL image or an array."""
    if isinstance(image, (str, os.PathLike)):
        text = os.fspath(image)
        if text.startswith(("http://", "https://")):
            from urllib.request import urlopen

            from PIL import Image

            with urlopen(text, timeout=timeout) as response:
                data = response.read()
            return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        return load_image(text)
    if hasattr(image, "convert"):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"images must be RGB uint8 (H, W, 3), got {array.dtype} {array.shape}")
    return array


class MaskGenerationPipeline:
    """``generator(image, points_per_batch=64, ...)`` -> ``{"masks": [...], "scores": ...}``.

    ``masks``: one (H, W) bool tensor per mask, ``scores``: their predicted IoU (float32),
    best first within NMS order; ``output_rle_mask`` / ``output_bboxes_mask`` add
    ``rle_mask`` (uncompressed run lengths) and ``bounding_boxes`` (XYXY pixels).
    """

    def __init__(self, model: Sam2Model) -> None:
        self.model = model

    def __call__(
        self,
        image: Any,
        *,
        points_per_batch: int | None = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1,
        crops_nms_thresh: float = 0.7,
        crops_n_layers: int = 0,
        crop_overlap_ratio: float = 512 / 1500,
        points_per_crop: int = 32,
        crop_n_points_downscale_factor: int = 1,
        output_rle_mask: bool = False,
        output_bboxes_mask: bool = False,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        if isinstance(image, list):
            return [self(one, points_per_batch=points_per_batch, pred_iou_thresh=pred_iou_thresh,
                         stability_score_thresh=stability_score_thresh,
                         stability_score_offset=stability_score_offset,
                         crops_nms_thresh=crops_nms_thresh, crops_n_layers=crops_n_layers,
                         crop_overlap_ratio=crop_overlap_ratio, points_per_crop=points_per_crop,
                         crop_n_points_downscale_factor=crop_n_points_downscale_factor,
                         output_rle_mask=output_rle_mask, output_bboxes_mask=output_bboxes_mask,
                         timeout=timeout) for one in image]  # fmt: skip
        if points_per_batch is None:
            points_per_batch = points_per_crop**2
        if points_per_batch <= 0:
            raise ValueError(
                f"points_per_batch must be >= 1 (or None for all), got {points_per_batch}"
            )
        generator = SAM2AutomaticMaskGenerator(
            SAM2ImagePredictor(self.model.core),
            points_per_side=points_per_crop,
            points_per_batch=points_per_batch,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
            stability_score_offset=float(stability_score_offset),
            box_nms_thresh=crops_nms_thresh,
            crop_n_layers=crops_n_layers,
            crop_nms_thresh=crops_nms_thresh,
            crop_overlap_ratio=crop_overlap_ratio,
            crop_n_points_downscale_factor=crop_n_points_downscale_factor,
            output_mode="uncompressed_rle" if output_rle_mask else "binary_mask",
        )
        picture = _picture(image, timeout)
        records = generator.generate(picture)
        if output_rle_mask:
            from sam2ui.core import rle_to_mask

            masks = [torch.from_numpy(rle_to_mask(r["segmentation"])) for r in records]
        else:
            masks = [torch.from_numpy(r["segmentation"]) for r in records]
        out: dict[str, Any] = {
            "masks": masks,
            "scores": torch.tensor([r["predicted_iou"] for r in records], dtype=torch.float32),
        }
        if output_rle_mask:
            out["rle_mask"] = [r["segmentation"] for r in records]
        if output_bboxes_mask:
            xywh = torch.tensor([r["bbox"] for r in records], dtype=torch.float32).reshape(-1, 4)
            out["bounding_boxes"] = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        return out


def pipeline(
    task: str,
    model: str | os.PathLike[str] | Sam2Model | None = None,
    device: Any = None,
    **kwargs: Any,
) -> MaskGenerationPipeline:
    """transformers' ``pipeline`` for the one task sam2ui does: ``"mask-generation"``.

    ``model``: a :class:`Sam2Model`, or a folder or hub id to load one from (``torch_dtype``
    / ``dtype`` pass on); ``device``: a device name, or an int as transformers takes it.
    """
    if task != "mask-generation":
        raise ValueError(f"sam2ui.hf.pipeline only does 'mask-generation', not {task!r}")
    if model is None:
        raise ValueError("give model=: a Sam2Model, a model folder or a hub id")
    if isinstance(model, Sam2Model):
        loaded = model if device is None else model.to(_device(device))
    else:
        loaded = Sam2Model.from_pretrained(model, device_map=_device(device), **kwargs)
    return MaskGenerationPipeline(loaded)

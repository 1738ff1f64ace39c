"""Automatic mask generation: prompt SAM 2 with a grid of points and keep the good masks.

Same algorithm, numerics and output order as the reference ``SAM2AutomaticMaskGenerator``:
per crop and per batch of points, predict masks (optionally refined once with their own
low-resolution logits), filter by predicted IoU and stability score, drop masks touching a
crop edge, de-duplicate by box NMS within each crop and then across crops.

Coordinates: points and boxes are in pixels of the original image, (x, y) order; boxes are
XYXY internally and XYWH in the returned records.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from sam2ui.core.masks import (
    RLE,
    masks_to_rle,
    remove_small_regions,
    rle_area,
    rle_to_coco,
    rle_to_mask,
)

from .generator_parts import (
    MaskRecords,
    batched_mask_to_box,
    batched_nms,
    box_area,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    generate_crop_boxes,
    is_box_near_crop_edge,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)

__all__ = ["SAM2AutomaticMaskGenerator"]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


class PromptPredictor(Protocol):
    """What the generator needs from an image predictor (``SAM2ImagePredictor``)."""

    @property
    def device(self) -> torch.device: ...

    def set_image(self, image: np.ndarray) -> None: ...

    def reset_predictor(self) -> None: ...

    def transform_coords(
        self, coords: torch.Tensor, normalize: bool = ..., orig_hw: tuple[int, int] | None = ...
    ) -> torch.Tensor: ...

    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = ...,
        mask_input: torch.Tensor | None = ...,
        multimask_output: bool = ...,
        return_logits: bool = ...,
        img_idx: int = ...,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


def _batches(batch_size: int, *columns: Any) -> Iterator[list[Any]]:
    n = len(columns[0])
    for i in range(0, n, batch_size):
        yield [c[i : i + batch_size] for c in columns]


class SAM2AutomaticMaskGenerator:
    """Generate masks for a whole image by prompting a predictor with a grid of points.

    ``predictor`` is a ``SAM2ImagePredictor`` (or anything with the same ``set_image`` /
    ``reset_predictor`` / ``transform_coords`` / ``predict_torch`` / ``device``). The keyword
    arguments and their defaults are the reference generator's:

    points_per_side / point_grids: exactly one is given; grids are ``(K, 2)`` arrays of (x, y)
    in [0, 1], one per crop layer. points_per_batch: points per forward pass.
    pred_iou_thresh, stability_score_thresh: filters in [0, 1] (0 disables).
    stability_score_offset: logit offset of the stability score. mask_threshold: logit cut.
    box_nms_thresh / crop_nms_thresh: IoU cut-offs of NMS within / across crops.
    crop_n_layers, crop_overlap_ratio, crop_n_points_downscale_factor: extra crop layers.
    min_mask_region_area: when > 0, the predictor fills holes and removes sprinkles up to that
    area (in low-resolution mask pixels) while generating, as the reference configures it.
    output_mode: "binary_mask", "uncompressed_rle" or "coco_rle". use_m2m: refine each mask
    once with its own low-resolution logits. multimask_output: three masks per point.
    """

    def __init__(
        self,
        predictor: PromptPredictor,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        use_m2m: bool = False,
        multimask_output: bool = True,
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"unknown output_mode {output_mode!r}; expected one of {OUTPUT_MODES}")
        for name, value in [
            ("pred_iou_thresh", pred_iou_thresh),
            ("stability_score_thresh", stability_score_thresh),
            ("box_nms_thresh", box_nms_thresh),
            ("crop_nms_thresh", crop_nms_thresh),
            ("crop_overlap_ratio", crop_overlap_ratio),
        ]:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        for name, count in [
            ("points_per_batch", points_per_batch),
            ("crop_n_points_downscale_factor", crop_n_points_downscale_factor),
        ]:
            if count < 1:
                raise ValueError(f"{name} must be >= 1, got {count}")
        if crop_n_layers < 0 or min_mask_region_area < 0:
            raise ValueError("crop_n_layers and min_mask_region_area must be >= 0")
        if points_per_side is not None:
            if points_per_side < 1:
                raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
            grids = build_all_layer_point_grids(
                points_per_side, crop_n_layers, crop_n_points_downscale_factor
            )
        else:
            assert point_grids is not None
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(grids) < crop_n_layers + 1 or any(g.ndim != 2 or g.shape[1] != 2 for g in grids):
                n = crop_n_layers + 1
                raise ValueError(
                    f"point_grids needs crop_n_layers + 1 = {n} arrays of shape (K, 2)"
                )
        self.predictor = predictor
        self.point_grids = grids
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.mask_threshold = mask_threshold
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.use_m2m = use_m2m
        self.multimask_output = multimask_output

    @classmethod
    def from_pretrained(cls, model_id_or_path: str, **kwargs: Any) -> SAM2AutomaticMaskGenerator:
        """Build the predictor with ``SAM2ImagePredictor.from_pretrained`` and wrap it.

        Keyword arguments naming a generator parameter configure the generator; the others
        go to the predictor (e.g. ``device``).
        """
        from .predictor import SAM2ImagePredictor

        own = set(inspect.signature(cls.__init__).parameters) - {"self", "predictor"}
        gen_kwargs = {k: v for k, v in kwargs.items() if k in own}
        pred_kwargs = {k: v for k, v in kwargs.items() if k not in own}
        return cls(
            SAM2ImagePredictor.from_pretrained(model_id_or_path, **pred_kwargs), **gen_kwargs
        )

    @torch.inference_mode()
    def generate(self, image: np.ndarray | Image.Image) -> list[dict[str, Any]]:
        """Masks of ``image`` (HWC uint8 RGB array or PIL image).

        Records come in NMS order: by predicted IoU within a crop, masks of smaller crops
        first when there are several crop layers. Each record has ``segmentation`` (``(H, W)``
        bool array, or an RLE dict per ``output_mode``), ``area`` (int pixels), ``bbox`` (XYWH
        floats), ``predicted_iou``, ``point_coords`` (``[[x, y]]`` image pixels),
        ``stability_score`` and ``crop_box`` (XYWH). The predictor's image is replaced (and
        reset at the end).
        """
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HWC RGB image, got shape {image.shape}")
        with self._predictor_cleanup():
            data = self._generate_masks(image)
        if len(data) == 0:
            return []
        rles: list[RLE] = data["rles"]
        if self.output_mode == "coco_rle":
            segmentations: list[Any] = [rle_to_coco(r) for r in rles]
        elif self.output_mode == "binary_mask":
            segmentations = [rle_to_mask(r) for r in rles]
        else:
            segmentations = rles
        boxes = box_xyxy_to_xywh(data["boxes"]).tolist()
        crop_boxes = box_xyxy_to_xywh(data["crop_boxes"]).tolist()
        return [
            {
                "segmentation": segmentations[i],
                "area": rle_area(rles[i]),
                "bbox": boxes[i],
                "predicted_iou": data["iou_preds"][i].item(),
                "point_coords": [data["points"][i].tolist()],
                "stability_score": data["stability_score"][i].item(),
                "crop_box": crop_boxes[i],
            }
            for i in range(len(rles))
        ]

    @contextmanager
    def _predictor_cleanup(self) -> Iterator[None]:
        # The reference builds its predictor with hole/sprinkle areas equal to
        # min_mask_region_area; ours is shared, so set them for the run and restore them.
        p = self.predictor
        if not (hasattr(p, "max_hole_area") and hasattr(p, "max_sprinkle_area")):
            if self.min_mask_region_area > 0:
                warnings.warn(
                    "the predictor has no max_hole_area/max_sprinkle_area; "
                    "min_mask_region_area is ignored",
                    stacklevel=3,
                )
            yield
            return
        saved = (p.max_hole_area, p.max_sprinkle_area)
        p.max_hole_area = p.max_sprinkle_area = self.min_mask_region_area
        try:
            yield
        finally:
            p.max_hole_area, p.max_sprinkle_area = saved

    def _generate_masks(self, image: np.ndarray) -> MaskRecords:
        orig_size = (int(image.shape[0]), int(image.shape[1]))
        crop_boxes, layer_idxs = generate_crop_boxes(
            orig_size, self.crop_n_layers, self.crop_overlap_ratio
        )
        data = MaskRecords()
        for crop_box, layer_idx in zip(crop_boxes, layer_idxs):
            data.cat(self._process_crop(image, crop_box, layer_idx, orig_size))
        if len(crop_boxes) > 1 and len(data) > 0:
            # Between crops, prefer the mask from the smaller crop.
            scores = (1 / box_area(data["crop_boxes"])).to(data["boxes"].device)
            categories = torch.zeros_like(data["boxes"][:, 0])
            data.filter(
                batched_nms(data["boxes"].float(), scores, categories, self.crop_nms_thresh)
            )
        data.to_numpy()
        return data

    def _process_crop(
        self, image: np.ndarray, crop_box: list[int], layer_idx: int, orig_size: tuple[int, int]
    ) -> MaskRecords:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1, :]
        crop_size = (int(crop.shape[0]), int(crop.shape[1]))
        self.predictor.set_image(crop)
        points = self.point_grids[layer_idx] * np.array(crop_size)[None, ::-1]
        data = MaskRecords()
        for (batch,) in _batches(self.points_per_batch, points):
            data.cat(self._process_batch(batch, crop_size, crop_box, orig_size))
        self.predictor.reset_predictor()
        if len(data) == 0:
            return MaskRecords()
        categories = torch.zeros_like(data["boxes"][:, 0])
        data.filter(
            batched_nms(data["boxes"].float(), data["iou_preds"], categories, self.box_nms_thresh)
        )
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        data["crop_boxes"] = torch.tensor([crop_box] * len(data), dtype=torch.int64).reshape(-1, 4)
        return data

    def _process_batch(
        self,
        points: np.ndarray,
        crop_size: tuple[int, int],
        crop_box: list[int],
        orig_size: tuple[int, int],
    ) -> MaskRecords:
        orig_h, orig_w = orig_size
        pred = self.predictor
        pts = torch.as_tensor(points, dtype=torch.float32, device=pred.device)
        in_points = pred.transform_coords(pts, normalize=True, orig_hw=crop_size)
        in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
        masks, iou_preds, low_res = pred.predict_torch(
            in_points[:, None, :],
            in_labels[:, None],
            multimask_output=self.multimask_output,
            return_logits=True,
        )
        data = MaskRecords(
            masks=masks.flatten(0, 1),
            iou_preds=iou_preds.flatten(0, 1),
            points=pts.repeat_interleave(masks.shape[1], dim=0),
            low_res_masks=low_res.flatten(0, 1),
        )
        del masks
        if self.use_m2m:
            # The refinement runs on every mask, before any filtering.
            in_points = pred.transform_coords(data["points"], normalize=True, orig_hw=crop_size)
            labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
            refined, ious = self._refine_with_m2m(in_points, labels, data["low_res_masks"])
            data["masks"], data["iou_preds"] = refined.squeeze(1), ious.squeeze(1)
        del data["low_res_masks"]
        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > self.pred_iou_thresh)
        data["stability_score"] = calculate_stability_score(
            data["masks"], self.mask_threshold, self.stability_score_offset
        )
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)
        data["masks"] = data["masks"] > self.mask_threshold
        data["boxes"] = batched_mask_to_box(data["masks"])
        keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not bool(keep.all()):
            data.filter(keep)
        data["rles"] = masks_to_rle(uncrop_masks(data["masks"], crop_box, orig_h, orig_w))
        del data["masks"]
        return data

    def _refine_with_m2m(
        self, points: torch.Tensor, labels: torch.Tensor, low_res_masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One more prediction per mask, prompted by its point and its own low-res logits.

        Returns masks ``(M, 1, H, W)`` logits at the crop size and IoU predictions ``(M, 1)``.
        """
        masks, ious = [], []
        for pts, lbl, low in _batches(self.points_per_batch, points, labels, low_res_masks):
            m, iou, _ = self.predictor.predict_torch(
                pts[:, None, :],
                lbl[:, None],
                mask_input=low[:, None, :],
                multimask_output=False,
                return_logits=True,
            )
            masks.append(m)
            ious.append(iou)
        return torch.cat(masks), torch.cat(ious)

    @staticmethod
    def postprocess_small_regions(
        records: MaskRecords, min_area: int, nms_thresh: float
    ) -> MaskRecords:
        """Fill holes and drop islands smaller than ``min_area`` in each RLE of ``records``,
        then re-run box NMS preferring unchanged masks. Edits ``records`` in place.

        Kept from the reference's API; like it, ``generate`` does not call this (SAM 2 relies
        on the predictor's low-resolution clean-up instead).
        """
        if len(records) == 0:
            return records
        new_masks, scores = [], []
        for rle in records["rles"]:
            mask, filled = remove_small_regions(rle_to_mask(rle), min_area, mode="holes")
            mask, cut = remove_small_regions(mask, min_area, mode="islands")
            new_masks.append(torch.as_tensor(mask))
            # Unchanged masks win the NMS below.
            scores.append(float(not (filled or cut)))
        masks = torch.stack(new_masks)
        boxes = batched_mask_to_box(masks)
        keep = batched_nms(
            boxes.float(), torch.as_tensor(scores), torch.zeros_like(boxes[:, 0]), nms_thresh
        )
        for i in keep.tolist():
            if scores[i] == 0.0:
                records["rles"][i] = masks_to_rle(masks[i][None])[0]
                records["boxes"][i] = boxes[i]
        records.filter(keep)
        return records

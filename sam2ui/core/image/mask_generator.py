"""Automatic mask generation: prompt SAM 2 with a grid of points and keep the good masks.

Same algorithm, numerics and output order as the reference ``SAM2AutomaticMaskGenerator``:
per crop and per batch of points, predict masks (optionally refined once with their own
low-resolution logits), filter by predicted IoU and stability score, drop masks touching a
crop edge, de-duplicate by box NMS within each crop and then across crops. One batch is
``generator_batch``'s work; this module runs the crops and batches, reports progress after
each batch and stops between batches when asked, keeping what it found.

Coordinates: points and boxes are in pixels of the original image, (x, y) order; boxes are
XYXY internally and XYWH in the returned records.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator, Sequence
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
from sam2ui.core.modeling.yielding import yield_point

from .generator_batch import BatchFilters, process_batch
from .generator_parts import (
    MaskRecords,
    batched_mask_to_box,
    batched_nms,
    box_area,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    generate_crop_boxes,
    uncrop_boxes_xyxy,
    uncrop_points,
)

__all__ = ["MaskGenerationCancelled", "SAM2AutomaticMaskGenerator"]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


class PromptPredictor(Protocol):
    """What the generator needs from an image predictor (``SAM2ImagePredictor``). One that
    also has ``predict_low_res`` (ours does) is asked for low-resolution logits, and only the
    masks that pass the predicted-IoU filter are upsampled (see ``generator_batch``)."""

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


class MaskGenerationCancelled(Exception):
    """:meth:`SAM2AutomaticMaskGenerator.generate` stopped early on ``should_stop``.

    ``records`` are the masks of the ``points_done`` grid points prompted before it stopped
    (of ``points_total``), filtered and de-duplicated as a full run's records are. Callers
    that keep partial results (the annotator) set ``object_ids`` to the objects they made.
    """

    def __init__(self, records: list[dict[str, Any]], points_done: int, points_total: int):
        super().__init__(
            f"mask generation stopped after {points_done} of {points_total} points "
            f"with {len(records)} masks"
        )
        self.records = records
        self.points_done = points_done
        self.points_total = points_total
        self.object_ids: list[int] = []


class _Count:
    """Progress of one run: grid points prompted, reported, and the stop check."""

    def __init__(
        self,
        progress: Callable[[int, int], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        self.progress = progress
        self.should_stop = should_stop
        self.done = self.total = 0
        self.stopped = False

    def stop(self) -> bool:
        if not self.stopped and self.should_stop is not None and self.should_stop():
            self.stopped = True
        return self.stopped

    def advance(self, points: int) -> None:
        self.done += points
        yield_point()  # between batches: clicks waiting for the model may run
        if self.progress is not None:
            self.progress(self.done, self.total)


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

    @property
    def _filters(self) -> BatchFilters:
        return BatchFilters(
            points_per_batch=self.points_per_batch,
            pred_iou_thresh=self.pred_iou_thresh,
            stability_score_thresh=self.stability_score_thresh,
            stability_score_offset=self.stability_score_offset,
            mask_threshold=self.mask_threshold,
            use_m2m=self.use_m2m,
            multimask_output=self.multimask_output,
        )

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
    def generate(
        self,
        image: np.ndarray | Image.Image,
        *,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Masks of ``image`` (HWC uint8 RGB array or PIL image).

        Records come in NMS order: by predicted IoU within a crop, masks of smaller crops
        first when there are several crop layers. Each record has ``segmentation`` (``(H, W)``
        bool array, or an RLE dict per ``output_mode``), ``area`` (int pixels), ``bbox`` (XYWH
        floats), ``predicted_iou``, ``point_coords`` (``[[x, y]]`` image pixels),
        ``stability_score`` and ``crop_box`` (XYWH). The predictor's image is replaced (and
        reset at the end).

        ``progress(done, total)`` is called after each batch of points with the grid points
        prompted so far, over every crop. ``should_stop()`` is asked before each batch; when
        it answers true, the run ends there and :class:`MaskGenerationCancelled` is raised,
        carrying the records of the points already prompted (de-duplicated as a full run's).
        """
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HWC RGB image, got shape {image.shape}")
        count = _Count(progress, should_stop)
        with self._predictor_cleanup():
            data = self._generate_masks(image, count)
        records = self._records(data)
        if count.stopped:
            raise MaskGenerationCancelled(records, count.done, count.total)
        return records

    def _records(self, data: MaskRecords) -> list[dict[str, Any]]:
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
        ious, stability = data["iou_preds"].tolist(), data["stability_score"].tolist()
        points = data["points"].tolist()
        return [
            {
                "segmentation": segmentations[i],
                "area": rle_area(rles[i]),
                "bbox": boxes[i],
                "predicted_iou": ious[i],
                "point_coords": [points[i]],
                "stability_score": stability[i],
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

    def _generate_masks(self, image: np.ndarray, count: _Count) -> MaskRecords:
        orig_size = (int(image.shape[0]), int(image.shape[1]))
        crop_boxes, layer_idxs = generate_crop_boxes(
            orig_size, self.crop_n_layers, self.crop_overlap_ratio
        )
        count.total = sum(len(self.point_grids[layer]) for layer in layer_idxs)
        data = MaskRecords()
        for crop_box, layer_idx in zip(crop_boxes, layer_idxs):
            if count.stop():
                break
            data.cat(self._process_crop(image, crop_box, layer_idx, orig_size, count))
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
        self,
        image: np.ndarray,
        crop_box: list[int],
        layer_idx: int,
        orig_size: tuple[int, int],
        count: _Count,
    ) -> MaskRecords:
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1, :]
        crop_size = (int(crop.shape[0]), int(crop.shape[1]))
        self.predictor.set_image(crop)
        points = self.point_grids[layer_idx] * np.array(crop_size)[None, ::-1]
        data = MaskRecords()
        try:
            for i in range(0, len(points), self.points_per_batch):
                if count.stop():
                    break
                batch = points[i : i + self.points_per_batch]
                data.cat(
                    process_batch(
                        self.predictor, batch, crop_size, crop_box, orig_size, self._filters
                    )
                )
                count.advance(len(batch))
        finally:
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

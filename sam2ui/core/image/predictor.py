"""Prompted segmentation of still images, with the API of the reference's SAM2ImagePredictor.

Coordinates are pixels (x, y) of the original image unless ``normalize_coords=False``, in which
case they are fractions of the image size in [0, 1]. Boxes are XYXY.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from sam2ui.core.loading.devices import resolve_device, resolve_dtype
from sam2ui.core.modeling import ImageFeatures, SAM2Model
from sam2ui.core.modeling.compiled import compile_model
from sam2ui.core.modeling.transformer import ImageKeys
from sam2ui.core.modeling.yielding import yield_point
from sam2ui.core.transforms import ImageLike, image_to_tensor, preprocess

from .prompt_input import ImagePrompts, Prompt, read_prompts
from .upsample import upsample_logits, upsample_masks

# Prompts decoded together on the CPU. Each prompt carries its own copy of the 64 x 64 image
# tokens through the decoder, so a batch of B prompts streams B of them through every layer;
# past a few prompts they no longer stay in cache and each prompt costs more (tiny model, 2
# quiet cores: 11 ms a prompt alone, 17 ms in batches of 8, 46 ms in a batch of 64). Very
# small batches lose on a busy machine instead, where every operator waits for descheduled
# threads (3 other jobs on the 2 cores: 280 ms alone, 220 ms by 8, 186 ms by 16). Results
# are the same up to float32 rounding (the kernels block rows differently).
CPU_DECODE_BATCH = 8


class SAM2ImagePredictor:
    """Compute an image's embedding once, then predict masks for any number of prompts.

    Args:
        sam_model: a loaded :class:`SAM2Model`.
        mask_threshold: logit threshold that turns mask logits into masks.
        max_hole_area: background regions up to this area (pixels of the 256x256 low-res mask)
            are filled. Works on every device (no compiled extension).
        max_sprinkle_area: foreground specks up to this area are removed.
        compile: compile the model's image encoder, memory encoder and memory attention with
            ``torch.compile`` (:func:`~sam2ui.core.modeling.compiled.compile_model`, in place,
            so every predictor on the model shares it). The first image after it is slow.
    """

    def __init__(
        self,
        sam_model: SAM2Model,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        compile: bool = False,
        **kwargs: Any,
    ) -> None:
        if not isinstance(sam_model, SAM2Model):
            raise TypeError(f"sam_model must be a SAM2Model, got {type(sam_model).__name__}")
        if compile:
            compile_model(sam_model)
        self.model = sam_model
        self.mask_threshold = float(mask_threshold)
        self.max_hole_area = float(max_hole_area)
        self.max_sprinkle_area = float(max_sprinkle_area)
        self._features: ImageFeatures | None = None
        self._orig_hw: list[tuple[int, int]] = []
        self._is_batch = False
        # Per image index: the decoder's prompt-independent work (see set_image).
        self._image_keys: dict[int, ImageKeys] = {}

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str = torch.float32,
        variant: str | None = None,
        **kwargs: Any,
    ) -> SAM2ImagePredictor:
        """Load a model by hub id (``facebook/sam2.1-hiera-tiny``), variant name or local
        checkpoint (Meta ``.pt``, or a transformers-format folder / ``.safetensors``).

        ``device`` defaults to cuda, then mps, then cpu; ``dtype`` is float32 or bfloat16.
        Meta's builder keywords (``mode``, ``hydra_overrides_extra``, ``apply_postprocessing``)
        act as in :func:`~sam2ui.core.loading.build.build_sam2`; other keyword arguments
        (mask_threshold, max_hole_area, ...) go to the predictor.
        """
        from sam2ui.core.loading.build import META_BUILDER_ARGS, load_for_predictor

        meta = {k: kwargs.pop(k) for k in META_BUILDER_ARGS if k in kwargs}
        built = load_for_predictor(
            model_id, video=False, variant=variant, device=resolve_device(device),
            dtype=resolve_dtype(dtype), **meta,
        )  # fmt: skip
        return cls(built.model, **kwargs)

    # ------------------------------------------------------------------ state
    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def orig_hw(self) -> list[tuple[int, int]]:
        """(H, W) of each image set, in order."""
        return list(self._orig_hw)

    @property
    def is_image_set(self) -> bool:
        return self._features is not None

    @property
    def features(self) -> ImageFeatures:
        if self._features is None:
            raise RuntimeError("no image is set: call set_image(...) or set_image_batch(...) first")
        return self._features

    def reset_predictor(self) -> None:
        """Forget the current image(s)."""
        self._features = None
        self._orig_hw = []
        self._is_batch = False
        self._image_keys = {}

    # ------------------------------------------------------------------ images
    @torch.inference_mode()
    def set_image(self, image: ImageLike) -> None:
        """Compute the embedding of one image: numpy (H, W[, C]) or PIL, any size.

        Grey, RGBA and 16-bit images are converted; float images must lie in [0, 1].
        """
        self._set_images([image_to_tensor(image)])
        self._is_batch = False
        # The decoder's prompt-independent work, here rather than on the first click (about
        # 3 ms of it on the CPU). Batches make theirs per image on first use, as they may hold
        # many images that are never prompted.
        self._image_keys[0] = self.model.decoder_image_keys(self._one_image(0))

    @torch.inference_mode()
    def set_image_batch(self, image_list: list[ImageLike]) -> None:
        """Compute the embeddings of several images (sizes may differ) in one batch."""
        if isinstance(image_list, np.ndarray) or not isinstance(image_list, (list, tuple)):
            raise TypeError("set_image_batch expects a list of images")
        if not image_list:
            raise ValueError("set_image_batch needs at least one image")
        self._set_images([image_to_tensor(img) for img in image_list])
        self._is_batch = True

    def _set_images(self, tensors: list[torch.Tensor]) -> None:
        self.reset_predictor()
        size = self.model.config.image_size
        batch = preprocess([t.to(self.device) for t in tensors], size)
        yield_point()
        self._features = self.model.image_features(batch)
        self._orig_hw = [(int(t.shape[1]), int(t.shape[2])) for t in tensors]

    def _one_image(self, idx: int) -> ImageFeatures:
        features = self.features
        return ImageFeatures(
            features.image_embed[idx : idx + 1], [f[idx : idx + 1] for f in features.high_res_feats]
        )

    def get_image_embedding(self) -> torch.Tensor:
        """The image embedding(s): (B, 256, 64, 64) float32."""
        return self.features.image_embed

    # ------------------------------------------------------------------ prompts
    def transform_coords(
        self, coords: torch.Tensor, normalize: bool = False, orig_hw: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Pixel (x, y) coordinates of an image of size ``orig_hw`` (or [0, 1] fractions when
        ``normalize`` is False) -> coordinates in the model's square input frame."""
        size = self.model.config.image_size
        if normalize:
            if orig_hw is None:
                raise ValueError("orig_hw is needed to normalise pixel coordinates")
            h, w = orig_hw
            # Divide by the size first, then scale, so rounding matches the reference exactly.
            coords = coords / torch.tensor([w, h], dtype=coords.dtype, device=coords.device)
        return coords * size

    def _read_prompts(
        self,
        point_coords: Prompt | None,
        point_labels: Prompt | None,
        box: Prompt | None,
        mask_input: Prompt | None,
        normalize_coords: bool,
        img_idx: int,
        batch: bool = False,
    ) -> ImagePrompts:
        """Checked prompts of image ``img_idx``; messages name the arguments of
        :meth:`predict_batch` (with the image index) when ``batch``."""
        h, w = self._orig_hw[img_idx]
        names = ("point_coords", "point_labels", "box", "mask_input")
        if batch:
            names = tuple(f"{name}_batch[{img_idx}]" for name in names)  # type: ignore[assignment]
        return read_prompts(
            point_coords, point_labels, box, mask_input, size=(w, h),
            normalized=not normalize_coords, low_res=self.model.config.low_res_size, names=names,
        )  # fmt: skip

    @torch.inference_mode()
    def predict(
        self,
        point_coords: Prompt | None = None,
        point_labels: Prompt | None = None,
        box: Prompt | None = None,
        mask_input: Prompt | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for the prompts on the current image.

        Args:
            point_coords: (N, 2) or (B, N, 2) pixel (x, y), or a list of B (N_i, 2) arrays
                for objects with different numbers of points; point_labels: (N,), (B, N) or
                a list of B (N_i,) arrays, 1 positive / 0 negative.
            box: (4,) or (B, 4) XYXY pixels; mask_input: (1, 256, 256) or (B, 1, 256, 256)
                logits from a previous prediction.
            Points and box corners must lie on the image, [0, W] x [0, H] (the border
            included); a ValueError names the first that does not (see
            :mod:`~sam2ui.core.image.prompt_input`).
            multimask_output: three candidate masks instead of one.
            return_logits: return mask logits instead of boolean masks.
            normalize_coords: coordinates are pixels (True) or [0, 1] fractions (False).

        Returns:
            masks (C, H, W) (or (B, C, H, W) for B prompts) bool, or float32 logits;
            iou_predictions (C,) or (B, C); low_res_masks (C, 256, 256) or (B, C, 256, 256).
        """
        if self._features is None:
            raise RuntimeError("an image must be set with set_image(...) before predict")
        idx = len(self._orig_hw) - 1
        prompts = self._read_prompts(
            point_coords, point_labels, box, mask_input, normalize_coords, idx
        )
        return self._predict_numpy(prompts, multimask_output, return_logits, normalize_coords, idx)

    @torch.inference_mode()
    def predict_batch(
        self,
        point_coords_batch: list[Prompt] | None = None,
        point_labels_batch: list[Prompt] | None = None,
        box_batch: list[Prompt] | None = None,
        mask_input_batch: list[Prompt] | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        normalize_coords: bool = True,
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """:meth:`predict` for each image of :meth:`set_image_batch`: lists indexed by image
        (each entry in any form :meth:`predict` takes). Every image's prompts are checked
        before any is decoded."""
        if self._features is None or not self._is_batch:
            raise RuntimeError("predict_batch needs images set with set_image_batch(...)")
        n = len(self._orig_hw)
        for name, values in (
            ("point_coords_batch", point_coords_batch),
            ("point_labels_batch", point_labels_batch),
            ("box_batch", box_batch),
            ("mask_input_batch", mask_input_batch),
        ):
            if values is not None and len(values) != n:
                raise ValueError(f"{name} has {len(values)} entries for {n} images")
        prompts = []  # every image's prompts are checked before any is decoded
        for i in range(n):
            prompts.append(
                self._read_prompts(
                    point_coords_batch[i] if point_coords_batch is not None else None,
                    point_labels_batch[i] if point_labels_batch is not None else None,
                    box_batch[i] if box_batch is not None else None,
                    mask_input_batch[i] if mask_input_batch is not None else None,
                    normalize_coords,
                    i,
                    batch=True,
                )
            )
        outs: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
        for i, image_prompts in enumerate(prompts):
            result = self._predict_numpy(
                image_prompts, multimask_output, return_logits, normalize_coords, i
            )
            for acc, value in zip(outs, result):
                acc.append(value)
        return outs

    def _predict_numpy(
        self,
        prompts: ImagePrompts,
        multimask_output: bool,
        return_logits: bool,
        normalize_coords: bool,
        img_idx: int,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        masks, iou, low_res = self._decode(
            prompts, multimask_output, return_logits, normalize_coords, img_idx
        )
        squeeze = masks.shape[0] == 1
        out = []
        for t in (masks, iou, low_res):
            t = t[0] if squeeze else t
            out.append(t.cpu().numpy() if t.dtype == torch.bool else t.float().cpu().numpy())
        return out[0], out[1], out[2]

    def _decode(
        self,
        prompts: ImagePrompts,
        multimask_output: bool,
        return_logits: bool,
        normalize_coords: bool,
        img_idx: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`predict_torch` on checked prompts. Objects with different numbers of points
        decode in groups of equal counts, then go back into the given order."""
        device, hw = self.device, self._orig_hw[img_idx]
        boxes = masks = None
        if prompts.boxes is not None:
            corners = prompts.boxes.to(device).reshape(-1, 2, 2)
            boxes = self.transform_coords(corners, normalize_coords, hw)
        if prompts.masks is not None:
            masks = prompts.masks.to(device)
        groups = prompts.groups() if prompts.points is not None else [[]]
        parts, order = [], []
        for rows in groups:
            coords = labels = None
            if rows:
                coords, labels = prompts.stacked_points(rows)
                coords = self.transform_coords(coords.to(device), normalize_coords, hw)
                labels = labels.to(device)
            pick = torch.tensor(rows, device=device)
            part_boxes = boxes if boxes is None or len(groups) == 1 else boxes[pick]
            part_masks = masks
            if masks is not None and masks.shape[0] > 1 and len(groups) > 1:
                part_masks = masks[pick]
            part = self.predict_torch(
                coords, labels, part_boxes, part_masks, multimask_output, return_logits, img_idx
            )
            parts.append(part)
            order.extend(rows)
        if len(parts) == 1:
            return parts[0]
        back = torch.argsort(torch.tensor(order, device=device))
        m, i, low = (torch.cat([p[k] for p in parts])[back] for k in range(3))
        return m, i, low

    @torch.inference_mode()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        img_idx: int = -1,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tensor-level prediction, prompts already in the model's input frame.

        point_coords (B, N, 2), point_labels (B, N), boxes (B, 4) or (B, 2, 2), mask_input
        (B, 1, 256, 256). Returns masks (B, C, H, W) at the original size (bool, or logits),
        iou_predictions (B, C) and low_res_masks (B, C, 256, 256) clamped to [-32, 32].
        """
        cleaned, iou, low_res, idx = self._predict_low_res(
            point_coords, point_labels, boxes, mask_input, multimask_output, img_idx
        )
        if return_logits:
            masks = upsample_logits(cleaned, self._orig_hw[idx])
        else:
            # Only the side of the threshold matters: the same masks as thresholding the
            # upsampled logits, without interpolating pixels away from mask boundaries.
            masks = upsample_masks(cleaned, self._orig_hw[idx], self.mask_threshold)
        return masks, iou, low_res

    @torch.inference_mode()
    def predict_low_res(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        img_idx: int = -1,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`predict_torch` without the upsampling, for callers that upsample only some
        of the masks (the automatic mask generator).

        Returns the low-resolution logits after the optional hole/sprinkle clean-up
        (B, C, 256, 256), whose ``upsample_logits(..., orig_hw)`` is exactly the masks of
        ``predict_torch(..., return_logits=True)``; iou_predictions (B, C); and low_res_masks
        (B, C, 256, 256) clamped to [-32, 32], as ``predict_torch``'s.
        """
        cleaned, iou, low_res, _ = self._predict_low_res(
            point_coords, point_labels, boxes, mask_input, multimask_output, img_idx
        )
        return cleaned, iou, low_res

    def _predict_low_res(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
        img_idx: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        if self._features is None:
            raise RuntimeError("an image must be set with set_image(...) before predict")
        points: tuple[torch.Tensor, torch.Tensor] | None = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            points = (point_coords, point_labels)
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = torch.tensor([[2, 3]], dtype=torch.int32, device=corners.device)
            corner_labels = corner_labels.expand(corners.shape[0], 2)
            if points is not None:
                if points[0].shape[0] != corners.shape[0]:
                    raise ValueError(
                        f"{corners.shape[0]} boxes but {points[0].shape[0]} sets of points: "
                        "give one set of points per box"
                    )
                points = (
                    torch.cat((corners, points[0]), 1),
                    torch.cat((corner_labels, points[1].to(torch.int32)), 1),
                )
            else:
                points = (corners, corner_labels)
        idx = img_idx if img_idx >= 0 else len(self._orig_hw) + img_idx
        one = self._one_image(idx)
        keys = None
        if mask_input is None:
            if idx not in self._image_keys:
                self._image_keys[idx] = self.model.decoder_image_keys(one)
            keys = self._image_keys[idx]
        n = points[0].shape[0] if points is not None else 1
        n = mask_input.shape[0] if mask_input is not None else n
        step = CPU_DECODE_BATCH if one.image_embed.device.type == "cpu" else n
        parts = []
        for i in range(0, n, step):
            s = slice(i, i + step)
            sub_points = None if points is None else (points[0][s], points[1][s])
            sub_mask = None if mask_input is None else mask_input[s]
            out = self.model.decode_masks(one, sub_points, sub_mask, multimask_output, keys)
            parts.append((out.masks.float(), out.iou_pred.float()))
        low_res = parts[0][0] if len(parts) == 1 else torch.cat([p[0] for p in parts])
        iou = parts[0][1] if len(parts) == 1 else torch.cat([p[1] for p in parts])
        cleaned = self._clean_low_res(low_res)
        return cleaned, iou, low_res.clamp(-32.0, 32.0), idx

    def _clean_low_res(self, low_res: torch.Tensor) -> torch.Tensor:
        """Optional hole/sprinkle clean-up of (B, C, 256, 256) logits, at low resolution."""
        if self.max_hole_area > 0 or self.max_sprinkle_area > 0:
            from sam2ui.core.masks import fill_holes_and_remove_sprinkles

            low_res = fill_holes_and_remove_sprinkles(
                low_res, self.mask_threshold, self.max_hole_area, self.max_sprinkle_area
            )
        return low_res

"""``Sam2VideoProcessor``: frames, sessions and per-object prompts for ``Sam2VideoModel``.

Frames go through :class:`~sam2ui.hf.Sam2ImageProcessor` (the same resizing and
normalisation as pictures); prompts through :class:`~sam2ui.hf.Sam2Processor`'s checks,
padding and scaling, with the video's size as every prompt's original size.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sam2ui.core import resolve_dtype

from .outputs import BatchFeature
from .processing import Sam2ImageProcessor, Sam2Processor
from .video_session import PointInputs, Sam2VideoInferenceSession

__all__ = ["Sam2VideoProcessor", "Sam2VideoVideoProcessor"]


class Sam2VideoVideoProcessor(Sam2ImageProcessor):
    """Whole videos: (T, H, W, C) arrays, (T, C, H, W) tensors or lists of frames."""

    def __call__(self, videos: Any = None, **kwargs: Any) -> BatchFeature:  # type: ignore[override]
        if videos is None:
            raise ValueError("no video given")
        frames = list(videos) if not isinstance(videos, list) else videos
        if not frames:
            raise ValueError("the video has no frames")
        out = self.preprocess(frames, return_tensors="pt", device=kwargs.get("device"))
        sizes = out["original_sizes"]
        if not bool((sizes == sizes[0]).all()):
            raise ValueError("the frames of a video must all have the same size")
        return BatchFeature(pixel_values_videos=out["pixel_values"][None], original_sizes=sizes[:1])


class Sam2VideoProcessor(Sam2Processor):
    """:class:`Sam2Processor` plus video sessions (see the module docstring)."""

    def __init__(
        self,
        image_processor: Sam2ImageProcessor | None = None,
        video_processor: Sam2VideoVideoProcessor | None = None,
        target_size: int | None = None,
        point_pad_value: int = -10,
        **kwargs: Any,
    ) -> None:
        super().__init__(image_processor, target_size, point_pad_value)
        size = self.image_processor.size["height"]
        self.video_processor = video_processor or Sam2VideoVideoProcessor(size=size)

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike[str], **kwargs: Any) -> Any:
        image_processor = Sam2ImageProcessor.from_pretrained(source)
        size = image_processor.size["height"]
        return cls(image_processor, Sam2VideoVideoProcessor(size=size), **kwargs)

    def init_video_session(
        self,
        video: Any = None,
        inference_device: str | torch.device = "cpu",
        inference_state_device: str | torch.device | None = None,
        processing_device: str | torch.device | None = None,
        video_storage_device: str | torch.device | None = None,
        max_vision_features_cache_size: int = 1,
        dtype: torch.dtype | str = torch.float32,
        torch_dtype: torch.dtype | str | None = None,
    ) -> Sam2VideoInferenceSession:
        """A session on ``video`` (all frames preprocessed now), or an empty one for a stream.
        ``torch_dtype`` is the older name of ``dtype``, the dtype frames are kept in."""
        chosen = resolve_dtype(torch_dtype if torch_dtype is not None else dtype)
        storage = video_storage_device if video_storage_device is not None else inference_device
        state = inference_state_device if inference_state_device is not None else inference_device
        pixels = height = width = None
        if video is not None:
            processed = self.video_processor(videos=video, device=processing_device)
            pixels = processed["pixel_values_videos"][0]
            height, width = (int(v) for v in processed["original_sizes"][0])
        return Sam2VideoInferenceSession(
            video=pixels,
            video_height=height,
            video_width=width,
            inference_device=inference_device,
            inference_state_device=state,
            video_storage_device=storage,
            dtype=chosen,
            max_vision_features_cache_size=max_vision_features_cache_size,
        )

    def add_inputs_to_inference_session(
        self,
        inference_session: Sam2VideoInferenceSession,
        frame_idx: int,
        obj_ids: list[Any] | Any,
        input_points: Any = None,
        input_labels: Any = None,
        input_boxes: Any = None,
        input_masks: Any = None,
        original_size: Any = None,
        clear_old_inputs: bool = True,
    ) -> Sam2VideoInferenceSession:
        """Prompts for one or several objects on a frame, run by the model's next call on that
        frame. ``input_points`` ``[[obj 1's points], [obj 2's points], ...]]`` inside one image
        level, one object per id in ``obj_ids``; or ``input_masks``, one (H, W) mask per id.
        ``original_size`` (H, W) is needed on a stream's first prompt."""
        ids = list(obj_ids) if isinstance(obj_ids, (list, tuple)) else [obj_ids]
        if not ids:
            raise ValueError("obj_ids is empty")
        if (input_points is None) != (input_labels is None):
            raise ValueError("input_points and input_labels must be given together")
        if input_points is None and input_boxes is None and input_masks is None:
            raise ValueError("give input_points and input_labels, input_boxes or input_masks")
        if input_masks is not None and (input_points is not None or input_boxes is not None):
            raise ValueError("input_masks cannot be given with points or boxes")
        if input_masks is not None:
            self._add_masks(inference_session, frame_idx, ids, input_masks)
        else:
            self._add_points(inference_session, frame_idx, ids, input_points, input_labels,
                             input_boxes, original_size, clear_old_inputs)  # fmt: skip
        return inference_session

    def _add_points(
        self,
        session: Sam2VideoInferenceSession,
        frame_idx: int,
        ids: list[Any],
        input_points: Any,
        input_labels: Any,
        input_boxes: Any,
        original_size: Any,
        clear_old_inputs: bool,
    ) -> None:
        if original_size is not None:
            session.video_height, session.video_width = (int(v) for v in original_size)
        if session.video_height is None or session.video_width is None:
            raise ValueError("give original_size (height, width) with a stream's first prompt")
        size = [[session.video_height, session.video_width]]
        encoded = self.encode_prompts(input_points, input_labels, input_boxes, size)
        n = len(ids)
        points = encoded.get("input_points", torch.zeros(1, n, 0, 2))
        labels = encoded.get("input_labels", torch.zeros(1, n, 0, dtype=torch.int64))
        for name, value in (("points", points), ("boxes", encoded.get("input_boxes"))):
            if value is not None and value.shape[1] != n:
                raise ValueError(
                    f"{n} object id(s) but {value.shape[1]} object(s) of {name} at the object "
                    "level: give one entry per id"
                )
        if "input_boxes" in encoded:
            if not clear_old_inputs:
                raise ValueError("a box replaces an object's prompts: use clear_old_inputs=True")
            corners = encoded["input_boxes"].reshape(1, n, 2, 2)
            corner_labels = torch.tensor([2, 3]).repeat(1, n, 1)
            points = torch.cat([corners, points], dim=2)
            labels = torch.cat([corner_labels, labels], dim=2)
        for i, obj_id in enumerate(ids):
            obj_idx = session.obj_id_to_idx(obj_id)
            coords, obj_labels = points[:, i], labels[:, i]
            old = session.point_inputs_per_obj[obj_idx].get(frame_idx)
            if not clear_old_inputs and old is not None:
                coords = torch.cat([old.coords.to(coords.device), coords], dim=1)
                obj_labels = torch.cat([old.labels.to(obj_labels.device), obj_labels], dim=1)
            session.add_point_inputs(obj_idx, frame_idx, PointInputs(coords, obj_labels))
            session.remove_mask_inputs(obj_idx, frame_idx)
        session.obj_with_new_inputs = list(ids)

    def _add_masks(
        self, session: Sam2VideoInferenceSession, frame_idx: int, ids: list[Any], masks: Any
    ) -> None:
        masks = masks if isinstance(masks, list) else [masks]
        if len(masks) != len(ids):
            raise ValueError(f"{len(ids)} object id(s) but {len(masks)} mask(s)")
        for obj_id, mask in zip(ids, masks):
            tensor = torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask)
            if not 2 <= tensor.ndim <= 4:
                raise ValueError(f"a mask must have 2 to 4 dimensions, got {tensor.ndim}")
            tensor = tensor.reshape(1, 1, *tensor.shape[-2:]).float()
            if tuple(tensor.shape[-2:]) != (self.target_size, self.target_size):
                tensor = F.interpolate(
                    tensor,
                    size=(self.target_size, self.target_size),
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
                tensor = (tensor >= 0.5).float()  # fmt: skip
            obj_idx = session.obj_id_to_idx(obj_id)
            session.add_mask_inputs(obj_idx, frame_idx, tensor)
            session.remove_point_inputs(obj_idx, frame_idx)
        session.obj_with_new_inputs = list(ids)

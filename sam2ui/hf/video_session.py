"""``Sam2VideoInferenceSession``: transformers' video session, as typed objects.

It keeps what transformers' session keeps, under the same names where user code reads them
(``obj_ids``, ``video_height``, ``video_width``, ``num_frames``, ``reset_inference_session``):
the preprocessed frames (all of a video, or those streamed so far), each object's prompts by
frame, its outputs on conditioning frames (prompted) and on tracked frames, with the memory
the engine's tracking step reads, and which frames each object has been tracked on.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from sam2ui.core import tracking

__all__ = ["FrameResult", "ObjectOutputs", "Sam2VideoInferenceSession"]


@dataclass
class FrameResult:
    """One object on one frame: ``pred_masks`` (1, 1, S/4, S/4) logits,
    ``object_score_logits`` (1, 1), and its memory once encoded (features in bfloat16, as
    transformers and Meta store them). ``high_res_masks`` (1, 1, S, S) is kept only until then."""

    pred_masks: torch.Tensor
    object_score_logits: torch.Tensor
    object_pointer: torch.Tensor
    high_res_masks: torch.Tensor | None = None
    memory: tracking.FrameMemory | None = None


@dataclass
class ObjectOutputs:
    """An object's results by frame: conditioning (prompted) frames and tracked ones."""

    cond: dict[int, FrameResult] = field(default_factory=dict)
    non_cond: dict[int, FrameResult] = field(default_factory=dict)

    def side(self, is_cond: bool) -> dict[int, FrameResult]:
        return self.cond if is_cond else self.non_cond

    def memories(self, is_cond: bool) -> dict[int, tracking.FrameMemory]:
        return {t: r.memory for t, r in self.side(is_cond).items() if r.memory is not None}


@dataclass
class PointInputs:
    """Clicks (and box corners, labels 2 and 3) of one object on one frame, in model-input
    pixels: ``coords`` (1, N, 2), ``labels`` (1, N); label -10 is padding."""

    coords: torch.Tensor
    labels: torch.Tensor


class Sam2VideoInferenceSession:
    """A video being segmented; made by ``Sam2VideoProcessor.init_video_session``.

    ``video`` (T, 3, S, S) preprocessed frames, or None for a stream (frames come with
    ``model(inference_session=..., frame=...)``). ``max_vision_features_cache_size`` frames'
    image features are kept.
    """

    def __init__(
        self,
        video: torch.Tensor | None = None,
        video_height: int | None = None,
        video_width: int | None = None,
        inference_device: torch.device | str = "cpu",
        inference_state_device: torch.device | str = "cpu",
        video_storage_device: torch.device | str = "cpu",
        dtype: torch.dtype | str = torch.float32,
        max_vision_features_cache_size: int = 1,
    ) -> None:
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.inference_device = torch.device(inference_device)
        self.inference_state_device = torch.device(inference_state_device)
        self.video_storage_device = torch.device(video_storage_device)
        self.processed_frames: dict[int, torch.Tensor] | None = None
        if video is not None:
            stored = video.to(self.video_storage_device, dtype=self.dtype)
            self.processed_frames = dict(enumerate(stored))
        self.video_height = video_height
        self.video_width = video_width
        self.max_vision_features_cache_size = max_vision_features_cache_size
        # Frame index -> (decoder-ready feature levels, position encoding of the last level).
        self.features: dict[int, tuple[list[torch.Tensor], torch.Tensor]] = {}
        self._obj_id_to_idx: OrderedDict[Any, int] = OrderedDict()
        self.obj_ids: list[Any] = []
        self.point_inputs_per_obj: dict[int, dict[int, PointInputs]] = {}
        self.mask_inputs_per_obj: dict[int, dict[int, torch.Tensor]] = {}
        self.output_dict_per_obj: dict[int, ObjectOutputs] = {}
        # Object index -> {frame index: tracked in reverse}, for frames tracked (not prompted).
        self.frames_tracked_per_obj: dict[int, dict[int, bool]] = {}
        # The ids given to the last add_inputs call whose prompts have not been run yet.
        self.obj_with_new_inputs: list[Any] = []

    # ------------------------------------------------------------------ frames
    @property
    def num_frames(self) -> int | None:
        return None if self.processed_frames is None else len(self.processed_frames)

    def add_new_frame(self, pixel_values: torch.Tensor, frame_idx: int | None = None) -> int:
        """Store a streamed frame ((3, S, S) or (1, 3, S, S)); returns its index."""
        frame = pixel_values.to(self.video_storage_device, dtype=self.dtype)
        if frame.ndim == 4:
            frame = frame.squeeze(0)
        if self.processed_frames is None:
            self.processed_frames = {}
        if frame_idx is None:
            frame_idx = len(self.processed_frames)
        self.processed_frames[frame_idx] = frame
        return frame_idx

    def get_frame(self, frame_idx: int) -> torch.Tensor:
        if self.processed_frames is None or frame_idx not in self.processed_frames:
            known = 0 if self.processed_frames is None else len(self.processed_frames)
            raise IndexError(f"frame {frame_idx} is not in this session ({known} frames)")
        return self.processed_frames[frame_idx].to(self.inference_device)

    def cache_features(
        self, frame_idx: int, levels: list[torch.Tensor], pos_enc: torch.Tensor
    ) -> None:
        """Keep a frame's features, dropping the lowest frame index when full."""
        if self.max_vision_features_cache_size <= 0:
            return
        while len(self.features) >= self.max_vision_features_cache_size:
            self.features.pop(min(self.features))
        self.features[frame_idx] = (levels, pos_enc)

    # ------------------------------------------------------------------ objects
    def obj_id_to_idx(self, obj_id: Any) -> int:
        """The index of ``obj_id``, adding the object on first use."""
        idx = self._obj_id_to_idx.get(obj_id)
        if idx is not None:
            return idx
        idx = len(self._obj_id_to_idx)
        self._obj_id_to_idx[obj_id] = idx
        self.obj_ids = list(self._obj_id_to_idx)
        self.point_inputs_per_obj[idx] = {}
        self.mask_inputs_per_obj[idx] = {}
        self.output_dict_per_obj[idx] = ObjectOutputs()
        self.frames_tracked_per_obj[idx] = {}
        return idx

    def obj_idx_to_id(self, obj_idx: int) -> Any:
        return self.obj_ids[obj_idx]

    def get_obj_num(self) -> int:
        return len(self._obj_id_to_idx)

    def add_point_inputs(self, obj_idx: int, frame_idx: int, inputs: PointInputs) -> None:
        self.point_inputs_per_obj[obj_idx][frame_idx] = PointInputs(
            inputs.coords.to(self.inference_device), inputs.labels.to(self.inference_device)
        )

    def remove_point_inputs(self, obj_idx: int, frame_idx: int) -> None:
        self.point_inputs_per_obj[obj_idx].pop(frame_idx, None)

    def add_mask_inputs(self, obj_idx: int, frame_idx: int, inputs: torch.Tensor) -> None:
        self.mask_inputs_per_obj[obj_idx][frame_idx] = inputs.to(
            self.inference_device, dtype=self.dtype
        )

    def remove_mask_inputs(self, obj_idx: int, frame_idx: int) -> None:
        self.mask_inputs_per_obj[obj_idx].pop(frame_idx, None)

    # ------------------------------------------------------------------ resets
    def reset_tracking_data(self) -> None:
        """Forget every object, prompt and output; keep the frames and cached features."""
        self._obj_id_to_idx.clear()
        self.obj_ids = []
        self.point_inputs_per_obj.clear()
        self.mask_inputs_per_obj.clear()
        self.output_dict_per_obj.clear()
        self.frames_tracked_per_obj.clear()
        self.obj_with_new_inputs = []

    def reset_inference_session(self) -> None:
        """:meth:`reset_tracking_data`, and the cached features too."""
        self.reset_tracking_data()
        self.features.clear()

"""``Sam2VideoModel``: transformers' video model API over the engine's tracking step.

The engine's :func:`~sam2ui.core.tracking.track_step` segments one object on one frame from
its memory (the same pure function :class:`~sam2ui.core.SAM2VideoPredictor` runs); this module
keeps transformers' bookkeeping around it, so that a session gives transformers' numbers:

* ``model(inference_session, frame_idx=t)`` runs every object on frame ``t``: an object whose
  new prompts have not been run yet, or that has no output there, is segmented (a frame it was
  never tracked on becomes a conditioning frame); the others give their stored output;
* memories of a frame are encoded for all its objects together, masks made from prompts
  binarised if any object's were;
* ``propagate_in_video_iterator`` is that call on each frame in turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from sam2ui.core import tracking

from .config import Sam2VideoConfig
from .modeling import Sam2PreTrainedModel
from .outputs import Sam2VideoSegmentationOutput
from .video_session import FrameResult, Sam2VideoInferenceSession

__all__ = ["Sam2VideoModel"]

# Object pointers a streamed frame may read: no video length bounds them.
_STREAM_FRAMES = 1 << 30


class Sam2VideoModel(Sam2PreTrainedModel):
    """transformers' ``Sam2VideoModel``: tracks the objects of a session through its frames."""

    config_class = Sam2VideoConfig
    is_video = True

    @property
    def num_maskmem(self) -> int:
        return self.core.config.num_maskmem

    def forward(
        self,
        inference_session: Sam2VideoInferenceSession,
        frame_idx: int | None = None,
        frame: torch.Tensor | None = None,
        reverse: bool = False,
        run_mem_encoder: bool = True,
        **kwargs: Any,
    ) -> Sam2VideoSegmentationOutput:
        """Segment every object of the session on one frame (see the module docstring).

        ``frame`` (3, S, S) preprocessed pixels streams a new frame (its index is the next
        one); otherwise ``frame_idx`` names a frame of the session's video. Returns the
        objects' low-resolution logits in ``inference_session.obj_ids`` order.
        """
        session = inference_session
        if frame is not None:
            frame_idx = session.add_new_frame(frame, frame_idx)
            if session.get_obj_num() == 0:
                raise ValueError("no object to track yet: add inputs to the session first")
        if frame_idx is None:
            raise ValueError("give frame_idx (a frame of the session's video) or a new frame")
        if session.get_obj_num() == 0:
            raise ValueError("no object to track yet: add inputs to the session first")
        with torch.inference_mode():
            return self._run_frame(session, int(frame_idx), frame is not None, reverse,
                                   run_mem_encoder)  # fmt: skip

    def _run_frame(
        self,
        session: Sam2VideoInferenceSession,
        frame_idx: int,
        streaming: bool,
        reverse: bool,
        run_mem_encoder: bool,
    ) -> Sam2VideoSegmentationOutput:
        masks, scores = [], []
        to_encode: list[tuple[int, FrameResult]] = []
        from_prompts = False
        for obj_idx in range(session.get_obj_num()):
            obj_id = session.obj_idx_to_id(obj_idx)
            outputs = session.output_dict_per_obj[obj_idx]
            has_new_inputs = obj_id in session.obj_with_new_inputs
            stored = outputs.cond.get(frame_idx)
            if not has_new_inputs and stored is not None:
                result, is_init = stored, True
            else:
                is_init = False
                points = mask = None
                if has_new_inputs:
                    is_init = frame_idx not in session.frames_tracked_per_obj[obj_idx]
                    if is_init:
                        reverse = False  # and for the objects after this one, as transformers
                    points = session.point_inputs_per_obj[obj_idx].get(frame_idx)
                    mask = session.mask_inputs_per_obj[obj_idx].get(frame_idx)
                    if points is not None or mask is not None:
                        session.obj_with_new_inputs.remove(obj_id)
                result = self._segment(
                    session, obj_idx, frame_idx, is_init, points, mask, reverse, streaming
                )
                outputs.side(is_init)[frame_idx] = result
                if run_mem_encoder and self.num_maskmem > 0:
                    to_encode.append((obj_idx, result))
                    from_prompts = from_prompts or points is not None or mask is not None
            masks.append(result.pred_masks)
            scores.append(result.object_score_logits)
            if not is_init:
                session.frames_tracked_per_obj[obj_idx][frame_idx] = reverse
        self._encode_memories(session, frame_idx, to_encode, from_prompts)
        return Sam2VideoSegmentationOutput(
            object_ids=list(session.obj_ids),
            pred_masks=torch.cat(masks),
            object_score_logits=torch.cat(scores),
            frame_idx=frame_idx,
        )

    def _features(
        self, session: Sam2VideoInferenceSession, frame_idx: int
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        cached = session.features.get(frame_idx)
        if cached is not None:
            return cached
        image = session.get_frame(frame_idx)[None].to(self.core.device)
        out = self.core.forward_image(image)
        levels, pos_enc = list(out.backbone_fpn), out.vision_pos_enc[-1]
        session.cache_features(frame_idx, levels, pos_enc)
        return levels, pos_enc

    def _segment(
        self,
        session: Sam2VideoInferenceSession,
        obj_idx: int,
        frame_idx: int,
        is_init: bool,
        points: Any,
        mask: torch.Tensor | None,
        reverse: bool,
        streaming: bool,
    ) -> FrameResult:
        """One tracking step of one object, its memory left to :meth:`_encode_memories`."""
        if points is not None and mask is not None:
            raise ValueError("an object cannot have both clicks and a mask on the same frame")
        levels, pos_enc = self._features(session, frame_idx)
        outputs = session.output_dict_per_obj[obj_idx]
        num_frames = _STREAM_FRAMES if streaming else (session.num_frames or 0)
        step = tracking.track_step(
            self.core, frame_idx, is_init, levels, pos_enc,
            outputs.memories(True), outputs.memories(False), num_frames,
            points=None if points is None else tracking.PointPrompt(points.coords, points.labels),
            mask_inputs=None if mask is None else mask.float(),
            reverse=reverse, run_memory_encoder=False,
        )  # fmt: skip
        heads = step.heads
        return FrameResult(
            pred_masks=heads.low_res_masks,
            object_score_logits=heads.object_score_logits,
            object_pointer=heads.obj_ptr,
            high_res_masks=heads.high_res_masks,
        )

    def _encode_memories(
        self,
        session: Sam2VideoInferenceSession,
        frame_idx: int,
        results: list[tuple[int, FrameResult]],
        from_prompts: bool,
    ) -> None:
        """Encode the memory of every object segmented on the frame, in one batch."""
        if not results:
            return
        levels, _ = self._features(session, frame_idx)
        embed = levels[-1].expand(len(results), -1, -1, -1)
        high_res = torch.cat([r.high_res_masks for _, r in results if r.high_res_masks is not None])
        scores = torch.cat([r.object_score_logits for _, r in results])
        features, pos_enc = tracking.encode_memory(self.core, embed, high_res, scores, from_prompts)
        for i, (_, result) in enumerate(results):
            result.memory = tracking.FrameMemory(
                features[i : i + 1].to(torch.bfloat16).to(session.inference_state_device),
                pos_enc[i : i + 1],
                result.object_pointer,
            )
            result.high_res_masks = None

    def propagate_in_video_iterator(
        self,
        inference_session: Sam2VideoInferenceSession,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
        show_progress_bar: bool = False,
    ) -> Iterator[Sam2VideoSegmentationOutput]:
        """Run :meth:`forward` on each frame from ``start_frame_idx`` (default: the first
        conditioning frame of any object) over up to ``max_frame_num_to_track`` more frames,
        forwards or in ``reverse``; yields each frame's output."""
        session = inference_session
        num_frames = session.num_frames
        if num_frames is None:
            raise ValueError("propagation needs a session made from a whole video, not a stream")
        if start_frame_idx is None:
            prompted = [t for out in session.output_dict_per_obj.values() for t in out.cond]
            if not prompted:
                raise ValueError(
                    "no frame has been segmented from prompts yet: run the model on a prompted "
                    "frame first, or give start_frame_idx"
                )
            start_frame_idx = min(prompted)
        span = num_frames if max_frame_num_to_track is None else max_frame_num_to_track
        if reverse:
            end = max(start_frame_idx - span, 0)
            order: range = range(start_frame_idx, end - 1, -1) if start_frame_idx > 0 else range(0)
        else:
            end = min(start_frame_idx + span, num_frames - 1)
            order = range(start_frame_idx, end + 1)
        frames: Any = order
        if show_progress_bar:
            from tqdm import tqdm

            frames = tqdm(order, desc="propagate in video")
        for frame_idx in frames:
            yield self(session, frame_idx=frame_idx, reverse=reverse)

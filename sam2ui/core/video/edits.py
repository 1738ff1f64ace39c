"""Removing prompts and objects from a video session (part of the video predictor's API).

:class:`PromptRemovalMixin` holds :meth:`clear_all_prompts_in_frame` and :meth:`remove_object`
of :class:`~sam2ui.core.video.predictor.SAM2VideoPredictor`, kept here so that each module
stays small.
"""

from __future__ import annotations

import torch

from .state import ObjectId, UnknownObjectError, VideoSession

FrameMasks = tuple[int, list[ObjectId], torch.Tensor]  # (frame_idx, obj_ids, (N, 1, H, W))


class PromptRemovalMixin:
    """Prompt and object removal; the host class provides :meth:`_frame_masks`."""

    def _frame_masks(self, session: VideoSession, frame_idx: int, is_cond: bool) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ removing prompts
    @torch.inference_mode()
    def clear_all_prompts_in_frame(
        self,
        inference_state: VideoSession,
        frame_idx: int,
        obj_id: ObjectId,
        need_output: bool = True,
    ) -> FrameMasks | None:
        """Remove ``obj_id``'s prompts on a frame; its result there (if tracked) becomes an
        ordinary tracked frame, otherwise the object has no mask there any more. Returns the
        frame's masks when ``need_output``."""
        session = inference_state
        frame_idx = session.check_frame(frame_idx)
        obj = session.object(obj_id)
        obj.points.pop(frame_idx, None)
        obj.masks.pop(frame_idx, None)
        obj.temp.cond.pop(frame_idx, None)
        obj.temp.non_cond.pop(frame_idx, None)
        out = obj.outputs.cond.pop(frame_idx, None)
        if out is not None:
            obj.outputs.non_cond[frame_idx] = out
            obj.tracked.pop(frame_idx, None)
        elif frame_idx not in obj.outputs.non_cond:
            # Prompted but never tracked: the prompt's mask must not outlive the prompt.
            session.results.discard(frame_idx, obj.obj_id)
        if not need_output:
            return None
        is_cond = any(frame_idx in o.temp.cond for o in session.objects.values())
        return frame_idx, session.obj_ids, self._frame_masks(session, frame_idx, is_cond)

    @torch.inference_mode()
    def remove_object(
        self,
        inference_state: VideoSession,
        obj_id: ObjectId,
        strict: bool = True,
        need_output: bool = True,
    ) -> tuple[list[ObjectId], list[tuple[int, torch.Tensor]]]:
        """Drop an object. Returns the remaining ids and, when ``need_output``, the updated
        masks (frame_idx, (N, 1, H, W)) of the frames it had prompts on. An unknown id raises
        :class:`~sam2ui.core.video.state.UnknownObjectError` (a KeyError and a ValueError),
        or is ignored with ``strict=False`` (the reference's default)."""
        session = inference_state
        obj = session.objects.get(obj_id)
        if obj is None:
            if strict:
                raise UnknownObjectError(obj_id, session.obj_ids, "remove")
            return session.obj_ids, []
        prompted = sorted(set(obj.points) | set(obj.masks))
        del session.objects[obj_id]
        session.results.drop_object(obj_id)
        session.spill.drop_object(obj_id)
        updated: list[tuple[int, torch.Tensor]] = []
        if need_output and session.objects:
            for frame_idx in prompted:
                is_cond = any(frame_idx in o.temp.cond for o in session.objects.values())
                updated.append((frame_idx, self._frame_masks(session, frame_idx, is_cond)))
        return session.obj_ids, updated

"""Interactive video object segmentation, with the API of the reference's SAM2VideoPredictor.

Workflow: ``session = predictor.init_state(video)``, prompt objects on some frames with
:meth:`~SAM2VideoPredictor.add_new_points_or_box` / :meth:`~SAM2VideoPredictor.add_new_mask`,
then iterate :meth:`~SAM2VideoPredictor.propagate_in_video`. Every call returns mask logits
(N, 1, H, W) at the video's resolution, one row per object in ``session.obj_ids`` order.

Each object is tracked separately (batch 1) from its own prompts and memory, like the
reference 1.1.0. Frames are read and preprocessed lazily; only a few frames' image features
are cached. Differences from the reference:

* ``add_all_frames_to_correct_as_cond`` defaults to True, so a correction on an already
  tracked frame becomes a conditioning frame and keeps steering later propagation;
* hole filling (``fill_hole_area``) works on every device, without a compiled extension;
* ``clear_non_cond_mem_around_input`` clears the prompted object's memories only (the
  reference 1.1.0 calls such a per-object step but does not define it);
* ``clear_all_prompts_in_frame`` with an unknown object id raises instead of adding it, and
  so does ``remove_object`` unless ``strict=False`` (the reference's default ignores it);
* clicks and boxes off the frame, and frame indices that are not integers, are errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from sam2ui.core.loading.devices import resolve_device, resolve_dtype
from sam2ui.core.masks import fill_holes
from sam2ui.core.modeling import SAM2Model
from sam2ui.core.modeling.compiled import compile_model
from sam2ui.core.modeling.tracking import (
    NO_OBJECT_LOGIT,
    PointPrompt,
    encode_memory,
    non_overlapping,
)
from sam2ui.core.modeling.tracking import track_step as model_track_step
from sam2ui.core.video.sources.base import VideoInput, preprocess_frame
from sam2ui.core.video.sources.open import open_frames

from .edits import FrameMasks, PromptRemovalMixin
from .prompt_input import frame_count, object_ids, object_masks, object_point_inputs
from .spill import DEFAULT_SPILL_BUDGET
from .state import (
    MEMORY_STORAGE_DTYPE,
    FrameFeatures,
    FrameOutput,
    ObjectId,
    ObjectState,
    PointInputs,
    VideoSession,
)

if TYPE_CHECKING:
    from .stream import VideoStream

# Previous mask logits fed back with correction clicks are clamped to this range.
PREV_LOGIT_CLAMP = 32.0


class SAM2VideoPredictor(PromptRemovalMixin):
    """Track objects through a video from clicks, boxes or masks on some of its frames.

    Args:
        model: a loaded :class:`SAM2Model`. For the reference's video behaviour its config
            should have ``binarize_mask_from_pts_for_mem_enc=True`` (``from_pretrained`` sets it).
        fill_hole_area: background holes up to this many pixels (of the S/4 low-res masks) are
            filled in every output; 0 disables it.
        non_overlap_masks: in returned masks, give each pixel only to the highest-scoring object.
        clear_non_cond_mem_around_input: drop tracked (non-conditioning) memories near a frame
            that gets new prompts, so stale appearance does not compete with the correction.
        add_all_frames_to_correct_as_cond: a prompt on an already tracked frame makes it a
            conditioning frame (default True; the reference defaults to False).
        feature_cache_size: how many frames' image features each session keeps.
        keep_all_memories: keep every tracked frame's memory features and low-res logits in
            RAM; by default RAM holds those of the frames the next step reads and the others
            go to files in a temporary directory of the session, read back when a correction
            or a pass needs them (the same results, RAM flat over the video; see
            :mod:`~sam2ui.core.video.memory`).
        spill_budget_bytes: the most disk space a session's memories may take; going past it
            raises :class:`~sam2ui.core.video.spill.SpillError` (what is tracked stays).
        compile: compile the model's image encoder, memory encoder and memory attention with
            ``torch.compile`` (:func:`~sam2ui.core.modeling.compiled.compile_model`, in place);
            Meta's ``vos_optimized=True`` asks for the same. The first frames are slow.
    """

    def __init__(
        self,
        model: SAM2Model,
        fill_hole_area: int = 8,
        non_overlap_masks: bool = False,
        clear_non_cond_mem_around_input: bool = False,
        add_all_frames_to_correct_as_cond: bool = True,
        feature_cache_size: int = 4,
        keep_all_memories: bool = False,
        spill_budget_bytes: int = DEFAULT_SPILL_BUDGET,
        compile: bool = False,
    ) -> None:
        if not isinstance(model, SAM2Model):
            raise TypeError(f"model must be a SAM2Model, got {type(model).__name__}")
        if model.config.num_maskmem <= 0:
            raise ValueError("video tracking needs a model with memory (num_maskmem > 0)")
        if compile:
            compile_model(model)
        if fill_hole_area < 0:
            raise ValueError(f"fill_hole_area must be >= 0, got {fill_hole_area}")
        self.model = model
        self.fill_hole_area = fill_hole_area
        self.non_overlap_masks = non_overlap_masks
        self.clear_non_cond_mem_around_input = clear_non_cond_mem_around_input
        self.add_all_frames_to_correct_as_cond = add_all_frames_to_correct_as_cond
        self.feature_cache_size = feature_cache_size
        self.keep_all_memories = keep_all_memories
        if spill_budget_bytes < 0:
            raise ValueError(f"spill_budget_bytes must be >= 0, got {spill_budget_bytes}")
        self.spill_budget_bytes = spill_budget_bytes

    @classmethod
    def from_pretrained(
        cls,
        model_id: str | os.PathLike[str],
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str = torch.float32,
        variant: str | None = None,
        **kwargs: Any,
    ) -> SAM2VideoPredictor:
        """Load a model (hub id, variant name or local checkpoint, see
        :func:`~sam2ui.core.loading.checkpoint.load_sam2`) configured for video, and wrap it.
        Meta's builder keywords (``mode``, ``hydra_overrides_extra``, ``apply_postprocessing``,
        ``vos_optimized``) act as in :func:`~sam2ui.core.video.builders.build_sam2_video_predictor`;
        other keyword arguments go to the predictor."""
        from sam2ui.core.loading.build import META_BUILDER_ARGS, load_for_predictor

        meta = {k: kwargs.pop(k) for k in META_BUILDER_ARGS if k in kwargs}
        built = load_for_predictor(
            model_id, video=True, variant=variant, device=resolve_device(device),
            dtype=resolve_dtype(dtype), **meta,
        )  # fmt: skip
        return cls(built.model, **{**built.predictor_options, **kwargs})

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ------------------------------------------------------------------ sessions
    @torch.inference_mode()
    def init_state(
        self,
        video: VideoInput,
        offload_video_to_cpu: bool = False,
        offload_state_to_cpu: bool = False,
        async_loading_frames: bool = False,
    ) -> VideoSession:
        """Open ``video`` (anything :func:`~sam2ui.core.video.sources.base.open_frames` accepts) and
        start a session. Frames are read when first needed, so ``offload_video_to_cpu`` and
        ``async_loading_frames`` are accepted for compatibility and change nothing;
        ``offload_state_to_cpu`` keeps masks and memories in CPU memory."""
        source = open_frames(video)
        if len(source) == 0:
            raise ValueError("the video has no frames")
        storage = torch.device("cpu") if offload_state_to_cpu else self.device
        session = VideoSession(
            source, self.device, storage, self.model.config, self.feature_cache_size,
            self.spill_budget_bytes,
        )  # fmt: skip
        self._frame_features(session, 0)  # warm up on the first frame, like the reference
        return session

    @torch.inference_mode()
    def init_stream(
        self, first_frame: Any, offload_state_to_cpu: bool = False, keep_results: bool = False
    ) -> VideoStream:
        """Start a live session on ``first_frame`` ((H, W, 3) uint8 RGB, frame 0); push the
        following frames with :meth:`VideoStream.push` (see :mod:`~sam2ui.core.video.stream`)."""
        from .stream import StreamSession, StreamSource, VideoStream

        source = StreamSource(first_frame, hold=self.feature_cache_size)
        storage = torch.device("cpu") if offload_state_to_cpu else self.device
        cfg, cache = self.model.config, self.feature_cache_size
        session = StreamSession(source, self.device, storage, cfg, cache)
        self._frame_features(session, 0)
        return VideoStream(self, session, keep_results)

    @torch.inference_mode()
    def reset_state(self, session: VideoSession) -> None:
        """Forget every object, prompt and result of the session (frames stay open)."""
        session.objects.clear()
        session.results.clear()
        session.close()

    def _frame_features(self, session: VideoSession, frame_idx: int) -> FrameFeatures:
        """Image features of one frame, computed on a cache miss."""
        feats = session.features.get(frame_idx)
        if feats is None:
            image = preprocess_frame(session.source.get(frame_idx), self.image_size)
            out = self.model.forward_image(image.to(self.device)[None])
            feats = FrameFeatures(list(out.backbone_fpn), out.vision_pos_enc[-1])
            session.features.put(frame_idx, feats)
        return feats

    # ------------------------------------------------------------------ prompts
    @torch.inference_mode()
    def add_new_points_or_box(
        self,
        inference_state: VideoSession,
        frame_idx: int,
        obj_id: ObjectId | list[ObjectId] | None = None,
        points: Any = None,
        labels: Any = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box: Any = None,
        *,
        obj_ids: ObjectId | list[ObjectId] | None = None,
    ) -> FrameMasks:
        """Add clicks (``points`` (N, 2) x, y with ``labels`` (N,), 1 positive / 0 negative)
        and/or a ``box`` (x0, y0, x1, y1) for ``obj_id`` on a frame. Coordinates are video
        pixels in [0, W] x [0, H], or [0, 1] fractions when ``normalize_coords`` is False.

        Several objects at once: ``obj_id`` (or ``obj_ids``) a list of ids, and ``points`` /
        ``labels`` / ``box`` lists with one entry per object (an (N_i, 2) array, its (N_i,)
        labels, a box or None); the same as one call per object in that order. Every
        prompt is checked first: on an error nothing changes. Returns the frame's masks for
        all objects."""
        session = inference_state
        frame_idx = session.check_frame(frame_idx)
        ids, many = object_ids(obj_id, obj_ids)
        prompts = object_point_inputs(
            ids, many, points, labels, box, clear_old_points, self.image_size,
            (session.video_width, session.video_height), not normalize_coords,
        )  # fmt: skip
        result: FrameMasks | None = None
        for oid, new in zip(ids, prompts):
            obj = session.object(oid, create=True)
            old = None if clear_old_points else obj.points.get(frame_idx)
            prompt = new.to(self.device) if old is None else old.extended(new.to(self.device))
            obj.points[frame_idx] = prompt
            obj.masks.pop(frame_idx, None)
            result = self._prompt_frame(session, obj, frame_idx, prompt, None)
        assert result is not None
        return result

    @torch.inference_mode()
    def add_new_mask(
        self,
        inference_state: VideoSession,
        frame_idx: int,
        obj_id: ObjectId | list[ObjectId] | None = None,
        mask: Any = None,
        *,
        obj_ids: ObjectId | list[ObjectId] | None = None,
    ) -> FrameMasks:
        """Give ``obj_id`` a mask (H, W) (bool or 0/1, any size; resized to the model input)
        on a frame; or several objects (a list of ids, ``mask`` a list with one mask each).
        Every mask is checked first. Returns the frame's masks for all objects."""
        session = inference_state
        frame_idx = session.check_frame(frame_idx)
        ids, many = object_ids(obj_id, obj_ids)
        masks = object_masks(ids, many, mask, self.image_size)
        result: FrameMasks | None = None
        for oid, m in zip(ids, masks):
            m = m.to(self.device)
            obj = session.object(oid, create=True)
            obj.masks[frame_idx] = m
            obj.points.pop(frame_idx, None)
            result = self._prompt_frame(session, obj, frame_idx, None, m)
        assert result is not None
        return result

    def _prompt_frame(
        self,
        session: VideoSession,
        obj: ObjectState,
        frame_idx: int,
        points: PointInputs | None,
        mask: torch.Tensor | None,
    ) -> FrameMasks:
        """Segment ``obj`` on a prompted frame (memory not yet encoded) and return the frame's
        masks for all objects."""
        is_init = frame_idx not in obj.tracked
        reverse = False if is_init else obj.tracked[frame_idx]
        is_cond = is_init or self.add_all_frames_to_correct_as_cond
        prev_logits = None
        if points is not None:
            prev = obj.latest_output(frame_idx, is_cond)
            if prev is not None and session.logits(prev) is None:
                # Logits dropped (streams): track the frame again from what memory is held.
                prev = self._run_frame(session, obj, frame_idx, False, None, None, reverse, False)[
                    0
                ]
            prev_logits = None if prev is None else session.logits(prev)
            if prev_logits is not None:
                prev_logits = prev_logits.to(self.device)
                prev_logits = prev_logits.clamp(-PREV_LOGIT_CLAMP, PREV_LOGIT_CLAMP)
        out, _ = self._run_frame(
            session, obj, frame_idx, is_init, points, mask, reverse, False, prev_logits
        )
        obj.temp.side(is_cond)[frame_idx] = out
        return frame_idx, session.obj_ids, self._frame_masks(session, frame_idx, is_cond)

    def _run_frame(
        self,
        session: VideoSession,
        obj: ObjectState,
        frame_idx: int,
        is_init: bool,
        points: PointInputs | None,
        mask: torch.Tensor | None,
        reverse: bool,
        run_memory_encoder: bool,
        prev_logits: torch.Tensor | None = None,
    ) -> tuple[FrameOutput, torch.Tensor]:
        """One tracking step of one object. Returns what is stored and the (1, 1, S/4, S/4)
        mask logits (hole-filled) on the compute device."""
        feats = self._frame_features(session, frame_idx)
        step = model_track_step(
            self.model, frame_idx, is_init, feats.levels, feats.pos_enc,
            session.memory(obj.outputs.cond),
            session.memory(obj.outputs.non_cond, (frame_idx, reverse)),
            session.num_frames,
            points=None if points is None else PointPrompt(points.coords, points.labels),
            mask_inputs=mask, reverse=reverse, run_memory_encoder=run_memory_encoder,
            prev_mask_logits=prev_logits,
        )  # fmt: skip
        logits = step.heads.low_res_masks
        if self.fill_hole_area > 0:
            logits = fill_holes(logits, self.fill_hole_area)
        features = None
        if step.memory is not None:
            features = self._store_memory(session, step.memory.features, step.memory.pos_enc)
        out = FrameOutput(
            logits.to(session.storage_device),
            step.heads.obj_ptr,
            step.heads.object_score_logits,
            features,
        )
        return out, logits

    def _store_memory(
        self, session: VideoSession, features: torch.Tensor, pos_enc: torch.Tensor
    ) -> torch.Tensor:
        """Memory features as stored (bfloat16, on the storage device); keeps the shared
        position encoding on first use."""
        if session.memory_pos_enc is None:
            session.memory_pos_enc = pos_enc[:1].clone()
        return features.to(MEMORY_STORAGE_DTYPE).to(session.storage_device)

    def _frame_masks(self, session: VideoSession, frame_idx: int, is_cond: bool) -> torch.Tensor:
        """(N, 1, H, W) video-resolution logits of every object on a frame, from its latest
        output; objects without one get a very negative logit."""
        h, w = session.video_height, session.video_width
        rows = []
        for obj in session.objects.values():
            out = obj.latest_output(frame_idx, is_cond)
            logits = None if out is None else session.logits(out)
            kept = None if logits is not None else session.results.get(frame_idx, obj.obj_id)
            if logits is not None:
                rows.append(self._to_video_res(session, logits.to(self.device)))
            elif kept is not None:  # output dropped (streams): the kept mask as logits of +-10
                rows.append(torch.from_numpy(kept)[None, None].float().to(self.device) * 20 - 10)
            else:
                rows.append(torch.full((1, 1, h, w), NO_OBJECT_LOGIT, device=self.device))
        if not rows:
            return torch.zeros(0, 1, h, w, device=self.device)
        masks = self._finish(torch.cat(rows, dim=0))
        session.results.put(frame_idx, session.obj_ids, masks)
        return masks

    def _to_video_res(self, session: VideoSession, logits: torch.Tensor) -> torch.Tensor:
        size = (session.video_height, session.video_width)
        if tuple(logits.shape[-2:]) == size:
            return logits
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)

    def _finish(self, masks: torch.Tensor) -> torch.Tensor:
        return non_overlapping(masks) if self.non_overlap_masks else masks

    # ------------------------------------------------------------------ propagation
    @torch.inference_mode()
    def propagate_in_video_preflight(self, inference_state: VideoSession) -> None:
        """Encode the memory of newly prompted frames and make them part of tracking."""
        session = inference_state
        if not session.objects:
            raise RuntimeError("no object has any prompt yet: add points, a box or a mask first")
        size = self.image_size
        for obj in session.objects.values():
            for is_cond in (False, True):
                temp = obj.temp.side(is_cond)
                for frame_idx, out in temp.items():
                    if out.memory_features is None and out.mask_logits is not None:
                        high_res = F.interpolate(
                            out.mask_logits.to(self.device),
                            size=(size, size),
                            mode="bilinear",
                            align_corners=False,
                        )
                        embed = self._frame_features(session, frame_idx).levels[-1]
                        feats, pos = encode_memory(
                            self.model, embed, high_res, out.object_score_logits, True
                        )
                        out = replace(out, memory_features=self._store_memory(session, feats, pos))
                    obj.outputs.side(is_cond)[frame_idx] = out
                    if self.clear_non_cond_mem_around_input:
                        self._clear_memory_around(session, obj, frame_idx)
                temp.clear()
            if not obj.outputs.cond:
                raise RuntimeError(
                    f"object id {obj.obj_id!r} has no prompt yet: add points, a box or a mask"
                )
            for frame_idx in obj.outputs.cond:
                session.forget(obj.outputs.non_cond.pop(frame_idx, None))

    def _clear_memory_around(self, session: VideoSession, obj: ObjectState, frame_idx: int) -> None:
        cfg = self.model.config
        reach = cfg.memory_temporal_stride_for_eval * cfg.num_maskmem
        for t in range(frame_idx - reach, frame_idx + reach + 1):
            session.forget(obj.outputs.non_cond.pop(t, None))

    @torch.inference_mode()
    def propagate_in_video(
        self,
        inference_state: VideoSession,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
    ) -> Iterator[FrameMasks]:
        """Track every object from ``start_frame_idx`` (default: the first prompted frame)
        over up to ``max_frame_num_to_track`` further frames, forwards or in ``reverse``.
        Yields ``(frame_idx, obj_ids, masks (N, 1, H, W) logits)`` frame by frame."""
        session = inference_state
        # Arguments first: a bad one leaves the session as it was.
        if start_frame_idx is not None:
            start_frame_idx = session.check_frame(start_frame_idx)
        span = frame_count(max_frame_num_to_track, session.num_frames)
        self.propagate_in_video_preflight(session)
        if start_frame_idx is None:
            start_frame_idx = min(t for obj in session.objects.values() for t in obj.outputs.cond)
        start: int = start_frame_idx
        if reverse:
            order = range(start, max(start - span, 0) - 1, -1) if start > 0 else range(0)
        else:
            order = range(start, min(start + span, session.num_frames - 1) + 1)
        for frame_idx in order:
            yield frame_idx, session.obj_ids, self._track_frame(session, frame_idx, reverse)

    def _track_frame(self, session: VideoSession, frame_idx: int, reverse: bool) -> torch.Tensor:
        """Track every object on one frame (conditioning frames give their stored output),
        record and return the (N, 1, H, W) masks, then move to disk what left the RAM window."""
        rows = []
        for obj in session.objects.values():
            stored = obj.outputs.cond.get(frame_idx)
            if stored is not None and stored.mask_logits is not None:
                logits = stored.mask_logits.to(self.device)
                if self.clear_non_cond_mem_around_input:
                    self._clear_memory_around(session, obj, frame_idx)
            else:
                out, logits = self._run_frame(
                    session, obj, frame_idx, False, None, None, reverse, True
                )
                session.forget(obj.outputs.non_cond.get(frame_idx))  # a file left by a pass
                obj.outputs.non_cond[frame_idx] = out
            obj.tracked[frame_idx] = reverse
            rows.append(logits)
        masks = self._finish(self._to_video_res(session, torch.cat(rows)))
        session.results.put(frame_idx, session.obj_ids, masks)
        if not self.keep_all_memories:  # after recording: a SpillError loses nothing tracked
            for obj in session.objects.values():
                session.evict(obj, frame_idx, reverse)
        return masks

"""Bounded tracking memory and compact per-frame results of a video session.

While tracking, the model reads of the frames behind the current one (in the direction of
travel) only:

* the memory features of the last ``num_maskmem - 1`` tracked frames (6 for SAM 2; more
  frames apart with a temporal stride > 1), see ``_memory_frames`` in
  :mod:`sam2ui.core.modeling.tracking`;
* the object pointers of the last ``min(num_frames, max_obj_ptrs_in_encoder) - 1`` frames
  (15 for SAM 2 on a video of 16 frames or more), see ``_object_pointers``;
* everything of every conditioning (prompted) frame.

:class:`MemoryWindow` keeps in RAM, after each tracked frame, the logits and memory features
of the tracked (non-conditioning) outputs 0..``memory_reach`` frames behind it in the
direction of travel (what tracking the next frame, or a correction on the frame just tracked,
reads) and moves the others' to disk (:meth:`MemoryWindow.evict`, with
:mod:`sam2ui.core.video.spill`); pointers and object scores, conditioning outputs and outputs
of frames just prompted stay in RAM. Nothing is lost: a correction anywhere, or a pass started
in mid-video, reads the memories it reads in the reference, loaded from disk, so results are
those of keeping everything (``keep_all_memories``) while RAM stays flat over the video.

Live streams (:mod:`sam2ui.core.video.stream`) drop instead (:meth:`MemoryWindow.prune`): the
logits and features of frames more than the memory reach behind the current frame first, the
pointer (and object score) when it leaves the pointer reach. That keeps what the next frame
and a correction on the newest frame read; a correction farther back reads only what is held.

The masks handed out are kept for later use (exports, re-display) as bit-packed boolean masks
at video resolution (:class:`ResultStore`), one bit a pixel, zlib-compressed when smaller.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from sam2ui.core.masks import PackedMask

from .spill import SpillRef

if TYPE_CHECKING:
    from sam2ui.core.modeling.config import SAM2Config


@dataclass(frozen=True)
class FrameOutput:
    """What is kept of one object on one frame.

    ``mask_logits``: (1, 1, S/4, S/4) float32, after hole filling; ``obj_ptr``: (1, C);
    ``object_score_logits``: (1, 1); ``memory_features``: (1, mem_dim, h, w) in bfloat16, or
    None until the memory encoder has run on this output. Tracked outputs that left the RAM
    window keep only the pointer and score in RAM (logits and features None), with
    ``spilled`` saying where their logits and features are on disk
    (:mod:`sam2ui.core.video.spill`); in a stream they are dropped (``spilled`` None).
    """

    mask_logits: torch.Tensor | None
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor
    memory_features: torch.Tensor | None
    spilled: SpillRef | None = None


@dataclass(frozen=True)
class MemoryWindow:
    """How far back (in frames, in the direction of travel) the model reads.

    ``memory_reach``: the farthest distance of a frame whose memory features are read;
    ``pointer_reach``: the farthest distance of a frame whose object pointer is read.
    """

    memory_reach: int
    pointer_reach: int

    @classmethod
    def for_model(cls, config: SAM2Config, num_frames: int) -> MemoryWindow:
        """The window of a model on a video of ``num_frames`` frames."""
        stride = config.memory_temporal_stride_for_eval
        # Slot num_maskmem-1 reads the previous frame; slots 1..num_maskmem-2 read frames on
        # the stride grid, the farthest at most 1 + (num_maskmem - 2) * stride frames back.
        memory = 1 + (config.num_maskmem - 2) * stride if config.num_maskmem > 1 else 0
        pointer = 0
        if config.use_obj_ptrs_in_encoder:
            pointer = max(min(num_frames, config.max_obj_ptrs_in_encoder) - 1, 0)
        return cls(memory, pointer)

    @property
    def reach(self) -> int:
        """The farthest distance at which anything of a tracked frame is read."""
        return max(self.memory_reach, self.pointer_reach)

    def hides(self, frame_idx: int, reverse: bool, stored_idx: int) -> bool:
        """Whether a stored output without memory features must look absent to the model
        when it tracks ``frame_idx``: it lies where memory features would be read."""
        behind = (stored_idx - frame_idx) if reverse else (frame_idx - stored_idx)
        return 0 < behind <= self.memory_reach

    def evict(
        self,
        outputs: dict[int, FrameOutput],
        frame_idx: int,
        reverse: bool,
        spill: Callable[[int, FrameOutput], FrameOutput],
    ) -> None:
        """After tracking ``frame_idx``: move out of RAM (``spill(t, output)`` gives what
        stays) the logits and features of every output of ``outputs`` (tracked frames by
        index) except those 0..``memory_reach`` frames behind ``frame_idx`` in the direction
        of travel: what tracking the next frame, or a correction on ``frame_idx``, reads."""
        for t, out in list(outputs.items()):
            if out.memory_features is None or out.mask_logits is None:
                continue  # already out of RAM
            behind = (t - frame_idx) if reverse else (frame_idx - t)
            if not 0 <= behind <= self.memory_reach:
                outputs[t] = spill(t, out)

    def prune(self, outputs: dict[int, FrameOutput], frame_idx: int, reverse: bool) -> None:
        """After tracking ``frame_idx``: keep of ``outputs`` (tracked frames by index) only
        what the frames after it (in the direction of travel) or a correction on
        ``frame_idx`` itself can read."""
        for t in list(outputs):
            behind = (t - frame_idx) if reverse else (frame_idx - t)
            if behind < 0:
                continue  # ahead: left by another pass, overwritten before it is read
            # Measured from frame_idx, not from the next frame: a correction on frame_idx
            # reads one frame farther back than tracking the next frame does.
            if behind > self.reach:
                del outputs[t]
            elif behind > self.memory_reach:
                out = outputs[t]
                if out.memory_features is not None or out.mask_logits is not None:
                    outputs[t] = replace(out, memory_features=None, mask_logits=None)


def stored_counts(outputs: dict[int, FrameOutput]) -> tuple[int, int, int]:
    """(memory feature tensors, object pointers, bytes of all stored tensors) of outputs."""
    features = pointers = nbytes = 0
    for out in outputs.values():
        pointers += 1
        for tensor in (out.mask_logits, out.obj_ptr, out.object_score_logits):
            if tensor is not None:
                nbytes += tensor.numel() * tensor.element_size()
        if out.memory_features is not None:
            features += 1
            nbytes += out.memory_features.numel() * out.memory_features.element_size()
    return features, pointers, nbytes


class ResultStore:
    """The last masks handed out for each frame, per object, bit-packed at video resolution."""

    def __init__(self) -> None:
        self._frames: dict[int, dict[Hashable, PackedMask]] = {}

    def put(self, frame_idx: int, obj_ids: Sequence[Hashable], masks: torch.Tensor) -> None:
        """Record (N, 1, H, W) mask logits of ``obj_ids`` on a frame (as ``logits > 0``)."""
        binary = (masks[:, 0] > 0).cpu().numpy()
        frame = self._frames.setdefault(frame_idx, {})
        for obj_id, mask in zip(obj_ids, binary):
            frame[obj_id] = PackedMask.pack(mask)

    def get(self, frame_idx: int, obj_id: Hashable) -> np.ndarray | None:
        """The (H, W) boolean mask of an object on a frame, or None when there is none."""
        packed = self._frames.get(frame_idx, {}).get(obj_id)
        return None if packed is None else packed.unpack()

    def frame(self, frame_idx: int) -> dict[Hashable, np.ndarray]:
        """Every recorded object's (H, W) boolean mask on a frame, by object id."""
        return {k: v.unpack() for k, v in self._frames.get(frame_idx, {}).items()}

    @property
    def frame_indices(self) -> list[int]:
        return sorted(self._frames)

    def object_frames(self, obj_id: Hashable) -> list[int]:
        """Sorted indices of the frames where the object's mask has at least one pixel."""
        return sorted(f for f, objs in self._frames.items() if (p := objs.get(obj_id)) and p.filled)

    def drop_object(self, obj_id: Hashable) -> None:
        for frame in self._frames.values():
            frame.pop(obj_id, None)

    def drop_frame(self, frame_idx: int) -> None:
        self._frames.pop(frame_idx, None)

    def discard(self, frame_idx: int, obj_id: Hashable) -> None:
        """Forget one object's mask on one frame (nothing happens when there is none)."""
        self._frames.get(frame_idx, {}).pop(obj_id, None)

    def clear(self) -> None:
        self._frames.clear()

    @property
    def nbytes(self) -> int:
        """Bytes of packed mask data held."""
        return sum(p.nbytes for frame in self._frames.values() for p in frame.values())

    def __len__(self) -> int:
        return len(self._frames)

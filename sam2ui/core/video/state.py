"""Typed state of a video tracking session: prompts, per-object outputs and cached features.

The video predictor (:mod:`sam2ui.core.video.predictor`) owns the logic; this module only
holds data. Every object is tracked on its own (batch 1), so each :class:`ObjectState` keeps
its own prompts and its own conditioning / non-conditioning frame outputs. S is the model's
input size, h = w = S / 16 the embedding grid.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from sam2ui.core.modeling.config import SAM2Config
from sam2ui.core.modeling.tracking import FrameMemory
from sam2ui.core.video.sources.base import FrameSource

from .memory import FrameOutput, MemoryWindow, ResultStore
from .spill import DEFAULT_SPILL_BUDGET, SpillStore

ObjectId = Hashable  # the caller's name for an object (usually an int)

# dtype the memory features are stored in (as the reference does), upcast when read.
MEMORY_STORAGE_DTYPE = torch.bfloat16


class UnknownObjectError(KeyError, ValueError):
    """An object id the session does not have: a failed look-up (KeyError) and a bad
    argument (ValueError), so either ``except`` clause catches it. ``obj_id`` is the id asked
    for, ``known_ids`` the session's ids then."""

    def __init__(self, obj_id: Any, known_ids: list[Any], action: str = "") -> None:
        self.obj_id = obj_id
        self.known_ids = list(known_ids)
        self.action = action
        known = (
            f"the session's object ids are {self.known_ids}"
            if self.known_ids
            else "the session has no objects yet"
        )
        doing = f"cannot {action} object id {obj_id!r}: no such object" if action else None
        super().__init__(f"{doing or f'unknown object id {obj_id!r}'}; {known}")

    def __str__(self) -> str:  # KeyError's own would quote the message
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:  # errors of a worker process come back pickled
        return type(self), (self.obj_id, self.known_ids, self.action)


def frame_index(frame_idx: Any) -> int:
    """``frame_idx`` as an int (Python or NumPy integers, one-element integer tensors), or an
    IndexError saying what was received instead."""
    if not isinstance(frame_idx, (bool, np.bool_)):
        try:
            return operator.index(frame_idx)
        except TypeError:
            pass
    raise IndexError(
        f"frame index must be an integer, got {frame_idx!r} ({type(frame_idx).__name__})"
    )


@dataclass(frozen=True)
class PointInputs:
    """Clicks of one object on one frame: ``coords`` (1, N, 2) in the model's S x S input
    frame, ``labels`` (1, N) int32 (1 positive, 0 negative, 2/3 box corners)."""

    coords: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device) -> PointInputs:
        return PointInputs(self.coords.to(device), self.labels.to(device))

    def extended(self, more: PointInputs) -> PointInputs:
        """These clicks followed by ``more``."""
        return PointInputs(
            torch.cat([self.coords, more.coords], dim=1),
            torch.cat([self.labels, more.labels], dim=1),
        )


class MemoryView(Mapping[int, FrameMemory]):
    """Read-only view of frame outputs as the model's :class:`FrameMemory`, upcasting the
    stored bfloat16 features to float32 (and moving them to ``device``) only when read.

    Features moved to disk (``spill``) are loaded when read. With ``reader`` = (frame
    index, reverse, window), outputs without features in RAM carry an empty placeholder as
    features where only their pointer is read when tracking that frame (nothing is loaded),
    and where features would be read they are loaded, or look absent when they were dropped
    (streams).
    """

    def __init__(
        self,
        outputs: Mapping[int, FrameOutput],
        pos_enc: torch.Tensor | None,
        device: torch.device,
        reader: tuple[int, bool, MemoryWindow] | None = None,
        spill: SpillStore | None = None,
    ) -> None:
        self._outputs = outputs
        self._pos_enc = pos_enc
        self._device = device
        self._reader = reader
        self._spill = spill
        self._loaded: dict[int, torch.Tensor] = {}  # features read from disk, by frame

    def __getitem__(self, frame_idx: int) -> FrameMemory:
        out = self._outputs[frame_idx]
        stored = out.memory_features
        if stored is None and self._reader is not None:
            current, reverse, window = self._reader
            if not window.hides(current, reverse, frame_idx):  # only its pointer is read
                return FrameMemory(torch.empty(0), torch.empty(0), out.obj_ptr)
            if out.spilled is None:
                raise KeyError(frame_idx)
        if stored is None and out.spilled is not None and self._spill is not None:
            stored = self._loaded.get(frame_idx)
            if stored is None:
                stored = self._loaded[frame_idx] = self._spill.features(out.spilled)
        if stored is None or self._pos_enc is None:
            raise RuntimeError(f"frame {frame_idx} has no encoded memory")
        feats = stored.to(self._device, non_blocking=True).float()
        return FrameMemory(feats, self._pos_enc, out.obj_ptr)

    def __iter__(self) -> Iterator[int]:
        return iter(self._outputs)

    def __len__(self) -> int:
        return len(self._outputs)


@dataclass
class OutputStore:
    """Frame outputs of one object, split like the model reads them: ``cond`` (frames with
    prompts) and ``non_cond`` (frames reached by tracking), each by frame index."""

    cond: dict[int, FrameOutput] = field(default_factory=dict)
    non_cond: dict[int, FrameOutput] = field(default_factory=dict)

    def side(self, is_cond: bool) -> dict[int, FrameOutput]:
        return self.cond if is_cond else self.non_cond

    def clear(self) -> None:
        self.cond.clear()
        self.non_cond.clear()


@dataclass
class ObjectState:
    """Everything the session knows about one object.

    ``points`` / ``masks``: prompts by frame (masks (1, 1, S, S) of 0/1); ``outputs``: the
    consolidated outputs tracking reads; ``temp``: outputs of frames just prompted, moved into
    ``outputs`` (with their memory encoded) when propagation starts; ``tracked``: frames this
    object has been tracked on, with whether that was in reverse.
    """

    obj_id: ObjectId
    points: dict[int, PointInputs] = field(default_factory=dict)
    masks: dict[int, torch.Tensor] = field(default_factory=dict)
    outputs: OutputStore = field(default_factory=OutputStore)
    temp: OutputStore = field(default_factory=OutputStore)
    tracked: dict[int, bool] = field(default_factory=dict)

    def latest_output(self, frame_idx: int, is_cond: bool) -> FrameOutput | None:
        """The most recent output on ``frame_idx``: a temporary one of the given kind first,
        then a consolidated conditioning one, then a non-conditioning one."""
        for store in (self.temp.side(is_cond), self.outputs.cond, self.outputs.non_cond):
            out = store.get(frame_idx)
            if out is not None:
                return out
        return None

    def clear(self) -> None:
        """Forget all prompts and results (the object itself stays)."""
        self.points.clear()
        self.masks.clear()
        self.outputs.clear()
        self.temp.clear()
        self.tracked.clear()


@dataclass(frozen=True)
class FrameFeatures:
    """Backbone output of one frame, batch 1: ``levels`` the decoder-ready feature maps,
    finest first (the last is the (1, C, h, w) embedding); ``pos_enc`` its (1, C, h, w)
    position encoding."""

    levels: list[torch.Tensor]
    pos_enc: torch.Tensor


class FeatureCache:
    """Least-recently-used cache of :class:`FrameFeatures` for a few frames."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"feature cache capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._items: OrderedDict[int, FrameFeatures] = OrderedDict()

    def get(self, frame_idx: int) -> FrameFeatures | None:
        item = self._items.get(frame_idx)
        if item is not None:
            self._items.move_to_end(frame_idx)
        return item

    def put(self, frame_idx: int, item: FrameFeatures) -> None:
        self._items[frame_idx] = item
        self._items.move_to_end(frame_idx)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def __contains__(self, frame_idx: int) -> bool:
        return frame_idx in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


class VideoSession:
    """One video being segmented: its frames (read lazily), its objects and their results.

    Created by :meth:`SAM2VideoPredictor.init_state`; pass it to every predictor call.
    Objects keep the order in which they were first prompted; that order is the row order of
    every returned mask batch.
    """

    def __init__(
        self,
        source: FrameSource,
        device: torch.device,
        storage_device: torch.device,
        model_config: SAM2Config,
        feature_cache_size: int = 4,
        spill_budget_bytes: int = DEFAULT_SPILL_BUDGET,
    ) -> None:
        self.source = source
        self.num_frames = len(source)
        self.video_height = int(source.height)
        self.video_width = int(source.width)
        self.device = device
        self.storage_device = storage_device
        self.features = FeatureCache(feature_cache_size)
        self.window = MemoryWindow.for_model(model_config, self.num_frames)
        # The masks handed out, bit-packed at video resolution, by frame and object.
        self.results = ResultStore()
        # Logits and memory features of tracked frames outside the RAM window, on disk.
        self.spill = SpillStore(spill_budget_bytes)
        self.objects: dict[ObjectId, ObjectState] = {}
        # Position encoding of memory features: the same for every frame and object.
        self.memory_pos_enc: torch.Tensor | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Pickled (sam2ui.core.serving.handoff) without the cached frame features: on the device and
        # large (about 16 MB a frame), and recomputed when needed.
        state = dict(self.__dict__)
        state["features"] = FeatureCache(self.features.capacity)
        return state

    @property
    def obj_ids(self) -> list[ObjectId]:
        """Object ids in row order of the returned masks."""
        return list(self.objects)

    def object(self, obj_id: ObjectId, create: bool = False) -> ObjectState:
        """The state of ``obj_id``; a new object is added when ``create`` is set."""
        state = self.objects.get(obj_id)
        if state is None:
            if not create:
                raise UnknownObjectError(obj_id, self.obj_ids)
            state = self.objects[obj_id] = ObjectState(obj_id)
        return state

    def check_frame(self, frame_idx: int) -> int:
        """``frame_idx`` as an int, or an IndexError when it is not an integer or not a frame
        of the video."""
        idx = frame_index(frame_idx)
        if not 0 <= idx < self.num_frames:
            raise IndexError(
                f"frame index {frame_idx} out of range [0, {self.num_frames - 1}] "
                f"for a video of {self.num_frames} frames"
            )
        return idx

    def memory(
        self, outputs: Mapping[int, FrameOutput], reader: tuple[int, bool] | None = None
    ) -> MemoryView:
        """``outputs`` as the model reads them when tracking frame ``reader`` = (frame
        index, reverse) (see :class:`MemoryView`)."""
        at = None if reader is None else (reader[0], reader[1], self.window)
        return MemoryView(outputs, self.memory_pos_enc, self.device, at, self.spill)

    def logits(self, out: FrameOutput) -> torch.Tensor | None:
        """An output's low-res logits, loaded from disk when spilled; None when dropped."""
        if out.mask_logits is not None:
            return out.mask_logits
        if out.spilled is not None:
            return self.spill.logits(out.spilled)
        return None

    def evict(self, obj: ObjectState, frame_idx: int, reverse: bool) -> None:
        """After tracking ``frame_idx``: move ``obj``'s tracked outputs outside the RAM
        window to disk (see :meth:`MemoryWindow.evict`)."""

        def spill(t: int, out: FrameOutput) -> FrameOutput:
            assert out.mask_logits is not None and out.memory_features is not None
            ref = self.spill.put(obj.obj_id, t, out.mask_logits, out.memory_features)
            return replace(out, mask_logits=None, memory_features=None, spilled=ref)

        self.window.evict(obj.outputs.non_cond, frame_idx, reverse, spill)

    def forget(self, out: FrameOutput | None) -> None:
        """Delete the file of an output that is no longer held (if it was spilled)."""
        if out is not None and out.spilled is not None:
            self.spill.discard(out.spilled)

    def close(self) -> None:
        """Delete the session's files on disk (it stays usable)."""
        self.spill.close()

"""Streaming video segmentation: frames pushed one at a time, of a video of unknown length.

Usage (a camera, a live feed)::

    stream = predictor.init_stream(first_frame)          # frame 0
    stream.add_new_points_or_box(obj_id=1, points=[[x, y]], labels=[1])
    for frame in feed:
        frame_idx, obj_ids, masks = stream.push(frame)   # (N, 1, H, W) logits

Prompts (:meth:`VideoStream.add_new_points_or_box`, :meth:`VideoStream.add_new_mask`) go on
the newest frame by default, or on an earlier frame that is still held (the last
``feature_cache_size`` frames); a prompt on a tracked frame is a correction and steers the
frames pushed after it. Memory stays bounded: only the last few frames (and their image
features) are held, the tracked outputs are pruned to what the model reads (see
:mod:`~sam2ui.core.video.memory`), and masks are not kept unless ``keep_results`` is set.

Equality with offline tracking: the model uses the video length in its object-pointer window
``min(num_frames, max_obj_ptrs_in_encoder)`` and in the temporal scale of the pointers'
position encoding. A stream does not know its length and uses ``max_obj_ptrs_in_encoder``
(16 for SAM 2), which is what offline tracking computes for any video of at least that many
frames: on such videos a stream gives the same masks as
:class:`~sam2ui.core.video.predictor.SAM2VideoPredictor` with the same prompts. On a shorter
video, offline tracking scales the pointers' temporal distances by its length, so the first
frames of a stream can differ slightly from an offline run over that short video.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from sam2ui.core.modeling.config import SAM2Config
from sam2ui.core.video.sources.base import DEFAULT_FPS, FrameSource, _as_rgb_uint8, readonly_view

from .memory import MemoryWindow
from .state import ObjectId, ObjectState, VideoSession, frame_index

if TYPE_CHECKING:
    from .edits import FrameMasks


class Tracker(Protocol):
    """What a stream asks of the video predictor that made it (a
    :class:`~sam2ui.core.video.predictor.SAM2VideoPredictor`); named here so this module
    does not import the predictor, which imports it."""

    @property
    def device(self) -> torch.device: ...

    # The prompt methods take the predictor's own arguments (see there).
    @property
    def add_new_points_or_box(self) -> Callable[..., FrameMasks]: ...

    @property
    def add_new_mask(self) -> Callable[..., FrameMasks]: ...

    def propagate_in_video_preflight(self, inference_state: VideoSession) -> None: ...

    def _frame_features(self, session: VideoSession, frame_idx: int) -> Any: ...

    def _track_frame(self, session: VideoSession, frame_idx: int, reverse: bool) -> Any: ...


class StreamSource(FrameSource):
    """The last ``hold`` frames of a live feed, by their index since the first frame.
    ``len()`` counts every frame pushed so far; older frames are no longer readable."""

    def __init__(self, first_frame: Any, hold: int, fps: float | None = None) -> None:
        if hold < 1:
            raise ValueError(f"a stream must hold at least 1 frame, got {hold}")
        first = _as_rgb_uint8(first_frame, "frame 0")
        self.height, self.width = int(first.shape[0]), int(first.shape[1])
        self.fps = float(fps) if fps else DEFAULT_FPS
        self.name = "<stream>"
        self.hold = hold
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self._count = 0
        self.append(first)

    def append(self, frame: Any) -> int:
        """Add the next frame; returns its index."""
        idx = self._count
        arr = _as_rgb_uint8(frame, f"frame {idx}")
        if arr.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"frame {idx} is {arr.shape[1]}x{arr.shape[0]}, but the stream is "
                f"{self.width}x{self.height}; all frames must have the same size"
            )
        self._frames[idx] = readonly_view(arr)
        self._count += 1
        while len(self._frames) > self.hold:
            self._frames.popitem(last=False)
        return idx

    def is_held(self, index: int) -> bool:
        return index in self._frames

    def __len__(self) -> int:
        return self._count

    def _read(self, index: int) -> np.ndarray:
        frame = self._frames.get(index)
        if frame is None:
            raise IndexError(f"frame {index} of the stream is no longer held")
        return frame


class StreamSession(VideoSession):
    """A :class:`VideoSession` over a :class:`StreamSource`: frame indices count from the
    first frame, only held frames can be prompted, and the model is told a video length of
    at least ``max_obj_ptrs_in_encoder`` frames (see the module docstring)."""

    source: StreamSource

    def __init__(
        self,
        source: StreamSource,
        device: torch.device,
        storage_device: torch.device,
        model_config: SAM2Config,
        feature_cache_size: int,
    ) -> None:
        super().__init__(source, device, storage_device, model_config, feature_cache_size)
        self._min_frames = max(model_config.max_obj_ptrs_in_encoder, 1)
        self.num_frames = max(len(source), self._min_frames)
        self.window = MemoryWindow.for_model(model_config, self.num_frames)

    def evict(self, obj: ObjectState, frame_idx: int, reverse: bool) -> None:
        """A stream drops what the model no longer reads instead of moving it to disk."""
        self.window.prune(obj.outputs.non_cond, frame_idx, reverse)

    def grow(self) -> None:
        """Follow the source after a frame was appended (the pointer window stays put)."""
        self.num_frames = max(len(self.source), self._min_frames)

    def check_frame(self, frame_idx: int) -> int:
        idx = frame_index(frame_idx)
        if not self.source.is_held(idx):
            held = sorted(self.source._frames)
            raise IndexError(f"frame {frame_idx} is not held by the stream (held: {held})")
        return idx


class VideoStream:
    """A live tracking session; create it with :meth:`SAM2VideoPredictor.init_stream`.

    ``keep_results``: keep every handed-out mask (bit-packed, in ``session.results``);
    otherwise only those of the held frames are kept.
    """

    def __init__(
        self, predictor: Tracker, session: StreamSession, keep_results: bool = False
    ) -> None:
        self.predictor = predictor
        self.session = session
        self.keep_results = keep_results

    @property
    def frame_idx(self) -> int:
        """Index of the newest frame."""
        return len(self.session.source) - 1

    @property
    def obj_ids(self) -> list[ObjectId]:
        return self.session.obj_ids

    def add_new_points_or_box(
        self,
        obj_id: ObjectId,
        points: Any = None,
        labels: Any = None,
        box: Any = None,
        frame_idx: int | None = None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
    ) -> FrameMasks:
        """Clicks and/or a box for ``obj_id`` on the newest frame (or a held ``frame_idx``),
        as :meth:`SAM2VideoPredictor.add_new_points_or_box`."""
        idx = self.frame_idx if frame_idx is None else frame_idx
        return self.predictor.add_new_points_or_box(
            self.session, idx, obj_id, points, labels, clear_old_points, normalize_coords, box
        )

    def add_new_mask(self, obj_id: ObjectId, mask: Any, frame_idx: int | None = None) -> FrameMasks:
        """A mask (H, W) for ``obj_id`` on the newest frame (or a held ``frame_idx``)."""
        idx = self.frame_idx if frame_idx is None else frame_idx
        return self.predictor.add_new_mask(self.session, idx, obj_id, mask)

    @torch.inference_mode()
    def push(self, frame: Any) -> FrameMasks:
        """Add the next frame (H, W, 3) uint8 RGB and track every object on it. Returns
        ``(frame_idx, obj_ids, masks (N, 1, H, W) logits)``; N = 0 before any prompt."""
        session, predictor = self.session, self.predictor
        idx = session.source.append(frame)
        session.grow()
        predictor._frame_features(session, idx)
        if not session.objects:
            h, w = session.video_height, session.video_width
            return idx, [], torch.zeros(0, 1, h, w, device=predictor.device)
        predictor.propagate_in_video_preflight(session)
        masks = predictor._track_frame(session, idx, False)
        self._forget_old_frames()
        return idx, session.obj_ids, masks

    def _forget_old_frames(self) -> None:
        """Drop per-frame bookkeeping of frames no longer held (bounded memory)."""
        held = self.session.source.is_held
        for obj in self.session.objects.values():
            for t in [t for t in obj.tracked if not held(t)]:
                del obj.tracked[t]
        if not self.keep_results:
            for t in self.session.results.frame_indices:
                if not held(t):
                    self.session.results.drop_frame(t)

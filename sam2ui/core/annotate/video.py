"""Interactive annotation of a video, shared by the Gradio app and the notebook widgets.

A :class:`VideoAnnotator` wraps one :class:`~sam2ui.core.video.predictor.SAM2VideoPredictor`
session: named, coloured objects; clicks and boxes on any frame with undo; propagation forward,
backward or both as a generator (so callers show progress and can stop it, e.g. through
:meth:`~sam2ui.core.serving.sessions.SessionManager.run_cancellable`); rendered frames and
the exports of :mod:`~sam2ui.core.exports`. Coordinates are pixels of the video frame, x
right, y down; boxes XYXY.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from sam2ui.core.exports import PathLike, write_davis_png_zip, write_overlay_mp4, write_sav_json
from sam2ui.core.render import (
    Color,
    band_pixels,
    contour,
    draw_box,
    draw_click,
    marker_sizes,
    mask_region,
    paint,
    tint_region,
)
from sam2ui.core.render import union as region_union

from .objects import (
    DEFAULT_MAX_OBJECTS,
    DEFAULT_MAX_PROMPTS,
    ObjectTable,
    check_box,
    check_click,
    check_limit,
    check_prompt_room,
)
from .prompts import Click, FramePrompts

if TYPE_CHECKING:
    from sam2ui.core.video.predictor import SAM2VideoPredictor
    from sam2ui.core.video.state import VideoSession

__all__ = ["Direction", "FramePrompts", "PropagationStep", "VideoAnnotator", "VideoObject"]

Direction = Literal["forward", "backward", "both"]
DIRECTIONS = ("forward", "backward", "both")


@dataclass
class VideoObject:
    """One tracked object: id (>= 1), name, colour and its prompts by frame index. Read
    these fields; change them only through the :class:`VideoAnnotator`."""

    obj_id: int
    name: str
    color: Color
    prompts: dict[int, FramePrompts] = field(default_factory=dict)

    @property
    def prompt_count(self) -> int:
        """Clicks and boxes on every frame."""
        return sum(len(fp.clicks) + (fp.box is not None) for fp in self.prompts.values())


@dataclass(frozen=True)
class PropagationStep:
    """One tracked frame: its index, and how many of the planned frames are done so far."""

    frame_idx: int
    done: int
    total: int


class VideoAnnotator(ObjectTable[VideoObject]):
    """Objects, prompts and tracked masks of one video.

    Args:
        predictor: the video predictor (e.g. :func:`sam2ui.core.video_predictor`, which shares
            the model).
        video: anything ``predictor.init_state`` accepts (file path, frame folder, frames).
        offload_state_to_cpu: passed to ``init_state``.
        max_prompts: most prompts (clicks and boxes, all frames) of one object (``None``:
            no limit); past it, and past ``max_objects`` objects, a change raises
            :class:`~sam2ui.core.annotate.objects.LimitReached` (a ValueError).
        max_objects: most objects at once (``None``: no limit).

    Objects join the predictor's session with their first prompt; an object whose last
    prompt is undone or cleared leaves it again (with its tracked masks), since there is
    nothing left to track it from. Prompt changes are refused (RuntimeError) while a
    :meth:`propagate` generator is running; close it first.
    """

    def __init__(
        self,
        predictor: SAM2VideoPredictor,
        video: Any,
        *,
        offload_state_to_cpu: bool = False,
        max_prompts: int | None = DEFAULT_MAX_PROMPTS,
        max_objects: int | None = DEFAULT_MAX_OBJECTS,
    ) -> None:
        super().__init__(max_objects)
        self.max_prompts = check_limit("max_prompts", max_prompts)
        self.predictor = predictor
        self._session: VideoSession | None = predictor.init_state(
            video, offload_state_to_cpu=offload_state_to_cpu
        )
        self._undo: dict[tuple[int, int], list[FramePrompts]] = {}
        self._history: list[tuple[int, int]] = []  # (obj_id, frame) of each change, oldest first
        self._redo: list[tuple[tuple[int, int], FramePrompts]] = []  # what undo took back
        self._running = False

    @property
    def session(self) -> VideoSession:
        """The predictor session (RuntimeError after :meth:`close`)."""
        if self._session is None:
            raise RuntimeError("this video annotator is closed")
        return self._session

    # ------------------------------------------------------------------ video
    @property
    def num_frames(self) -> int:
        return self.session.num_frames

    @property
    def fps(self) -> float:
        """Frames per second of the source (folders and arrays: ``video_io.DEFAULT_FPS``, 30,
        unless given when opening)."""
        return float(self.session.source.fps)

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the frames."""
        return self.session.video_height, self.session.video_width

    def _frame_idx(self, frame_idx: int) -> int:
        n = self.num_frames
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise ValueError(f"frame index must be an int, got {frame_idx!r}")
        if not 0 <= frame_idx < n:
            raise ValueError(f"frame index {frame_idx} out of range [0, {n - 1}] ({n} frames)")
        return int(frame_idx)

    def frame(self, frame_idx: int) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB of one frame (read-only); ValueError naming the range when
        out of it."""
        return self.session.source.get(self._frame_idx(frame_idx))

    def is_encoded(self, frame_idx: int) -> bool:
        """Whether the frame's image features are at hand, so that a prompt there runs no
        image encoding (servers schedule a prompt that does as heavy work)."""
        return self._frame_idx(frame_idx) in self.session.features

    # ------------------------------------------------------------------ objects
    def add_object(self, name: str | None = None) -> int:
        """A new object (ids 1, 2, ... never reused; default name "object N")."""
        self.session  # noqa: B018 (closed check)
        return self._new_object(name, VideoObject)

    def remove_object(self, obj_id: int) -> None:
        """Forget the object, its prompts and its tracked masks on every frame."""
        self._obj(obj_id)
        self._check_idle()
        # Not in the predictor's session when it was never prompted.
        self.predictor.remove_object(self.session, obj_id, strict=False, need_output=False)
        del self._objects[obj_id]
        self._forget_history(lambda key: key[0] == obj_id)

    def _forget_history(self, drop: Callable[[tuple[int, int]], bool]) -> None:
        for key in [k for k in self._undo if drop(k)]:
            del self._undo[key]
        self._history = [k for k in self._history if not drop(k)]
        self._redo = [(k, p) for k, p in self._redo if not drop(k)]

    # ------------------------------------------------------------------ prompts
    def _check_idle(self) -> None:
        if self._running:
            raise RuntimeError("a propagation is running: stop it (close its generator) first")

    def add_click(
        self, frame_idx: int, obj_id: int, x: float, y: float, positive: bool = True
    ) -> dict[int, np.ndarray]:
        """Add a click for ``obj_id`` on ``frame_idx``; returns that frame's masks
        ``{obj_id: (H, W) bool}`` of every object. A click on an already tracked frame is a
        correction (it becomes a conditioning frame): propagate again to carry it on."""
        obj, f = self._obj(obj_id), self._frame_idx(frame_idx)
        fx, fy = check_click(x, y, *self.size)
        check_prompt_room(obj_id, obj.prompt_count, self.max_prompts)
        new = obj.prompts.get(f, FramePrompts()).copy()
        new.clicks.append(Click(fx, fy, bool(positive)))
        return self._change(obj, f, new)

    def set_box(
        self, frame_idx: int, obj_id: int, x0: float, y0: float, x1: float, y1: float
    ) -> dict[int, np.ndarray]:
        """Set (replace) the object's box on the frame; corners in any order (clipped to the
        frame). Undo brings back the box it replaced."""
        obj, f = self._obj(obj_id), self._frame_idx(frame_idx)
        new = obj.prompts.get(f, FramePrompts()).copy()
        new.box = check_box(x0, y0, x1, y1, *self.size)
        if f not in obj.prompts or obj.prompts[f].box is None:  # a new prompt, not a replaced box
            check_prompt_room(obj_id, obj.prompt_count, self.max_prompts)
        return self._change(obj, f, new)

    def remove_click(self, frame_idx: int, obj_id: int, index: int) -> dict[int, np.ndarray]:
        """Remove the object's click number ``index`` (0-based) on the frame; undo brings it
        back. Returns the frame's masks."""
        obj, f = self._obj(obj_id), self._frame_idx(frame_idx)
        new = obj.prompts.get(f, FramePrompts()).copy()
        if isinstance(index, bool) or not 0 <= int(index) < len(new.clicks):
            raise ValueError(
                f"object {obj_id} has {len(new.clicks)} clicks on frame {f}; no click {index!r}"
            )
        del new.clicks[int(index)]
        # From the remaining prompts alone, as if the click had never been given.
        return self._change(obj, f, new, fresh=True)

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def last_changed(self) -> tuple[int, int] | None:
        """``(frame_idx, obj_id)`` an undo of the last change would touch, or None."""
        return (self._history[-1][1], self._history[-1][0]) if self._history else None

    @property
    def next_redo(self) -> tuple[int, int] | None:
        """``(frame_idx, obj_id)`` a redo would touch, or None."""
        return (self._redo[-1][0][1], self._redo[-1][0][0]) if self._redo else None

    def undo(self, frame_idx: int, obj_id: int) -> dict[int, np.ndarray]:
        """Take back the object's last prompt change on the frame (nothing to undo is not an
        error); :meth:`redo` applies it again."""
        obj, f = self._obj(obj_id), self._frame_idx(frame_idx)
        self._check_idle()
        stack = self._undo.get((obj_id, f))
        if not stack:
            return self.masks(f)
        current = obj.prompts.get(f, FramePrompts()).copy()
        out = self._apply(obj, f, stack[-1], fresh=True)
        stack.pop()
        self._redo.append(((obj_id, f), current))
        key = (obj_id, f)
        del self._history[len(self._history) - 1 - self._history[::-1].index(key)]
        return out

    def redo(self) -> tuple[int, int] | None:
        """Apply again what the last :meth:`undo` took back; returns its ``(frame_idx,
        obj_id)``, or None when there is nothing to redo."""
        if not self._redo:
            return None
        self._check_idle()
        (obj_id, f), prompts = self._redo[-1]
        self._edit(self._obj(obj_id), f, prompts)
        self._redo.pop()
        return f, obj_id

    def clear_frame(self, frame_idx: int, obj_id: int) -> dict[int, np.ndarray]:
        """Remove every prompt of the object on the frame."""
        obj, f = self._obj(obj_id), self._frame_idx(frame_idx)
        self._check_idle()
        out = self._apply(obj, f, FramePrompts())
        self._forget_history(lambda key: key == (obj_id, f))
        return out

    def _change(
        self, obj: VideoObject, f: int, new: FramePrompts, fresh: bool = False
    ) -> dict[int, np.ndarray]:
        self._check_idle()
        out = self._edit(obj, f, new, fresh)
        self._redo.clear()  # a new edit starts a new branch: nothing to redo
        return out

    def _edit(
        self, obj: VideoObject, f: int, new: FramePrompts, fresh: bool = False
    ) -> dict[int, np.ndarray]:
        before = obj.prompts.get(f, FramePrompts()).copy()
        out = self._apply(obj, f, new, fresh)
        self._undo.setdefault((obj.obj_id, f), []).append(before)
        self._history.append((obj.obj_id, f))
        return out

    def _apply(
        self, obj: VideoObject, f: int, new: FramePrompts, fresh: bool = False
    ) -> dict[int, np.ndarray]:
        """Make ``new`` the object's prompts on frame ``f`` in the predictor session (all of
        them sent again, replacing the old ones) and return the frame's masks. The predictor
        feeds the frame's current mask back with new prompts; ``fresh`` drops the prompted
        output first, so that an undo on a frame not yet tracked gives exactly the mask
        those prompts gave before."""
        session = self.session
        if fresh and not new.empty and f in obj.prompts and obj.obj_id in session.objects:
            self.predictor.clear_all_prompts_in_frame(session, f, obj.obj_id, need_output=False)
        if not new.empty:
            points = labels = None
            if new.clicks:
                points = np.array([[c.x, c.y] for c in new.clicks], dtype=np.float32)
                labels = np.array([int(c.positive) for c in new.clicks], dtype=np.int32)
            box = None if new.box is None else np.array(new.box, dtype=np.float32)
            _, ids, logits = self.predictor.add_new_points_or_box(
                session, f, obj.obj_id, points, labels, clear_old_points=True, box=box
            )
            obj.prompts[f] = new
            return _to_masks(ids, logits)
        obj.prompts.pop(f, None)
        if obj.obj_id not in session.objects:
            return self.masks(f)
        if not obj.prompts:  # nothing left to track this object from
            self.predictor.remove_object(session, obj.obj_id, need_output=False)
            return self.masks(f)
        self.predictor.clear_all_prompts_in_frame(session, f, obj.obj_id, need_output=True)
        return self.masks(f)

    # ------------------------------------------------------------------ tracking
    def propagate(
        self,
        direction: Direction = "forward",
        start_frame: int | None = None,
        *,
        max_frames: int | None = None,
    ) -> Iterator[PropagationStep]:
        """Track every prompted object; yields after each frame. ``forward`` starts at
        ``start_frame`` (default: the earliest prompted frame) and runs to the end;
        ``backward`` starts at ``start_frame`` (default: the latest prompted frame) and runs
        to frame 0; ``both`` does forward, then backward from the same start frame (as the
        ``sam2ui track`` command). ``max_frames`` limits each pass to that many frames beyond
        its start. Closing the generator early keeps every frame already tracked. ValueError
        (raised by this call, not by the first ``next``) when no object has a prompt."""
        self._check_idle()
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        prompted = [f for o in self._objects.values() for f in o.prompts]
        if not prompted:
            raise ValueError("no object has a prompt yet: add a click or a box first")
        n = self.num_frames
        if max_frames is not None and (isinstance(max_frames, bool) or max_frames < 0):
            raise ValueError(f"max_frames must be an int >= 0, got {max_frames!r}")
        span = n if max_frames is None else int(max_frames)
        start = None if start_frame is None else self._frame_idx(start_frame)
        passes: list[tuple[int, bool, int]] = []  # (start, reverse, frames)
        if direction in ("forward", "both"):
            s = min(prompted) if start is None else start
            passes.append((s, False, min(s + span, n - 1) - s + 1))
            if direction == "both" and s > 0:
                passes.append((s, True, s - max(s - span, 0) + 1))
        else:
            s = max(prompted) if start is None else start
            if s > 0:  # the predictor tracks nothing backwards from frame 0
                passes.append((s, True, s - max(s - span, 0) + 1))
        return self._run(passes, span)

    def _run(self, passes: list[tuple[int, bool, int]], span: int) -> Iterator[PropagationStep]:
        self._check_idle()
        total = sum(p[2] for p in passes)
        done = 0
        self._running = True
        try:
            for start, reverse, _ in passes:
                steps = self.predictor.propagate_in_video(
                    self.session, start_frame_idx=start, max_frame_num_to_track=span,
                    reverse=reverse,
                )  # fmt: skip
                try:
                    for frame_idx, _, _ in steps:
                        done += 1
                        yield PropagationStep(frame_idx, done, total)
                finally:
                    steps.close()  # type: ignore[attr-defined]
        finally:
            self._running = False

    def masks(self, frame_idx: int) -> dict[int, np.ndarray]:
        """``{obj_id: (H, W) bool}`` known for the frame (prompted or tracked); may be empty."""
        f = self._frame_idx(frame_idx)
        found = self.session.results.frame(f)
        return {oid: m for oid, m in found.items() if oid in self._objects}

    def mask_frames(self, obj_id: int) -> list[int]:
        """Sorted indices of the frames where the object has a non-empty mask."""
        self._obj(obj_id)
        return self.session.results.object_frames(obj_id)

    @property
    def tracked_frames(self) -> list[int]:
        """Sorted indices of the frames that have masks."""
        return self.session.results.frame_indices

    def results(self) -> dict[int, dict[int, np.ndarray]]:
        """``{frame_idx: {obj_id: (H, W) bool}}`` of every frame with masks (unpacked now:
        for long videos prefer :meth:`masks` frame by frame)."""
        return dict(self._pairs())

    def _pairs(self) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        for f in self.tracked_frames:
            yield f, self.masks(f)

    def render(self, frame_idx: int, selected: int | None = None, alpha: float = 0.5) -> np.ndarray:
        """``(H, W, 3)`` uint8 frame with masks tinted, and this frame's prompts drawn
        (clicks green / red with a white outline, boxes in the object's colour); ``selected``
        gets a contour in its colour."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        image = self.frame(frame_idx)
        if selected is not None:
            self._obj(selected)
        masks = self.masks(frame_idx)
        colors = {oid: o.color for oid, o in self._objects.items()}
        out = image.copy()
        regions = {oid: mask_region(m) for oid, m in masks.items()}
        dirty = region_union(regions.values())
        if dirty is not None:
            tint_region(image, out, masks, colors, alpha, dirty)
        radius, line, band = marker_sizes(*image.shape[:2])
        if selected in masks and regions[selected] is not None:
            region, ring = contour(masks[selected], band, regions[selected])
            paint(out, band_pixels(region, ring, image.shape[1]), colors[selected])
        here = [(o, o.prompts[frame_idx]) for o in self._objects.values() if frame_idx in o.prompts]
        for o, fp in here:
            if fp.box is not None:
                draw_box(out, fp.box, o.color, line)
        for _, fp in here:
            for c in fp.clicks:
                draw_click(out, c.x, c.y, c.positive, radius)
        return out

    # ------------------------------------------------------------------ exports
    def write_overlay_mp4(
        self, path: PathLike, progress: Callable[[int, int], None] | None = None
    ) -> Path:
        """H.264 MP4 of every frame with masks tinted, at the source frame rate;
        ``progress(done, total)`` after each frame. Needs PyAV."""
        n = self.num_frames

        def frames() -> Iterator[np.ndarray]:
            for i in range(n):
                yield self.session.source.get(i)
                if progress is not None:  # the writer asks for the next frame: i is written
                    progress(i + 1, n)

        colors = {oid: o.color for oid, o in self._objects.items()}
        return write_overlay_mp4(frames(), self._pairs(), path, fps=self.fps, colors=colors)

    def write_masks_zip(self, path: PathLike) -> Path:
        """DAVIS indexed PNGs (value = object id) per tracked frame in a zip (see
        :func:`~sam2ui.core.exports.write_davis_png_zip`)."""
        h, w = self.size
        return write_davis_png_zip(self._pairs(), path, height=h, width=w)

    def write_json(self, path: PathLike) -> Path:
        """SA-V masklet JSON with COCO RLE (see :func:`~sam2ui.core.exports.write_sav_json`),
        with the object names and the source frame rate."""
        h, w = self.size
        names = {oid: o.name for oid, o in self._objects.items()}
        return write_sav_json(
            self._pairs(), path, height=h, width=w, fps=self.fps,
            frame_count=self.num_frames, object_names=names,
        )  # fmt: skip

    def close(self) -> None:
        """Free the session (frames, memories, results). Calling it again does nothing;
        any other call afterwards raises RuntimeError."""
        session, self._session = self._session, None
        if session is not None:
            self.predictor.reset_state(session)
            session.features.clear()
            session.source.close()
        self._objects.clear()
        self._undo.clear()


def _to_masks(ids: list[Any], logits: torch.Tensor) -> dict[int, np.ndarray]:
    """The predictor's ``(N, 1, H, W)`` logits of objects ``ids`` -> ``{obj_id: (H, W) bool}``."""
    binary = (logits[:, 0] > 0).cpu().numpy()
    return dict(zip(ids, binary))

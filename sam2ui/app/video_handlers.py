"""The video tab's actions as plain functions of (session id, arguments) -> view.

A tab's :class:`~sam2ui.core.VideoAnnotator` lives in the session manager as a
:class:`VideoWork`. Uploads are checked (:mod:`~sam2ui.app.uploads`: a regular file, the
app's size, duration and frame limits) before any model work, and the file opened for that
check is the one the annotator reads.
:meth:`VideoHandlers.propagate` is a generator of views (progress and a live preview) that
runs through ``SessionManager.run_cancellable``, so :meth:`VideoHandlers.cancel` stops it
between frames and keeps the frames already tracked.
Coordinates are pixels of the video frame, x right, y down; frames are 0-based.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sam2ui.core import (
    CanvasFeed,
    FramePrompts,
    FrameSource,
    Lane,
    SessionNotFound,
    VideoAnnotator,
    make_folder,
)

from . import zerogpu
from .context import AppContext, UserError, check_inside, chosen_object, target_object
from .uploads import open_video
from .video_worker import PREVIEW_EVERY_S, track_frames
from .views import (
    ObjectRow,
    describe_frame,
    object_rows,
)
from .zerogpu import offload_state, on_zero_gpu

__all__ = ["VideoHandlers", "VideoView", "VideoWork"]

KIND = "video"
DIRECTIONS = ("forward", "backward", "both")


@dataclass
class VideoWork:
    """One tab's video session: the annotator, selection, frame shown,
    and a folder for its downloads (removed on close). ``version`` counts edits, so a
    rendered MP4 is reused only while it is current."""

    annotator: VideoAnnotator
    frame_idx: int = 0
    selected: int | None = None
    version: int = 0
    mp4: tuple[int, Path] | None = None
    feed: CanvasFeed | None = None  # set when a browser canvas shows this session
    playing: int = 0  # the token of the playback running (0: none); a new token stops it
    folder: Path = field(default_factory=lambda: make_folder("video"))

    def close(self) -> None:
        self.annotator.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class VideoView:
    """What the video tab shows: the rendered frame ``(H, W, 3)`` uint8 and its index, the
    frame count, the objects, and after a propagation the overlay MP4."""

    frame: np.ndarray | None
    frame_idx: int
    num_frames: int
    objects: list[ObjectRow]
    selected: int | None
    message: str = ""
    video: Path | None = None
    progress: tuple[int, int] | None = None
    canvas: dict[str, Any] | None = None


class VideoHandlers:
    """The video tab's actions on an :class:`~sam2ui.app.context.AppContext`."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._stop_files: dict[str, Path] = {}  # ZeroGPU: a running propagation's stop flag

    # ------------------------------------------------------------------ helpers
    def _view(
        self, work: VideoWork, message: str = "", picture: np.ndarray | None = None, **extra: Any
    ) -> VideoView:
        """The tab's view; ``picture`` is the rendered frame when it is already at hand."""
        ann = work.annotator
        if work.selected is not None and work.selected not in ann.objects:
            work.selected = None
        frame_masks = ann.masks(work.frame_idx)
        details = {}
        for obj_id, obj in ann.objects.items():
            prompted = sorted(obj.prompts)
            where = f"prompts on frames {prompted}" if prompted else "no prompts yet"
            area = f", {int(frame_masks[obj_id].sum())} px here" if obj_id in frame_masks else ""
            details[obj_id] = where + area
        rows = object_rows(ann.objects, details)
        if work.feed is not None:
            update = work.feed.video_update(
                ann,
                work.frame_idx,
                work.selected,
                message or describe_frame(work, details),
                progress=extra.get("progress"),
                source_key=id(ann),
                masks=frame_masks,
            )
            update["playing"] = bool(work.playing)
            return VideoView(
                None,
                work.frame_idx,
                ann.num_frames,
                rows,
                work.selected,
                message,
                **extra,
                canvas=update,
            )
        frame = ann.render(work.frame_idx, selected=work.selected) if picture is None else picture
        return VideoView(
            frame, work.frame_idx, ann.num_frames, rows, work.selected, message, **extra
        )

    def _frame(self, work: VideoWork, frame_idx: int | None) -> int:
        if frame_idx is None:
            return work.frame_idx
        n = work.annotator.num_frames
        if not 0 <= int(frame_idx) < n:
            raise UserError(f"There is no frame {frame_idx}; this video has frames 0 to {n - 1}.")
        work.frame_idx = int(frame_idx)
        return work.frame_idx

    def _call(self, work: VideoWork, frame: int) -> Any:
        """How to run a prompt on ``frame``: in the interactive lane when the frame's features
        are at hand, else in the heavy lane, as the image encoding it starts with is heavy
        work that other people's clicks may pass."""
        return self.ctx.call if work.annotator.is_encoded(frame) else self.ctx.call_heavy

    def open_checked(self, path: str | os.PathLike[str]) -> FrameSource:
        """The video at ``path``, opened and checked (:func:`~sam2ui.app.uploads.open_video`)."""
        return open_video(self.ctx.config, path)

    # ------------------------------------------------------------------ actions
    def upload(
        self,
        session_id: str | None,
        path: str | os.PathLike[str] | None,
        owner: str | None = None,
        *,
        canvas: bool = False,
    ) -> tuple[str, VideoView]:
        """Open the video at ``path`` in a new session (closing the tab's previous one);
        ``canvas``: the session is shown on the browser canvas."""
        if not path:
            raise UserError("Upload a video first.")
        if not (session_id and session_id in self.ctx.sessions):
            self.ctx.admit()  # a newcomer on a full server is refused before the work
        source = self.open_checked(path)
        try:
            predictor = self.ctx.video_predictor()
            # On ZeroGPU the source is pickled for the worker: its frame table goes along, so
            # the worker reopens the file without reading it through again.
            annotator = self.ctx.run_heavy(
                VideoAnnotator,
                predictor,
                source,
                offload_state_to_cpu=offload_state(),
                max_prompts=self.ctx.config.max_prompts,
                max_objects=self.ctx.config.max_objects,
            )
        except BaseException:
            source.close()
            raise
        if annotator.session.source is not source:
            source.close()  # ZeroGPU: the annotator came back with its own copy of the source
        self.ctx.close_session(session_id)
        work = VideoWork(annotator, feed=CanvasFeed() if canvas else None)
        new_id = self.ctx.create_session(work, KIND, owner)
        with self.ctx.use(new_id, KIND) as work:
            msg = f"{annotator.num_frames} frames: pick a frame and click on an object."
            return new_id, self._view(work, msg)

    def show_frame(self, session_id: str | None, frame_idx: int) -> VideoView:
        with self.ctx.use(session_id, KIND) as work:
            self._frame(work, frame_idx)
            return self._view(work)

    def add_object(self, session_id: str | None, name: str | None = None) -> VideoView:
        with self.ctx.use(session_id, KIND) as work:
            work.selected = work.annotator.add_object(name.strip() if name else None)
            return self._view(work, "New object: click on it.")

    def select_object(self, session_id: str | None, obj_id: int | None) -> VideoView:
        with self.ctx.use(session_id, KIND) as work:
            if obj_id:
                target_object(work, obj_id)
            return self._view(work)

    def rename_object(self, session_id: str | None, obj_id: int | None, name: str) -> VideoView:
        if not name or not name.strip():
            raise UserError("Type a name first.")
        with self.ctx.use(session_id, KIND) as work:
            if not obj_id and work.selected is None:
                raise UserError("Select an object to rename.")
            target = target_object(work, obj_id)
            work.annotator.rename_object(target, name.strip())
            work.version += 1
            return self._view(work, f"Renamed object {target} to {name.strip()!r}.")

    def remove_object(self, session_id: str | None, obj_id: int | None) -> VideoView:
        with self.ctx.use(session_id, KIND) as work:
            target = chosen_object(work, obj_id, "remove")
            work.annotator.remove_object(target)
            remaining = list(work.annotator.objects)
            work.selected = remaining[-1] if remaining else None
            work.version += 1
            return self._view(work, f"Removed object {target}.")

    def click(
        self,
        session_id: str | None,
        frame_idx: int | None,
        obj_id: int | None,
        x: float,
        y: float,
        positive: bool = True,
    ) -> VideoView:
        """A point prompt on ``frame_idx`` at ``(x, y)`` frame pixels (a correction when the
        frame is already tracked: propagate again to carry it on)."""
        with self.ctx.use(session_id, KIND, action=True) as work:
            frame = self._frame(work, frame_idx)
            check_inside(work.annotator.size, x, y, "frame")
            target = target_object(work, obj_id)
            work.annotator, _ = self._call(work, frame)(
                VideoAnnotator.add_click,
                work.annotator,
                frame,
                target,
                float(x),
                float(y),
                bool(positive),
            )
            work.version += 1
            return self._view(work)

    def box(
        self,
        session_id: str | None,
        frame_idx: int | None,
        obj_id: int | None,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
    ) -> VideoView:
        with self.ctx.use(session_id, KIND, action=True) as work:
            frame = self._frame(work, frame_idx)
            check_inside(work.annotator.size, x0, y0, "frame")
            check_inside(work.annotator.size, x1, y1, "frame")
            target = target_object(work, obj_id)
            work.annotator, _ = self._call(work, frame)(
                VideoAnnotator.set_box,
                work.annotator,
                frame,
                target,
                float(x0),
                float(y0),
                float(x1),
                float(y1),
            )
            work.version += 1
            return self._view(work)

    def undo(
        self, session_id: str | None, frame_idx: int | None, obj_id: int | None = None
    ) -> VideoView:
        with self.ctx.use(session_id, KIND, action=True) as work:
            frame = self._frame(work, frame_idx)
            if not obj_id and work.selected is None:
                return self._view(work, "Nothing to undo.")
            target = target_object(work, obj_id)
            before = work.annotator.objects[target].prompts.get(frame, FramePrompts())
            work.annotator, _ = self._call(work, frame)(
                VideoAnnotator.undo, work.annotator, frame, target
            )
            work.version += 1
            if work.annotator.objects[target].prompts.get(frame, FramePrompts()) == before:
                return self._view(work, f"Nothing to undo for object {target} on frame {frame}.")
            return self._view(work, f"Undid the last change of object {target} on frame {frame}.")

    def clear_frame(
        self, session_id: str | None, frame_idx: int | None, obj_id: int | None = None
    ) -> VideoView:
        with self.ctx.use(session_id, KIND, action=True) as work:
            frame = self._frame(work, frame_idx)
            if not obj_id and work.selected is None:
                return self._view(work, "Select an object to clear.")
            target = target_object(work, obj_id)
            work.annotator, _ = self._call(work, frame)(
                VideoAnnotator.clear_frame, work.annotator, frame, target
            )
            work.version += 1
            return self._view(work, f"Cleared object {target} on frame {frame}.")

    def propagate(
        self,
        session_id: str | None,
        direction: str = "both",
        progress: Callable[[int, int], None] | None = None,
        *,
        overlay: bool = True,
    ) -> Iterator[VideoView]:
        """Track every prompted object; yields a preview view now and then and a final view
        with the overlay MP4 (``overlay``; the canvas shows the masks itself). :meth:`cancel`
        stops it between frames (what is tracked stays)."""
        if direction not in DIRECTIONS:
            raise UserError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
        with self.ctx.use(session_id, KIND) as work:
            if not any(obj.prompts for obj in work.annotator.objects.values()):
                raise UserError("Click on an object first, then propagate.")
        assert session_id is not None  # checked by use()
        if on_zero_gpu():
            yield from self._propagate_in_worker(session_id, direction, progress, overlay)
            return

        def frames(work: VideoWork) -> Iterator[tuple[Any, VideoWork]]:
            steps = work.annotator.propagate(direction)  # type: ignore[arg-type]
            try:
                while True:
                    with self.ctx.model_work(Lane.HEAVY):  # per frame; clicks pass
                        step = next(steps, None)
                    if step is None:
                        return
                    yield step, work
            finally:
                close = getattr(steps, "close", None)
                if close is not None:
                    close()

        done, total, last_preview = 0, 0, 0.0
        try:
            for step, work in self.ctx.sessions.run_cancellable(session_id, frames):
                done, total = step.done, step.total
                work.version += 1
                if progress is not None:
                    progress(done, total)
                now = time.monotonic()
                msg = f"Tracking: {done}/{total} frames"
                if now - last_preview >= PREVIEW_EVERY_S or done == total:
                    last_preview = now
                    work.frame_idx = step.frame_idx
                    yield self._view(work, msg, progress=(done, total))
                elif work.feed is not None:  # the canvas's timeline shows every frame's progress
                    yield self._view(work, msg, progress=(done, total))
        except SessionNotFound:
            raise UserError("This session has ended; upload the video again.") from None
        with self.ctx.use(session_id, KIND) as work:
            yield self._tracked_view(work, done, total, overlay)

    def _tracked_view(self, work: VideoWork, done: int, total: int, overlay: bool) -> VideoView:
        """The view after a propagation of ``done`` of ``total`` frames, with its MP4."""
        mp4 = self._overlay_mp4(work) if overlay else None
        msg = (
            f"Stopped after {done} of {total} frames; the tracked frames are kept."
            if done < total
            else f"Tracked {len(work.annotator.tracked_frames)} frames. "
            "Click to correct, then propagate again."
        )
        return self._view(work, msg, video=mp4, progress=(done, total))

    def _propagate_in_worker(
        self,
        session_id: str,
        direction: str,
        progress: Callable[[int, int], None] | None,
        overlay: bool,
    ) -> Iterator[VideoView]:
        """:meth:`propagate` on ZeroGPU: one GPU call tracks every frame on a copy of the
        annotator and sends back progress, previews and finally the changed annotator. The
        session stays held meanwhile; :meth:`cancel` stops it through a file, since the
        worker is another process."""
        with self.ctx.use(session_id, KIND) as work:
            stop = work.folder / "stop"
            stop.unlink(missing_ok=True)
            self._stop_files[session_id] = stop
            done = total = 0
            try:
                items = zerogpu.iterate(
                    track_frames, work.annotator, direction, str(stop), work.selected
                )
                for step, picture, annotator in items:
                    if annotator is not None:
                        work.annotator = annotator
                        break
                    assert step is not None
                    done, total = step.done, step.total
                    work.version += 1
                    if progress is not None:
                        progress(done, total)
                    if picture is not None:
                        work.frame_idx = step.frame_idx
                        msg = f"Tracking: {done}/{total} frames"
                        yield self._view(work, msg, picture, progress=(done, total))
            finally:
                self._stop_files.pop(session_id, None)
                stop.unlink(missing_ok=True)
            work.version += 1
            yield self._tracked_view(work, done, total, overlay)

    def cancel(self, session_id: str | None) -> str:
        """Ask a running propagation of this session to stop before its next frame."""
        if not session_id:
            return "Nothing is running."
        stop = self._stop_files.get(session_id)
        if stop is not None:
            stop.touch()
        with suppress(SessionNotFound):
            if self.ctx.sessions.cancel(session_id) or stop is not None:
                return "Stopping after the current frame…"
        return "Nothing is running."

    def _overlay_mp4(self, work: VideoWork) -> Path:
        if work.mp4 is not None and work.mp4[0] == work.version and work.mp4[1].exists():
            return work.mp4[1]
        path = work.folder / f"overlay_v{work.version}.mp4"
        work.annotator.write_overlay_mp4(path)
        if work.mp4 is not None:
            # On Windows a file still open elsewhere cannot be removed; it goes with the folder.
            with suppress(OSError):
                work.mp4[1].unlink(missing_ok=True)
        work.mp4 = (work.version, path)
        return path

    def export(self, session_id: str | None) -> list[Path]:
        """Write the downloads: overlay MP4, DAVIS PNG zip and SA-V JSON (RLE)."""
        with self.ctx.use(session_id, KIND) as work:
            if not work.annotator.tracked_frames:
                raise UserError("No masks yet: click on an object (and propagate) first.")
            mp4 = self._overlay_mp4(work)
            zip_path = work.annotator.write_masks_zip(work.folder / "masks.zip")
            json_path = work.annotator.write_json(work.folder / "masks.json")
            return [mp4, Path(zip_path), Path(json_path)]

    def close(self, session_id: str | None) -> None:
        self.ctx.close_session(session_id)

"""Interactive segmentation and tracking of a video in a notebook.

The canvas (the web app's canvas too) shows one frame at a time, with a frame number, a
timeline of each object's prompts and masks, play / pause and the propagation controls.
Tracking and playback run in background threads. A notebook kernel handles widget messages
(a button press) only between cells, on its one shell thread; with tracking off that
thread, Cancel, seeking and the progress on the timeline keep working while frames are
tracked. The threads and the kernel share the annotator and the canvas under a lock, one
frame at a time.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import ipywidgets as widgets
import numpy as np

from sam2ui.core import DIRECTIONS, Direction, PropagationStep, VideoAnnotator, video_predictor

from .base import DEFAULT_MODEL, SegmenterBase
from .canvas import CanvasAction, CanvasBox, CanvasClick, CanvasEvent

if TYPE_CHECKING:
    from sam2ui.core import ModelCache, SAM2VideoPredictor

__all__ = ["VideoSegmenter"]

# Seconds between the frames shown while tracking (each one is a picture sent), and between
# the progress updates in between (masks and timeline only).
PREVIEW_INTERVAL_S = 0.5
PROGRESS_INTERVAL_S = 0.1
EXPORT_FORMATS = ("mp4", "zip", "json")


class VideoSegmenter(SegmenterBase):
    """Prompt objects on any frame of a video and track them through it.

    Pick a frame with the canvas's frame number, timeline, play / pause or the J and L keys;
    click (object point), shift/alt/right-click (background point) or drag (box) as in
    :class:`~sam2ui.widgets.ImageSegmenter`. "Propagate" tracks every prompted object in the
    chosen direction in a background thread, with its progress on the timeline and the frame
    being tracked shown now and then; "Cancel" stops it after the current frame and keeps
    every frame tracked so far. A click on a tracked frame is a correction: propagate again
    to carry it on. "Export" writes the results into the folder named beside it.

    Args:
        video: a video file, a folder of JPEG/PNG frames or a ``(T, H, W, 3)`` uint8 array.
        model: a variant name, hub id or checkpoint path (from the shared model cache), or a
            ready :class:`~sam2ui.core.SAM2VideoPredictor`.
        device, dtype, cache: as for :class:`~sam2ui.widgets.ImageSegmenter`.
        offload_state_to_cpu: keep the session's frames and memories in CPU memory.
        display_width: width of the canvas in screen pixels (0: the notebook's width).

    Results: :meth:`results` ``{frame: {object id: (H, W) bool}}``, :meth:`masks` for one
    frame, and the exports :meth:`write_overlay_mp4`, :meth:`write_masks_zip`,
    :meth:`write_json` (or :meth:`export` for all three). The engine's annotator is
    :attr:`annotator` (:class:`~sam2ui.core.VideoAnnotator`).
    """

    kind = "video"
    annotator: VideoAnnotator
    preview_interval_s = PREVIEW_INTERVAL_S
    progress_interval_s = PROGRESS_INTERVAL_S

    def __init__(
        self,
        video: object,
        model: str | os.PathLike[str] | SAM2VideoPredictor = DEFAULT_MODEL,
        *,
        device: Any = None,
        dtype: Any = "float32",
        cache: ModelCache | None = None,
        offload_state_to_cpu: bool = False,
        display_width: int = 0,
    ) -> None:
        if isinstance(video, (str, os.PathLike)) and not Path(video).exists():
            raise FileNotFoundError(f"no video file or frame folder {video}")
        predictor = video_predictor(model, device=device, dtype=dtype, cache=cache)
        annotator = VideoAnnotator(predictor, video, offload_state_to_cpu=offload_state_to_cpu)
        self._frame = 0
        self._worker: threading.Thread | None = None
        self._cancel = threading.Event()
        self._track_error: BaseException | None = None
        self._progress: tuple[int, int] | None = None  # on the timeline while tracking
        self._tracked: tuple[int, int] | None = None
        self._player: threading.Thread | None = None
        self._stop_play = threading.Event()
        self._playing = False
        self.export_folder = widgets.Text(description="Folder", value="sam2ui_results")
        self.export_button = widgets.Button(description="Export", icon="download")
        super().__init__(annotator, display_width=display_width)
        self.export_button.on_click(self._ui(lambda _: self._export_from_button()))
        self.add_object()

    def _tools(self) -> list[widgets.Widget]:
        return [self.export_folder, self.export_button]

    # ------------------------------------------------------------------ frames
    @property
    def frame(self) -> int:
        """Index of the frame shown and prompted."""
        return self._frame

    @frame.setter
    def frame(self, frame_idx: int) -> None:
        self._frame = self._checked_frame(frame_idx)
        self.refresh()

    def _checked_frame(self, frame_idx: int) -> int:
        n = self.annotator.num_frames
        if isinstance(frame_idx, bool) or not isinstance(frame_idx, (int, np.integer)):
            raise ValueError(f"frame index must be an int, got {frame_idx!r}")
        if not 0 <= frame_idx < n:
            raise ValueError(f"frame {frame_idx} is outside 0..{n - 1}")
        return int(frame_idx)

    # ------------------------------------------------------------------ playback
    @property
    def playing(self) -> bool:
        """Whether the video is playing in the canvas."""
        return self._playing

    def play(self, start_frame: int | None = None) -> None:
        """Show the frames one after another at the video's frame rate (frames are skipped
        when showing them is slower), from ``start_frame`` (default: the one shown; the
        first when that is the last), until the last frame or :meth:`pause`."""
        self.pause()
        self._check_idle()
        start = self._frame if start_frame is None else self._checked_frame(start_frame)
        if start >= self.annotator.num_frames - 1:
            start = 0
        stop = threading.Event()
        with self._lock:
            self._frame, self._stop_play, self._playing = start, stop, True
        self._player = threading.Thread(
            target=self._play, args=(start, stop), name="sam2ui-play", daemon=True
        )
        self.refresh()
        self._after_update(self._player.start)  # its frames come after the answer to Play

    def pause(self) -> None:
        """Stop playing (on the frame shown)."""
        self._stop_play.set()
        player = self._player
        if (
            player is not None
            and player.ident is not None
            and player is not threading.current_thread()
        ):
            player.join()
        if self._playing:
            self._playing = False
            self.refresh()

    def _play(self, start: int, stop: threading.Event) -> None:
        fps = self.annotator.fps if self.annotator.fps > 0 else 30.0
        last = self.annotator.num_frames - 1
        begun, frame = time.monotonic(), start
        try:
            while frame < last:
                if stop.wait(max(0.0, begun + (frame + 1 - start) / fps - time.monotonic())):
                    return
                # Late (showing a frame took longer than a frame lasts): skip to the clock.
                due = start + int((time.monotonic() - begun) * fps)
                with self._lock:
                    if stop.is_set():
                        return
                    frame = self._frame = min(max(frame + 1, due), last)
                    self.refresh()
        except Exception as exc:
            self._report(exc)
        finally:
            with self._lock:
                if not stop.is_set():  # the end, or an error: the canvas's button says Play
                    self._playing = False
                    stop.set()
                    with contextlib.suppress(Exception):
                        self.refresh()

    # ------------------------------------------------------------------ tracking
    @property
    def progress(self) -> tuple[int, int] | None:
        """``(done, total)`` frames of the tracking under way or last run (None before one)."""
        return self._tracked

    @property
    def running(self) -> bool:
        """Whether tracking is under way."""
        return self._worker is not None and self._worker.is_alive()

    def propagate(
        self,
        direction: Direction = "forward",
        start_frame: int | None = None,
        *,
        wait: bool = False,
    ) -> None:
        """Track every prompted object (see :meth:`~sam2ui.core.VideoAnnotator.propagate`)
        in a background thread.

        With ``wait=True`` this returns when tracking has ended (the widget's Cancel cannot be
        pressed meanwhile: the kernel is busy; interrupting the kernel cancels). Errors during
        tracking appear in the widget's error area, and are raised here too when ``wait`` is
        True.
        """
        self._check_idle()
        with self._lock:
            steps = self.annotator.propagate(direction, start_frame)  # checks prompts exist
        self._cancel.clear()
        self._track_error = None
        self.export_button.disabled = True
        self._worker = threading.Thread(
            target=self._track, args=(steps,), name="sam2ui-track", daemon=True
        )
        # From the canvas: its progress updates come after the update answering the press.
        self._after_update(self._worker.start)
        if wait:
            try:
                self.wait()
            except KeyboardInterrupt:
                self.cancel()
                self.wait()
                raise
            if self._track_error is not None:
                raise self._track_error

    def cancel(self) -> None:
        """Stop tracking after the frame being tracked; frames tracked so far are kept."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until tracking ends (or ``timeout`` seconds); whether it has ended."""
        worker = self._worker
        if worker is not None and worker.ident is not None:  # started
            worker.join(timeout)
        return not self.running

    def _track(self, steps: Iterator[PropagationStep]) -> None:
        done = total = 0
        shown = sent = 0.0
        error: BaseException | None = None
        try:
            while not self._cancel.is_set():
                with self._lock:
                    step = next(steps, None)
                    if step is None:
                        break
                    done, total = step.done, step.total
                    self._progress = self._tracked = (done, total)
                    now = time.monotonic()
                    if now - shown >= self.preview_interval_s or done == total:
                        shown = sent = now
                        self._frame = step.frame_idx  # the frame just tracked
                        self.refresh(f"Tracking: {done}/{total} frames")
                    elif now - sent >= self.progress_interval_s:
                        sent = now
                        self.refresh(f"Tracking: {done}/{total} frames")
        except Exception as exc:
            error = exc
        finally:
            with self._lock:
                steps.close()  # type: ignore[attr-defined]  # keeps the frames tracked so far
                self._progress = None
        self.export_button.disabled = False
        if error is not None:
            self._track_error = error
            self._report(error)
            return
        if self._cancel.is_set() and done < total:
            message = f"Tracking cancelled after {done}/{total} frames (those are kept)."
        else:
            message = f"Tracked {done}/{total} frames."
        try:
            self.refresh(message)
        except Exception as exc:
            self._report(exc)

    def _busy_reason(self) -> str | None:
        if self.running:
            return "tracking is running: wait for it to finish or press Cancel"
        return None

    def _check_idle(self) -> None:
        self.pause()  # a prompt, an object or tracking stops playback
        super()._check_idle()

    # ------------------------------------------------------------------ results
    def masks(self, frame_idx: int) -> dict[int, np.ndarray]:
        """``{object id: (H, W) bool}`` known for one frame (prompted or tracked)."""
        with self._lock:
            return self.annotator.masks(frame_idx)

    def results(self) -> dict[int, dict[int, np.ndarray]]:
        """``{frame: {object id: (H, W) bool}}`` of every frame with masks."""
        with self._lock:
            return self.annotator.results()

    def write_overlay_mp4(self, path: str | os.PathLike[str]) -> Path:
        """H.264 MP4 of the frames with masks tinted (needs PyAV); progress on the timeline."""
        self._check_idle()
        sent = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal sent
            if time.monotonic() - sent >= self.progress_interval_s or done == total:
                sent = time.monotonic()
                self._progress = (done, total)
                self.refresh(f"Writing the video: {done}/{total} frames")

        with self._lock:
            try:
                return Path(self.annotator.write_overlay_mp4(Path(path), progress=progress))
            finally:
                self._progress = None

    def write_masks_zip(self, path: str | os.PathLike[str]) -> Path:
        """DAVIS indexed PNGs (value = object id) per tracked frame, in a zip."""
        self._check_idle()
        with self._lock:
            return Path(self.annotator.write_masks_zip(Path(path)))

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """SA-V masklet JSON with COCO RLE masks."""
        self._check_idle()
        with self._lock:
            return Path(self.annotator.write_json(Path(path)))

    def export(
        self, folder: str | os.PathLike[str], formats: tuple[str, ...] = EXPORT_FORMATS
    ) -> dict[str, Path]:
        """Write ``overlay.mp4``, ``masks.zip`` and ``masks.json`` (those in ``formats``) into
        ``folder`` (created); returns ``{format: path}``."""
        unknown = sorted(set(formats) - set(EXPORT_FORMATS))
        if unknown:
            raise ValueError(f"unknown export formats {unknown}; choose from {EXPORT_FORMATS}")
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        if "zip" in formats:
            written["zip"] = self.write_masks_zip(out / "masks.zip")
        if "json" in formats:
            written["json"] = self.write_json(out / "masks.json")
        if "mp4" in formats:
            written["mp4"] = self.write_overlay_mp4(out / "overlay.mp4")
        return written

    def _export_from_button(self) -> None:
        folder = self.export_folder.value.strip()
        if not folder:
            raise ValueError("type a folder to export into")
        written = self.export(folder)
        self.refresh(f"Wrote {', '.join(str(p) for p in written.values())}.")

    def close(self) -> None:
        """Stop tracking and playback, free the video session and close the widget."""
        if getattr(self, "_worker", None) is not None:
            self.cancel()
            self.wait()
        if getattr(self, "_player", None) is not None:
            self.pause()
        super().close()

    # ------------------------------------------------------------------ canvas events
    def _on_canvas_event(self, event: CanvasEvent) -> None:
        # A prompt goes to the frame the canvas says (one being sought counts).
        prompt = isinstance(event, (CanvasClick, CanvasBox)) or event.type == "remove_point"
        if prompt and event.frame is not None and event.frame != self._frame:
            self._check_idle()
            self._frame = self._checked_frame(event.frame)
        super()._on_canvas_event(event)

    def _on_action(self, event: CanvasAction) -> str | None:
        if event.type == "seek":
            self.frame = int(event.frame or 0)
        elif event.type == "play":
            self.play(event.frame)
        elif event.type == "pause":
            self.pause()
        elif event.type == "propagate":
            direction = event.direction if event.direction in DIRECTIONS else "both"
            self.propagate(cast(Direction, direction))
            return f"Tracking {event.direction}…"
        elif event.type == "cancel":
            if not self.running:
                return "Nothing to cancel."
            self.cancel()
            if threading.current_thread() is self._worker:
                return "Cancelling after the frame being tracked…"
            # Within a frame: then the answer repeats what the tracking said last.
            self.wait()
            return self._message
        else:
            return super()._on_action(event)
        return None

    # ------------------------------------------------------------------ hooks
    def _update(self, message: str) -> dict[str, Any]:
        update = self._feed.video_update(
            self.annotator,
            self._frame,
            self._active,
            message,
            progress=self._progress,
            source_key=id(self.annotator),
        )
        update["playing"] = self._playing
        return update

    def _click(self, obj_id: int, x: float, y: float, positive: bool) -> None:
        self.annotator.add_click(self._frame, obj_id, x, y, positive)

    def _box(self, obj_id: int, x0: float, y0: float, x1: float, y1: float) -> None:
        self.annotator.set_box(self._frame, obj_id, x0, y0, x1, y1)

    def _remove_click(self, obj_id: int, index: int) -> None:
        self.annotator.remove_click(self._frame, obj_id, index)

    def _undo(self, obj_id: int) -> None:
        self.annotator.undo(self._frame, obj_id)

    def _undo_last(self) -> int | None:
        last = self.annotator.last_changed
        if last is None:
            return None
        frame_idx, obj_id = last
        self.annotator.undo(frame_idx, obj_id)
        self._frame = frame_idx  # show what was undone
        return obj_id

    def _redo(self) -> int | None:
        done = self.annotator.redo()
        if done is None:
            return None
        self._frame, obj_id = done
        return obj_id

    def _clear(self, obj_id: int) -> None:
        self.annotator.clear_frame(self._frame, obj_id)

    def _status_text(self) -> str:
        frame = self._frame
        masks = self.annotator.masks(frame)
        tracked = len(self.annotator.tracked_frames)
        head = f"Frame {frame}/{self.annotator.num_frames - 1} ({tracked} with masks)"
        obj_id = self.selected
        if obj_id is None:
            return f"{head}. No object: click on the picture to start one."
        obj = self.annotator.objects[obj_id]
        prompts = obj.prompts.get(frame)
        n_clicks = len(prompts.clicks) if prompts is not None else 0
        has_box = prompts is not None and prompts.box is not None
        here = f"{n_clicks} point(s){' and a box' if has_box else ''} on this frame"
        mask = masks.get(obj_id)
        result = f"mask of {int(mask.sum()):,} px" if mask is not None else "no mask here"
        return f"{head}. {obj.name} (#{obj_id}): {here}; {result}"

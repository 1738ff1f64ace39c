"""Interactive segmentation and tracking of a video in a notebook.

Tracking runs in a background thread. A notebook kernel handles widget messages (a button
press) only between cells, on its one shell thread; with tracking off that thread, the Cancel
button, the frame slider and the progress bar keep working while frames are tracked. The
thread and the kernel share the annotator under a lock, one frame at a time.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets
import numpy as np

from sam2ui.core import Direction, VideoAnnotator, video_predictor

from .base import DEFAULT_MODEL, SegmenterBase

if TYPE_CHECKING:
    from sam2ui.core import ModelCache, SAM2VideoPredictor

__all__ = ["VideoSegmenter"]

# Seconds between preview pictures while tracking: each one is a render and an encode.
PREVIEW_INTERVAL_S = 0.5
EXPORT_FORMATS = ("mp4", "zip", "json")


class VideoSegmenter(SegmenterBase):
    """Prompt objects on any frame of a video and track them through it.

    Pick a frame with the slider; click (object point), shift/alt/right-click (background
    point) or drag (box) as in :class:`~sam2ui.widgets.ImageSegmenter`. "Track" propagates
    every prompted object in the chosen direction in a background thread, with a progress bar
    and the frame being tracked shown as it is done; "Cancel" stops it after the current frame
    and keeps every frame tracked so far. A click on a tracked frame is a correction: track
    again to carry it on.

    Args:
        video: a video file, a folder of JPEG/PNG frames or a ``(T, H, W, 3)`` uint8 array.
        model: a variant name, hub id or checkpoint path (from the shared model cache), or a
            ready :class:`~sam2ui.core.SAM2VideoPredictor`.
        device, dtype, cache: as for :class:`~sam2ui.widgets.ImageSegmenter`.
        offload_state_to_cpu: keep the session's frames and memories in CPU memory.
        display_width: shown width in screen pixels (0: natural size, shrunk to fit).

    Results: :meth:`results` ``{frame: {object id: (H, W) bool}}``, :meth:`masks` for one
    frame, and the exports :meth:`write_overlay_mp4`, :meth:`write_masks_zip`,
    :meth:`write_json` (or :meth:`export` for all three). The engine's annotator is
    :attr:`annotator` (:class:`~sam2ui.core.VideoAnnotator`).
    """

    annotator: VideoAnnotator

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
        self._worker: threading.Thread | None = None
        self._cancel = threading.Event()
        self._track_error: BaseException | None = None
        last = annotator.num_frames - 1
        self.frame_slider = widgets.IntSlider(
            description="Frame", min=0, max=last, value=0, continuous_update=False
        )
        self.frame_slider.layout.width = "520px"
        self.direction_picker = widgets.Dropdown(
            description="Direction",
            options=[("forward", "forward"), ("backward", "backward"), ("both", "both")],
            value="forward",
            layout=widgets.Layout(width="200px"),
        )
        self.track_button = widgets.Button(description="Track", icon="play", button_style="primary")
        self.cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = widgets.IntProgress(value=0, min=0, max=max(last, 1), description="Tracked")
        self.progress_label = widgets.Label("")
        self.export_folder = widgets.Text(description="Folder", value="sam2ui_results")
        self.export_button = widgets.Button(description="Export", icon="download")
        super().__init__(annotator, display_width=display_width)
        self.frame_slider.observe(self._ui(lambda _: self.refresh()), names="value")
        self.track_button.on_click(self._ui(lambda _: self.propagate()))
        self.cancel_button.on_click(self._ui(lambda _: self.cancel()))
        self.export_button.on_click(self._ui(lambda _: self._export_from_button()))
        self.add_object()

    def _extra_rows(self) -> list[widgets.Widget]:
        return [
            self.frame_slider,
            widgets.HBox(
                [
                    self.direction_picker,
                    self.track_button,
                    self.cancel_button,
                    self.progress,
                    self.progress_label,
                ]
            ),
            widgets.HBox([self.export_folder, self.export_button]),
        ]

    # ------------------------------------------------------------------ frames
    @property
    def frame(self) -> int:
        """Index of the frame shown and prompted."""
        return int(self.frame_slider.value)

    @frame.setter
    def frame(self, frame_idx: int) -> None:
        if not 0 <= frame_idx < self.annotator.num_frames:
            raise ValueError(f"frame {frame_idx} is outside 0..{self.annotator.num_frames - 1}")
        self.frame_slider.value = frame_idx  # the observer redraws

    # ------------------------------------------------------------------ tracking
    @property
    def running(self) -> bool:
        """Whether tracking is under way."""
        return self._worker is not None and self._worker.is_alive()

    def propagate(
        self,
        direction: Direction | None = None,
        start_frame: int | None = None,
        *,
        wait: bool = False,
    ) -> None:
        """Track every prompted object (see :meth:`~sam2ui.core.VideoAnnotator.propagate`)
        in a background thread.

        ``direction`` defaults to the Direction dropdown. With ``wait=True`` this returns when
        tracking has ended (the widget's Cancel cannot be pressed meanwhile: the kernel is
        busy; interrupting the kernel cancels). Errors during tracking appear in the widget's
        error area, and are raised here too when ``wait`` is True.
        """
        if self.running:
            raise RuntimeError("tracking is already running: wait for it or press Cancel")
        chosen: Direction = direction or self.direction_picker.value
        with self._lock:
            steps = self.annotator.propagate(chosen, start_frame)  # checks prompts exist
        self._cancel.clear()
        self._track_error = None
        self._set_running(True)
        self._worker = threading.Thread(
            target=self._track, args=(steps,), name="sam2ui-track", daemon=True
        )
        self._worker.start()
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
        if worker is not None:
            worker.join(timeout)
        return not self.running

    def _track(self, steps: Any) -> None:
        done_steps = 0
        last_preview = 0.0
        try:
            while not self._cancel.is_set():
                with self._lock:
                    step = next(steps, None)
                if step is None:
                    break
                done_steps += 1
                self.progress.max = max(step.total, 1)
                self.progress.value = step.done
                self.progress_label.value = f"{step.done}/{step.total} frames"
                now = time.monotonic()
                if now - last_preview >= PREVIEW_INTERVAL_S or step.done == step.total:
                    last_preview = now
                    self._preview(step.frame_idx)
        except Exception as exc:
            self._track_error = exc
            self._report(exc)
        finally:
            with self._lock:
                steps.close()  # keeps the frames tracked so far
            if self._cancel.is_set():
                self.progress_label.value += " (cancelled)"
            self._set_running(False)
            try:
                self.refresh()
            except Exception as exc:
                self._report(exc)

    def _preview(self, frame_idx: int) -> None:
        """Show the frame just tracked (moving the slider there redraws it)."""
        if self.frame_slider.value != frame_idx:
            self.frame_slider.value = frame_idx
        else:
            self.refresh()

    def _set_running(self, running: bool) -> None:
        self.canvas.busy = running
        self.cancel_button.disabled = not running
        for control in (
            self.track_button,
            self.export_button,
            self.add_button,
            self.remove_button,
            self.undo_button,
            self.clear_button,
            self.direction_picker,
        ):
            control.disabled = running
        if running:
            self.progress.value = 0
            self.progress_label.value = "starting…"

    def _busy_reason(self) -> str | None:
        if self.running:
            return "tracking is running: wait for it to finish or press Cancel"
        return None

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
        """H.264 MP4 of the frames with masks tinted (needs PyAV); progress on the bar."""
        self._check_idle()

        def progress(done: int, total: int) -> None:
            self.progress.max = max(total, 1)
            self.progress.value = done
            self.progress_label.value = f"video {done}/{total}"

        with self._lock:
            return Path(self.annotator.write_overlay_mp4(Path(path), progress=progress))

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
        self.progress_label.value = "wrote " + ", ".join(p.name for p in written.values())

    def close(self) -> None:
        """Stop tracking, free the video session and close the widget."""
        if getattr(self, "_worker", None) is not None:
            self.cancel()
            self.wait()
        super().close()

    # ------------------------------------------------------------------ hooks
    def _click(self, obj_id: int, x: float, y: float, positive: bool) -> None:
        self.annotator.add_click(self.frame, obj_id, x, y, positive)

    def _box(self, obj_id: int, x0: float, y0: float, x1: float, y1: float) -> None:
        self.annotator.set_box(self.frame, obj_id, x0, y0, x1, y1)

    def _undo(self, obj_id: int) -> None:
        self.annotator.undo(self.frame, obj_id)

    def _clear(self, obj_id: int) -> None:
        self.annotator.clear_frame(self.frame, obj_id)

    def _picture(self) -> np.ndarray:
        return self.annotator.render(self.frame, self.selected)

    def _status_html(self) -> str:
        frame = self.frame
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
        return f"{head}. {self._object_html(obj_id)}: {here}; {result}"

"""The video tab's canvas actions beyond the API's: seek, play and pause, undo and redo of
the last change wherever it was, removing one point, and a full resend (``sync``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from sam2ui.core import SessionNotFound, VideoAnnotator

from .canvas_host import shared_action
from .context import UserError, target_object
from .parts import object_id
from .video_handlers import KIND, VideoHandlers, VideoView

__all__ = ["VideoCanvasHandlers", "video_action"]


class VideoCanvasHandlers(VideoHandlers):
    """:class:`VideoHandlers` plus what only the browser canvas asks for."""

    def sync(self, session_id: str | None) -> VideoView:
        with self.ctx.use(session_id, KIND) as work:
            if work.feed is not None:
                work.feed.reset()
            return self._view(work)

    def undo_last(self, session_id: str | None) -> VideoView:
        """Take back the last prompt change, on whatever frame and object it was."""
        with self.ctx.use(session_id, KIND, action=True) as work:
            last = work.annotator.last_changed
            if last is None:
                return self._view(work, "Nothing to undo.")
            frame, obj = last
            work.annotator, _ = self.ctx.call(VideoAnnotator.undo, work.annotator, frame, obj)
            work.frame_idx, work.selected = frame, obj
            work.version += 1
            return self._view(work, f"Undid the last change of object {obj} on frame {frame}.")

    def redo(self, session_id: str | None) -> VideoView:
        with self.ctx.use(session_id, KIND, action=True) as work:
            if not work.annotator.can_redo:
                return self._view(work, "Nothing to redo.")
            work.annotator, done = self.ctx.call(VideoAnnotator.redo, work.annotator)
            if done is not None:
                work.frame_idx, work.selected = done
            work.version += 1
            return self._view(
                work, f"Redid a change of object {work.selected} on frame {work.frame_idx}."
            )

    def remove_point(
        self, session_id: str | None, frame_idx: int, obj_id: int, index: int
    ) -> VideoView:
        with self.ctx.use(session_id, KIND, action=True) as work:
            frame = self._frame(work, frame_idx)
            target = target_object(work, obj_id)
            work.annotator, _ = self.ctx.call(
                VideoAnnotator.remove_click, work.annotator, frame, target, int(index)
            )
            work.version += 1
            return self._view(work, f"Removed a point of object {target} on frame {frame}.")

    def play(self, session_id: str | None, start: int) -> Iterator[VideoView]:
        """Show frame after frame from ``start`` at the video's rate (frames are skipped when
        drawing them falls behind) until the last frame or :meth:`pause`. The session is held
        only while a frame is prepared, so clicks and other actions go between frames (and
        any of them stops the playback)."""
        with self.ctx.use(session_id, KIND) as work:
            n, fps = work.annotator.num_frames, max(work.annotator.fps, 1.0)
            frame = self._frame(work, start)
            if frame >= n - 1:
                frame = self._frame(work, 0)
            token = time.monotonic_ns()
            work.playing = token
            yield self._view(work, "Playing (space or K pauses).")
        began = time.monotonic()
        first = frame
        try:
            while True:
                due = first + int((time.monotonic() - began) * fps) + 1
                wait = (due - first) / fps - (time.monotonic() - began)
                if wait > 0:
                    time.sleep(wait)
                with self.ctx.use(session_id, KIND) as work:
                    if work.playing != token:
                        return
                    if due >= n:
                        work.playing = 0
                        self._frame(work, n - 1)
                        yield self._view(work, "Played to the last frame.")
                        return
                    self._frame(work, due)
                    yield self._view(work, f"Playing: frame {due} of {n - 1}.")
        except SessionNotFound:
            return

    def pause(self, session_id: str | None) -> VideoView:
        with self.ctx.use(session_id, KIND) as work:
            if not work.playing:
                return self._view(work, f"Nothing is playing; frame {work.frame_idx} is shown.")
            work.playing = 0
            return self._view(work, f"Paused on frame {work.frame_idx}.")


def video_action(h: VideoCanvasHandlers, session: str | None, data: dict[str, Any]) -> VideoView:
    """One quick canvas action (see ``canvas.js``) on the tab's session; any of them stops a
    playback."""
    kind = data.get("type")
    num = lambda key: float(data.get(key, 0))  # noqa: E731
    obj = object_id(data.get("obj"))
    frame = int(num("frame"))
    if session and kind != "sync":
        try:
            with h.ctx.use(session, KIND) as work:
                work.playing = 0
        except UserError:
            pass
    if kind == "click":
        return h.click(session, frame, None, num("x"), num("y"), bool(data.get("positive", True)))
    if kind == "box":
        return h.box(session, frame, None, num("x0"), num("y0"), num("x1"), num("y1"))
    if kind == "remove_point":
        return h.remove_point(session, frame, obj or 0, int(num("index")))
    if kind == "seek":
        return h.show_frame(session, frame)
    return shared_action(h, session, data)

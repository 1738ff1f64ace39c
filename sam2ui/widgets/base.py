"""What the image and the video segmenter share: the canvas, its events and error reporting.

The widgets hold no segmentation logic: objects, prompts, undo and redo, masks and exports
all live in the engine's annotators (:class:`~sam2ui.core.ImageAnnotator`,
:class:`~sam2ui.core.VideoAnnotator`), which the Gradio app uses too, and the canvas is the
app's canvas. A segmenter turns canvas events into annotator calls and sends the canvas an
update (a :class:`~sam2ui.core.CanvasFeed`'s) after each one.

Errors. Methods called from Python raise as usual. Actions started from the widget (a click,
a button) never raise into the kernel: the error is shown in the canvas's status line and in
the widget's ``errors`` output area (kept in ``last_error`` as well), and the widget stays
usable.
"""

from __future__ import annotations

import contextlib
import threading
import traceback
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets

from sam2ui.core import CanvasFeed

from .canvas import CanvasAction, CanvasBox, CanvasClick, CanvasEvent, PromptCanvas

__all__ = ["DEFAULT_MODEL", "SegmenterBase"]

DEFAULT_MODEL = "facebook/sam2.1-hiera-tiny"
# Errors users cause; other exceptions are shown with their traceback (they are bugs).
_USER_ERRORS = (ValueError, TypeError, RuntimeError, KeyError, FileNotFoundError)
_MAX_ERRORS_SHOWN = 5
HELP = (
    "<small>click: object point · shift/alt/right click: background point · drag: box · "
    "click a point: remove it · legend: select, hide, remove an object, double-click a name "
    "to rename it · Ctrl+Z / Ctrl+Shift+Z: undo / redo</small>"
)


class SegmenterBase(widgets.VBox):
    """The canvas (picture, legend of the objects, undo and redo), an object/background toggle
    and a Clear button, and an error area, around an annotator.

    Subclasses set ``kind``, build the canvas updates (``_update``) and implement the prompt
    calls (``_click``, ``_box``, ``_remove_click``, ``_undo``, ``_undo_last``, ``_redo``,
    ``_clear``); video-only events go to ``_on_action``.
    """

    kind = "image"

    def __init__(self, annotator: Any, *, display_width: int = 0) -> None:
        self.annotator = annotator
        # Serialises annotator use and canvas updates between the kernel thread and the
        # background threads (tracking, playback).
        self._lock = threading.RLock()
        self._feed = CanvasFeed()
        self._active: int | None = None
        self._message = ""
        self._syncing = False  # set while options are rebuilt, so observers stay quiet
        # Per thread, while it handles a canvas event: its refreshes wait for the one update
        # at the end, and what is to run once that update is sent.
        self._event = threading.local()
        self.last_error: BaseException | None = None

        self.canvas = PromptCanvas(kind=self.kind)
        if display_width:
            self.canvas.layout.width = f"{int(display_width)}px"
        self.label_toggle = widgets.ToggleButtons(
            options=[("Object (+)", True), ("Background (−)", False)],
            value=True,
            tooltips=["clicks add object points", "clicks add background points"],
        )
        self.clear_button = widgets.Button(
            description="Clear", icon="eraser", tooltip="remove the selected object's prompts"
        )
        self.errors = widgets.Output(layout=widgets.Layout(max_height="160px", overflow="auto"))

        self.canvas.on_event(self._on_canvas_event)
        self.canvas.on_error(self._report)
        self.clear_button.on_click(self._ui(lambda _: self.clear()))
        rows = [
            widgets.HBox([self.label_toggle, self.clear_button, *self._tools()]),
            self.canvas,
            *self._rows_below_canvas(),
            widgets.HTML(HELP),
            self.errors,
        ]
        super().__init__(children=rows)

    # ------------------------------------------------------------------ subclass hooks
    def _tools(self) -> list[widgets.Widget]:
        """Widgets beside the toggle and the Clear button."""
        return []

    def _rows_below_canvas(self) -> list[widgets.Widget]:
        """Rows under the canvas (for ones that come and go: the canvas does not move)."""
        return []

    def _update(self, message: str) -> dict[str, Any]:
        """The canvas update for the state now (built with ``self._feed``)."""
        raise NotImplementedError

    def _click(self, obj_id: int, x: float, y: float, positive: bool) -> None:
        raise NotImplementedError

    def _box(self, obj_id: int, x0: float, y0: float, x1: float, y1: float) -> None:
        raise NotImplementedError

    def _remove_click(self, obj_id: int, index: int) -> None:
        raise NotImplementedError

    def _undo(self, obj_id: int) -> None:
        raise NotImplementedError

    def _undo_last(self) -> int | None:
        """Take back the last change of any object; the object it changed (None: nothing)."""
        raise NotImplementedError

    def _redo(self) -> int | None:
        """Apply again what the last undo took back; the object it changed (None: nothing)."""
        raise NotImplementedError

    def _clear(self, obj_id: int) -> None:
        raise NotImplementedError

    def _status_text(self) -> str:
        """The canvas's status line when there is nothing else to say."""
        return ""

    def _busy_reason(self) -> str | None:
        """Why prompts cannot be taken now (None: they can)."""
        return None

    def _on_action(self, event: CanvasAction) -> str | None:
        """A canvas event the base class does not handle; the message to show (None: the
        status). ValueError for events this segmenter does not take."""
        raise ValueError(f"the {self.kind} canvas takes no {event.type!r} event")

    def _after_refresh(self) -> None:
        """Called after each refresh (to sync widgets beside the canvas)."""

    # ------------------------------------------------------------------ objects
    @property
    def selected(self) -> int | None:
        """Id of the object that clicks go to (None when there is no object)."""
        return self._active

    @selected.setter
    def selected(self, obj_id: int) -> None:
        if obj_id not in self.annotator.objects:
            raise ValueError(f"no object {obj_id}; objects: {sorted(self.annotator.objects)}")
        self._active = int(obj_id)
        self.refresh()

    def add_object(self, name: str | None = None) -> int:
        """Add an object (named ``name``, default "object N"), select it and return its id."""
        self._check_idle()
        with self._lock:
            obj_id = int(self.annotator.add_object(name))
            self._active = obj_id
        self.refresh()
        return obj_id

    def rename_object(self, obj_id: int, name: str) -> None:
        self._check_idle()
        with self._lock:
            self.annotator.rename_object(obj_id, name)
        self.refresh()

    def remove_object(self, obj_id: int) -> None:
        """Remove the object, its prompts and masks; the selection moves to another object."""
        self._check_idle()
        with self._lock:
            self.annotator.remove_object(obj_id)
            if self._active not in self.annotator.objects:
                self._active = next(iter(self.annotator.objects), None)
        self.refresh()

    # ------------------------------------------------------------------ prompts
    def add_click(
        self, x: float, y: float, positive: bool = True, obj_id: int | None = None
    ) -> None:
        """A click at image pixel ``(x, y)`` for ``obj_id`` (default: the selected object, a new
        one when there is none); the mask is predicted again and the canvas updated."""
        target = self._target_or_new(obj_id)
        with self._lock:
            self._click(target, float(x), float(y), bool(positive))
        self.refresh()

    def set_box(
        self, x0: float, y0: float, x1: float, y1: float, obj_id: int | None = None
    ) -> None:
        """Set the object's box (corners in any order, image pixels) and predict again."""
        target = self._target_or_new(obj_id)
        with self._lock:
            self._box(target, float(x0), float(y0), float(x1), float(y1))
        self.refresh()

    def remove_click(self, index: int, obj_id: int | None = None) -> None:
        """Remove the object's click number ``index`` (0-based; on the frame shown, for a
        video) and predict again; undo brings it back."""
        target = self._target(obj_id)
        if target is None:
            raise ValueError("there is no object to remove a click from")
        with self._lock:
            self._remove_click(target, int(index))
            self._active = target
        self.refresh()

    def undo(self, obj_id: int | None = None) -> None:
        """Take back a prompt change: the object's last one (its last one on the frame shown,
        for a video), or without ``obj_id`` the last change of any object, which is then
        selected (as the canvas's Undo). Nothing to undo is not an error."""
        target = self._target(obj_id) if obj_id is not None else None
        self._check_idle()
        with self._lock:
            if target is not None:
                self._undo(target)
            else:
                changed = self._undo_last()
                if changed is not None and changed in self.annotator.objects:
                    self._active = changed
        self.refresh()

    def redo(self) -> None:
        """Apply again what the last undo took back (nothing to redo is not an error)."""
        self._check_idle()
        with self._lock:
            changed = self._redo()
            if changed is not None and changed in self.annotator.objects:
                self._active = changed
        self.refresh()

    def clear(self, obj_id: int | None = None) -> None:
        """Remove the object's prompts (and its mask); the object stays."""
        target = self._target(obj_id)
        if target is not None:
            with self._lock:
                self._clear(target)
        self.refresh()

    # ------------------------------------------------------------------ display
    @property
    def message(self) -> str:
        """The text of the canvas's status line."""
        return self._message

    def refresh(self, message: str | None = None) -> None:
        """Send the canvas an update from the annotator (the status line says ``message``, or
        else what the selected object has)."""
        if getattr(self._event, "deferred", None) is not None:
            return  # a canvas event is being handled: one update at its end
        with self._lock:
            text = self._status_text() if message is None else message
            update = self._update(text)
            self._message = text
            self.canvas.send_update(update)
        self._after_refresh()

    def _resync(self) -> None:
        """Forget what the canvas was sent and send it everything."""
        with self._lock:
            self._feed.reset()
            self.refresh(self._message or None)

    def _target(self, obj_id: int | None) -> int | None:
        """``obj_id`` checked, or the selected object (None when there is none)."""
        self._check_idle()
        if obj_id is not None:
            if obj_id not in self.annotator.objects:
                raise ValueError(f"no object {obj_id}; objects: {sorted(self.annotator.objects)}")
            return int(obj_id)
        return self.selected

    def _target_or_new(self, obj_id: int | None) -> int:
        """As :meth:`_target`, starting a new object when there is none."""
        target = self._target(obj_id)
        return target if target is not None else self.add_object()

    def _check_idle(self) -> None:
        reason = self._busy_reason()
        if reason is not None:
            raise RuntimeError(reason)

    # ------------------------------------------------------------------ canvas events
    def _on_canvas_event(self, event: CanvasEvent) -> None:
        """One event of the canvas; the canvas gets an update after it, whatever happened."""
        if isinstance(event, CanvasClick):
            # The toggle set to "Background" swaps what plain and modified clicks mean.
            self.add_click(event.x, event.y, event.positive == bool(self.label_toggle.value))
        elif isinstance(event, CanvasBox):
            self.set_box(event.x0, event.y0, event.x1, event.y1)
        elif event.type == "sync":
            self._resync()
        else:
            handler = self._handlers().get(event.type)
            outer = getattr(self._event, "deferred", None)
            deferred: list[Callable[[], None]] = []
            self._event.deferred = deferred
            try:
                message = handler(event) if handler is not None else self._on_action(event)
            finally:
                self._event.deferred = outer
            try:
                self.refresh(message)
            finally:
                for action in deferred:
                    action()

    def _after_update(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the update answering the canvas event being handled is sent
        (at once outside one): a background task started so reports after that update."""
        deferred = getattr(self._event, "deferred", None)
        if deferred is not None:
            deferred.append(action)
        else:
            action()

    def _handlers(self) -> dict[str, Callable[[CanvasAction], str | None]]:
        def add(_: CanvasAction) -> None:
            self.add_object()

        def rename(e: CanvasAction) -> str:
            self.rename_object(self._checked(e.obj), str(e.name))
            return f"Renamed object {e.obj} to {e.name}."

        def remove(e: CanvasAction) -> str:
            self.remove_object(self._checked(e.obj))
            return f"Removed object {e.obj}."

        def remove_point(e: CanvasAction) -> None:
            self.remove_click(int(e.index or 0), self._checked(e.obj))

        def select(e: CanvasAction) -> None:
            self._active = self._checked(e.obj)

        def undo(_: CanvasAction) -> str | None:
            if not self.annotator.can_undo:
                return "Nothing to undo."
            self.undo()
            return None

        def redo(_: CanvasAction) -> str | None:
            if not self.annotator.can_redo:
                return "Nothing to redo."
            self.redo()
            return None

        return {
            "add": add,
            "rename": rename,
            "remove": remove,
            "remove_point": remove_point,
            "select": select,
            "undo": undo,
            "redo": redo,
        }

    def _checked(self, obj_id: int | None) -> int:
        if obj_id is None or obj_id not in self.annotator.objects:
            raise ValueError(f"no object {obj_id}; objects: {sorted(self.annotator.objects)}")
        return int(obj_id)

    def _ui(self, action: Callable[[Any], object]) -> Callable[[Any], None]:
        """``action`` for a widget callback: errors go to the error area instead of the kernel."""

        def run(arg: Any) -> None:
            try:
                action(arg)
            except Exception as exc:
                self._report(exc)

        return run

    def _report(self, exc: BaseException) -> None:
        """Show ``exc`` in the status line and the error area (the last few are kept), and
        keep the widget usable."""
        self.last_error = exc
        short = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, _USER_ERRORS):
            text = short + "\n"
        else:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        entry = {"output_type": "stream", "name": "stderr", "text": text}
        # Reassigned, not appended in place, so the change syncs to the front end.
        self.errors.outputs = (*self.errors.outputs[-(_MAX_ERRORS_SHOWN - 1) :], entry)
        # Show the state as it is after the failed action, then the error in red (an update
        # without a sequence number: the canvas shows its message and keeps its state).
        with contextlib.suppress(Exception):
            self.refresh(short)
        with contextlib.suppress(Exception), self._lock:
            self.canvas.send_update({"error": True, "message": short})

    def close(self) -> None:
        """Free the annotator's memory (embedding, video session) and close the widget."""
        # ipywidgets also calls this from __del__, possibly on a half-built instance.
        annotator, lock = getattr(self, "annotator", None), getattr(self, "_lock", None)
        if annotator is not None and lock is not None:
            with lock:
                annotator.close()
        canvas = getattr(self, "canvas", None)
        if canvas is not None:
            canvas.close()
        super().close()

    def clear_errors(self) -> None:
        """Empty the error area."""
        self.errors.outputs = ()
        self.last_error = None

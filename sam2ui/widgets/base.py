"""What the image and the video segmenter share: the canvas, the object bar and error reporting.

The widgets hold no segmentation logic: objects, prompts, undo, masks, rendering and exports
all live in the engine's annotators (:class:`~sam2ui.core.ImageAnnotator`,
:class:`~sam2ui.core.VideoAnnotator`), which the Gradio app uses too. A segmenter turns
widget events into annotator calls and shows the annotator's rendering.

Errors. Methods called from Python raise as usual. Actions started from the widget (a click,
a button) never raise into the kernel: the error is shown in the widget's ``errors`` output
area (kept in ``last_error`` as well) and the widget stays usable.
"""

from __future__ import annotations

import contextlib
import html
import threading
import traceback
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import numpy as np

from .canvas import CanvasBox, CanvasClick, CanvasEvent, PromptCanvas

__all__ = ["DEFAULT_MODEL", "SegmenterBase"]

DEFAULT_MODEL = "facebook/sam2.1-hiera-tiny"
# Errors users cause; other exceptions are shown with their traceback (they are bugs).
_USER_ERRORS = (ValueError, TypeError, RuntimeError, KeyError, FileNotFoundError)
_MAX_ERRORS_SHOWN = 5


class SegmenterBase(widgets.VBox):
    """Canvas, object bar (select, add, rename, remove), object/background toggle, undo and
    clear, a status line and an error area, around an annotator.

    Subclasses implement the prompt calls (``_click``, ``_box``, ``_undo``, ``_clear``), the
    picture (``_picture``) and add their own rows (``_extra_rows``).
    """

    def __init__(self, annotator: Any, *, display_width: int = 0) -> None:
        self.annotator = annotator
        # Serialises annotator use between the kernel thread and a background tracking thread.
        self._lock = threading.RLock()
        self._syncing = False  # set while options are rebuilt, so observers stay quiet
        self.last_error: BaseException | None = None

        self.canvas = PromptCanvas(display_width=display_width)
        self.object_picker = widgets.Dropdown(description="Object", options=[])
        self.name_box = widgets.Text(
            description="Name", continuous_update=False, layout=widgets.Layout(width="220px")
        )
        self.add_button = widgets.Button(description="Add object", icon="plus")
        self.remove_button = widgets.Button(description="Remove object", icon="trash")
        self.label_toggle = widgets.ToggleButtons(
            options=[("Object (+)", True), ("Background (−)", False)],
            value=True,
            tooltips=["clicks add object points", "clicks add background points"],
        )
        self.undo_button = widgets.Button(description="Undo", icon="undo")
        self.clear_button = widgets.Button(description="Clear", icon="eraser")
        self.status = widgets.HTML()
        self.errors = widgets.Output(layout=widgets.Layout(max_height="160px", overflow="auto"))

        self.canvas.on_event(self._on_canvas_event)
        self.canvas.on_error(self._report)
        self.object_picker.observe(self._ui(self._on_pick), names="value")
        self.name_box.observe(self._ui(self._on_name), names="value")
        self.add_button.on_click(self._ui(lambda _: self.add_object()))
        self.remove_button.on_click(self._ui(lambda _: self._remove_selected()))
        self.undo_button.on_click(self._ui(lambda _: self.undo()))
        self.clear_button.on_click(self._ui(lambda _: self.clear()))

        help_text = widgets.HTML(
            "<small>click: object point · shift/alt/right click: background point · "
            "drag: box</small>"
        )
        rows = [
            widgets.HBox([self.object_picker, self.name_box, self.add_button, self.remove_button]),
            widgets.HBox([self.label_toggle, self.undo_button, self.clear_button]),
            *self._extra_rows(),
            self.canvas,
            *self._rows_below_canvas(),
            help_text,
            self.status,
            self.errors,
        ]
        super().__init__(children=rows)

    # ------------------------------------------------------------------ subclass hooks
    def _extra_rows(self) -> list[widgets.Widget]:
        """Rows between the object bar and the picture."""
        return []

    def _rows_below_canvas(self) -> list[widgets.Widget]:
        """Rows under the picture (for ones that come and go: the picture does not move)."""
        return []

    def _click(self, obj_id: int, x: float, y: float, positive: bool) -> None:
        raise NotImplementedError

    def _box(self, obj_id: int, x0: float, y0: float, x1: float, y1: float) -> None:
        raise NotImplementedError

    def _undo(self, obj_id: int) -> None:
        raise NotImplementedError

    def _clear(self, obj_id: int) -> None:
        raise NotImplementedError

    def _picture(self) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 picture to show now."""
        raise NotImplementedError

    def _status_html(self) -> str:
        return ""

    def _busy_reason(self) -> str | None:
        """Why prompts cannot be taken now (None: they can)."""
        return None

    # ------------------------------------------------------------------ objects
    @property
    def selected(self) -> int | None:
        """Id of the object that clicks go to (None when there is no object)."""
        value = self.object_picker.value
        return int(value) if value is not None else None

    @selected.setter
    def selected(self, obj_id: int) -> None:
        if obj_id not in self.annotator.objects:
            raise ValueError(f"no object {obj_id}; objects: {sorted(self.annotator.objects)}")
        self.object_picker.value = obj_id  # the observer refreshes

    def add_object(self, name: str | None = None) -> int:
        """Add an object (named ``name``, default "object N"), select it and return its id."""
        self._check_idle()
        with self._lock:
            obj_id = int(self.annotator.add_object(name))
        self._sync_objects(select=obj_id)
        return obj_id

    def rename_object(self, obj_id: int, name: str) -> None:
        self._check_idle()
        with self._lock:
            self.annotator.rename_object(obj_id, name)
        self._sync_objects(select=self.selected)

    def remove_object(self, obj_id: int) -> None:
        """Remove the object, its prompts and masks; the selection moves to another object."""
        self._check_idle()
        with self._lock:
            self.annotator.remove_object(obj_id)
        self._sync_objects(select=None if self.selected == obj_id else self.selected)

    # ------------------------------------------------------------------ prompts
    def add_click(
        self, x: float, y: float, positive: bool = True, obj_id: int | None = None
    ) -> None:
        """A click at image pixel ``(x, y)`` for ``obj_id`` (default: the selected object, a new
        one when there is none); the mask is predicted again and the picture redrawn."""
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

    def undo(self, obj_id: int | None = None) -> None:
        """Remove the object's last prompt (nothing to undo is not an error)."""
        target = self._target(obj_id)
        if target is not None:
            with self._lock:
                self._undo(target)
        self.refresh()

    def clear(self, obj_id: int | None = None) -> None:
        """Remove the object's prompts (and its mask); the object stays."""
        target = self._target(obj_id)
        if target is not None:
            with self._lock:
                self._clear(target)
        self.refresh()

    # ------------------------------------------------------------------ display
    def refresh(self) -> None:
        """Redraw the picture and the status line from the annotator."""
        with self._lock:
            picture = self._picture()
            status = self._status_html()
        self.canvas.show(picture)
        self.status.value = status
        has_object = self.selected is not None
        self.remove_button.disabled = not has_object
        self.name_box.disabled = not has_object

    def _object_html(self, obj_id: int) -> str:
        obj = self.annotator.objects[obj_id]
        r, g, b = (int(c) for c in obj.color)
        swatch = (
            f'<span style="display:inline-block;width:0.9em;height:0.9em;'
            f'background:rgb({r},{g},{b});border:1px solid #444"></span>'
        )
        return f"{swatch} <b>{html.escape(obj.name)}</b> (#{obj_id})"

    def _sync_objects(self, select: int | None) -> None:
        """Rebuild the object list (a new tuple, so it syncs) and select ``select`` (or the
        first object)."""
        objects = self.annotator.objects
        options = tuple((f"{obj.name} (#{oid})", oid) for oid, obj in objects.items())
        if select not in objects:
            select = next(iter(objects), None)
        self._syncing = True
        try:
            self.object_picker.options = options
            self.object_picker.value = select
            self.name_box.value = objects[select].name if select is not None else ""
        finally:
            self._syncing = False
        self.refresh()

    def _target(self, obj_id: int | None) -> int | None:
        """``obj_id`` checked, or the selected object (None when there is none)."""
        self._check_idle()
        if obj_id is not None:
            if obj_id not in self.annotator.objects:
                raise ValueError(f"no object {obj_id}; objects: {sorted(self.annotator.objects)}")
            return obj_id
        return self.selected

    def _target_or_new(self, obj_id: int | None) -> int:
        """As :meth:`_target`, starting a new object when there is none."""
        target = self._target(obj_id)
        return target if target is not None else self.add_object()

    def _check_idle(self) -> None:
        reason = self._busy_reason()
        if reason is not None:
            raise RuntimeError(reason)

    # ------------------------------------------------------------------ widget events
    def _on_canvas_event(self, event: CanvasEvent) -> None:
        if isinstance(event, CanvasClick):
            # The modifier flips whatever the toggle says.
            positive = bool(self.label_toggle.value) != event.modifier
            self.add_click(event.x, event.y, positive)
        elif isinstance(event, CanvasBox):
            self.set_box(event.x0, event.y0, event.x1, event.y1)

    def _on_pick(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        obj_id = change["new"]
        self._syncing = True
        try:
            self.name_box.value = self.annotator.objects[obj_id].name if obj_id is not None else ""
        finally:
            self._syncing = False
        self.refresh()

    def _on_name(self, change: dict[str, Any]) -> None:
        obj_id = self.selected
        name = str(change["new"]).strip()
        if self._syncing or obj_id is None or not name:
            return
        if name != self.annotator.objects[obj_id].name:
            self.rename_object(obj_id, name)

    def _remove_selected(self) -> None:
        if self.selected is not None:
            self.remove_object(self.selected)

    def _ui(self, action: Callable[[Any], object]) -> Callable[[Any], None]:
        """``action`` for a widget callback: errors go to the error area instead of the kernel."""

        def run(arg: Any) -> None:
            try:
                action(arg)
            except Exception as exc:
                self._report(exc)

        return run

    def _report(self, exc: BaseException) -> None:
        """Show ``exc`` in the error area (the last few are kept) and keep the widget usable."""
        self.last_error = exc
        if isinstance(exc, _USER_ERRORS):
            text = f"{type(exc).__name__}: {exc}\n"
        else:
            text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        entry = {"output_type": "stream", "name": "stderr", "text": text}
        # Reassigned, not appended in place, so the change syncs to the front end.
        self.errors.outputs = (*self.errors.outputs[-(_MAX_ERRORS_SHOWN - 1) :], entry)
        # Show the state as it is after the failed action; if the picture itself fails, the
        # message above already says why.
        with contextlib.suppress(Exception):
            self.refresh()

    def close(self) -> None:
        """Free the annotator's memory (embedding, video session) and close the widget."""
        # ipywidgets also calls this from __del__, possibly on a half-built instance.
        annotator, lock = getattr(self, "annotator", None), getattr(self, "_lock", None)
        if annotator is not None and lock is not None:
            with lock:
                annotator.close()
        super().close()

    def clear_errors(self) -> None:
        """Empty the error area."""
        self.errors.outputs = ()
        self.last_error = None

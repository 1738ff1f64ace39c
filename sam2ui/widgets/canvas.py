"""The drawing surface of the notebook widgets: the engine's annotation canvas as an anywidget.

:class:`PromptCanvas` is an `anywidget <https://anywidget.dev>`_ widget whose front end is the
one canvas ES module every front end of sam2ui shows (:func:`sam2ui.core.canvas_js`, no CDN
and no build step): the picture with the masks composited by the browser, the click and box
markers, a legend of the objects (select, add, remove, rename, hide), undo and redo, and for
videos a frame number, a timeline, play / pause and propagation controls. It works wherever
anywidget does: JupyterLab 4, Notebook 7, VS Code and Colab.

Python sends the canvas updates built by :class:`sam2ui.core.CanvasFeed` with
:meth:`PromptCanvas.send_update` (a custom message ``{"type": "update", "update": {...}}``).
The canvas sends each user action back as a custom message ``{"type": ..., **data}``, which
:func:`parse_message` turns into a :class:`CanvasClick`, a :class:`CanvasBox` or a
:class:`CanvasAction`:

* ``click`` ``{x, y, positive, frame}``: a short press; shift, alt or the right button make
  it a background point (``positive`` false);
* ``box`` ``{x0, y0, x1, y1, frame}``: a drag of more than a few screen pixels;
* ``remove_point {obj, index, frame}``, ``select {obj}``, ``add {}``, ``remove {obj}``,
  ``rename {obj, name}``, ``undo {frame}``, ``redo {}``, and for videos ``seek {frame}``,
  ``play {frame}``, ``pause {}``, ``propagate {direction, frame}``, ``cancel {}``;
* ``sync {}``: the canvas (a new view, or one that missed an update) asks for everything again.

Coordinates are pixels of the shown picture, x right and y down, with pixel ``i``'s centre at
``i`` (the engine's and the command line's convention), clamped to ``[0, W-1] × [0, H-1]``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sam2ui.core import DIRECTIONS, canvas_css, canvas_js

try:
    import anywidget
    import traitlets
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "sam2ui.widgets needs ipywidgets and anywidget: pip install 'sam2ui[notebook]'"
    ) from exc

__all__ = [
    "ACTIONS",
    "KINDS",
    "CanvasAction",
    "CanvasBox",
    "CanvasClick",
    "CanvasEvent",
    "PromptCanvas",
    "parse_message",
]

KINDS = ("image", "video")
# The events other than click and box, with the fields each one must carry (see the module
# docstring); ``frame`` is optional wherever it is not listed.
ACTIONS: dict[str, tuple[str, ...]] = {
    "remove_point": ("obj", "index"),
    "select": ("obj",),
    "add": (),
    "remove": ("obj",),
    "rename": ("obj", "name"),
    "undo": (),
    "redo": (),
    "choose": ("index",),
    "seek": ("frame",),
    "play": (),
    "pause": (),
    "propagate": ("direction",),
    "cancel": (),
    "sync": (),
}
_prefixes = itertools.count(1)


@dataclass(frozen=True)
class CanvasClick:
    """A click at ``(x, y)`` image pixels; ``positive``: an object point (False: background);
    ``frame``: the video frame it is for (None: the one shown, or an image)."""

    x: float
    y: float
    positive: bool = True
    frame: int | None = None


@dataclass(frozen=True)
class CanvasBox:
    """A dragged box, corners as drawn (any order), in image pixels; ``frame`` as for a click."""

    x0: float
    y0: float
    x1: float
    y1: float
    frame: int | None = None


@dataclass(frozen=True)
class CanvasAction:
    """Any other event of the canvas: its ``type`` (a key of :data:`ACTIONS`) and the fields it
    carries (None where it carries none)."""

    type: str
    obj: int | None = None
    index: int | None = None
    frame: int | None = None
    name: str | None = None
    direction: str | None = None


CanvasEvent = CanvasClick | CanvasBox | CanvasAction


def _number(content: dict[str, Any], key: str) -> float:
    value = content.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"canvas message field {key!r} must be a finite number, got {value!r}")
    return float(value)


def _integer(content: dict[str, Any], key: str, required: bool) -> int | None:
    value = content.get(key)
    if value is None and not required:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"canvas message field {key!r} must be an integer, got {value!r}")
    return value


def _frame(content: dict[str, Any], required: bool = False) -> int | None:
    return _integer(content, "frame", required)


def parse_message(content: object, width: int, height: int) -> CanvasEvent:
    """A front-end message as an event; click and box coordinates are clamped to the
    ``width × height`` picture shown.

    ValueError for anything but the messages described in the module docstring.
    """
    if not isinstance(content, dict):
        raise ValueError(f"canvas message must be a dict, got {type(content).__name__}")
    kind = content.get("type")
    if kind in ("click", "box"):
        if width <= 0 or height <= 0:
            raise ValueError("the canvas has no picture yet")

        def clamp_x(v: float) -> float:
            return min(max(v, 0.0), width - 1.0)

        def clamp_y(v: float) -> float:
            return min(max(v, 0.0), height - 1.0)

        if kind == "click":
            x, y = _number(content, "x"), _number(content, "y")
            positive = content.get("positive", True)
            if not isinstance(positive, bool):
                raise ValueError(
                    f"canvas message field 'positive' must be a bool, got {positive!r}"
                )
            return CanvasClick(clamp_x(x), clamp_y(y), positive, _frame(content))
        x0, y0 = _number(content, "x0"), _number(content, "y0")
        x1, y1 = _number(content, "x1"), _number(content, "y1")
        return CanvasBox(clamp_x(x0), clamp_y(y0), clamp_x(x1), clamp_y(y1), _frame(content))
    if not isinstance(kind, str) or kind not in ACTIONS:
        known = ", ".join(repr(k) for k in ("click", "box", *ACTIONS))
        raise ValueError(f"unknown canvas message type {kind!r} (expected one of {known})")
    needs = ACTIONS[kind]
    name = content.get("name")
    if "name" in needs and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"canvas message field 'name' must be a non-empty text, got {name!r}")
    direction = content.get("direction")
    if "direction" in needs and direction not in DIRECTIONS:
        raise ValueError(
            f"canvas message field 'direction' must be one of {DIRECTIONS}, got {direction!r}"
        )
    return CanvasAction(
        kind,
        obj=_integer(content, "obj", True) if "obj" in needs else None,
        index=_integer(content, "index", True) if "index" in needs else None,
        frame=_frame(content, "frame" in needs),
        name=name.strip() if isinstance(name, str) and "name" in needs else None,
        direction=direction if "direction" in needs else None,
    )


class PromptCanvas(anywidget.AnyWidget):
    """The annotation canvas: shows what Python sends, reports what the user does.

    Traits (synced with the front end):
        kind: ``"image"`` or ``"video"`` (the video canvas has a timeline and transport).
        prefix: the prefix of the canvas's element ids (``<prefix>-canvas``,
            ``<prefix>-legend``, ``<prefix>-status``, ...); unique per widget by default.

    Send updates (:class:`sam2ui.core.CanvasFeed`'s) with :meth:`send_update`; the last one
    is kept in :attr:`last_update`. Register ``callback(event)`` with :meth:`on_event`; it
    gets a :class:`CanvasClick`, :class:`CanvasBox` or :class:`CanvasAction`. Malformed
    messages and exceptions raised by callbacks go to the callbacks registered with
    :meth:`on_error` (raised when there is none).
    """

    _esm = canvas_js()
    _css = canvas_css()

    kind = traitlets.Unicode("image").tag(sync=True)
    prefix = traitlets.Unicode("").tag(sync=True)

    def __init__(self, kind: str = "image", prefix: str | None = None, **kwargs: Any) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if prefix is None:
            prefix = f"sam2ui-{kind}-{next(_prefixes)}"
        super().__init__(kind=kind, prefix=prefix, **kwargs)
        # The size of the picture last sent (click coordinates are clamped to it).
        self.width = 0
        self.height = 0
        self.last_update: dict[str, Any] | None = None
        self._event_callbacks: list[Callable[[CanvasEvent], None]] = []
        self._error_callbacks: list[Callable[[BaseException], None]] = []
        self.on_msg(self._receive)

    def send_update(self, update: dict[str, Any]) -> None:
        """Send the front end one update (a custom message ``{"type": "update", update}``)."""
        picture = update.get("picture")
        if picture is not None:
            self.width, self.height = int(picture["width"]), int(picture["height"])
        self.last_update = update
        self.send({"type": "update", "update": update})

    def on_event(self, callback: Callable[[CanvasEvent], None]) -> None:
        """Call ``callback(event)`` for every event from the front end."""
        self._event_callbacks.append(callback)

    def on_error(self, callback: Callable[[BaseException], None]) -> None:
        """Call ``callback(exception)`` when a message is malformed or an event callback fails."""
        self._error_callbacks.append(callback)

    def send_event(self, content: dict[str, Any]) -> None:
        """Handle ``content`` as if the front end had sent it (what the tests and scripts use)."""
        self._receive(self, content, [])

    def _receive(self, _widget: object, content: object, _buffers: object) -> None:
        try:
            event = parse_message(content, self.width, self.height)
            for callback in list(self._event_callbacks):
                callback(event)
        except Exception as exc:
            if not self._error_callbacks:
                raise
            for handler in list(self._error_callbacks):
                handler(exc)

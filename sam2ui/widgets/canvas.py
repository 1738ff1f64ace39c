"""The drawing surface of the notebook widgets: a picture that turns mouse input into prompts.

:class:`PromptCanvas` is an `anywidget <https://anywidget.dev>`_ widget. Its front end is the
plain ES module ``static/canvas.js`` shipped inside this package (no CDN, no build step); it
works wherever anywidget does: JupyterLab 4, Notebook 7, VS Code and Colab.

Python sends the picture to show (PNG or JPEG bytes in the ``image`` trait, rendered by the
engine: frame, tinted masks, prompts). The front end sends each mouse gesture back as a custom
message, which :func:`parse_message` turns into a :class:`CanvasClick` or :class:`CanvasBox`:

* a short press is a click; with shift, alt or the right button it carries ``modifier=True``;
* a drag of more than a few screen pixels is a box.

Coordinates are pixels of the shown image, x right and y down, with pixel ``i``'s centre at
``i`` (the engine's and the command line's convention), clamped to ``[0, W-1] × [0, H-1]``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

try:
    import anywidget
    import traitlets
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "sam2ui.widgets needs ipywidgets and anywidget: pip install 'sam2ui[notebook]'"
    ) from exc

__all__ = ["CanvasBox", "CanvasClick", "CanvasEvent", "PromptCanvas", "encode_picture"]

STATIC = Path(__file__).parent / "static"
# Above this many pixels the picture travels as JPEG: a PNG of a large photo is several
# megabytes per click, a JPEG a few hundred kilobytes.
PNG_MAX_PIXELS = 1_000_000


@dataclass(frozen=True)
class CanvasClick:
    """A click at ``(x, y)`` image pixels; ``modifier``: shift, alt or the right button."""

    x: float
    y: float
    modifier: bool = False


@dataclass(frozen=True)
class CanvasBox:
    """A dragged box, corners as drawn (any order), in image pixels."""

    x0: float
    y0: float
    x1: float
    y1: float


CanvasEvent = CanvasClick | CanvasBox


def encode_picture(picture: np.ndarray) -> tuple[bytes, str]:
    """``(H, W, 3)`` uint8 RGB -> (encoded bytes, ``"png"`` or ``"jpeg"``)."""
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 picture, got {picture.shape} {picture.dtype}"
        )
    buffer = io.BytesIO()
    image = Image.fromarray(picture)
    if picture.shape[0] * picture.shape[1] <= PNG_MAX_PIXELS:
        image.save(buffer, format="PNG", compress_level=1)  # speed over size: sent once
        return buffer.getvalue(), "png"
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), "jpeg"


def _number(content: dict[str, Any], key: str) -> float:
    value = content.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"canvas message field {key!r} must be a finite number, got {value!r}")
    return float(value)


def parse_message(content: object, width: int, height: int) -> CanvasEvent:
    """A front-end message as an event, coordinates clamped to the ``width × height`` image.

    ValueError for anything else than the two message kinds described in the module docstring.
    """
    if not isinstance(content, dict):
        raise ValueError(f"canvas message must be a dict, got {type(content).__name__}")
    if width <= 0 or height <= 0:
        raise ValueError("the canvas has no image yet")
    kind = content.get("type")

    def clamp_x(v: float) -> float:
        return min(max(v, 0.0), width - 1.0)

    def clamp_y(v: float) -> float:
        return min(max(v, 0.0), height - 1.0)

    if kind == "click":
        x, y = _number(content, "x"), _number(content, "y")
        return CanvasClick(clamp_x(x), clamp_y(y), bool(content.get("modifier", False)))
    if kind == "box":
        x0, y0 = _number(content, "x0"), _number(content, "y0")
        x1, y1 = _number(content, "x1"), _number(content, "y1")
        return CanvasBox(clamp_x(x0), clamp_y(y0), clamp_x(x1), clamp_y(y1))
    raise ValueError(f"unknown canvas message type {kind!r} (expected 'click' or 'box')")


class PromptCanvas(anywidget.AnyWidget):
    """Shows a picture and reports clicks and dragged boxes on it.

    Traits (synced with the front end):
        image: the encoded picture; set it with :meth:`show`.
        image_format: ``"png"`` or ``"jpeg"``.
        width, height: the picture's size in pixels (message coordinates refer to it).
        display_width: shown width in screen pixels; 0 = natural size, shrunk to fit.
        busy: shows a busy cursor (prompts still arrive; the owner decides what to do).

    Register ``callback(event)`` with :meth:`on_event`; it gets a :class:`CanvasClick` or
    :class:`CanvasBox`. Malformed messages and exceptions raised by callbacks go to the
    callbacks registered with :meth:`on_error` (raised when there is none).
    """

    _esm = STATIC / "canvas.js"
    _css = STATIC / "canvas.css"

    image = traitlets.Bytes(b"").tag(sync=True)
    image_format = traitlets.Unicode("png").tag(sync=True)
    width = traitlets.Int(0).tag(sync=True)
    height = traitlets.Int(0).tag(sync=True)
    display_width = traitlets.Int(0).tag(sync=True)
    busy = traitlets.Bool(False).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._event_callbacks: list[Callable[[CanvasEvent], None]] = []
        self._error_callbacks: list[Callable[[BaseException], None]] = []
        self.on_msg(self._receive)

    def show(self, picture: np.ndarray) -> None:
        """Display an ``(H, W, 3)`` uint8 RGB picture (sent as one update)."""
        data, fmt = encode_picture(picture)
        with self.hold_sync():
            self.height, self.width = int(picture.shape[0]), int(picture.shape[1])
            self.image_format = fmt
            self.image = data

    def on_event(self, callback: Callable[[CanvasEvent], None]) -> None:
        """Call ``callback(event)`` for every click and box from the front end."""
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

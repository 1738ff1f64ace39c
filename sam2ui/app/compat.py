"""What the app reads from gradio's event data, and whether this platform can run ZeroGPU.

Event data. A ``.select`` listener gets a ``gr.SelectData`` whose ``index`` is the one part
the app reads: for an image, the clicked pixel (gradio 6.19 to 6.31 send a two-item list
``[x, y]``, and ``[null, null]`` when the browser could not place the click); for a gallery,
the position of the picked item. The shapes gradio has used (list, tuple, ``{"x", "y"}``
mapping, bare number) are read here and nowhere else, so a release that changes them again is
fixed in this one module, and data the app cannot read is a clear :class:`EventDataError`
instead of a ``TypeError`` deep in a handler.

Platform. ZeroGPU (Hugging Face Spaces) runs model calls in processes forked from the app's;
that exists only on Linux. :func:`zero_gpu_unsupported` says why it cannot run here, so the
app falls back to plain in-process calls on macOS and Windows even when ``SPACES_ZERO_GPU``
is set.

This module imports neither gradio nor torch: ``spaces_app.py`` reads it before either loads.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from collections.abc import Mapping
from typing import Any

__all__ = [
    "EventDataError",
    "click_xy",
    "fork_supported",
    "picked_index",
    "was_deselected",
    "zero_gpu_requested",
    "zero_gpu_unsupported",
]

_TRUE = ("1", "t", "true")  # what the ``spaces`` package reads as a set flag


class EventDataError(ValueError):
    """Event data the app cannot read. A ``ValueError``, so the handlers' guard shows its
    message to the user as it is."""


def _index(evt: Any) -> Any:
    """``evt.index``; ``evt`` is a ``gr.SelectData`` (or anything with ``index``) or the
    event's raw ``{"index": ..., "value": ...}`` payload."""
    if evt is None:
        raise EventDataError("No event data came with this action; try again.")
    if isinstance(evt, Mapping):
        return evt.get("index")
    return getattr(evt, "index", None)


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (None, booleans, text, NaN are not positions)."""
    if value is None or isinstance(value, (bool, str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def click_xy(evt: Any) -> tuple[float, float]:
    """The clicked pixel ``(x, y)`` of an image's select event (x right, y down).

    Reads ``[x, y]`` (a list or tuple, extra items ignored) and ``{"x": x, "y": y}``.
    Raises :class:`EventDataError` for a missing event or index and for coordinates that are
    not finite numbers (gradio sends ``[null, null]`` when it cannot place the click)."""
    index = _index(evt)
    pair: tuple[Any, Any] | None = None
    if isinstance(index, Mapping):
        pair = (index.get("x"), index.get("y"))
    elif isinstance(index, (list, tuple)) and len(index) >= 2:
        pair = (index[0], index[1])
    x, y = (_number(pair[0]), _number(pair[1])) if pair is not None else (None, None)
    if x is None or y is None:
        raise EventDataError(
            f"Could not tell where the click was (gradio sent {index!r}); click on the "
            "picture again."
        )
    return x, y


def picked_index(evt: Any) -> int:
    """The position of the item picked in a gallery's select event.

    Reads a whole number, or one in a one-item list or tuple, or ``{"index": i}``; anything
    else is an :class:`EventDataError`."""
    index = _index(evt)
    if isinstance(index, Mapping):
        index = index.get("index")
    if isinstance(index, (list, tuple)) and len(index) == 1:
        index = index[0]
    number = _number(index)
    if number is None or not number.is_integer():
        raise EventDataError(f"Could not tell which item was picked (gradio sent {index!r}).")
    return int(number)


def was_deselected(evt: Any) -> bool:
    """Whether the event unselects an item (``SelectData.selected`` is False) rather than
    selects one; events without the field select."""
    if isinstance(evt, Mapping):
        return evt.get("selected", True) is False
    return getattr(evt, "selected", True) is False


# ---------------------------------------------------------------------------- platform
def fork_supported() -> bool:
    """Whether this Python can start processes by forking (never on Windows)."""
    return "fork" in multiprocessing.get_all_start_methods()


def zero_gpu_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``SPACES_ZERO_GPU`` is set, read as the ``spaces`` package reads it."""
    env = os.environ if environ is None else environ
    return env.get("SPACES_ZERO_GPU", "").strip().lower() in _TRUE


def zero_gpu_unsupported() -> str | None:
    """Why ZeroGPU cannot run on this machine, or None where it can (Linux with fork)."""
    if not sys.platform.startswith("linux"):
        return f"ZeroGPU runs only on Linux (Hugging Face Spaces), not on {sys.platform}"
    if not fork_supported():
        return "ZeroGPU forks a worker per GPU call, and this Python cannot fork processes"
    return None

"""What the app reads from gradio's event data, and whether this platform can run ZeroGPU.

Event data. The canvas's actions arrive as custom events of a ``gr.HTML`` whose data gradio
keeps on the ``gr.EventData`` it passes to the listener; :func:`event_data` reads it, here and
nowhere else, so a release that moves it is fixed in this one module.

Platform. ZeroGPU (Hugging Face Spaces) runs model calls in processes forked from the app's;
that exists only on Linux. :func:`zero_gpu_unsupported` says why it cannot run here, so the
app falls back to plain in-process calls on macOS and Windows even when ``SPACES_ZERO_GPU``
is set.

This module imports neither gradio nor torch: ``spaces_app.py`` reads it before either loads.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Mapping
from typing import Any

__all__ = [
    "event_data",
    "fork_supported",
    "zero_gpu_requested",
    "zero_gpu_unsupported",
]

_TRUE = ("1", "t", "true")  # what the ``spaces`` package reads as a set flag


def event_data(evt: Any) -> dict[str, Any]:
    """The data a custom event of a ``gr.HTML`` carried (the canvas's ``trigger(name, data)``),
    as a dict; ``{}`` when there is none. gradio 6.19 to 6.31 keep it in ``EventData._data``
    (their documented examples read it there too); this is the one place that does."""
    data = getattr(evt, "_data", None)
    return dict(data) if isinstance(data, Mapping) else {}


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

"""Hugging Face ZeroGPU glue; a no-op everywhere else.

On a ZeroGPU Space (the ``spaces`` package is installed and ``SPACES_ZERO_GPU`` is set) a GPU
is attached only while a function decorated with ``spaces.GPU`` runs. The app therefore loads
its model at import time (``spaces`` defers the move to CUDA), decorates the handlers that run
the model with :func:`gpu`, and keeps the session state (video memories, masks) in CPU memory
(:func:`offload_state`), since the GPU and what lives on it come and go between calls.
Without ``spaces``, or with it but not on ZeroGPU, :func:`gpu` returns the function unchanged.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["gpu", "offload_state", "on_zero_gpu"]

F = TypeVar("F", bound=Callable[..., Any])
# Seconds of GPU time asked for per call: a click is quick, a propagation is not.
CLICK_SECONDS = 20
PROPAGATION_SECONDS = 120


def on_zero_gpu() -> bool:
    """Whether this process runs on a ZeroGPU Space."""
    flag = os.environ.get("SPACES_ZERO_GPU", "").strip().lower()
    return flag in ("1", "t", "true") and importlib.util.find_spec("spaces") is not None


def offload_state() -> bool:
    """Whether per-session tensors should live in CPU memory (on ZeroGPU: yes)."""
    return on_zero_gpu()


def gpu(duration: int = CLICK_SECONDS) -> Callable[[F], F]:
    """Decorator: ``spaces.GPU(duration=...)`` on ZeroGPU, the identity elsewhere."""

    def wrap(fn: F) -> F:
        if not on_zero_gpu():
            return fn
        import spaces

        return spaces.GPU(duration=duration)(fn)

    return wrap

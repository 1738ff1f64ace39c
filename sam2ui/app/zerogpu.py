"""Hugging Face ZeroGPU glue; plain function calls everywhere else.

On a ZeroGPU Space (the ``spaces`` package is installed and ``SPACES_ZERO_GPU`` is set) a GPU
is attached only while a function decorated with ``spaces.GPU`` runs, and that function runs
in a worker process forked from the app's, with its arguments and results pickled. So:

* the model is loaded when the app is built, before any worker is forked (``spaces`` moves it
  to the GPU in the workers);
* every model call goes through :func:`run` (or :func:`iterate` for a propagation): it hands
  the function and its arguments (an annotator with its session) to the worker with
  ``sam2ui.core.handoff``, runs it there, and hands the result (the changed annotator) back.
  Nothing the worker changes in place survives it; only what it returns does (so an
  annotator's method is called through :func:`apply`, which returns the annotator too);
* session state lives in the app's process on the CPU between calls (:func:`offload_state`);
* exceptions come back as values and are raised again here, so users see our messages,
  not ``spaces``' generic "ZeroGPU worker error".

Without ``spaces``, or with it but not on ZeroGPU, :func:`run` and :func:`iterate` call the
function directly. So do they where ZeroGPU cannot run (not Linux, or no ``fork``: macOS,
Windows) even with ``SPACES_ZERO_GPU`` set; a warning says so once. Importing this module works
everywhere.
"""

from __future__ import annotations

import functools
import gc
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

import torch

from sam2ui.core import handoff

from . import compat

__all__ = ["apply", "iterate", "offload_state", "on_zero_gpu", "prepare", "run"]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")
log = logging.getLogger(__name__)
# Seconds of GPU time asked for per call: a click is quick, a propagation is not.
CLICK_SECONDS = 20
PROPAGATION_SECONDS = 120
_APP_PID = os.getpid()
_frozen_in: int | None = None  # the worker process whose inherited objects are frozen


def on_zero_gpu() -> bool:
    """Whether this process runs on a ZeroGPU Space: ``SPACES_ZERO_GPU`` set, ``spaces``
    installed, and a platform that can fork (else a warning, once, and False)."""
    if not compat.zero_gpu_requested() or importlib.util.find_spec("spaces") is None:
        return False
    reason = compat.zero_gpu_unsupported()
    if reason is not None:
        _warn_in_process(reason)
        return False
    return True


@functools.cache
def _warn_in_process(reason: str) -> None:
    log.warning("SPACES_ZERO_GPU is set, but %s: model calls run in this process.", reason)


def offload_state() -> bool:
    """Whether per-session tensors should live in CPU memory (on ZeroGPU: yes)."""
    return on_zero_gpu()


def _before_fork() -> None:
    # Collect garbage here, where its threads exist: an unreachable video decoder freed in a
    # forked worker would wait there forever for FFmpeg threads that were not forked.
    gc.collect()


def _in_worker() -> None:
    """Make a forked worker safe. It inherits the parent's objects and its OpenMP
    bookkeeping, but none of its threads. So: objects inherited are frozen, never collected
    (finalizers that join threads would hang), and torch runs on one CPU thread (with GNU
    OpenMP a parallel CPU operation would wait forever for the parent's pool; the GPU does
    the work)."""
    global _frozen_in
    pid = os.getpid()
    if pid == _APP_PID:
        return
    if _frozen_in != pid:
        gc.freeze()
        _frozen_in = pid
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _error(err: BaseException) -> tuple[str, Any]:
    try:
        handoff.dumps(err)
    except handoff.HandoffError:
        err = RuntimeError(f"{type(err).__name__}: {err}")
    return ("error", err)


def _run_task(blob: bytes) -> bytes:
    """Worker side of :func:`run`."""
    _in_worker()
    try:
        fn, args, kwargs = handoff.loads(blob, restore_devices=True)
        outcome: tuple[str, Any] = ("ok", fn(*args, **kwargs))
        return handoff.dumps(outcome)
    except Exception as err:
        return handoff.dumps(_error(err))


def _iterate_task(blob: bytes) -> Iterator[bytes]:
    """Worker side of :func:`iterate`."""
    _in_worker()
    try:
        fn, args, kwargs = handoff.loads(blob, restore_devices=True)
        for item in fn(*args, **kwargs):
            yield handoff.dumps(("ok", item))
    except Exception as err:
        yield handoff.dumps(_error(err))


@functools.cache
def _gpu_tasks() -> tuple[Callable[[bytes], bytes], Callable[[bytes], Iterator[bytes]]]:
    import spaces

    return (
        spaces.GPU(duration=CLICK_SECONDS)(_run_task),
        spaces.GPU(duration=PROPAGATION_SECONDS)(_iterate_task),
    )


def prepare() -> None:
    """On ZeroGPU, declare the GPU functions now (``spaces`` wants them before launch)."""
    if on_zero_gpu():
        _gpu_tasks()


def _unwrap(blob: bytes) -> Any:
    kind, value = handoff.loads(blob)
    if kind == "error":
        raise value
    return value


def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, on ZeroGPU in a GPU worker. ``fn`` must be a module-level
    function or class; whatever it changes must be part of what it returns."""
    if not on_zero_gpu():
        return fn(*args, **kwargs)
    _before_fork()
    blob = _gpu_tasks()[0](handoff.dumps((fn, args, kwargs)))
    return _unwrap(blob)


def iterate(fn: Callable[..., Iterator[T]], *args: Any, **kwargs: Any) -> Iterator[T]:
    """The items of the generator ``fn(*args, **kwargs)``, on ZeroGPU produced in a GPU
    worker (same rules as :func:`run`; the last item should carry the changed state)."""
    if not on_zero_gpu():
        yield from fn(*args, **kwargs)
        return
    _before_fork()
    for blob in _gpu_tasks()[1](handoff.dumps((fn, args, kwargs))):
        yield _unwrap(blob)


def apply(
    method: Callable[Concatenate[T, P], R], obj: T, /, *args: P.args, **kwargs: P.kwargs
) -> tuple[T, R]:
    """``(obj, method(obj, *args, **kwargs))``. Through :func:`run` the ``obj`` that comes
    back is the worker's changed copy. ``method`` travels to the worker by pickling: pass an
    unbound method (``ImageAnnotator.add_click``) or a module-level function, not a lambda."""
    return obj, method(obj, *args, **kwargs)

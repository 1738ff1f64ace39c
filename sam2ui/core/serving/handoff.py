"""Hand session state (annotators, predictors, video sessions) to a forked process and back.

Hugging Face ZeroGPU runs GPU work in a worker process forked from the app's process, and
passes arguments and results by pickling them. Session state cannot go as it is: it refers
to the shared model (hundreds of MB, and on ZeroGPU the parent's copy is only a placeholder
for the GPU's), holds tensors on the GPU, and a video session holds an open video file.
:func:`dumps` / :func:`loads` pickle it so that

* models registered with :func:`share` go **by reference**: a fork has the same objects at
  the same ids, so the worker finds its own copy of the model (on its device), and the app's
  process gets its own back. A model that was never shared, or one loaded after the fork,
  is a :class:`HandoffError`;
* tensors go as CPU tensors together with the device they were on. :func:`loads` with
  ``restore_devices=True`` (in the worker) moves them back to that device; otherwise (in the
  app's process) they stay on the CPU and remember the device for the next :func:`dumps`;
* locks are recreated, and video file sources reopen their file (see ``VideoFileSource``).

Nothing here is specific to gradio or ``spaces``; the app's ZeroGPU glue
(``sam2ui.app.zerogpu``) uses it, and tests fork processes to check it. It imports and runs on
every platform; only the by-reference models need ``fork`` (Linux, macOS): a process that was
spawned (Windows, or a ``spawn`` start method) has no shared models, and :func:`loads` says so
with a :class:`HandoffError`.
"""

from __future__ import annotations

import io
import pickle
import threading
import weakref
from typing import Any, TypeVar

import torch
from torch.utils.weak import WeakTensorKeyDictionary

__all__ = ["HandoffError", "dumps", "loads", "share"]

M = TypeVar("M", bound=torch.nn.Module)
_SHARED: weakref.WeakValueDictionary[int, torch.nn.Module] = weakref.WeakValueDictionary()
# CPU copies in this process of tensors that live on another device in the worker.
_HOME_DEVICE: Any = WeakTensorKeyDictionary()
_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))
_RESTORE = threading.local()  # loads(): whether to move tensors back to their device


class HandoffError(RuntimeError):
    """State that cannot be handed to (or taken back from) another process."""


def share(model: M) -> M:
    """Let ``model`` be handed over by reference (the model cache does this for every model
    it loads). Returns ``model``."""
    _SHARED[id(model)] = model
    return model


def _restore_tensor(cpu: torch.Tensor, device: str) -> torch.Tensor:
    if device == "cpu":
        return cpu
    if getattr(_RESTORE, "on", False):
        return cpu.to(device)
    _HOME_DEVICE[cpu] = device
    return cpu


def _new_lock(reentrant: bool) -> Any:
    return threading.RLock() if reentrant else threading.Lock()


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> Any:
        if isinstance(obj, torch.nn.Module):
            if _SHARED.get(id(obj)) is not obj:
                raise HandoffError(
                    f"a {type(obj).__name__} that was not shared "
                    "(sam2ui.core.serving.handoff.share) cannot be handed to another process"
                )
            return ("sam2ui-model", id(obj))
        return None

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor) and type(obj) is torch.Tensor:
            device = _HOME_DEVICE.get(obj, "cpu") if obj.device.type == "cpu" else obj.device
            if str(device) == "cpu":
                return NotImplemented  # the ordinary tensor pickling
            cpu = obj.detach().to("cpu")
            return _restore_tensor, (cpu, str(device))
        if isinstance(obj, _LOCK_TYPES):
            return _new_lock, (isinstance(obj, _LOCK_TYPES[1]),)
        return NotImplemented


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> Any:
        kind, key = pid
        model = _SHARED.get(key) if kind == "sam2ui-model" else None
        if model is None:
            raise HandoffError(
                "the state refers to a model this process does not have; state can only be "
                "handed between a process and its forks (not a spawned process), for models "
                "loaded before the fork"
            )
        return model


def dumps(obj: Any) -> bytes:
    """``obj`` pickled for another process of this fork family (see the module docstring)."""
    buffer = io.BytesIO()
    try:
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    except (pickle.PicklingError, TypeError, AttributeError) as err:
        raise HandoffError(f"cannot hand this state to another process: {err}") from err
    return buffer.getvalue()


def loads(data: bytes, *, restore_devices: bool = False) -> Any:
    """The object :func:`dumps` wrote. ``restore_devices``: move tensors back to the device
    they were on (in the worker that runs the model); else keep them on the CPU."""
    _RESTORE.on = restore_devices
    try:
        return _Unpickler(io.BytesIO(data)).load()
    finally:
        _RESTORE.on = False

"""How much memory a session's state holds: :func:`estimate_nbytes`.

The session manager sizes each session with it after every use, and holds the sum under the
server's memory budget, so it counts what a session really keeps: tensors and arrays (an
image embedding, the image, masks), the bytes of packed masks (the history and result stores
keep masks bit-packed and compressed), and the Python objects around them (prompts, undo
records), at their ``sys.getsizeof``.
"""

from __future__ import annotations

import sys
import threading
import types
from typing import Any

import numpy as np
import torch

__all__ = ["estimate_nbytes"]

# Objects the memory walk does not enter or count: models are shared (owned by the model
# cache), classes, modules, functions and threads are not a session's memory.
_SHARED = (
    torch.nn.Module,
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    threading.Thread,
)
# Leaves counted at their size: packed masks are bytes.
_FLAT = (str, bytes, bytearray, memoryview)


def estimate_nbytes(state: Any) -> int:
    """Bytes held by ``state``: its torch tensors and numpy arrays, bytes and strings, and the
    Python objects that hold them.

    Walks containers, dataclasses and objects' attributes (``__dict__`` and ``__slots__``).
    A storage shared by several tensors or views, or an array and its views, counts once.
    ``torch.nn.Module`` instances are skipped: models are shared through the model cache and
    are not a session's memory.
    """
    seen_objects: set[int] = set()
    seen_storage: set[tuple[str, int]] = set()
    total = 0
    stack: list[Any] = [state]
    while stack:
        obj = stack.pop()
        if obj is None or isinstance(obj, (bool, int, float, complex)) or id(obj) in seen_objects:
            continue
        seen_objects.add(id(obj))
        if isinstance(obj, torch.Tensor):
            try:
                storage = obj.untyped_storage()
            except (RuntimeError, NotImplementedError):  # sparse and other storage-less kinds
                continue
            ident = (str(obj.device), storage.data_ptr())
            if ident not in seen_storage:
                seen_storage.add(ident)
                total += storage.nbytes()
        elif isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            ident = ("numpy", id(base))
            if ident not in seen_storage:
                seen_storage.add(ident)
                total += base.nbytes
        elif isinstance(obj, _SHARED):
            continue
        elif isinstance(obj, _FLAT):
            total += sys.getsizeof(obj)
        elif isinstance(obj, dict):
            total += sys.getsizeof(obj)
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            total += sys.getsizeof(obj)
            stack.extend(obj)
        else:
            total += sys.getsizeof(obj)
            stack.extend(getattr(obj, "__dict__", {}).values())
            for cls in type(obj).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if isinstance(name, str) and hasattr(obj, name):
                        stack.append(getattr(obj, name))
    return total

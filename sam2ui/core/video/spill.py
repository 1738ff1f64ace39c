"""The disk tier of a video session's tracking memory.

A tracked frame's memory features (bfloat16) and low-resolution mask logits (float32, after
hole filling) are large (about 0.75 MB an object and frame at a 1024 input), and the
reference keeps all of them: a correction anywhere in the video reads the memories behind it,
and a click on a tracked frame reads that frame's logits. :class:`SpillStore` keeps them
bit for bit in files of a per-session temporary directory (created on first use, named
``sam2ui-mem-*``), so that RAM holds only the memory window (see
:mod:`sam2ui.core.video.memory`) while everything stays retrievable.

Files are written and read with plain ``write`` / ``readinto`` (never memory-mapped: mapped
pages count in the process's resident memory while mapped). One file per (object slot,
frame): the logits, then the features, so a read of the features alone skips the logits.
The directory is deleted when the store is closed, when it is garbage-collected, and at
interpreter exit (``weakref.finalize``). It is one of sam2ui's temporary folders
(:mod:`sam2ui.core.scratch`, named ``sam2ui-mem-<pid>-*``): a process killed before it could
clean up leaves its directories behind, and the next process to make one deletes those of
processes no longer running.
``budget_bytes`` bounds the disk use; a write that would pass it, or that the disk refuses,
raises :class:`SpillError` and leaves the output in RAM, so nothing tracked is lost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import weakref
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import torch

from sam2ui.core.scratch import make_folder, sweep_stale

# Default disk budget of one session's spilled memories.
DEFAULT_SPILL_BUDGET = 16 * 1024**3


def sweep_orphans(root: str | None = None) -> list[str]:
    """Delete the folders in ``root`` (default: sam2ui's, see :mod:`sam2ui.core.scratch`) left
    by processes that are no longer running; returns their paths."""
    return sweep_stale(root)


def _make_directory() -> str:
    return str(make_folder("mem"))


class SpillError(RuntimeError):
    """A memory could not be moved to disk (budget exceeded or disk full); it stays in RAM."""


@dataclass(frozen=True)
class SpillRef:
    """Where one output's logits and features are on disk, and what they look like."""

    key: tuple[int, int]  # (object slot, frame index)
    logits_shape: tuple[int, ...]
    features_shape: tuple[int, ...]
    features_dtype: torch.dtype
    device: torch.device

    @property
    def logits_nbytes(self) -> int:
        return _numel(self.logits_shape) * 4

    @property
    def nbytes(self) -> int:
        itemsize = torch.empty(0, dtype=self.features_dtype).element_size()
        return self.logits_nbytes + _numel(self.features_shape) * itemsize


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _raw(tensor: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU copy of ``tensor``."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().data


class SpillStore:
    """Memory features and logits of tracked frames on disk, by (object, frame)."""

    def __init__(self, budget_bytes: int = DEFAULT_SPILL_BUDGET) -> None:
        if budget_bytes < 0:
            raise ValueError(f"spill budget must be >= 0 bytes, got {budget_bytes}")
        self.budget_bytes = int(budget_bytes)
        self._dir: str | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._sizes: dict[tuple[int, int], int] = {}
        self._slots: dict[Hashable, int] = {}
        self._next_slot = 0

    # ------------------------------------------------------------------ bookkeeping
    @property
    def directory(self) -> str | None:
        """The temporary directory, or None before the first write (and after close)."""
        return self._dir

    @property
    def nbytes(self) -> int:
        """Bytes on disk."""
        return sum(self._sizes.values())

    def __len__(self) -> int:
        return len(self._sizes)

    def slot(self, obj_id: Hashable) -> int:
        """The integer slot of an object (ids are arbitrary hashables, file names are not)."""
        slot = self._slots.get(obj_id)
        if slot is None:
            slot = self._slots[obj_id] = self._next_slot
            self._next_slot += 1
        return slot

    def _path(self, key: tuple[int, int]) -> str:
        if self._dir is None:
            self._dir = _make_directory()
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._dir, True)
        return os.path.join(self._dir, f"{key[0]}-{key[1]}.bin")

    # ------------------------------------------------------------------ writing
    def put(
        self, obj_id: Hashable, frame_idx: int, logits: torch.Tensor, features: torch.Tensor
    ) -> SpillRef:
        """Write one output's float32 ``logits`` and ``features`` (any dtype); returns where."""
        if logits.dtype != torch.float32:
            raise TypeError(f"logits to spill must be float32, got {logits.dtype}")
        key = (self.slot(obj_id), int(frame_idx))
        ref = SpillRef(
            key, tuple(logits.shape), tuple(features.shape), features.dtype, features.device
        )
        size = ref.nbytes
        used = self.nbytes - self._sizes.get(key, 0)
        if used + size > self.budget_bytes:
            raise SpillError(
                f"the session's disk budget for tracking memory ({self.budget_bytes} bytes) "
                f"is exceeded ({used} used, {size} more needed); raise spill_budget_bytes, "
                "or use keep_all_memories=True to keep memories in RAM"
            )
        path = self._path(key)
        try:
            with open(path, "wb") as f:
                f.write(_raw(logits))
                f.write(_raw(features))
        except OSError as err:
            self._sizes.pop(key, None)
            raise SpillError(f"cannot write tracking memory to {path}: {err}") from err
        self._sizes[key] = size
        return ref

    # ------------------------------------------------------------------ reading
    def _read(self, ref: SpillRef, offset: int, out: torch.Tensor) -> torch.Tensor:
        if ref.key not in self._sizes or self._dir is None:
            raise KeyError(f"no spilled memory for object slot {ref.key[0]}, frame {ref.key[1]}")
        buffer = out.view(-1).view(torch.uint8).numpy().data
        with open(self._path(ref.key), "rb") as f:
            f.seek(offset)
            if f.readinto(buffer) != len(buffer):
                raise SpillError(f"spilled memory of frame {ref.key[1]} is truncated")
        return out.to(ref.device)

    def logits(self, ref: SpillRef) -> torch.Tensor:
        """The float32 low-res logits of a spilled output."""
        return self._read(ref, 0, torch.empty(ref.logits_shape, dtype=torch.float32))

    def features(self, ref: SpillRef) -> torch.Tensor:
        """The memory features of a spilled output, in their stored dtype."""
        out = torch.empty(ref.features_shape, dtype=ref.features_dtype)
        return self._read(ref, ref.logits_nbytes, out)

    # ------------------------------------------------------------------ forgetting
    def discard(self, ref: SpillRef) -> None:
        """Delete one output's file (nothing happens when it is gone)."""
        if self._sizes.pop(ref.key, None) is not None and self._dir is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path(ref.key))

    def drop_object(self, obj_id: Hashable) -> None:
        """Delete every file of an object and forget its slot."""
        slot = self._slots.pop(obj_id, None)
        if slot is None:
            return
        for key in [k for k in self._sizes if k[0] == slot]:
            self._sizes.pop(key)
            with contextlib.suppress(FileNotFoundError):
                os.remove(self._path(key))

    def close(self) -> None:
        """Delete the directory and everything in it (the store can be used again)."""
        if self._finalizer is not None:
            self._finalizer()
        self._dir = None
        self._finalizer = None
        self._sizes.clear()
        self._slots.clear()

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        # Handed to another process (sam2ui.core.serving.handoff): the files go inline,
        # since this process deletes its directory when the store is collected.
        data = {}
        for key in self._sizes:
            with open(self._path(key), "rb") as f:
                data[key] = f.read()
        return {
            "budget_bytes": self.budget_bytes,
            "slots": dict(self._slots),
            "next_slot": self._next_slot,
            "data": data,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["budget_bytes"])  # type: ignore[misc]
        self._slots = dict(state["slots"])
        self._next_slot = state["next_slot"]
        for key, blob in state["data"].items():
            with open(self._path(key), "wb") as f:
                f.write(blob)
            self._sizes[key] = len(blob)

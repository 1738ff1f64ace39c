"""Decoded frames parked in an anonymous temporary file instead of RAM.

Walking a video file backwards decodes forward from a keyframe and keeps the frames in
between for the next steps back (see :mod:`sam2ui.core.video.sources.file`). Kept in RAM, that
chunk is up to ``chunk_bytes`` of resident memory for as long as the walk lasts, and the
allocator rarely gives it back afterwards. A :class:`FrameSpool` writes each frame into a slot
of one temporary file with a plain unbuffered write and reads it back with ``readinto``; nothing is
memory-mapped, so the chunk costs the process no resident memory (the kernel's page cache
holds what it can).

The file is created with :func:`tempfile.TemporaryFile`: on Linux it has no name from the
start, so it disappears when it is closed, garbage collected, or the process dies in any way
(``SIGKILL`` included). The spool is a cache: a frame that cannot be written (disk full, no
temporary directory) is simply not kept and is decoded again when asked for.
"""

from __future__ import annotations

import io
import logging
import tempfile

import numpy as np

logger = logging.getLogger(__name__)


class FrameSpool:
    """A map from frame index to (H, W, 3) uint8 frame, stored in a temporary file.

    Args:
        slot_bytes: the size of one frame; larger frames (or other dtypes) are not kept.
        directory: where the temporary file goes (default: the system's temporary directory).
    """

    def __init__(self, slot_bytes: int, directory: str | None = None) -> None:
        self.slot_bytes = int(slot_bytes)
        self.directory = directory
        self._file: io.FileIO | None = None
        self._slots: dict[int, tuple[int, tuple[int, ...]]] = {}  # index -> (slot, shape)
        self._free: list[int] = []
        self._next_slot = 0
        self._failed = False

    def put(self, index: int, frame: np.ndarray) -> bool:
        """Keep ``frame`` as frame ``index``. Returns False when it was not kept."""
        if frame.dtype != np.uint8 or frame.nbytes > self.slot_bytes or self._failed:
            return False
        self.discard(index)
        reused = bool(self._free)
        slot = self._free.pop() if reused else self._next_slot
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(dir=self.directory, buffering=0)  # noqa: SIM115
            self._file.seek(slot * self.slot_bytes)
            data = np.ascontiguousarray(frame).data.cast("B")
            while data:  # an unbuffered write may take fewer bytes than given
                written = self._file.write(data)
                if not written:
                    raise OSError("the temporary file takes no more bytes")
                data = data[written:]
        except OSError as exc:
            # A cache: stop keeping frames (they are decoded again when asked for).
            logger.warning("cannot park decoded frames on disk (%s); decoding them again", exc)
            self._failed = True
            if reused:
                self._free.append(slot)
            return False
        if not reused:
            self._next_slot += 1
        self._slots[index] = (slot, frame.shape)
        return True

    def pop(self, index: int) -> np.ndarray | None:
        """Frame ``index`` (read-only, removed from the spool), or None when it is not kept."""
        entry = self._slots.pop(index, None)
        if entry is None or self._file is None:
            return None
        slot, shape = entry
        self._free.append(slot)
        frame = np.empty(shape, dtype=np.uint8)
        self._file.seek(slot * self.slot_bytes)
        view = frame.data.cast("B")
        while view:
            got = self._file.readinto(view)
            if not got:
                logger.warning("frame %d could not be read back from disk; decoded again", index)
                return None
            view = view[got:]
        frame.flags.writeable = False  # like every frame a source hands out
        return frame

    def discard(self, index: int) -> None:
        entry = self._slots.pop(index, None)
        if entry is not None:
            self._free.append(entry[0])

    def clear(self) -> None:
        """Forget every frame; the file keeps its size for the next chunk."""
        self._slots.clear()
        self._free = list(range(self._next_slot))

    def close(self) -> None:
        """Forget every frame and delete the file."""
        self._slots.clear()
        self._free.clear()
        self._next_slot = 0
        self._failed = False
        if self._file is not None:
            self._file.close()
            self._file = None

    @property
    def disk_bytes(self) -> int:
        """Bytes the file takes (slots ever used times the slot size)."""
        return self._next_slot * self.slot_bytes

    def __contains__(self, index: int) -> bool:
        return index in self._slots

    def __len__(self) -> int:
        return len(self._slots)

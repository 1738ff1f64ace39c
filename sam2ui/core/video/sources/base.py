"""Lazy video frame access: video files (PyAV), folders of JPEG/PNG frames and in-memory arrays.

Every source hands out frames as read-only ``(H, W, 3) uint8`` RGB arrays by index, decoding
on demand, so a long video is never held in memory. :func:`preprocess_frame` turns one frame
into the video model's input exactly as the reference's frame loader does.

Video files are read by :class:`~sam2ui.core.video.sources.file.VideoFileSource` (PyAV,
imported only when a file is opened, so ``av`` stays an optional dependency); see that module
for how it seeks, caches and walks backwards. :func:`~sam2ui.core.video.sources.open.open_frames`
opens any of them.
"""

from __future__ import annotations

import logging
import operator
import os
import re
import struct
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sam2ui.core.transforms import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

DEFAULT_FPS = 30.0
FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
VideoInput = Any  # path (str / PathLike), sequence of frames, (T, H, W, 3) array or FrameSource


# ---------------------------------------------------------------------------- preprocessing


@lru_cache(maxsize=4)
def _normalize_lut(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: normalised value of every uint8 level, computed as the reference does
    (``v / 255`` in float64, cast to float32, then ``(x - mean) / std`` in float32)."""
    levels = torch.from_numpy(np.arange(256) / 255.0).to(torch.float32)
    mean_t = torch.tensor(mean, dtype=torch.float32)[:, None]
    std_t = torch.tensor(std, dtype=torch.float32)[:, None]
    return ((levels[None, :] - mean_t) / std_t).numpy()


def preprocess_frame(
    frame: np.ndarray,
    image_size: int = 1024,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> torch.Tensor:
    """One RGB frame -> the video model's input, bit-identical to the reference's loader.

    Args:
        frame: (H, W, 3) uint8 RGB.
        image_size: side S of the square model input.
    Returns:
        (3, S, S) float32 tensor: PIL's default (bicubic) resize to S x S on uint8, then
        ``/ 255`` and ImageNet normalisation.
    """
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3:
        raise TypeError("frame must be an (H, W, 3) uint8 numpy array")
    if frame.shape[2] != 3:
        raise ValueError(f"frame must have 3 channels, got shape {frame.shape}")
    resized = np.asarray(Image.fromarray(frame).resize((image_size, image_size)))
    lut = _normalize_lut(tuple(mean), tuple(std))
    out = np.empty((3, image_size, image_size), dtype=np.float32)
    for c in range(3):
        np.take(lut[c], resized[:, :, c], out=out[c])
    return torch.from_numpy(out)


# ---------------------------------------------------------------------------- frame sources


class FrameSource(ABC):
    """Random access to the frames of a video, each an (H, W, 3) uint8 RGB array.

    ``len(source)`` frames of ``height`` x ``width`` pixels at ``fps`` frames per second.
    Frames are read-only arrays; copy one before drawing on it. Sources are context managers.
    """

    name: str = "<frames>"
    height: int  # frame height in pixels (after rotation metadata); set by subclasses
    width: int  # frame width in pixels (after rotation metadata)
    fps: float  # frames per second (metadata, or the value given when opening)

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _read(self, index: int) -> np.ndarray:
        """Frame ``index`` (already range-checked) as a read-only (H, W, 3) uint8 array."""

    @property
    def duration(self) -> float:
        """How long the frames play, in seconds: ``len / fps`` (a video file measures it
        from its timestamps instead)."""
        return len(self) / self.fps if self.fps > 0 else 0.0

    def get(self, index: int) -> np.ndarray:
        """Frame ``index`` (0 <= index < len) as a read-only (H, W, 3) uint8 RGB array."""
        i = operator.index(index)
        if not 0 <= i < len(self):
            raise IndexError(
                f"frame index {index} out of range [0, {len(self) - 1}] for {self.name}"
            )
        return self._read(i)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.get(index)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.get(i)

    def frames(
        self, start: int = 0, stop: int | None = None, *, reverse: bool = False
    ) -> Iterator[tuple[int, np.ndarray]]:
        """(index, frame) for indices in [start, stop), in reverse order when ``reverse``."""
        stop = len(self) if stop is None else min(stop, len(self))
        indices = range(max(start, 0), stop)
        for i in reversed(indices) if reverse else indices:
            yield i, self.get(i)

    def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release files and decoders (no-op for in-memory sources)."""

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameCache:
    """A small least-recently-used map from frame index to frame."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(int(capacity), 1)
        self._items: OrderedDict[int, np.ndarray] = OrderedDict()

    def get(self, key: int) -> np.ndarray | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: int, value: np.ndarray) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __contains__(self, key: int) -> bool:
        return key in self._items


def readonly_view(arr: np.ndarray) -> np.ndarray:
    view = arr.view()
    view.flags.writeable = False
    return view


def _as_rgb_uint8(frame: Any, where: str) -> np.ndarray:
    """A PIL image or uint8 array (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) -> (H, W, 3)."""
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    if isinstance(frame, torch.Tensor):
        raise TypeError(f"{where}: pass frames as numpy arrays or PIL images, not torch tensors")
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"{where}: expected a numpy array or PIL image, got {type(frame)}")
    if frame.dtype != np.uint8:
        raise ValueError(f"{where}: frames must be uint8, got {frame.dtype}")
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4) or 0 in frame.shape:
        raise ValueError(f"{where}: expected (H, W, 3) RGB, got shape {frame.shape}")
    if frame.shape[2] == 1:
        return np.repeat(frame, 3, axis=2)
    return frame[:, :, :3]


class ArraySource(FrameSource):
    """Frames held in memory: a sequence of (H, W, 3) uint8 arrays / PIL images, or one
    (T, H, W, 3) uint8 array. All frames must share one size."""

    def __init__(self, frames: Sequence[Any] | np.ndarray, fps: float | None = None) -> None:
        if isinstance(frames, np.ndarray) and (frames.ndim != 4 or frames.shape[3] != 3):
            raise ValueError(f"a frame array must be (T, H, W, 3), got shape {frames.shape}")
        if len(frames) == 0:
            raise ValueError("the video has no frames (empty sequence)")
        self._frames = frames
        self.name = f"<{len(frames)} frames in memory>"
        first = self._read(0)
        self.height, self.width = first.shape[:2]
        self.fps = float(fps) if fps else DEFAULT_FPS

    def __len__(self) -> int:
        return len(self._frames)

    def _read(self, index: int) -> np.ndarray:
        frame = _as_rgb_uint8(self._frames[index], f"frame {index}")
        if index and frame.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"frame {index} is {frame.shape[1]}x{frame.shape[0]}, but frame 0 is "
                f"{self.width}x{self.height}; all frames must have the same size"
            )
        return readonly_view(frame)


def _natural_key(name: str) -> tuple[tuple[tuple[int, int | str], ...], str]:
    """Sort key: digit runs compare as numbers ("2.jpg" < "10.jpg", "f_9" < "f_10")."""
    parts = re.split(r"(\d+)", Path(name).stem)
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts if p), name


def list_frame_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The JPEG/PNG files of ``folder`` (hidden files skipped) in natural order.

    Integer names sort numerically as in the reference ("<frame_index>.jpg"); other names sort
    by their digit runs as numbers. Raises ValueError if there are none.
    """
    folder = Path(folder)
    names = [
        n
        for n in os.listdir(folder)
        if not n.startswith(".") and os.path.splitext(n)[1].lower() in FRAME_EXTENSIONS
    ]
    if not names:
        raise ValueError(f"no JPEG or PNG frames in folder {folder}")
    return [folder / n for n in sorted(names, key=_natural_key)]


class FolderSource(FrameSource):
    """A folder of JPEG/PNG frames, decoded with PIL on demand (see :func:`list_frame_files`).

    Decoded like the reference (``Image.open(path).convert("RGB")``, EXIF orientation not
    applied), so :func:`preprocess_frame` reproduces its model input exactly.
    """

    def __init__(
        self, folder: str | os.PathLike[str], fps: float | None = None, cache_size: int = 8
    ) -> None:
        self.paths = list_frame_files(folder)
        self.name = str(folder)
        self._cache = FrameCache(cache_size)
        self._lock = threading.Lock()
        with Image.open(self.paths[0]) as img:
            self.width, self.height = img.size
        self.fps = float(fps) if fps else DEFAULT_FPS

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, index: int) -> np.ndarray:
        with self._lock:
            cached = self._cache.get(index)
            if cached is not None:
                return cached
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                frame = np.asarray(img.convert("RGB"))
        except OSError as exc:
            raise ValueError(f"cannot read frame {index} ({path}): {exc}") from exc
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"{path} is {frame.shape[1]}x{frame.shape[0]}, but {self.paths[0].name} is "
                f"{self.width}x{self.height}; all frames must have the same size"
            )
        frame = readonly_view(frame)
        with self._lock:
            self._cache.put(index, frame)
        return frame


# ---------------------------------------------------------------------------- rotation


def display_matrix(frame: Any) -> tuple[int, ...] | None:
    """The 3x3 display matrix (9 int32, FFmpeg layout) attached to a decoded PyAV frame."""
    from sam2ui.core.compat.pyav import side_data_bytes  # PyAV is there: this is its frame

    raw = side_data_bytes(frame, "DISPLAYMATRIX")
    if raw is None or len(raw) < 36:
        return None
    return struct.unpack("=9i", raw[:36])


def orientation_from_matrix(matrix: Sequence[int] | None) -> tuple[bool, bool, bool]:
    """(transpose, flip_rows, flip_cols) that show a frame as its display matrix says.

    FFmpeg maps a source pixel (x, y) to (a*x + c*y, b*x + d*y) (+ offset) with
    ``a, b, c, d = m[0], m[1], m[3], m[4]``. Only multiples of 90 degrees with optional flips
    are supported; other matrices are ignored with a warning.
    """
    if matrix is None:
        return False, False, False
    a, b, c, d = (round(matrix[i] / 65536) for i in (0, 1, 3, 4))
    if b == 0 and c == 0 and abs(a) == 1 and abs(d) == 1:
        return False, d < 0, a < 0
    if a == 0 and d == 0 and abs(b) == 1 and abs(c) == 1:
        return True, b < 0, c < 0  # rows come from x (sign b), columns from y (sign c)
    logger.warning("ignoring a display matrix that is not a multiple of 90 degrees: %s", matrix)
    return False, False, False


def apply_orientation(frame: np.ndarray, orientation: tuple[bool, bool, bool]) -> np.ndarray:
    """Apply (transpose, flip_rows, flip_cols) to an (H, W, C) array; returns a C-contiguous
    array ((W, H, C) when transposed)."""
    transpose, flip_rows, flip_cols = orientation
    if transpose:
        frame = frame.transpose(1, 0, 2)
    if flip_rows:
        frame = frame[::-1]
    if flip_cols:
        frame = frame[:, ::-1]
    return np.ascontiguousarray(frame)

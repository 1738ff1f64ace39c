"""Open any supported video input (a file, a folder of frames, arrays) as a frame source."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .base import ArraySource, FolderSource, FrameSource, VideoInput


def open_frames(
    video: VideoInput,
    fps: float | None = None,
    *,
    cache_size: int = 8,
    chunk_bytes: int = 256 << 20,
    threads: int = 0,
) -> FrameSource:
    """Open any supported video input as a :class:`FrameSource`.

    Args:
        video: a video file (mp4, mov, webm, mkv, avi, ... anything FFmpeg reads), a folder of
            JPEG/PNG frames, a sequence of (H, W, 3) uint8 arrays or PIL images, a (T, H, W, 3)
            uint8 array, or a FrameSource (returned unchanged).
        fps: frame rate to report; default: the file's metadata, else 30.
        cache_size, chunk_bytes, threads: see :class:`VideoFileSource` (cache_size also sizes
            the folder source's cache).
    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: empty/unsupported folder, unreadable or frameless file, bad arrays.
        TypeError: an unsupported input type.
    """
    if isinstance(video, FrameSource):
        return video
    if isinstance(video, (str, os.PathLike)):
        path = Path(video)
        if not path.exists():
            raise FileNotFoundError(f"video not found: {path}")
        if path.is_dir():
            return FolderSource(path, fps=fps, cache_size=cache_size)
        from .file import VideoFileSource

        return VideoFileSource(
            path, fps=fps, cache_size=cache_size, chunk_bytes=chunk_bytes, threads=threads
        )
    if isinstance(video, torch.Tensor):
        raise TypeError("pass video frames as numpy arrays, not a torch tensor")
    if isinstance(video, (np.ndarray, list, tuple)):
        return ArraySource(video, fps=fps)
    raise TypeError(
        f"unsupported video input {type(video).__name__}: use a file or folder path, a list of "
        "frames or a (T, H, W, 3) uint8 array"
    )

"""What an upload must be before any model work: a regular file, within the app's limits.

Gradio hands handlers the server path of an uploaded file; an API client can name other
entries of gradio's upload folder, a folder among them, which would read as a folder of
frames. :func:`regular_file` refuses anything but a regular file. :func:`open_video` checks a
video's size, its duration as its timestamps measure it (never the frame rate it declares)
and its frame count.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from sam2ui.core import FrameSource, open_frames

from .errors import UserError
from .options import AppConfig

__all__ = ["check_length", "open_video", "regular_file"]


def regular_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path when it is a regular file (links followed); UserError otherwise,
    saying what to upload (``what``: "an image", "a video")."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        raise UserError(f"That upload is gone from the server; upload {what} again.") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a file"
        raise UserError(f"That upload is {kind}; upload {what} as a single file.")
    return Path(path)


def is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def check_length(config: AppConfig, frames: int, seconds: float) -> None:
    """UserError when a video of ``frames`` frames playing ``seconds`` breaks a limit."""
    if seconds > config.max_video_seconds:
        raise UserError(
            f"The video is {seconds:.1f} s long; this app accepts videos up to "
            f"{config.max_video_seconds:g} s. Trim it and upload it again."
        )
    if config.max_video_frames is not None and frames > config.max_video_frames:
        raise UserError(
            f"The video has {frames} frames; this app accepts up to "
            f"{config.max_video_frames}. Trim it (or lower its frame rate) and upload it again."
        )


def open_video(config: AppConfig, path: str | os.PathLike[str]) -> FrameSource:
    """The video at ``path``, opened; UserError (and nothing left open) when it is not a
    regular file or breaks a limit. The caller closes the source, or hands it to an
    annotator that does."""
    path = regular_file(path, "a video")
    size_mb = path.stat().st_size / 2**20
    if size_mb > config.max_video_mb:
        raise UserError(
            f"The video is {size_mb:.1f} MB; this app accepts videos up to "
            f"{config.max_video_mb:g} MB. Trim or compress it and upload it again."
        )
    try:
        source = open_frames(path)
    except (ValueError, OSError) as err:
        raise UserError(f"Cannot read this video: {err}") from None
    try:
        check_length(config, len(source), source.duration)
    except BaseException:
        source.close()
        raise
    return source

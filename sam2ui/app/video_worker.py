"""Tracking where the model runs: a GPU worker process on ZeroGPU (see
:meth:`~sam2ui.app.video_handlers.VideoHandlers.propagate`)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np

from sam2ui.core import PropagationStep, VideoAnnotator

__all__ = ["PREVIEW_EVERY_S", "track_frames"]

PREVIEW_EVERY_S = 0.25  # at most four preview frames a second: encoding them costs time too


def track_frames(
    annotator: VideoAnnotator, direction: str, stop_file: str, selected: int | None
) -> Iterator[tuple[PropagationStep | None, np.ndarray | None, VideoAnnotator | None]]:
    """Where the model runs (a GPU worker on ZeroGPU): track every prompted object, yielding
    ``(step, preview or None, None)`` after each frame (a rendered preview at most every
    ``PREVIEW_EVERY_S``) and ``(None, None, annotator)`` last. Stops early, keeping what it
    tracked, once ``stop_file`` exists."""
    steps = annotator.propagate(direction)  # type: ignore[arg-type]
    last_preview = 0.0
    try:
        for step in steps:
            picture = None
            now = time.monotonic()
            if now - last_preview >= PREVIEW_EVERY_S or step.done == step.total:
                last_preview = now
                picture = annotator.render(step.frame_idx, selected=selected)
            yield step, picture, None
            if os.path.exists(stop_file):
                break
    finally:
        steps.close()  # type: ignore[attr-defined]
    yield None, None, annotator

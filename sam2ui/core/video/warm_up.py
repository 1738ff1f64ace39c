"""Warm-up: run a predictor once on made-up input, so its first real use is not slow.

A compiled model (:mod:`sam2ui.core.modeling.compiled`) traces and builds its kernels on its
first calls: tens of seconds on a CPU. :func:`warm_up` makes those calls now, through the
predictor's own code (so the graphs built are those real work meets), and returns how long
it took; the command line and the app report it. On an eager model it costs one image
encoding (and, for video, a few tracked frames) and checks that the model runs.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from sam2ui.core.image.predictor import SAM2ImagePredictor
from sam2ui.core.modeling.compiled import is_compiled

from .predictor import SAM2VideoPredictor

__all__ = ["warm_up"]

log = logging.getLogger(__name__)

_SIDE = 64  # the made-up frames' size; the model resizes them to its input size


def _frames(count: int) -> np.ndarray:
    """``count`` frames of a bright square moving over a dark background."""
    frames = np.full((count, _SIDE, _SIDE, 3), 20, dtype=np.uint8)
    for t in range(count):
        frames[t, 16:40, 10 + 4 * t : 34 + 4 * t] = (230, 200, 60)
    return frames


def _warm_image(predictor: SAM2ImagePredictor) -> None:
    predictor.set_image(_frames(1)[0])
    predictor.predict(point_coords=np.array([[28.0, 28.0]]), point_labels=np.array([1]))
    predictor.reset_predictor()


def _warm_video(predictor: SAM2VideoPredictor, frames: int) -> None:
    # One object, then two: a second number of objects is what makes the memory encoder's
    # graph general, so that later sessions with any number of objects build no more. Three
    # frames give the memory attention its two kinds of memory (one frame, then several).
    video = _frames(frames)
    for objects in (1, 2):
        session = predictor.init_state(video)
        try:
            for obj_id in range(1, objects + 1):
                point = [[18.0 + 8 * obj_id, 28.0]]
                predictor.add_new_points_or_box(session, 0, obj_id, points=point, labels=[1])
            for _ in predictor.propagate_in_video(session):
                pass
        finally:
            predictor.reset_state(session)


def warm_up(predictor: SAM2ImagePredictor | SAM2VideoPredictor, *, frames: int = 3) -> float:
    """Run ``predictor`` on made-up input (an image and a click; for a video predictor,
    sessions of one and two objects over ``frames`` frames) and return the seconds taken."""
    if frames < 2:
        raise ValueError(f"frames must be at least 2, got {frames}")
    start = time.perf_counter()
    if isinstance(predictor, SAM2VideoPredictor):
        _warm_video(predictor, frames)
    elif isinstance(predictor, SAM2ImagePredictor):
        _warm_image(predictor)
    else:
        raise TypeError(
            f"expected a SAM2ImagePredictor or SAM2VideoPredictor, got {type(predictor).__name__}"
        )
    seconds = time.perf_counter() - start
    kind = "compiled" if is_compiled(predictor.model) else "eager"
    log.info("warm-up of the %s model: %.1f s", kind, seconds)
    return seconds

"""Predictors for the widgets, from the model cache the app and the command line share.

``model=`` of a segmenter is a variant name, a hub id or a local checkpoint path (looked up in
:func:`~sam2ui.core.model_cache.default_model_cache`, or in ``cache``), or a ready predictor.
A Gradio app and widgets in one kernel therefore hold one copy of each model.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sam2ui.core.image_predictor import SAM2ImagePredictor
    from sam2ui.core.model_cache import ModelCache
    from sam2ui.core.video_predictor import SAM2VideoPredictor

__all__ = ["image_predictor_for", "video_predictor_for"]


def _check_source(model: object, wanted: str) -> None:
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(
            f"model must be a variant name, a hub id, a checkpoint path or a {wanted}, "
            f"got {type(model).__name__}"
        )


def image_predictor_for(
    model: object, *, device: Any = None, dtype: Any = "float32", cache: ModelCache | None = None
) -> SAM2ImagePredictor:
    """A new image predictor on the shared model for ``model``, or ``model`` itself when it is
    a :class:`~sam2ui.core.image_predictor.SAM2ImagePredictor` (its image is replaced)."""
    from sam2ui.core.image_predictor import SAM2ImagePredictor
    from sam2ui.core.model_cache import image_predictor

    if isinstance(model, SAM2ImagePredictor):
        return model
    _check_source(model, "SAM2ImagePredictor")
    return image_predictor(model, device=device, dtype=dtype, cache=cache)  # type: ignore[arg-type]


def video_predictor_for(
    model: object, *, device: Any = None, dtype: Any = "float32", cache: ModelCache | None = None
) -> SAM2VideoPredictor:
    """A video predictor on the shared model's video view for ``model``, or ``model`` itself
    when it is a :class:`~sam2ui.core.video_predictor.SAM2VideoPredictor`."""
    from sam2ui.core.model_cache import video_predictor
    from sam2ui.core.video_predictor import SAM2VideoPredictor

    if isinstance(model, SAM2VideoPredictor):
        return model
    _check_source(model, "SAM2VideoPredictor")
    return video_predictor(model, device=device, dtype=dtype, cache=cache)  # type: ignore[arg-type]

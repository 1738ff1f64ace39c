"""Meta's builder module under sam2ui: ``from sam2ui.build_sam import build_sam2`` works as
``from sam2.build_sam import build_sam2`` does (same arguments, sam2ui's models and
predictors). See :mod:`sam2ui.core.loading.build` for what each argument does here."""

from __future__ import annotations

from sam2ui.core import (
    build_sam2,
    build_sam2_hf,
    build_sam2_video_predictor,
    build_sam2_video_predictor_hf,
)

__all__ = [
    "build_sam2",
    "build_sam2_hf",
    "build_sam2_video_predictor",
    "build_sam2_video_predictor_hf",
]

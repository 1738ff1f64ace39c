"""Meta's video predictor builders: ``build_sam2_video_predictor`` and its hub form.

The model and the predictor options come from
:func:`sam2ui.core.loading.build.build_video_model`; this module only adds the predictor.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from sam2ui.core.loading.build import (
    CheckpointPath,
    ConfigFile,
    Device,
    build_video_model,
    hub_checkpoint,
)

from .predictor import SAM2VideoPredictor

__all__ = ["build_sam2_video_predictor", "build_sam2_video_predictor_hf"]


def _predictor_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments that :class:`SAM2VideoPredictor` takes; Meta's builder ignores
    extra keywords, and so do these builders for the rest."""
    params = inspect.signature(SAM2VideoPredictor.__init__).parameters
    takes = {name for name in params if name not in ("self", "model")}
    return {name: value for name, value in kwargs.items() if name in takes}


def build_sam2_video_predictor(
    config_file: ConfigFile,
    ckpt_path: CheckpointPath = None,
    device: Device = None,
    mode: str = "eval",
    hydra_overrides_extra: Iterable[str] = (),
    apply_postprocessing: bool = True,
    vos_optimized: bool = False,
    **kwargs: Any,
) -> SAM2VideoPredictor:
    """A :class:`SAM2VideoPredictor`, as Meta's ``build_sam2_video_predictor`` builds one.

    The arguments are those of :func:`~sam2ui.core.loading.build.build_video_model` (Meta's:
    a config name, a checkpoint, device, mode, Hydra overrides, ``apply_postprocessing``,
    ``vos_optimized``). Keyword arguments that name an option of :class:`SAM2VideoPredictor`
    (``fill_hole_area``, ``keep_all_memories``, ...) go to it and win over the overrides; other
    keywords are ignored, as by Meta's builder.
    """
    built = build_video_model(
        config_file,
        ckpt_path,
        device,
        mode,
        hydra_overrides_extra,
        apply_postprocessing,
        vos_optimized,
    )
    options = {**built.predictor_options, **_predictor_kwargs(kwargs)}
    return SAM2VideoPredictor(built.model, **options)


def build_sam2_video_predictor_hf(
    model_id: str, *, revision: str | None = None, **kwargs: Any
) -> SAM2VideoPredictor:
    """Meta's ``build_sam2_video_predictor_hf``: :func:`build_sam2_video_predictor` with the
    official checkpoint of ``model_id`` (``"facebook/sam2.1-hiera-tiny"``), from the Hugging
    Face cache or downloaded into it; ``kwargs`` go to :func:`build_sam2_video_predictor`."""
    name, path = hub_checkpoint(model_id, revision)
    return build_sam2_video_predictor(name, path, **kwargs)

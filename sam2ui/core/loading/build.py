"""Build SAM 2 models: from a typed config, and through Meta's builder API.

``build_sam2(config)`` alone gives an untrained model in eval mode, built where torch builds
tensors (the CPU, or the device of a surrounding ``with torch.device(...)``). The other
arguments are those of Meta's ``sam2.build_sam.build_sam2``, so code written for Meta's package
runs unchanged: a config name (``"configs/sam2.1/sam2.1_hiera_t.yaml"``), a checkpoint, a
device, a mode, Hydra overrides (see :mod:`sam2ui.core.loading.overrides`) and
``apply_postprocessing``. The video predictor's builder, which needs the predictor class, is
:func:`sam2ui.core.video.builders.build_sam2_video_predictor`; it uses
:func:`build_video_model` here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import torch

from sam2ui.core.modeling import SAM2Model
from sam2ui.core.modeling.compiled import compile_model
from sam2ui.core.modeling.config import VARIANTS, SAM2Config, get_config

from .checkpoint import is_memory_key, load_sam2, load_state_dict_strict, read_state_dict
from .devices import resolve_device
from .overrides import apply_overrides

__all__ = [
    "META_BUILDER_ARGS",
    "PredictorModel",
    "build_sam2",
    "build_sam2_hf",
    "build_video_model",
    "hub_checkpoint",
    "load_for_predictor",
]

ConfigFile = SAM2Config | str
CheckpointPath = str | os.PathLike[str] | None
Device = str | torch.device | None

# What the reference's video builder sets when ``apply_postprocessing`` is true.
VIDEO_FILL_HOLE_AREA = 8
# The keywords of Meta's builders that its predictors' ``from_pretrained`` passes on to them.
META_BUILDER_ARGS = ("mode", "hydra_overrides_extra", "apply_postprocessing", "vos_optimized")


class PredictorModel(NamedTuple):
    """A model, and the options its predictor takes (video options; empty for images)."""

    model: SAM2Model
    predictor_options: dict[str, Any]


def _meta_config_file(name: str) -> str:
    version, _, size = name.split("-", 2)
    short = {"tiny": "t", "small": "s", "base-plus": "b+", "large": "l"}[size]
    return f"configs/{version}/{version}_hiera_{short}.yaml"


def _compiled(model: SAM2Model, *, image_encoder: bool, vos_optimized: bool) -> SAM2Model:
    """``model`` compiled as Meta's builder arguments ask: ``vos_optimized`` (its compiled
    video predictor) compiles the encoders and the memory attention, the
    ``compile_image_encoder`` override the image encoder (see ``modeling.compiled``)."""
    if vos_optimized:
        return compile_model(model)
    if image_encoder:
        return compile_model(model, parts=["image_encoder"])
    return model


def _config_of(config_file: ConfigFile) -> SAM2Config:
    if isinstance(config_file, SAM2Config):
        return config_file
    if isinstance(config_file, os.PathLike):
        config_file = os.fspath(config_file)
    try:
        return get_config(config_file)
    except ValueError:
        raise ValueError(
            f"unknown SAM 2 config {config_file!r}; use a variant name "
            f"({', '.join(VARIANTS)}) or one of Meta's config files "
            f"({', '.join(_meta_config_file(name) for name in VARIANTS)})"
        ) from None


def _configure(
    config_file: ConfigFile,
    overrides: Iterable[str],
    apply_postprocessing: bool,
    *,
    video: bool,
) -> tuple[SAM2Config, dict[str, Any], bool]:
    """The config, the video predictor options that Meta's builder arguments describe, and
    whether they ask for the image encoder to be compiled.

    ``apply_postprocessing=False`` turns off the decoder's dynamic multimask fallback (and, for
    video, the binarised click masks in memory and the hole filling), as Meta's builders do
    without their post-processing; ``True`` keeps the config's fallback settings (for the
    official variants, the reference's: on, delta 0.05, threshold 0.98) and for video turns on
    the other two. Explicit overrides are applied last and win.
    """
    config = _config_of(config_file)
    options: dict[str, Any] = {}
    if not apply_postprocessing:
        config = replace(config, dynamic_multimask_via_stability=False)
    if video:
        config = replace(config, binarize_mask_from_pts_for_mem_enc=apply_postprocessing)
        options["fill_hole_area"] = VIDEO_FILL_HOLE_AREA if apply_postprocessing else 0
    config, chosen, compile_encoder = apply_overrides(config, overrides, video=video)
    return config, {**options, **chosen}, compile_encoder


def _instantiate(
    config: SAM2Config,
    ckpt_path: CheckpointPath,
    device: Device,
    mode: str,
    *,
    video: bool,
) -> SAM2Model:
    if ckpt_path is None and device is None:
        model = SAM2Model(config)  # where torch builds tensors now, as always
    else:
        dev = resolve_device(device)  # fails early on an unavailable device
        state: dict[str, torch.Tensor] = {}
        if ckpt_path is not None:
            state, declared = read_state_dict(ckpt_path)
            if declared is not None and declared.name != config.name:
                raise RuntimeError(
                    f"{ckpt_path} holds {declared.name}, but the config is {config.name}"
                )
        # Image-only checkpoints (no memory weights) load for images, never for video.
        image_only = bool(state) and not any(is_memory_key(k) for k in state)
        if video and image_only:
            raise RuntimeError(
                f"{ckpt_path} holds no memory weights (an image-only checkpoint); video "
                "tracking needs a full SAM 2 checkpoint"
            )
        with dev:
            model = SAM2Model(config)
        if ckpt_path is not None:
            load_state_dict_strict(model, state, allow_missing_memory=image_only)
    return model.eval() if mode == "eval" else model.train()


def build_sam2(
    config_file: ConfigFile,
    ckpt_path: CheckpointPath = None,
    device: Device = None,
    mode: str = "eval",
    hydra_overrides_extra: Iterable[str] = (),
    apply_postprocessing: bool = True,
    **kwargs: Any,
) -> SAM2Model:
    """A SAM 2 model, as Meta's ``build_sam2`` builds it.

    Args:
        config_file: a :class:`SAM2Config`, a variant name (``"sam2.1-hiera-tiny"``) or one of
            Meta's config names (``"configs/sam2.1/sam2.1_hiera_t.yaml"``,
            ``"sam2_hiera_l.yaml"``, ...).
        ckpt_path: a checkpoint to load strictly (Meta's ``.pt``, or any form
            :func:`~sam2ui.core.loading.checkpoint.read_state_dict` reads); ``None`` leaves the
            weights untrained.
        device: where the model goes; ``None`` picks cuda, then mps, then cpu when a
            checkpoint is loaded, and leaves an untrained model where torch builds it (the
            CPU). Asking for an unavailable device raises ``RuntimeError``.
        mode: ``"eval"`` puts the model in eval mode; anything else, in train mode.
        hydra_overrides_extra: Meta-style overrides such as
            ``"++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=false"``;
            see :mod:`sam2ui.core.loading.overrides` for what is accepted.
        apply_postprocessing: ``False`` turns off the decoder's dynamic multimask fallback
            (a single mask that is not stable falls back to the best of the three).
        **kwargs: ignored, as by Meta's builder (so predictor options may pass through).
    """
    del kwargs
    config, _, compile_encoder = _configure(
        config_file, hydra_overrides_extra, apply_postprocessing, video=False
    )
    model = _instantiate(config, ckpt_path, device, mode, video=False)
    return _compiled(model, image_encoder=compile_encoder, vos_optimized=False)


def build_video_model(
    config_file: ConfigFile,
    ckpt_path: CheckpointPath = None,
    device: Device = None,
    mode: str = "eval",
    hydra_overrides_extra: Iterable[str] = (),
    apply_postprocessing: bool = True,
    vos_optimized: bool = False,
) -> PredictorModel:
    """The model and predictor options of Meta's ``build_sam2_video_predictor`` (same
    arguments as :func:`build_sam2`). ``apply_postprocessing`` also binarises click masks
    before they enter memory and fills background holes of up to 8 low-res pixels
    (``fill_hole_area``); ``False`` turns all three off. ``vos_optimized`` (Meta's
    ``torch.compile``-d predictor) compiles the model's heavy parts (see
    :func:`~sam2ui.core.modeling.compiled.compile_model`). A checkpoint without memory
    weights is refused."""
    config, options, compile_encoder = _configure(
        config_file, hydra_overrides_extra, apply_postprocessing, video=True
    )
    model = _instantiate(config, ckpt_path, device, mode, video=True)
    model = _compiled(model, image_encoder=compile_encoder, vos_optimized=vos_optimized)
    return PredictorModel(model, options)


def hub_checkpoint(model_id: str, revision: str | None = None) -> tuple[str, Path]:
    """The variant name and local Meta checkpoint of an official hub id
    (``"facebook/sam2.1-hiera-tiny"``), from the Hugging Face cache or downloaded into it."""
    from .hub import download_checkpoint

    path = download_checkpoint(model_id, revision=revision)
    return get_config(model_id).name, path


def build_sam2_hf(model_id: str, *, revision: str | None = None, **kwargs: Any) -> SAM2Model:
    """Meta's ``build_sam2_hf``: :func:`build_sam2` with the official checkpoint of
    ``model_id`` (see :func:`hub_checkpoint`); ``kwargs`` go to :func:`build_sam2`."""
    name, path = hub_checkpoint(model_id, revision)
    return build_sam2(name, path, **kwargs)


def load_for_predictor(
    model_id: str | os.PathLike[str],
    *,
    video: bool,
    variant: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    mode: str = "eval",
    hydra_overrides_extra: Iterable[str] = (),
    apply_postprocessing: bool = True,
    vos_optimized: bool = False,
) -> PredictorModel:
    """What a predictor's ``from_pretrained`` needs when it is given Meta's builder keywords
    (:data:`META_BUILDER_ARGS`): the model of ``model_id`` (any source
    :func:`~sam2ui.core.loading.checkpoint.load_sam2` reads, with ``variant``, ``device`` and
    ``dtype`` as there) configured as :func:`build_sam2` (``video=False``) or
    :func:`build_video_model` (``video=True``) would configure it, and the predictor options
    the overrides and ``apply_postprocessing`` set, compiled as :func:`build_video_model`
    compiles (``vos_optimized`` counts for video only, as in Meta's builders)."""
    options: dict[str, Any] = {}
    compile_encoder = False

    def adjust(config: SAM2Config) -> SAM2Config:
        nonlocal compile_encoder
        config, chosen, compile_encoder = _configure(
            config, hydra_overrides_extra, apply_postprocessing, video=video
        )
        options.update(chosen)
        return config

    model = load_sam2(model_id, variant=variant, device=device, dtype=dtype, adjust=adjust)
    model = model.eval() if mode == "eval" else model.train()
    model = _compiled(model, image_encoder=compile_encoder, vos_optimized=video and vos_optimized)
    return PredictorModel(model, options)

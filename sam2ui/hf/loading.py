"""From a transformers-style ``from_pretrained`` call to the engine's model.

A local folder (``config.json`` + ``model.safetensors``, as transformers' ``save_pretrained``
writes it) or a hub id / variant name goes to the shared model cache, so an app, a widget and
this API in one process hold each checkpoint once. The one exception is an image-only folder
whose input size is not 1024: the cache loads by variant, which would lose that size, so such
a folder is loaded on its own.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from sam2ui.core import SAM2Model, default_model_cache, load_sam2, resolve_dtype

from .config import (
    Sam2Config,
    Sam2VideoConfig,
    config_for_variant,
    core_config,
    read_config_json,
)

__all__ = ["ModelSource", "dtype_argument", "load_core_model", "parse_to"]


class ModelSource:
    """Where a wrapper's model came from, so ``.to(device, dtype)`` can ask the cache again."""

    def __init__(self, source: str, variant: str, image_size: int, shared: bool) -> None:
        self.source = source
        self.variant = variant
        self.image_size = image_size
        self.shared = shared


def dtype_argument(kwargs: dict[str, Any]) -> torch.dtype:
    """The compute dtype of ``torch_dtype=`` or ``dtype=`` (float32 when neither is given;
    ``"auto"`` also means float32, the dtype transformers saves SAM 2 in)."""
    value = kwargs.pop("torch_dtype", None)
    value = kwargs.pop("dtype", value)
    if value is None or value == "auto":
        return torch.float32
    return resolve_dtype(value)


def config_for(source: str | os.PathLike[str], config_cls: type[Sam2Config]) -> Sam2Config:
    """The folder's config (read as ``config_cls``), or the defaults for a hub id."""
    path = Path(source).expanduser()
    data = read_config_json(path) if path.is_dir() else None
    if data is None:
        if path.exists() or os.fspath(source).startswith((".", "/", "~")):
            raise FileNotFoundError(f"{path} has no config.json (not a transformers model folder)")
        return config_for_variant(os.fspath(source), config_cls)  # a hub id or variant name
    if config_cls is Sam2VideoConfig and data.get("model_type") != "sam2_video":
        raise ValueError(
            f"{path} holds a {data.get('model_type')!r} model; Sam2VideoModel needs a "
            "'sam2_video' checkpoint (one with the memory modules)"
        )
    data.pop("model_type", None)
    return config_cls(**data)


def load_core_model(
    source: str | os.PathLike[str],
    config: Sam2Config,
    *,
    video: bool,
    device: str | torch.device | None,
    dtype: torch.dtype,
) -> tuple[SAM2Model, ModelSource]:
    """The engine's model for ``source`` with ``config``, on ``device`` in ``dtype``."""
    text = os.fspath(source)
    is_folder = Path(text).expanduser().is_dir()
    wanted = core_config(config, video=video)
    image_size = wanted.image_size
    # The cache reads a video folder's config.json itself (its input size included).
    saved = read_config_json(text) if is_folder else None
    is_video_folder = saved is not None and saved.get("model_type") == "sam2_video"
    shared = not is_folder or is_video_folder or image_size == 1024
    origin = ModelSource(text, wanted.name, image_size, shared)
    model = fetch(origin, video=video, device=device, dtype=dtype)
    return model, origin


def fetch(
    origin: ModelSource,
    *,
    video: bool,
    device: str | torch.device | None,
    dtype: torch.dtype,
) -> SAM2Model:
    """The model of ``origin`` on ``device`` in ``dtype``: from the shared cache when it can
    be, else loaded for this caller."""
    device = device if device is not None else "cpu"
    if origin.shared:
        cache = default_model_cache()
        getter = cache.get_video_model if video else cache.get_model
        return getter(origin.source, device, dtype, variant=origin.variant)

    def adjust(cfg: Any) -> Any:
        cfg = replace(cfg, image_size=origin.image_size)
        return replace(cfg, binarize_mask_from_pts_for_mem_enc=True) if video else cfg

    return load_sam2(
        origin.source, variant=origin.variant, device=device, dtype=dtype, adjust=adjust
    )


def parse_to(*args: Any, **kwargs: Any) -> tuple[torch.device | None, torch.dtype | None]:
    """The device and dtype of a ``module.to(...)`` call, in any of its forms."""
    device: torch.device | None = None
    dtype: torch.dtype | None = None
    for arg in args:
        if isinstance(arg, torch.dtype):
            dtype = arg
        elif isinstance(arg, (str, torch.device, int)):
            device = torch.device(arg)
        elif isinstance(arg, torch.Tensor):
            device, dtype = arg.device, arg.dtype
        else:
            raise TypeError(f"unsupported argument to .to(): {arg!r}")
    if "device" in kwargs and kwargs["device"] is not None:
        device = torch.device(kwargs["device"])
    if "dtype" in kwargs and kwargs["dtype"] is not None:
        dtype = kwargs["dtype"]
    return device, dtype

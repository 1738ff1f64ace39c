"""``AutoModel`` and ``AutoProcessor`` for SAM 2 folders: the class follows ``model_type``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import read_config_json
from .modeling import Sam2Model
from .processing import Sam2Processor
from .video_model import Sam2VideoModel
from .video_processing import Sam2VideoProcessor

__all__ = ["AutoModel", "AutoProcessor"]


def _is_video(source: str | os.PathLike[str]) -> bool:
    """A ``sam2_video`` folder, or a hub id (the hub's SAM 2 checkpoints are video models)."""
    path = Path(source).expanduser()
    data = read_config_json(path) if path.is_dir() else None
    if data is None:
        return True
    model_type = data.get("model_type")
    if model_type not in ("sam2", "sam2_video"):
        raise ValueError(f"{path} holds a {model_type!r} model; sam2ui.hf has SAM 2 only")
    return model_type == "sam2_video"


class AutoModel:
    """``AutoModel.from_pretrained(source)``: a :class:`Sam2VideoModel` for video checkpoints
    (the hub's), a :class:`Sam2Model` for image-only ones."""

    @staticmethod
    def from_pretrained(source: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Any:
        cls = Sam2VideoModel if _is_video(source) else Sam2Model
        return cls.from_pretrained(source, *args, **kwargs)


class AutoProcessor:
    """``AutoProcessor.from_pretrained(source)``: the processor of that model class."""

    @staticmethod
    def from_pretrained(source: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Any:
        cls = Sam2VideoProcessor if _is_video(source) else Sam2Processor
        return cls.from_pretrained(source, *args, **kwargs)

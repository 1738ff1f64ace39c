"""sam2ui: a from-scratch PyTorch implementation of SAM 2 / SAM 2.1.

The engine lives in :mod:`sam2ui.core`; the command line in :mod:`sam2ui.cli`. Heavy modules
(torch, the model code) load only when a name that needs them is first used, so importing
``sam2ui`` or running ``sam2ui --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> module that defines it; imported on first attribute access.
_LAZY: dict[str, str] = {
    "SAM2AutomaticMaskGenerator": "sam2ui.core",
    "SAM2ImagePredictor": "sam2ui.core",
    "SAM2VideoPredictor": "sam2ui.core",
    "build_sam2": "sam2ui.core",
    "build_sam2_hf": "sam2ui.core",
    "build_sam2_video_predictor": "sam2ui.core",
    "build_sam2_video_predictor_hf": "sam2ui.core",
    "get_config": "sam2ui.core",
    "variant_names": "sam2ui.core",
}

__all__ = [
    "SAM2AutomaticMaskGenerator",
    "SAM2ImagePredictor",
    "SAM2VideoPredictor",
    "__version__",
    "build_sam2",
    "build_sam2_hf",
    "build_sam2_video_predictor",
    "build_sam2_video_predictor_hf",
    "get_config",
    "variant_names",
]

if TYPE_CHECKING:
    from sam2ui.core import (
        SAM2AutomaticMaskGenerator,
        SAM2ImagePredictor,
        SAM2VideoPredictor,
        build_sam2,
        build_sam2_hf,
        build_sam2_video_predictor,
        build_sam2_video_predictor_hf,
        get_config,
        variant_names,
    )


def __getattr__(name: str) -> Any:
    """Import public names on first use (PEP 562) so ``import sam2ui`` does not import torch."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sam2ui' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

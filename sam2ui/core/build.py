"""Build SAM 2 models from typed configs."""

from __future__ import annotations

from .config import SAM2Config, get_config
from .modeling import SAM2Model


def build_sam2(config: SAM2Config | str) -> SAM2Model:
    """An untrained model of ``config`` (a :class:`SAM2Config` or a variant name), in eval mode.

    Load weights with :func:`sam2ui.core.checkpoint.load_sam2`, which calls this.
    """
    if isinstance(config, str):
        config = get_config(config)
    return SAM2Model(config).eval()

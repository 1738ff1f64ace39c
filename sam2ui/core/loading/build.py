"""Build SAM 2 models from typed configs."""

from __future__ import annotations

from sam2ui.core.modeling import SAM2Model
from sam2ui.core.modeling.config import SAM2Config, get_config


def build_sam2(config: SAM2Config | str) -> SAM2Model:
    """An untrained model of ``config`` (a :class:`SAM2Config` or a variant name), in eval mode.

    Load weights with :func:`sam2ui.core.loading.checkpoint.load_sam2`, which calls this.
    """
    if isinstance(config, str):
        config = get_config(config)
    return SAM2Model(config).eval()

"""Fixtures of the widget tests: a small random-weight model in its own cache, and pictures."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sam2ui.core.loading.build import build_sam2
from sam2ui.core.modeling import SAM2Model
from sam2ui.core.modeling.config import get_config
from sam2ui.core.serving.model_cache import ModelCache, ModelKey
from tests.reference_models import perturbed_state_dict

# The tiny variant at a quarter of its input size: every code path, a fraction of the time.
SMALL = replace(get_config("sam2.1-hiera-tiny"), image_size=256)
MODEL = "sam2.1-hiera-tiny"  # the name the widgets are given; the loader below answers it


def small_model(_key: ModelKey) -> SAM2Model:
    torch.manual_seed(0)
    model = build_sam2(SMALL)
    # Random init leaves many tensors at 0 or 1 and the object score near 0; perturb (as the
    # parity tests do) so masks are neither empty nor suppressed.
    model.load_state_dict(perturbed_state_dict(model, seed=0))
    return model.eval()


@pytest.fixture(scope="session")
def model_cache() -> ModelCache:
    return ModelCache(small_model)


@pytest.fixture
def picture() -> np.ndarray:
    """A 48×64 RGB image: a bright square and a dark disc on a grey gradient."""
    yy, xx = np.mgrid[0:48, 0:64]
    img = np.stack([xx * 2, yy * 3, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
    img[8:24, 10:26] = (230, 220, 40)
    img[(yy - 32) ** 2 + (xx - 46) ** 2 < 64] = (20, 30, 160)
    return img


@pytest.fixture
def clip() -> np.ndarray:
    """Five 48×64 frames of a square moving right by 3 pixels a frame."""
    frames = np.full((5, 48, 64, 3), 60, np.uint8)
    for t in range(5):
        frames[t, 12:30, 8 + 3 * t : 26 + 3 * t] = (220, 200, 30)
    return frames

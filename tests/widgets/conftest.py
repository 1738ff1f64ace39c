"""Fixtures of the widget tests: a small random-weight model in its own cache, pictures, and
the updates a widget sends its canvas, read back as the browser reads them."""

from __future__ import annotations

import base64
import io
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sam2ui.core.annotate.canvas import unpack_runs
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


class CanvasLog:
    """The updates sent to a canvas (through its comm's ``send``), with the state they add up
    to, as the canvas's ``apply`` keeps it: the picture, the masks and the last fields."""

    def __init__(self, canvas: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.updates: list[dict[str, Any]] = []
        self.picture: np.ndarray | None = None
        self.masks: dict[int, np.ndarray] = {}
        self.state: dict[str, Any] = {}
        monkeypatch.setattr(canvas, "send", self._receive)

    def _receive(self, content: dict[str, Any], buffers: object = None) -> None:
        assert content["type"] == "update"
        update = content["update"]
        self.updates.append(update)
        if update.get("error"):
            return
        if "picture" in update:
            src = update["picture"]["src"]
            data = base64.b64decode(src.split(",", 1)[1])
            self.picture = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            assert self.picture.shape[:2] == (
                update["picture"]["height"],
                update["picture"]["width"],
            )
        if update.get("masks_reset"):
            self.masks = {}
        assert self.picture is not None, "masks before any picture"
        for key, mask in update.get("masks", {}).items():
            if mask is None:
                del self.masks[int(key)]
            else:
                self.masks[int(key)] = decode_runs(unpack_runs(mask["rle"]), self.picture.shape[:2])
        self.state.update(update)

    @property
    def last(self) -> dict[str, Any]:
        return self.updates[-1]


def decode_runs(runs: list[int], shape: tuple[int, ...]) -> np.ndarray:
    """A mask from its runs (off, on, off, ... in row-major order), as canvas.js draws it."""
    assert sum(runs) == shape[0] * shape[1]
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(shape[:2])


@pytest.fixture
def canvas_log(monkeypatch: pytest.MonkeyPatch):
    """``canvas_log(widget)``: a :class:`CanvasLog` of the widget's canvas, from a ``sync``
    (what a canvas sends when it is shown) on."""

    def attach(widget: Any) -> CanvasLog:
        log = CanvasLog(widget.canvas, monkeypatch)
        widget.canvas.send_event({"type": "sync"})
        return log

    return attach

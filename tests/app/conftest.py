"""Fixtures of the app tests: a small random-weight model, an app context, media files."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sam2ui.app.context import AppContext
from sam2ui.app.options import AppConfig
from sam2ui.core import ModelCache, build_sam2, get_config
from sam2ui.core.modeling import SAM2Model
from sam2ui.core.serving.model_cache import ModelKey
from tests.reference_models import perturbed_state_dict

# A tiny model at a quarter of the official input size: set_image takes ~0.1 s instead of 1.3 s.
SMALL = replace(get_config("sam2.1-hiera-tiny"), image_size=256)
HEIGHT, WIDTH = 96, 128  # test images and video frames (even sides: H.264 needs them)


@pytest.fixture(scope="session")
def small_model() -> SAM2Model:
    """sam2.1-hiera-tiny with perturbed random weights (so masks are not empty), 256 px input."""
    import torch

    torch.manual_seed(0)
    model = build_sam2(SMALL)
    model.load_state_dict(perturbed_state_dict(model, seed=0))
    return model.eval()


@pytest.fixture(scope="session")
def small_cache(small_model: SAM2Model) -> ModelCache:
    """A model cache whose loader returns the small model for every key."""

    def loader(key: ModelKey) -> SAM2Model:
        return small_model

    return ModelCache(loader)


@pytest.fixture
def app_config() -> AppConfig:
    return AppConfig(
        model="sam2.1-hiera-tiny", device="cpu", port=None, max_video_seconds=30, max_video_mb=5
    )


@pytest.fixture
def ctx(app_config: AppConfig, small_cache: ModelCache):
    context = AppContext(app_config, cache=small_cache)
    yield context
    context.close()


def make_image(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """``(H, W, 3)`` uint8: a bright square on a dark gradient."""
    img = np.zeros((height, width, 3), np.uint8)
    img[..., 2] = np.linspace(20, 80, width, dtype=np.uint8)[None, :]
    img[height // 4 : 3 * height // 4, width // 4 : width // 2] = (230, 200, 40)
    return img


def write_video(path: Path, frames: int = 6, fps: int = 6) -> Path:
    """An H.264 MP4 of ``frames`` frames of HEIGHT x WIDTH with a square moving right."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(frames):
            img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
            img[30:66, 20 + 6 * i : 56 + 6 * i] = (230, 200, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def video_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4")


def record_video_opens(monkeypatch: pytest.MonkeyPatch, log: Path) -> Callable[[], list[str]]:
    """Make every opening of a video file (a ``VideoFileSource`` built, which reads the whole
    file's frame table), in this process or in a worker forked from it, add its path to
    ``log``. Returns a function that lists the paths opened so far."""
    from sam2ui.core.video.sources.file import VideoFileSource

    build = VideoFileSource.__init__

    def counted(self: VideoFileSource, path: Any, *args: Any, **kwargs: Any) -> None:
        with open(log, "a") as out:
            out.write(f"{os.fspath(path)}\n")
        build(self, path, *args, **kwargs)

    monkeypatch.setattr(VideoFileSource, "__init__", counted)
    return lambda: log.read_text().splitlines() if log.exists() else []

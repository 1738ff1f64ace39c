"""Checkpoints shared by the sam2ui.hf tests, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.hf.checkpoints import random_state, save_image_checkpoint, save_video_checkpoint


@pytest.fixture(scope="session")
def hf_state() -> dict[str, torch.Tensor]:
    return random_state()


@pytest.fixture(scope="session")
def video_folder(tmp_path_factory: pytest.TempPathFactory, hf_state) -> Path:
    """A transformers ``Sam2VideoModel`` folder (config.json + model.safetensors)."""
    return save_video_checkpoint(tmp_path_factory.mktemp("hf-video"), hf_state)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory, hf_state) -> Path:
    """A transformers ``Sam2Model`` (image-only) folder with the same weights."""
    return save_image_checkpoint(tmp_path_factory.mktemp("hf-image"), hf_state)

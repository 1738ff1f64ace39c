"""Random-weight transformers checkpoints at a small input size, written by transformers itself.

The engine only builds the official backbones, so these are sam2.1-hiera-tiny models; their
input is ``SIZE`` pixels instead of 1024 (every layer runs, on a smaller grid), which keeps a
test of both engines on two CPU cores to seconds. Weights get a deterministic perturbation
(untrained initialisations leave tensors at 0 or 1 that would hide bugs) and a positive bias
on the object-score head, so objects count as present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers

from tests.core.loading.test_hf_layout import PE_KEYS, hf_video_config
from tests.reference_models import OBJECT_SCORE_BIAS, perturbed_state_dict

VARIANT = "sam2.1-hiera-tiny"
SIZE = 256


def small_video_config(size: int = SIZE) -> Any:
    """transformers' ``Sam2VideoConfig`` of sam2.1-hiera-tiny at a ``size`` x ``size`` input."""
    config = hf_video_config(VARIANT)
    config.image_size = size
    config.vision_config.backbone_feature_sizes = [[size // s, size // s] for s in (4, 8, 16)]
    config.vision_config.backbone_config.image_size = [size, size]
    config.prompt_encoder_config.image_size = size
    config.memory_attention_rope_feat_sizes = [size // 16, size // 16]
    return config


def small_image_config(size: int = SIZE) -> Any:
    video = small_video_config(size)
    return transformers.Sam2Config(
        vision_config=video.vision_config,
        prompt_encoder_config=video.prompt_encoder_config,
        mask_decoder_config=video.mask_decoder_config,
    )


def random_state(seed: int = 1, size: int = SIZE) -> dict[str, torch.Tensor]:
    """Perturbed weights of a ``Sam2VideoModel`` (the image model's are a subset)."""
    torch.manual_seed(0)
    model = transformers.Sam2VideoModel(small_video_config(size)).eval()
    state = perturbed_state_dict(model, seed=seed)
    state[PE_KEYS[1]] = state[PE_KEYS[0]].clone()  # one Fourier matrix, stored twice
    state["mask_decoder.pred_obj_score_head.proj_out.bias"] += OBJECT_SCORE_BIAS
    return state


def save_video_checkpoint(folder: Path, state: dict[str, torch.Tensor], size: int = SIZE) -> Path:
    model = transformers.Sam2VideoModel(small_video_config(size)).eval()
    model.load_state_dict(state, strict=True)
    model.save_pretrained(folder)
    return folder


def save_image_checkpoint(folder: Path, state: dict[str, torch.Tensor], size: int = SIZE) -> Path:
    model = transformers.Sam2Model(small_image_config(size)).eval()
    model.load_state_dict({k: state[k] for k in model.state_dict()}, strict=True)
    model.save_pretrained(folder)
    return folder

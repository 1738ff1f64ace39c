"""Random-weight models of Meta's reference `sam2` package, for parity tests.

No official weights can be downloaded here, so tests build the reference model from its own
config, give every floating-point tensor a deterministic perturbation (random init leaves many
tensors at zero or one, which would hide bugs in the paths they gate), push the object-score
head positive so masks are not suppressed, and save the result in Meta's checkpoint layout.
sam2ui then loads that file through its real loading code, and both sides run the same weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from unittest import mock

import torch

from sam2ui.core.modeling.config import get_config

# Spread added to every floating-point tensor (weights, biases, embeddings).
PERTURBATION_STD = 0.02
# Bias added to the final layer of the object-score MLP so that objects count as present.
OBJECT_SCORE_BIAS = 2.0


def reference_config_file(variant: str) -> str:
    """Name of the reference's Hydra config for one of our variant names."""
    cfg = get_config(variant)
    short = {"tiny": "t", "small": "s", "base-plus": "b+", "large": "l"}[cfg.name.split("-", 2)[2]]
    folder = "sam2.1" if cfg.version == "2.1" else "sam2"
    return f"configs/{folder}/{folder}_hiera_{short}.yaml"


def perturbed_state_dict(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The model's state dict with deterministic noise added to every float tensor."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        value = value.detach().clone()
        if value.is_floating_point():
            value += PERTURBATION_STD * torch.randn(value.shape, generator=gen, dtype=value.dtype)
        out[key] = value
    # The last linear layer of the object-score head (an MLP in every official variant).
    bias_keys = sorted(
        k
        for k in out
        if k.startswith("sam_mask_decoder.pred_obj_score_head") and k.endswith("bias")
    )
    if bias_keys:
        out[bias_keys[-1]] += OBJECT_SCORE_BIAS
    return out


@contextlib.contextmanager
def built_as_on_a_cpu_machine() -> Iterator[None]:
    """Build the reference as on a machine without CUDA, for models that run on the CPU.

    Where CUDA is available, the reference's sine position encodings fill their cache with
    CUDA tensors when they are constructed (a warm-up for its compiled path); a model used on
    the CPU, or built on the ``meta`` device, then fails on those tensors. Nothing else of its
    construction depends on CUDA.
    """
    with mock.patch("torch.cuda.is_available", return_value=False):
        yield


def build_reference_model(
    variant: str,
    *,
    video: bool = False,
    seed: int = 0,
    state_dict: dict[str, torch.Tensor] | None = None,
    apply_postprocessing: bool = True,
    overrides: Sequence[str] = (),
) -> torch.nn.Module:
    """The reference model (image `SAM2Base` or `SAM2VideoPredictor`) on CPU in eval mode.

    Weights are ``state_dict`` when given, else the perturbed random weights for ``seed``.
    """
    from sam2.build_sam import build_sam2, build_sam2_video_predictor

    builder = build_sam2_video_predictor if video else build_sam2
    torch.manual_seed(seed)
    with built_as_on_a_cpu_machine():
        model = builder(
            reference_config_file(variant),
            None,
            device="cpu",
            apply_postprocessing=apply_postprocessing,
            hydra_overrides_extra=list(overrides),
        )
    weights = state_dict if state_dict is not None else perturbed_state_dict(model, seed)
    model.load_state_dict(weights, strict=True)
    return model.eval()


def save_meta_checkpoint(state_dict: dict[str, torch.Tensor], path: Path) -> Path:
    """Write ``state_dict`` in Meta's layout: ``{"model": state_dict}`` saved with torch.save."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state_dict}, path)
    return path


def make_meta_checkpoint(variant: str, directory: Path, seed: int = 0) -> Path:
    """Build the perturbed reference weights for ``variant`` and save them under ``directory``."""
    torch.manual_seed(seed)
    model = build_reference_model(variant, seed=seed)
    return save_meta_checkpoint(
        model.state_dict(), directory / get_config(variant).checkpoint_filename
    )

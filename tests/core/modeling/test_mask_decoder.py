"""The mask decoder's inference path (in-place upscaling) against its autograd path."""

from __future__ import annotations

import pytest
import torch

from sam2ui.core.modeling.mask_decoder import MaskDecoder
from sam2ui.core.modeling.transformer import TwoWayTransformer


@pytest.fixture(scope="module")
def decoder() -> MaskDecoder:
    torch.manual_seed(0)
    dec = MaskDecoder(64, TwoWayTransformer(depth=2, embedding_dim=64, num_heads=4, mlp_dim=128))
    with torch.no_grad():
        for p in dec.parameters():  # LayerNorms start at 1 and 0: give them real values
            p.add_(torch.randn_like(p) * 0.2)
    # Frozen, so that both modes take the same kernels and differ only in the upscaling.
    return dec.eval().requires_grad_(False)


def _inputs(prompts: int, feature_batch: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    embed = torch.randn(feature_batch, 64, 16, 16, generator=g)
    pe = torch.randn(1, 64, 16, 16, generator=g)
    sparse = torch.randn(prompts, 3, 64, generator=g)
    dense = torch.randn(1, 64, 1, 1, generator=g).expand(prompts, 64, 16, 16)
    s0 = torch.randn(feature_batch, 8, 64, 64, generator=g)
    s1 = torch.randn(feature_batch, 16, 32, 32, generator=g)
    return embed, pe, sparse, dense, s0, s1


@pytest.mark.parametrize(("prompts", "feature_batch"), [(1, 1), (3, 1), (2, 2)])
def test_inference_upscaling_equals_the_autograd_path(
    decoder: MaskDecoder, prompts: int, feature_batch: int
) -> None:
    embed, pe, sparse, dense, s0, s1 = _inputs(prompts, feature_batch)
    args = (embed, pe, sparse, dense, True, [s0, s1])
    with torch.enable_grad():
        expected = decoder(*args).masks.detach()
    feats = [s0.clone(), s1.clone()]
    with torch.inference_mode():
        got = decoder(embed, pe, sparse, dense, True, feats).masks
    assert got.shape == (prompts, 3, 64, 64)
    assert expected.abs().amax() > 0.1  # not a trivially empty output
    assert torch.equal(got, expected)  # the same operations, in place: bit for bit
    # The image's high-resolution features are read, never written.
    assert torch.equal(feats[0], s0) and torch.equal(feats[1], s1)

"""The attention kernels chosen on the CPU against PyTorch's fused kernel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sam2ui.core.modeling.attention import (
    attention,
    attention_projected_values,
    image_to_tokens_attention,
    token_attention,
    tokens_to_image_attention,
)
from sam2ui.core.modeling.layers import set_onednn_linear


def _fused(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    split = [x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2) for x in (q, k, v)]
    out = F.scaled_dot_product_attention(*split)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)


@pytest.mark.parametrize(
    ("queries", "keys", "dim", "heads"),
    [(4096, 7, 128, 8), (7, 4096, 128, 8), (300, 5, 256, 8), (2, 300, 64, 4), (8, 8, 256, 8)],
)
def test_token_attention_matches_fused_kernel(
    queries: int, keys: int, dim: int, heads: int
) -> None:
    gen = torch.Generator().manual_seed(queries + keys)
    q, k, v = (torch.randn(2, n, dim, generator=gen) * 3 for n in (queries, keys, keys))
    expected = _fused(q, k, v, heads)
    got = token_attention(q, k, v, heads)
    assert got.shape == (2, queries, dim)
    # Inputs of scale 3 give scores of tens, so the weights are far from uniform: a head mix-up
    # or a softmax over the wrong axis is off by O(1). Rounding of such scores (ulp ~1e-5)
    # moves outputs of size ~3 by up to a few 1e-5.
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_token_attention_is_the_fused_kernel_with_fast_kernels_off() -> None:
    gen = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(1, 4096, 128, generator=gen), *torch.randn(2, 1, 8, 128, generator=gen)
    previous = set_onednn_linear(False)
    try:
        exact = token_attention(q, k, v, 8)
    finally:
        set_onednn_linear(previous)
    assert torch.equal(exact, _fused(q, k, v, 8))
    if previous:  # the fast path really is a different computation
        assert not torch.equal(token_attention(q, k, v, 8), exact)


def test_blocked_attention_matches_fused_kernel() -> None:
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 1, 600, 64, generator=gen)
    k, v = torch.randn(2, 1, 1, 3000, 64, generator=gen)
    torch.testing.assert_close(
        attention(q, k, v), F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("heads", [1, 3])
def test_bfloat16_blocked_attention_matches_fused_kernel(heads: int) -> None:
    # 3000 keys take the blocked path (oneDNN products and softmax); the fused kernel in
    # float32 on the same bfloat16-rounded inputs is the reference.
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(1, heads, 600, 64, generator=gen).bfloat16()
    k, v = torch.randn(2, 1, heads, 3000, 64, generator=gen).bfloat16()
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    got = attention(q, k, v)
    assert got.dtype == torch.bfloat16 and got.shape == expected.shape
    # Outputs are weighted averages of ~3000 values of N(0, 1) (0.02 on average, up to 0.15);
    # bfloat16 weights and outputs (8-bit mantissas) put the error near 1e-3, keys of the
    # wrong head near 0.2.
    torch.testing.assert_close(got.float(), expected, rtol=0, atol=2e-3)


def _memory_like(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, nn.Linear]:
    """Queries and keys (1, 1, L, 64) and 16-wide values with a 16 -> 64 projection."""
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 1, 300, 64, generator=gen) * 2
    k = torch.randn(1, 1, 2000, 64, generator=gen)
    x = torch.randn(1, 2000, 16, generator=gen)
    proj = nn.Linear(16, 64)
    with torch.no_grad():
        proj.bias.normal_(0, 1, generator=gen)  # a bias of size 1 shows a missing or double bias
    return q.to(dtype), k.to(dtype), x.to(dtype), proj.to(dtype)


@torch.inference_mode()
def test_projected_values_attention_matches_projecting_first() -> None:
    q, k, x, proj = _memory_like(torch.float32)
    expected = F.scaled_dot_product_attention(q, k, proj(x)[:, None])[:, 0]
    got = attention_projected_values(q, k, x, proj)
    assert got.shape == (1, 300, 64)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    previous = set_onednn_linear(False)
    try:  # with the fast kernels off the values are projected first, as in the reference
        exact = attention_projected_values(q, k, x, proj)
    finally:
        set_onednn_linear(previous)
    assert torch.equal(exact, expected)
    if previous:  # the fast path really is a different computation
        assert not torch.equal(got, exact)


@torch.inference_mode()
def test_projected_values_attention_in_bfloat16() -> None:
    q, k, x, proj = _memory_like(torch.bfloat16)
    values = F.linear(x.float(), proj.weight.float(), proj.bias.float())
    expected = F.scaled_dot_product_attention(q.float(), k.float(), values[:, None])[:, 0]
    got = attention_projected_values(q, k, x, proj)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, rtol=2e-2, atol=2e-2)


def test_projected_values_attention_needs_one_head() -> None:
    q, k, x, proj = _memory_like(torch.float32)
    with pytest.raises(ValueError, match="one head"):
        attention_projected_values(q.expand(1, 2, -1, -1), k.expand(1, 2, -1, -1), x, proj)


def _decoder_like(
    batch: int, image_batch: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[nn.Linear]]:
    """Image tokens (image_batch, 300, 64), image tokens + position (same), prompt tokens
    (batch, 7, 64), and four 64 -> 32 / 32 -> 64 projections as in the decoder's attention."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(image_batch, 300, 64, generator=gen)
    x_pe = x + torch.randn(image_batch, 300, 64, generator=gen)
    tokens = torch.randn(batch, 7, 64, generator=gen)
    projs = [nn.Linear(64, 32), nn.Linear(64, 32), nn.Linear(64, 32), nn.Linear(32, 64)]
    with torch.no_grad():
        for proj in projs:  # weights of scale 1 give scores of tens: far from uniform weights
            proj.weight.normal_(0, 0.5, generator=gen)
            proj.bias.normal_(0, 1, generator=gen)  # biases of size 1 show a missing one
    return x, x_pe, tokens, projs


def _assert_rounding_close(got: torch.Tensor, expected: torch.Tensor) -> None:
    # Folding reorders float32 sums of terms up to the outputs' size (tens here): errors of a
    # few ulps of the largest output. A missing bias, a wrong head or a softmax over the wrong
    # axis moves outputs by O(1) of that size.
    scale = float(expected.abs().max())
    assert scale > 1.0
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * scale)


def _unfolded(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int
) -> torch.Tensor:  # the reference's arithmetic: project, then the fused kernel
    n = max(q.shape[0], k.shape[0])
    q, k, v = (t.expand(n, *t.shape[1:]) for t in (q, k, v))
    return _fused(q, k, v, heads)


@pytest.mark.parametrize(("batch", "image_batch"), [(1, 1), (3, 1), (3, 3)])
@torch.inference_mode()
def test_tokens_to_image_attention_matches_projecting_the_image(
    batch: int, image_batch: int
) -> None:
    x, x_pe, tokens, (q_proj, k_proj, v_proj, _) = _decoder_like(batch, image_batch, 4)
    q = q_proj(tokens)
    expected = _unfolded(q, k_proj(x_pe), v_proj(x), heads=4)
    got = tokens_to_image_attention(q, x_pe, x, k_proj, v_proj, heads=4)
    assert got.shape == (batch, 7, 32)
    _assert_rounding_close(got, expected)
    previous = set_onednn_linear(False)
    try:  # with the fast kernels off: projections first, as in the reference
        exact = tokens_to_image_attention(q, x_pe, x, k_proj, v_proj, heads=4)
    finally:
        set_onednn_linear(previous)
    assert torch.equal(exact, _unfolded(q, k_proj(x_pe), v_proj(x), heads=4))
    if previous:  # the fast path really is a different computation
        assert not torch.equal(got, exact)


@pytest.mark.parametrize(("batch", "image_batch"), [(1, 1), (3, 1), (3, 3)])
@pytest.mark.parametrize("projected", [False, True])
@torch.inference_mode()
def test_image_to_tokens_attention_matches_projecting_the_image(
    batch: int, image_batch: int, projected: bool
) -> None:
    x, x_pe, tokens, (q_proj, k_proj, v_proj, out_proj) = _decoder_like(batch, image_batch, 5)
    k, v = k_proj(tokens), v_proj(tokens * 0.5)
    expected = x + out_proj(_unfolded(q_proj(x_pe), k, v, heads=4))
    image = {"q": q_proj(x_pe)} if projected else {"x_q": x_pe, "q_proj": q_proj}
    got = image_to_tokens_attention(k, v, out_proj, 4, x, **image)
    assert got.shape == (batch, 300, 64)
    _assert_rounding_close(got, expected)
    previous = set_onednn_linear(False)
    try:
        exact = image_to_tokens_attention(k, v, out_proj, 4, x, **image)
    finally:
        set_onednn_linear(previous)
    assert torch.equal(exact, expected)
    if previous:
        assert not torch.equal(got, exact)


def test_image_to_tokens_attention_needs_the_image_side() -> None:
    x, _, tokens, (_, k_proj, v_proj, out_proj) = _decoder_like(1, 1, 6)
    with pytest.raises(ValueError, match="q_proj"):
        image_to_tokens_attention(k_proj(tokens), v_proj(tokens), out_proj, 4, x, x_q=x)


def test_a_model_built_under_inference_mode_predicts() -> None:
    from dataclasses import replace

    from sam2ui.core import build_sam2, get_config
    from sam2ui.core.image.predictor import SAM2ImagePredictor

    with torch.inference_mode():
        model = build_sam2(replace(get_config("sam2.1-hiera-tiny"), image_size=256))
        predictor = SAM2ImagePredictor(model)
        predictor.set_image(torch.zeros(64, 64, 3, dtype=torch.uint8).numpy())
        masks, scores, _ = predictor.predict(point_coords=[[10, 10]], point_labels=[1])
    assert masks.shape == (3, 64, 64) and scores.shape == (3,)

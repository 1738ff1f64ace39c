"""The attention kernels chosen on the CPU against PyTorch's fused kernel."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sam2ui.core.modeling.common import attention, set_onednn_linear, token_attention


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

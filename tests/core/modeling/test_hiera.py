"""Hiera's query pooling against PyTorch's max pooling; its cached position embedding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sam2ui.core.modeling.config import HieraConfig
from sam2ui.core.modeling.hiera import Hiera, _pool


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("height", "width", "stride"), [(8, 8, (2, 2)), (7, 9, (2, 2)), (9, 8, (3, 2))]
)
def test_pool_is_max_pooling(
    dtype: torch.dtype, height: int, width: int, stride: tuple[int, int]
) -> None:
    gen = torch.Generator().manual_seed(height * width)
    # Queries as Hiera pools them: a strided slice of a fused q/k/v projection.
    qkv = torch.randn(3, height, width, 3, 8, generator=gen).to(dtype)
    q = qkv[..., 0, :]
    expected = F.max_pool2d(q.permute(0, 3, 1, 2), kernel_size=stride, stride=stride)
    got = _pool(q, stride)
    assert got.shape == (3, height // stride[0], width // stride[1], 8)
    assert torch.equal(got, expected.permute(0, 2, 3, 1))


def test_trunk_built_in_inference_mode_follows_weight_updates() -> None:
    # Parameters created in inference mode have no version counter, so the trunk cannot tell
    # when they change: it must not serve a stale cached position embedding.
    cfg = HieraConfig(stages=(1, 1, 2, 1), global_att_blocks=(3,))
    torch.manual_seed(0)
    plain = Hiera(cfg).eval()
    images = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        inside = Hiera(cfg).eval()
        inside.load_state_dict(plain.state_dict())
        first = inside(images)
        inside.pos_embed.add_(1.0)
        second = inside(images)
    with torch.no_grad():
        expected_first = plain(images)
        plain.pos_embed.add_(1.0)
        expected_second = plain(images)
    for got, expected in zip(first + second, expected_first + expected_second):
        assert torch.equal(got, expected)
    assert not torch.equal(first[-1], second[-1])

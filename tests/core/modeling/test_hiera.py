"""Hiera's query pooling against PyTorch's max pooling; its cached position embedding; where
it lets waiting clicks pass."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from sam2ui.core.compat import torch_ops
from sam2ui.core.modeling import hiera, layers
from sam2ui.core.modeling.attention import attention
from sam2ui.core.modeling.config import HieraConfig
from sam2ui.core.modeling.hiera import Hiera, _pool
from sam2ui.core.modeling.yielding import yield_hook


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


def _yield_sites(run) -> Counter[str]:
    """Where ``run()`` reaches yield points: the class (or function) that called each."""
    sites: Counter[str] = Counter()

    def hook() -> None:
        caller = sys._getframe(2)
        owner = caller.f_locals.get("self")
        sites[type(owner).__name__ if owner is not None else caller.f_code.co_name] += 1

    with torch.inference_mode(), yield_hook(hook):
        run()
    return sites


def test_long_encoder_blocks_yield_inside_and_slicing_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A click waiting for the model passes an encoding within a few ms on two cores: the
    windowed attention runs in slices, the MLP yields between its layers, and the blocked
    (global) attention between its blocks of queries. The sliced attention gives the same
    tokens as the whole batch of windows at once."""
    torch.manual_seed(0)
    trunk = Hiera(HieraConfig()).eval()  # the tiny trunk's layout
    x = torch.randn(1, 3, 256, 256)
    sliced: list[torch.Tensor] = []
    sites = _yield_sites(lambda: sliced.extend(trunk(x)))
    blocks = len(trunk.blocks)
    assert sites["MLP"] == blocks  # between the two layers of every block's MLP
    monkeypatch.setattr(hiera, "_WINDOW_SLICES", 10**9)  # one call for all windows
    whole: list[torch.Tensor] = []
    unsliced = _yield_sites(lambda: whole.extend(trunk(x)))
    # One yield point per block after its projections; the sliced run adds one after each of
    # the 4 slices of the blocks with 64 windows at this size: blocks 0 to 3 (a stage's first
    # block attends in the previous stage's windows, before pooling). Stages 3 and 4 have 4.
    assert unsliced["MultiScaleAttention"] == blocks
    assert sites["MultiScaleAttention"] == blocks + 4 * 4
    for a, b in zip(sliced, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)

    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 1100, 32, generator=gen) for _ in range(3))
    sites = _yield_sites(lambda: attention(q, k, v))
    assert sites["_blocked_attention"] == 2 * 3  # 2 heads x 3 blocks of up to 512 queries


def test_a_traced_windowed_attention_is_one_call_without_slice_writes() -> None:
    """Under a tracer (what ``torch.onnx`` and OpenVINO's converter read) the windowed
    attention is one call over all windows: the eager path's writes into slices of a buffer
    are what a converter can get wrong (OpenVINO 2026.4 lost rows when the slices were of
    unequal length, 25 windows in 4 slices here: 7, 7, 7, 4)."""
    torch.manual_seed(0)
    attn = hiera.MultiScaleAttention(32, 32, num_heads=2, q_stride=None).eval()
    x = torch.randn(25, 6, 6, 32)  # 25 windows: more than 2 * _WINDOW_SLICES, not a multiple
    assert x.shape[0] >= 2 * hiera._WINDOW_SLICES and x.shape[0] % hiera._WINDOW_SLICES
    previous = layers.set_onednn_linear(False)  # public operators only, as exporters need
    try:
        with torch.no_grad(), torch_ops.forced_fallback():
            expected = attn(x)
            graph = torch.jit.trace(attn, (x,), check_trace=False)
    finally:
        layers.set_onednn_linear(previous)
    nodes = [node.kind() for node in graph.inlined_graph.nodes()]
    assert "aten::copy_" not in nodes and "aten::slice" not in nodes
    assert nodes.count("aten::scaled_dot_product_attention") <= 1
    torch.testing.assert_close(graph(x), expected, rtol=0, atol=1e-6)

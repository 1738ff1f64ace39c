"""Layers shared by several SAM 2 modules: linear layers (oneDNN on the CPU), MLP, LayerNorm2d."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam2ui.core.compat import torch_ops

from .yielding import yield_point

_ACTIVATIONS = {nn.GELU: "gelu", nn.ReLU: "relu"}


def _onednn_linear_available() -> bool:
    # The float32 fused linear passed its import probe (compat.torch_ops): without it the
    # fast kernels would have no fast product left, and the reference's arithmetic is kept.
    return torch.backends.mkldnn.is_available() and torch_ops.probe_passed(
        torch_ops.LINEAR_POINTWISE, torch.float32
    )


_ONEDNN_LINEAR = _onednn_linear_available()
# A oneDNN call costs about 13 us more than F.linear's in float32, which its faster kernel
# repays from 64 rows of 256 features, or on a few rows of a large weight (8 prompt tokens
# through a 256 x 2048 layer: 55 against 93 us); a few tokens through a 256 x 256 layer run 2x
# faster in F.linear. In bfloat16 F.linear has the same fixed cost, so oneDNN always wins.
ONEDNN_MIN_ROWS = 64
_ONEDNN_MIN_WEIGHT = 256 * 1024


def set_onednn_linear(enabled: bool) -> bool:
    """Choose the CPU kernel for linear layers; returns the previous setting.

    On by default. oneDNN accumulates in a different order from the BLAS library that
    ``F.linear`` (and the reference) uses, so float32 results differ from the reference's by
    float32 rounding (about 1e-6 on mask logits). Turning it off reproduces the reference's
    float32 arithmetic exactly, at about half the speed of the linear layers.
    """
    global _ONEDNN_LINEAR
    previous = _ONEDNN_LINEAR
    _ONEDNN_LINEAR = bool(enabled) and _onednn_linear_available()
    return previous


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none"
) -> torch.Tensor:
    """``activation(x @ weight.T + bias)`` for activation "none", "relu" or "gelu" (exact erf).

    On the CPU, inference goes through oneDNN with the bias and activation fused into the
    matrix product. Measured on the 2-core development machine it runs float32 linear layers
    about twice as fast as the default BLAS path (``benchmarks/RESULTS.md``); elsewhere, and
    whenever gradients are needed or ``torch.compile`` traces it, it is the plain ``F.linear``.
    """
    if (
        _ONEDNN_LINEAR
        and not torch.compiler.is_compiling()
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and (
            x.numel() >= ONEDNN_MIN_ROWS * x.shape[-1]
            or weight.numel() >= _ONEDNN_MIN_WEIGHT
            or x.dtype == torch.bfloat16
        )
        and x.dtype == weight.dtype
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    ):
        return bucketed_linear(x, weight, bias, activation)
    if fast_cpu_kernels(x, weight) and x.dtype == weight.dtype:
        y = _blas_linear(x, weight, bias)
    else:
        y = F.linear(x, weight, bias)
    if activation == "relu":
        return F.relu(y)
    if activation == "gelu":
        return F.gelu(y)
    return y


# The BLAS library splits a product of a few rows (5 to 11 here) differently with one thread
# and with two, so the same prompt gave logits 1e-6 apart, and now and then a pixel on the other
# side of the threshold, depending on how many threads the serving layer granted the call (it
# follows the CPUs that are free). At 16 rows and more, as in oneDNN's products, each output
# is summed the same way whatever the thread count; so a few rows run as 16 (zero rows added
# and dropped again). Measured on a 2-core AVX2 host: bit-identical at 1 and 2 threads for 1
# to 39 rows through the model's layer sizes (tests/core/modeling/test_thread_invariance.py
# checks whole predictions on the machine it runs on).
_BLAS_ROW_BLOCK = 16


def _blas_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` with the rows of ``x`` padded to a multiple of 16 (one row stays one)."""
    features = x.shape[-1]
    rows = x.numel() // features if features else 0
    padded_rows = -(-rows // _BLAS_ROW_BLOCK) * _BLAS_ROW_BLOCK
    if rows <= 1 or padded_rows == rows:
        return F.linear(x, weight, bias)
    y = F.linear(pad_rows(x.reshape(rows, features), padded_rows), weight, bias)
    return y[:rows].reshape(*x.shape[:-1], y.shape[-1])


def matmul_rows(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``x @ w`` for ``x`` (..., K) and a 2-D ``w`` (K, N), summed the same way whatever the
    thread count when the fast CPU kernels are on (see :func:`_blas_linear`)."""
    if fast_cpu_kernels(x, w) and x.dtype == w.dtype:
        return _blas_linear(x, w.t(), None)
    return x @ w


def resize_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` of a (B, C, h, w)
    ``x``, each channel resized as a map of its own on the CPU.

    torch's CPU kernel sums a map of several channels (three mask candidates) in one order on
    one thread and in another on several (logits 4e-6 apart), and the serving layer changes
    the thread count with the CPUs that are free; one channel at a time gives the
    several-thread results whatever the count.
    """
    b, c, h, w = x.shape
    if c > 1 and x.device.type == "cpu":
        flat = x.reshape(b * c, 1, h, w)
        one_each = F.interpolate(flat, size, mode="bilinear", align_corners=False)
        return one_each.view(b, c, *one_each.shape[-2:])
    return F.interpolate(x, size, mode="bilinear", align_corners=False)


# oneDNN builds, and keeps in its caches, a kernel for every new shape of a product (see
# sam2ui.core.compat.onednn). The mask decoder's prompt tokens come in any number, one more
# with each click, so their products would meet a new shape at almost every click: a kernel
# built each time and kept. Products of a few rows therefore run at a bucketed row count (the
# next power of two from 8, zero rows added and dropped again), so that every number of
# prompts up to the largest bucket uses one of a handful of kernels. Rows are independent in
# a matrix product; measured on the development machine (AVX-512), the bucketed results are
# bit-identical to the unpadded ones for 2 to 1024 rows, float32 and bfloat16. One row keeps
# its own (matrix-vector) kernel, whose results differ.
BUCKET_ROWS_UP_TO = 1024


def bucket_rows(rows: int) -> int:
    """The row count a oneDNN product of ``rows`` rows runs at (see above)."""
    if rows <= 1 or rows > BUCKET_ROWS_UP_TO:
        return rows
    return max(8, 1 << (rows - 1).bit_length())


def bucketed_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none"
) -> torch.Tensor:
    """``torch_ops.fused_linear`` with the rows of ``x`` (all but its last axis) padded to
    :func:`bucket_rows`; the result has the rows of ``x`` only."""
    features = x.shape[-1]
    rows = x.numel() // features if features else 0
    if bucket_rows(rows) == rows:
        return torch_ops.fused_linear(x, weight, bias, activation)
    y = torch_ops.fused_linear(pad_rows(x.reshape(rows, features)), weight, bias, activation)
    return y[:rows].reshape(*x.shape[:-1], y.shape[-1])


def pad_rows(x: torch.Tensor, padded_rows: int | None = None) -> torch.Tensor:
    """A 2-D ``x`` with zero rows added up to ``padded_rows`` (default :func:`bucket_rows`;
    ``x`` itself when none)."""
    rows = x.shape[0]
    padded_rows = bucket_rows(rows) if padded_rows is None else padded_rows
    if padded_rows == rows:
        return x
    padded = x.new_zeros(padded_rows, x.shape[1])
    padded[:rows] = x
    return padded


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and checkpoint keys) computed with :func:`linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def pointwise_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """A 1x1 convolution of a (B, C, H, W) ``x``: ``weight`` (O, C, 1, 1), ``bias`` (O,).

    With the fast CPU kernels it is a :func:`linear` over the channels-last view (free for the
    channels-last maps the encoder and decoder pass), and the result is channels-last. This is
    not for speed (the convolution is up to a quarter faster: about 5 ms of a 3 s encoding)
    but for sums that do not depend on the thread count: the convolution kernels split their
    sums by thread (results 1e-6 to 1e-5 apart at 1 and 2 threads), the linear products do
    not (see :func:`_blas_linear`).
    """
    if fast_cpu_kernels(x, weight) and x.dtype == weight.dtype:
        y = linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias)
        return y.permute(0, 3, 1, 2)
    return F.conv2d(x, weight, bias)


class PointwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(in, out, kernel_size=1)`` (same parameters and checkpoint keys) computed
    with :func:`pointwise_conv`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise_conv(x, self.weight, self.bias)


class MLP(nn.Module):
    """``num_layers`` linear layers with an activation between them (not after the last).

    Works on any leading shape: (..., input_dim) -> (..., output_dim).
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        *,
        activation: type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(Linear(i, o) for i, o in zip(dims_in, dims_out))
        self.act = activation()
        self._act_name = _ACTIVATIONS.get(activation)
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            assert isinstance(layer, nn.Linear)
            if i == last:
                x = linear(x, layer.weight, layer.bias)
            elif self._act_name is not None:
                x = linear(x, layer.weight, layer.bias, self._act_name)
            else:
                x = self.act(linear(x, layer.weight, layer.bias))
            if i != last:
                yield_point()  # between the layers of an encoder block's wide MLP
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalising the channels-last view uses the fused kernel; for a channels-last x (as
        # in the mask decoder) both permutes are free.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


# Attention on the CPU. The fused kernel (scaled_dot_product_attention) reaches about 190
# GFLOPS here in float32 and gains nothing from bfloat16, whereas oneDNN's matrix products run
# float32 about twice as fast and bfloat16 faster again. So with the fast kernels on (see
# set_onednn_linear), long attention runs as explicit products, q k^T then softmax then
# weights v, per head over blocks of queries small enough that a block's scores stay in cache.


def fast_cpu_kernels(*tensors: torch.Tensor) -> bool:
    """Whether the fast CPU kernels apply to these tensors (see :func:`set_onednn_linear`):
    on, CPU tensors of float32 or bfloat16, no gradients needed."""
    return (
        _ONEDNN_LINEAR
        and not torch.compiler.is_compiling()
        and tensors[0].device.type == "cpu"
        and tensors[0].dtype in (torch.float32, torch.bfloat16)
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
    )

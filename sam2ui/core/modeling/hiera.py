"""Hiera: the hierarchical vision transformer trunk of the SAM 2 image encoder.

Tokens are kept as (B, H, W, C) grids. Four stages; between stages the query is max-pooled by
2x2, the width doubles and the number of heads doubles. Most blocks attend inside windows; a few
("global" blocks) attend over the whole grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import attention
from .config import HieraConfig
from .layers import MLP, Linear
from .yielding import yield_point


def _pool(x: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Max-pool a (B, H, W, C) grid by ``stride`` (kernel = stride, trailing rows and
    columns that do not fill a window dropped), as ``F.max_pool2d`` does.

    The maximum of the strided sub-grids reads x where it lies: max_pool2d would first copy
    the strided queries of a window to a contiguous tensor, and it computes indices too.
    """
    sh, sw = stride
    h, w = x.shape[1] - x.shape[1] % sh, x.shape[2] - x.shape[2] % sw
    out = x[:, 0:h:sh, 0:w:sw]
    for i in range(sh):
        for j in range(sw):
            if i or j:
                out = torch.maximum(out, x[:, i:h:sh, j:w:sw])
    return out


def _to_windows(x: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nWin, size, size, C), zero-padding H and W up to multiples of size."""
    b, h, w, c = x.shape
    pad_h, pad_w = -h % size, -w % size
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // size, size, wp // size, size, c).transpose(2, 3)
    return x.reshape(-1, size, size, c), (hp, wp)


def _from_windows(
    windows: torch.Tensor, size: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`_to_windows`, dropping the padding."""
    hp, wp = padded_hw
    b = windows.shape[0] // ((hp // size) * (wp // size))
    x = windows.view(b, hp // size, wp // size, size, size, -1).transpose(2, 3)
    x = x.reshape(b, hp, wp, -1)
    h, w = hw
    if hp > h or wp > w:
        x = x[:, :h, :w]
    return x


class PatchEmbed(nn.Module):
    """7x7 stride-4 convolution: (B, 3, H, W) image -> (B, H/4, W/4, C) tokens."""

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Channels-last input makes the convolution write channels-last output, so the
        # (B, H, W, C) token grid below is a contiguous view rather than a strided one that
        # every later step would copy.
        x = x.contiguous(memory_format=torch.channels_last)
        return self.proj(x).permute(0, 2, 3, 1)


_WINDOW_SLICES = 4  # slices of a windowed block's attention, between yield points


class MultiScaleAttention(nn.Module):
    """Multi-head attention on a (B, H, W, C) grid, optionally pooling the queries."""

    def __init__(
        self, dim: int, dim_out: int, num_heads: int, q_stride: tuple[int, int] | None
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = Linear(dim, dim_out * 3)
        self.proj = Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).view(b, h * w, 3, self.num_heads, -1)
        q, k, v = qkv.unbind(2)  # each (B, HW, heads, head_dim)
        if self.q_stride is not None:
            q = _pool(q.reshape(b, h, w, -1), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, tokens, head_dim)
        yield_point()
        # One call when there are few windows, or for a compiler or tracer: yield points mean
        # nothing in a graph, and writes into slices of a buffer are what exporters get wrong
        # (OpenVINO 2026.4 loses rows of unequal slices).
        if (
            q.shape[0] < 2 * _WINDOW_SLICES
            or torch.compiler.is_compiling()
            or torch.jit.is_tracing()
        ):
            out = attention(q, k, v).transpose(1, 2).reshape(b, h, w, -1)
            return self.proj(out)
        # Windowed blocks attend in hundreds of windows at once (a fifth of a second at the
        # finest stage on two cores): a few slices of windows, with a yield point after each.
        out = q.new_empty(b, h * w, q.shape[1] * v.shape[-1])
        step = -(-b // _WINDOW_SLICES)
        for i in range(0, b, step):
            part = attention(q[i : i + step], k[i : i + step], v[i : i + step])
            out[i : i + step] = part.transpose(1, 2).reshape(part.shape[0], h * w, -1)
            yield_point()
        return self.proj(out.view(b, h, w, -1))


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block; the first block of a stage pools and widens."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        *,
        q_stride: tuple[int, int] | None = None,
        window_size: int = 0,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, 2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.q_stride is not None:
                shortcut = _pool(shortcut, self.q_stride)

        size = self.window_size
        if size > 0:
            h, w = x.shape[1:3]
            x, padded = _to_windows(x, size)
        x = self.attn(x)
        if size > 0:
            if self.q_stride is not None:
                # The queries were pooled inside each window: windows shrank with them.
                size //= self.q_stride[0]
                h, w = shortcut.shape[1:3]
                padded = (h + (-h % size), w + (-w % size))
            x = _from_windows(x, size, padded, (h, w))

        x = shortcut + x
        yield_point()  # half a block: a click waiting for the model may run here
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """The trunk: (B, 3, S, S) image -> four maps (B, C_i, S/4/2^i, S/4/2^i), finest first."""

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        self.cfg = cfg
        embed_dim, num_heads = cfg.embed_dim, cfg.num_heads
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(
            torch.zeros(1, embed_dim, *cfg.window_pos_embed_bkg_spatial_size)
        )
        win0 = cfg.window_spec[0]
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, win0, win0))

        stage_ends = [sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages))]
        pool_blocks = {end + 1 for end in stage_ends[:-1][: cfg.q_pool]}
        self.stage_ends = stage_ends
        blocks = []
        stage = 0
        dim = embed_dim
        for i in range(cfg.depth):
            # A stage's first block pools the grid but still uses the previous stage's window
            # (it attends before pooling), so the window is chosen before the stage advances.
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
            dim_out = dim
            if i - 1 in stage_ends[:-1]:
                dim_out = int(dim * cfg.dim_mul)
                num_heads = int(num_heads * cfg.head_mul)
                stage += 1
            blocks.append(
                MultiScaleBlock(
                    dim,
                    dim_out,
                    num_heads,
                    q_stride=cfg.q_stride if i in pool_blocks else None,
                    window_size=window,
                )
            )
            dim = dim_out
        self.blocks = nn.ModuleList(blocks)
        self._pos_cache: tuple[tuple[object, ...], torch.Tensor] | None = None

    def _pos_embedding(self, h: int, w: int) -> torch.Tensor:
        """Background embedding resized to (h, w) plus the tiled window embedding: (1, h, w, C).

        It depends only on the weights and the grid size, so it is cached in inference and
        recomputed when either parameter changes (its version counter moves on load or update).
        Parameters created in inference mode have no version counter: then it is not cached.
        """
        params = (self.pos_embed, self.pos_embed_window)
        # Under torch.compile it is part of the graph: a graph that read this cache would be
        # traced again whenever the cache changed.
        cacheable = (
            not torch.is_grad_enabled()
            and not any(p.is_inference() for p in params)
            and not torch.compiler.is_compiling()
        )
        key: tuple[object, ...] = (h, w, self.pos_embed.dtype, self.pos_embed.device)
        if cacheable:
            key += tuple(v for p in params for v in (p.data_ptr(), p._version))
            if self._pos_cache is not None and self._pos_cache[0] == key:
                return self._pos_cache[1]
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        pos = pos + win.tile(1, 1, h // win.shape[-2], w // win.shape[-1])
        # Contiguous as (1, h, w, C), like the tokens it is added to: adding a strided
        # view costs 10x more (19 against 1.6 ms at 256 x 256 x 96 on one core).
        pos = pos.permute(0, 2, 3, 1).contiguous()
        if cacheable:
            self._pos_cache = (key, pos)
        return pos

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)  # (B, H/4, W/4, C)
        x = x + self._pos_embedding(x.shape[1], x.shape[2])
        yield_point()
        outputs = []
        ends = set(self.stage_ends)
        for i, block in enumerate(self.blocks):
            x = block(x)
            yield_point()
            if i in ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs

"""Memory modules of the video model: memory attention (conditions the current frame's features
on past frames) and the memory encoder (turns a frame's features and mask into a memory)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .layers import LayerNorm2d, Linear, PointwiseConv2d, linear
from .position_encoding import PositionEmbeddingSine
from .transformer import RoPEAttention
from .yielding import yield_point


class MemoryAttentionLayer(nn.Module):
    """Pre-norm layer: RoPE self-attention, RoPE cross-attention to memory, ReLU feed-forward."""

    def __init__(self, d_model: int, mem_dim: int, dim_feedforward: int, rope_theta: float) -> None:
        super().__init__()
        self.self_attn = RoPEAttention(d_model, 1, rope_theta=rope_theta)
        self.cross_attn_image = RoPEAttention(
            d_model, 1, rope_theta=rope_theta, rope_k_repeat=True, kv_in_dim=mem_dim
        )
        self.linear1 = Linear(d_model, dim_feedforward)
        self.linear2 = Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int,
    ) -> torch.Tensor:
        x = self.norm1(tgt)
        tgt = tgt + self.self_attn(x, x, x)
        x = self.norm2(tgt)
        tgt = tgt + self.cross_attn_image(
            x, memory + memory_pos, memory, num_k_exclude_rope=num_obj_ptr_tokens
        )
        x = self.norm3(tgt)
        return tgt + self.linear2(linear(x, self.linear1.weight, self.linear1.bias, "relu"))


class MemoryAttention(nn.Module):
    """curr (B, HW, C) with pos (B, HW, C); memory and memory_pos (B, M, mem_dim) where the
    last ``num_obj_ptr_tokens`` memory tokens are object pointers. Returns (B, HW, C)."""

    def __init__(
        self, d_model: int, mem_dim: int, num_layers: int, dim_feedforward: int, rope_theta: float
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(d_model, mem_dim, dim_feedforward, rope_theta)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        curr: torch.Tensor,
        curr_pos: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int = 0,
    ) -> torch.Tensor:
        x = curr + 0.1 * curr_pos
        for layer in self.layers:
            x = layer(x, memory, memory_pos, num_obj_ptr_tokens)
            yield_point()
        return self.norm(x)


class MaskDownSampler(nn.Module):
    """(B, 1, S, S) mask -> (B, embed_dim, S/16, S/16) by four stride-2 conv+LN+GELU stages."""

    def __init__(
        self, embed_dim: int = 256, kernel_size: int = 3, stride: int = 2, padding: int = 1
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        chans = 1
        for _ in range(4):  # 2^4 = total stride 16
            out = chans * stride * stride
            layers += [
                nn.Conv2d(chans, out, kernel_size, stride, padding),
                LayerNorm2d(out),
                nn.GELU(),
            ]
            chans = out
        layers.append(PointwiseConv2d(chans, embed_dim))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, LayerNorm, pointwise MLP, layer scale, residual."""

    def __init__(self, dim: int, kernel_size: int = 7, padding: int = 3) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=padding, groups=dim)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(linear(y, self.pwconv1.weight, self.pwconv1.bias, "gelu"))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int, num_layers: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoderOutput(NamedTuple):
    features: torch.Tensor  # (B, mem_dim, h, w)
    pos_enc: torch.Tensor  # (B, mem_dim, h, w)


class MemoryEncoder(nn.Module):
    """Fuses pixel features (B, C, h, w) with a mask (B, 1, 16h, 16w) into memory features."""

    def __init__(self, in_dim: int = 256, out_dim: int = 64) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(in_dim)
        self.pix_feat_proj = PointwiseConv2d(in_dim, in_dim)
        self.fuser = Fuser(in_dim)
        self.position_encoding = PositionEmbeddingSine(out_dim)
        self.out_proj = PointwiseConv2d(in_dim, out_dim)

    def forward(
        self, pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False
    ) -> MemoryEncoderOutput:
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks)
        x = self.out_proj(self.fuser(x))
        return MemoryEncoderOutput(x, self.position_encoding(x))

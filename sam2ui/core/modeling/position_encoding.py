"""Position encodings: 2-D sine (feature maps), random Fourier (prompts), axial RoPE (memory)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .layers import matmul_rows


def _sine_dim_t(num_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    """Frequency divisors shared by the sine encodings: temperature^(2*floor(i/2)/num_feats)."""
    idx = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * (idx // 2) / num_feats)


def _interleave_sin_cos(angles: torch.Tensor) -> torch.Tensor:
    """(..., F) angles -> (..., F): sin of even columns and cos of odd columns, interleaved."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """DETR-style 2-D sine encoding of a (B, C, H, W) map, normalised to [0, 2*pi].

    The result depends only on (H, W), so it is cached per size and device.
    """

    def __init__(self, num_pos_feats: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError("num_pos_feats must be even")
        self.num_feats = num_pos_feats // 2
        self.temperature = temperature
        self.scale = 2 * math.pi
        self._cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def encoding(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        """The (C, H, W) float32 encoding: y features then x features."""
        key = (h, w, device)
        # Cached by size, except under torch.compile, where it is part of the graph (a graph
        # that read the cache would be traced again whenever the cache changed).
        if torch.compiler.is_compiling():
            return self._make_encoding(h, w, device)
        if key not in self._cache:
            self._cache[key] = self._make_encoding(h, w, device)
        return self._cache[key]

    def _make_encoding(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        eps = 1e-6
        ys = torch.arange(1, h + 1, dtype=torch.float32, device=device)
        xs = torch.arange(1, w + 1, dtype=torch.float32, device=device)
        ys = ys / (h + eps) * self.scale
        xs = xs / (w + eps) * self.scale
        dim_t = _sine_dim_t(self.num_feats, self.temperature, device)
        pos_y = _interleave_sin_cos(ys[:, None] / dim_t)  # (H, F)
        pos_x = _interleave_sin_cos(xs[:, None] / dim_t)  # (W, F)
        grid = torch.cat(
            (pos_y[:, None, :].expand(h, w, -1), pos_x[None, :, :].expand(h, w, -1)), dim=-1
        )
        return grid.permute(2, 0, 1).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) float32 encoding for the map ``x``: a broadcast view of the cache,
        float32 whatever x's dtype (callers cast where they need to)."""
        pos = self.encoding(x.shape[-2], x.shape[-1], x.device)
        return pos[None].expand(x.shape[0], -1, -1, -1)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalised (x, y) coordinates, as in SAM's prompt encoder."""

    positional_encoding_gaussian_matrix: torch.Tensor

    def __init__(self, num_pos_feats: int = 64) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coordinates in [0, 1] -> (..., 2 * num_pos_feats)."""
        coords = matmul_rows(2 * coords - 1, self.positional_encoding_gaussian_matrix)
        coords = 2 * math.pi * coords
        return torch.cat((coords.sin(), coords.cos()), dim=-1)

    def grid(self, h: int, w: int) -> torch.Tensor:
        """Encoding of every cell centre of an (h, w) grid: (C, h, w)."""
        matrix = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, dtype=torch.float32, device=matrix.device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=matrix.device) + 0.5) / w
        coords = torch.stack((xs[None, :].expand(h, w), ys[:, None].expand(h, w)), dim=-1)
        return self._encode(coords).permute(2, 0, 1)

    def encode_points(self, coords: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
        """(B, N, 2) pixel (x, y) coordinates in an image of size ``image_hw`` -> (B, N, C)."""
        h, w = image_hw
        scale = torch.tensor([1.0 / w, 1.0 / h], dtype=torch.float32, device=coords.device)
        return self._encode(coords.float() * scale)


def axial_rope_angles(
    head_dim: int, end_x: int, end_y: int, theta: float = 10000.0
) -> torch.Tensor:
    """Complex rotations for axial 2-D RoPE on an (end_y, end_x) grid, row-major.

    Returns (end_x * end_y, head_dim // 2) complex64: the first half of the pairs rotate with
    the x position, the second half with y.
    """
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    ang_x = torch.outer(t_x, freqs)
    ang_y = torch.outer(t_y, freqs)
    return torch.cat(
        (torch.polar(torch.ones_like(ang_x), ang_x), torch.polar(torch.ones_like(ang_y), ang_y)),
        dim=-1,
    )


def apply_rope_(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x (B, heads, N, D) by ``rotations`` (M, D/2), in
    place; returns x. N is a multiple of M: keys spanning several memory frames repeat the
    rotations of one frame's grid. x's last axis must be contiguous.

    The product is computed in complex64, as the reference does (bfloat16 x is rotated in
    float32 and rounded once), with the rotations broadcast over the N / M repeats instead of
    copied: for memory attention's ~29k keys that copy cost as much as the product itself.
    """
    n, m = x.shape[-2], rotations.shape[0]
    if n % m:
        raise ValueError(f"{n} tokens are not a whole number of {m}-token grids")
    pairs = x.float()  # x itself when float32, which is then rotated in place
    grids = torch.view_as_complex(pairs.unflatten(-1, (-1, 2))).unflatten(-2, (n // m, m))
    grids.mul_(rotations)  # (..., N / M, M, D/2) * (M, D/2)
    if pairs is not x:
        x.copy_(pairs)
    return x


def sine_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """1-D sine encoding of (N,) positions -> (N, dim): sin half then cos half."""
    dim_t = _sine_dim_t(dim // 2, temperature, positions.device)
    angles = positions.unsqueeze(-1) / dim_t
    return torch.cat((angles.sin(), angles.cos()), dim=-1)

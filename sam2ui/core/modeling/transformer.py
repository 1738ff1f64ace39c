"""Attention layers and the two-way transformer of the SAM mask decoder."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .attention import (
    attention,
    attention_projected_values,
    image_to_tokens_attention,
    token_attention,
    tokens_to_image_attention,
)
from .layers import MLP, Linear
from .position_encoding import apply_rope_, axial_rope_angles


class Attention(nn.Module):
    """Multi-head attention with projections to an optionally reduced internal width.

    q: (B, Nq, embedding_dim); k, v: (B, Nk, kv_in_dim) -> (B, Nq, embedding_dim).
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        *,
        downsample_rate: int = 1,
        kv_in_dim: int | None = None,
    ) -> None:
        super().__init__()
        kv_in_dim = kv_in_dim or embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide the internal width")
        self.num_heads = num_heads
        self.q_proj = Linear(embedding_dim, self.internal_dim)
        self.k_proj = Linear(kv_in_dim, self.internal_dim)
        self.v_proj = Linear(kv_in_dim, self.internal_dim)
        self.out_proj = Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, -1).transpose(1, 2)  # (B, heads, N, head_dim)

    def _merge(self, x: torch.Tensor) -> torch.Tensor:
        b, _, n, _ = x.shape
        return self.out_proj(x.transpose(1, 2).reshape(b, n, self.internal_dim))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention on already projected q (B, Nq, D), k, v (B, Nk, D); D = internal width."""
        return self.out_proj(token_attention(q, k, v, self.num_heads))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(self.q_proj(q), self.k_proj(k), self.v_proj(v))


class RoPEAttention(Attention):
    """Attention with axial 2-D rotary encoding of queries and (all but the last few) keys.

    Queries lie on a square grid; keys are one or more copies of that grid (memory frames)
    followed by ``num_k_exclude_rope`` object-pointer tokens that get no rotation.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        *,
        rope_theta: float = 10000.0,
        rope_k_repeat: bool = False,
        feat_sizes: tuple[int, int] = (64, 64),
        downsample_rate: int = 1,
        kv_in_dim: int | None = None,
    ) -> None:
        super().__init__(
            embedding_dim, num_heads, downsample_rate=downsample_rate, kv_in_dim=kv_in_dim
        )
        self.rope_theta = rope_theta
        self.rope_k_repeat = rope_k_repeat
        self._rotations: dict[tuple[int, torch.device], torch.Tensor] = {}
        self._feat_sizes = feat_sizes

    def rotations(self, n: int, device: torch.device) -> torch.Tensor:
        # Cached by size, except under torch.compile, where they are part of the graph (a
        # graph that read the cache would be traced again whenever the cache changed).
        key = (n, device)
        if torch.compiler.is_compiling():
            return self._make_rotations(n, device)
        if key not in self._rotations:
            self._rotations[key] = self._make_rotations(n, device)
        return self._rotations[key]

    def _make_rotations(self, n: int, device: torch.device) -> torch.Tensor:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"RoPE attention needs a square query grid, got {n} tokens")
        angles = axial_rope_angles(self.internal_dim // self.num_heads, side, side, self.rope_theta)
        return angles.to(device)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0
    ) -> torch.Tensor:
        q, k = self._heads(self.q_proj(q)), self._heads(self.k_proj(k))
        rot = self.rotations(q.shape[-2], q.device)
        apply_rope_(q, rot)  # fresh projections: rotated in place
        n_rope = k.shape[-2] - num_k_exclude_rope
        if n_rope > 0:
            if n_rope != q.shape[-2] and not self.rope_k_repeat:
                raise ValueError("keys longer than queries need rope_k_repeat")
            apply_rope_(k[:, :, :n_rope], rot)
        if self.num_heads == 1:
            # One head: the value projection may follow the attention (see the function).
            return self.out_proj(attention_projected_values(q, k, v, self.v_proj))
        return self._merge(attention(q, k, self._heads(self.v_proj(v))))


class ImageKeys(NamedTuple):
    """Prompt-independent inputs of the first two-way block, for one image: the image tokens
    (1, HW, C), their position encoding (1, HW, C), and the three projections of them that the
    first block needs (1, HW, D). Valid while the dense prompt is the "no mask" embedding."""

    keys: torch.Tensor
    key_pe: torch.Tensor
    token_to_image_k: torch.Tensor
    token_to_image_v: torch.Tensor
    image_to_token_q: torch.Tensor


def _batch(x: torch.Tensor, n: int) -> torch.Tensor:
    return x if x.shape[0] == n else x.expand(n, *x.shape[1:])


class TwoWayAttentionBlock(nn.Module):
    """Tokens attend to themselves and to the image; then the image attends to the tokens."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        *,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLP(embedding_dim, mlp_dim, embedding_dim, 2, activation=nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def image_keys(self, keys: torch.Tensor, key_pe: torch.Tensor) -> ImageKeys:
        """The projections of ``keys`` that do not depend on the prompt."""
        k = keys + key_pe
        return ImageKeys(
            keys,
            key_pe,
            self.cross_attn_token_to_image.k_proj(k),
            self.cross_attn_token_to_image.v_proj(keys),
            self.cross_attn_image_to_token.q_proj(k),
        )

    def forward(
        self,
        queries: torch.Tensor,
        keys: torch.Tensor | ImageKeys,
        query_pe: torch.Tensor,
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``keys`` is the image tokens (B, HW, C), or their precomputed :class:`ImageKeys`."""
        cached = keys if isinstance(keys, ImageKeys) else None
        if cached is not None:
            keys = cached.keys
        assert isinstance(keys, torch.Tensor)
        n = queries.shape[0]
        if self.skip_first_layer_pe:
            # The first layer replaces the tokens by their self-attention (no residual, no PE).
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        t2i, i2t = self.cross_attn_token_to_image, self.cross_attn_image_to_token
        q_t2i = t2i.q_proj(queries + query_pe)
        if cached is not None:
            attn = t2i.attend(
                q_t2i, _batch(cached.token_to_image_k, n), _batch(cached.token_to_image_v, n)
            )
        else:
            keys_pe = keys + key_pe
            attn = tokens_to_image_attention(
                q_t2i, keys_pe, keys, t2i.k_proj, t2i.v_proj, t2i.num_heads
            )
            attn = t2i.out_proj(attn)
        queries = self.norm2(queries + attn)
        queries = self.norm3(queries + self.mlp(queries))

        k, v = i2t.k_proj(queries + query_pe), i2t.v_proj(queries)
        if cached is not None:
            keys = image_to_tokens_attention(
                k, v, i2t.out_proj, i2t.num_heads, cached.keys, q=cached.image_to_token_q
            )
        else:
            keys = image_to_tokens_attention(
                k, v, i2t.out_proj, i2t.num_heads, keys, x_q=keys_pe, q_proj=i2t.q_proj
            )
        return queries, self.norm4(keys)


class TwoWayTransformer(nn.Module):
    """Prompt tokens and image tokens refine each other through ``depth`` blocks.

    image_embedding, image_pe: (B, C, H, W); point_embedding: (B, N, C).
    Returns (tokens (B, N, C), image tokens (B, H*W, C)).
    """

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        *,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim,
                num_heads,
                mlp_dim,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, downsample_rate=attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def image_keys(self, image_embedding: torch.Tensor, image_pe: torch.Tensor) -> ImageKeys:
        """Prompt-independent work of the first block for (B, C, H, W) image tokens and PE."""
        keys = image_embedding.flatten(2).transpose(1, 2)  # (B, HW, C)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        first = self.layers[0]
        assert isinstance(first, TwoWayAttentionBlock)
        return first.image_keys(keys, key_pe)

    def forward(
        self,
        image_embedding: torch.Tensor | ImageKeys,
        image_pe: torch.Tensor,
        point_embedding: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``image_embedding`` may be given as its precomputed :meth:`image_keys`."""
        keys: torch.Tensor | ImageKeys = image_embedding
        if not isinstance(keys, ImageKeys):
            keys = self.image_keys(keys, image_pe)
        key_pe = keys.key_pe
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        assert isinstance(keys, torch.Tensor)
        final = self.final_attn_token_to_image
        attn = tokens_to_image_attention(
            final.q_proj(queries + point_embedding), keys + key_pe, keys,
            final.k_proj, final.v_proj, final.num_heads,
        )  # fmt: skip
        attn = final.out_proj(attn)
        queries = self.norm_final_attn(queries + attn)
        return queries, keys

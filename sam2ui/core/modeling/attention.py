"""Attention kernels shared by the SAM 2 modules: blocked and few-key attention on the CPU,
folded token-image attention for the mask decoder, the fused kernel elsewhere."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam2ui.core.compat import torch_ops

from .layers import ONEDNN_MIN_ROWS, bucketed_linear, fast_cpu_kernels, linear, pad_rows
from .yielding import yield_point

# Measured on the 2-core development machine against the fused kernel (float32 / bfloat16):
# memory attention, ~29k keys, one head of 256: 655 -> 364 ms / 629 -> 207 ms; Hiera global
# attention, 4096 keys, 4 heads of 96: 157 -> 103 ms / 152 -> 60 ms. Blocks of twice the rows
# fall out of cache and lose most of it. bfloat16 attention over a few keys (Hiera windows,
# 64-196) is one explicit product whatever the setting: 2-2.5x faster than the fused kernel.
_SMALL_ATTENTION_KEYS = 256
_BLOCK_ROWS = 512
_LONG_ROW_KEYS = 8192  # rows longer than this (memory attention) take smaller blocks
_LONG_ROW_BLOCK_ROWS = 256


def _small_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype) @ v


def _blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v through oneDNN matrix products, per head and block of
    queries; the softmax is computed in float32 (for bfloat16 scores too)."""
    *batch, queries, dim = q.shape
    keys = k.shape[-2]
    # Scaled queries in contiguous rows per head: one pass here, where a strided block (Hiera's
    # heads are interleaved) would be copied again by every product.
    qf = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    torch.mul(q, dim**-0.5, out=qf)
    qf = qf.view(-1, queries, dim)  # (B*heads, Lq, D)
    kf = k.reshape(-1, keys, dim)
    vf = v.reshape(-1, keys, v.shape[-1])
    out = q.new_empty(qf.shape[0], queries, v.shape[-1])
    rows = _LONG_ROW_BLOCK_ROWS if keys > _LONG_ROW_KEYS else _BLOCK_ROWS
    for n in range(qf.shape[0]):
        kn, vt = kf[n].contiguous(), vf[n].t().contiguous()
        for i in range(0, queries, rows):
            out[n, i : i + rows] = _block(qf[n, i : i + rows], kn, vt)
            # Hiera's global attention or one memory attention layer is a quarter of a second
            # on two cores; between blocks of a few ms, waiting clicks may pass.
            yield_point()
    return out.view(*batch, queries, v.shape[-1])


def _block(q: torch.Tensor, k: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T) v for one block: q (rows, D) already scaled, k (Lk, D), v_t (Dv, Lk)."""
    if q.dtype == torch.bfloat16:
        # Scores as oneDNN's own tensors, so that the softmax is oneDNN's too: on bfloat16 it
        # takes about half the time of PyTorch's (3.2 against 6.0 ms for 256 x 29k scores on
        # one core; the softmax was a fifth of memory attention). Same products, same float32
        # arithmetic inside the softmax, with a different exp: bfloat16 results move by
        # rounding only.
        return torch_ops.mkldnn_attention(q, k, v_t)
    product = torch_ops.fused_linear  # x @ w.T
    scores = product(q, k, None)
    # Normalised in place: no second buffer of (rows x Lk) floats (29 MB for memory attention
    # over 7 frames), whose allocation and release per block can cost more than the block.
    scores = torch_ops.softmax_(scores, -1)
    return product(scores, v_t, None)


def attention_projected_values(
    q: torch.Tensor, k: torch.Tensor, x: torch.Tensor, proj: nn.Linear
) -> torch.Tensor:
    """One-head attention of q (B, 1, Lq, D) over k (B, 1, Lk, D) with values ``proj(x)``,
    x (B, Lk, Dx) -> (B, Lq, D).

    Softmax weights sum to one over the keys, so sum_j p_j (W x_j + b) = W (sum_j p_j x_j) + b.
    With the fast kernels on and x narrower than the values (memory attention reads 64-wide
    memory through 256-wide values), the projection follows the attention: the product of
    weights and values becomes D / Dx times smaller (4x: 80 -> 20 ms of a bfloat16 memory
    attention layer's ~230 ms on the 2-core machine), and the ~29k values are never
    projected. Float32 results then differ from the reference's by rounding; with the fast
    kernels off the values are projected first, as there.
    """
    if q.shape[1] != 1:
        raise ValueError(f"expected one head, got q of shape {tuple(q.shape)}")
    if x.shape[-1] < proj.weight.shape[0] and fast_cpu_kernels(q, k, x):
        return linear(attention(q, k, x[:, None])[:, 0], proj.weight, proj.bias)
    return attention(q, k, proj(x)[:, None])[:, 0]


# Attention between a few tokens (the mask decoder's prompt tokens, <= 16) and many (its 4096
# image tokens). The fused kernel blocks such shapes poorly (8 heads of 16, 4096 queries x 8
# keys: 2.2 ms), and so does a softmax over a short last axis (2.1 ms for 32k rows of 8). So
# with few keys the scores are computed transposed, (heads, Lk, Lq), normalised over the key
# axis, and all heads are applied to v in one product with a block-diagonal v, which leaves
# the heads merged: 0.8 ms in all. Few queries over many keys take the plain explicit product.
_FEW_TOKENS = 16


def _few_keys_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int
) -> torch.Tensor:
    b, lq, dim = q.shape
    lk, head_dim = k.shape[1], dim // heads
    q_t = q.view(b, lq, heads, head_dim).permute(0, 2, 3, 1)  # (B, heads, hd, Lq)
    k_h = k.view(b, lk, heads, head_dim).transpose(1, 2)  # (B, heads, Lk, hd)
    weights_t = torch.softmax((k_h * head_dim**-0.5) @ q_t, dim=-2)  # (B, heads, Lk, Lq)
    # v as a block-diagonal (heads * Lk, heads * hd) matrix: head h's keys feed head h only.
    v_h = v.view(b, lk, heads, head_dim).transpose(1, 2)
    eye = torch.eye(heads, dtype=v.dtype, device=v.device)
    v_block = (v_h[:, :, :, None, :] * eye[None, :, None, :, None]).reshape(b, heads * lk, dim)
    return weights_t.reshape(b, heads * lk, lq).transpose(1, 2) @ v_block


def token_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head softmax attention of the mask decoder on projected (B, N, D) tensors, heads
    merged in the result (B, Nq, D). One side is a handful of prompt tokens. With the fast
    kernels off, or off the CPU, it is the fused kernel, as in the reference."""
    few, many = sorted((q.shape[1], k.shape[1]))
    fast = fast_cpu_kernels(q, k, v) and few <= _FEW_TOKENS and many >= ONEDNN_MIN_ROWS
    if fast and k.shape[1] == few:
        return _few_keys_attention(q, k, v, heads)
    qh, kh, vh = (x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2) for x in (q, k, v))
    out = _small_attention(qh, kh, vh) if fast else F.scaled_dot_product_attention(qh, kh, vh)
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)


# The mask decoder's attention between a few tokens and the 4096 image tokens, with the image
# side's projection folded into the tokens' side (exact in real arithmetic). A projection of
# the image tokens, 4096 x 256 -> 128, costs as much as both products of the attention that
# follows it; folding lets the few tokens meet the unprojected image tokens instead:
# - scores:  (W_k x + b_k) . q = x . (W_k^T q) + b_k . q, and b_k . q is the same for every
#   key of a query, so the softmax drops it;
# - values:  sum_j p_j (W_v x_j + b_v) = W_v (sum_j p_j x_j) + b_v, the weights summing to one;
# - outputs: W_o (sum_j p_ij v_j) + b_o = sum_j p_ij (W_o v_j) + b_o, per head.
# Each attention then runs as two oneDNN products over the image tokens with (heads x tokens)
# rows, half the work of projecting. Float32 results differ from the reference's by rounding.


def _product(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ w.T (+ bias) through oneDNN, for 2-D x and w; x's rows (heads x prompt tokens)
    bucketed, so that the number of prompts does not make new kernels."""
    return bucketed_linear(x, w, bias)


def _folds(x: torch.Tensor, tokens: torch.Tensor, proj: nn.Linear) -> bool:
    """Whether the folded kernels apply: fast CPU kernels, a handful of tokens against many
    image tokens, one dtype throughout."""
    return (
        fast_cpu_kernels(tokens, x)
        and tokens.shape[1] <= _FEW_TOKENS
        and x.shape[1] >= ONEDNN_MIN_ROWS
        and x.dtype == tokens.dtype == proj.weight.dtype
    )


def tokens_to_image_attention(
    q: torch.Tensor,
    x_k: torch.Tensor,
    x_v: torch.Tensor,
    k_proj: nn.Linear,
    v_proj: nn.Linear,
    heads: int,
) -> torch.Tensor:
    """Attention of a few projected queries q (B, Nq, D) over image tokens whose keys are
    ``k_proj(x_k)`` and values ``v_proj(x_v)``, x_k and x_v (B or 1, N, C) unprojected.
    Returns (B, Nq, D), heads merged: ``token_attention(q, k_proj(x_k), v_proj(x_v), heads)``.
    """
    if not _folds(x_k, q, k_proj):
        k, v = k_proj(x_k), v_proj(x_v)
        n = q.shape[0]
        return token_attention(q, k.expand(n, *k.shape[1:]), v.expand(n, *v.shape[1:]), heads)
    b, nq, dim = q.shape
    head_dim = dim // heads
    q_h = (q * head_dim**-0.5).view(b, nq, heads, head_dim).transpose(1, 2)
    # Per head, the queries mapped back through W_k: (B, heads, Nq, C) -> (B, heads * Nq, C).
    q_fold = (q_h @ k_proj.weight.view(heads, head_dim, -1)).reshape(b, heads * nq, -1)
    mixed = []
    for i in range(b):
        xk, xv = x_k[min(i, x_k.shape[0] - 1)], x_v[min(i, x_v.shape[0] - 1)]
        # Zero rows up to the bucket, carried through both products and dropped at the end.
        weights = torch.softmax(_product(pad_rows(q_fold[i]), xk), dim=-1)  # (heads * Nq, N)
        mixed.append(_product(weights, xv.t())[: heads * nq])  # (heads * Nq, C)
    y = torch.stack(mixed).view(b, heads, nq, -1)
    w_v = v_proj.weight.view(heads, head_dim, -1)
    out = y @ w_v.transpose(1, 2) + v_proj.bias.view(heads, 1, head_dim)  # (B, heads, Nq, hd)
    return out.transpose(1, 2).reshape(b, nq, dim)


def image_to_tokens_attention(
    k: torch.Tensor,
    v: torch.Tensor,
    out_proj: nn.Linear,
    heads: int,
    residual: torch.Tensor,
    *,
    q: torch.Tensor | None = None,
    x_q: torch.Tensor | None = None,
    q_proj: nn.Linear | None = None,
) -> torch.Tensor:
    """``residual + out_proj(attention)`` of the image tokens over a few projected tokens k, v
    (B, Nk, D). The image side is given either projected, q (B or 1, N, D), or as x_q
    (B or 1, N, C) with its ``q_proj``. residual: (B or 1, N, C_out). Returns (B, N, C_out).
    """
    if q is not None:
        image = q
    elif x_q is not None and q_proj is not None:
        image = x_q
    else:
        raise ValueError("give the image queries projected (q) or with their q_proj")
    if not _folds(image, k, out_proj):
        if q is None:
            assert q_proj is not None
            q = q_proj(image)
        n = k.shape[0]
        attn = token_attention(q.expand(n, *q.shape[1:]), k, v, heads)
        return residual + out_proj(attn)
    b, nk, dim = k.shape
    head_dim = dim // heads
    k_h = (k * head_dim**-0.5).view(b, nk, heads, head_dim).transpose(1, 2)  # (B, H, Nk, hd)
    v_h = v.view(b, nk, heads, head_dim).transpose(1, 2)
    # Each token's value mapped through its head's slice of W_o: (B, heads * Nk, C_out).
    w_o = out_proj.weight.view(-1, heads, head_dim).permute(1, 2, 0)  # (H, hd, C_out)
    v_fold = (v_h @ w_o).reshape(b, heads * nk, -1)
    # The product below sums over heads x tokens: zero terms up to the bucket of that depth
    # (see layers.bucket_rows), so that the number of prompts does not make new kernels.
    v_fold_t = torch.stack([pad_rows(v) for v in v_fold]).transpose(1, 2).contiguous()
    if q is None:
        assert q_proj is not None
        # Per head, the keys mapped back through W_q, and b_q . k per key.
        k_fold = (k_h @ q_proj.weight.view(heads, head_dim, -1)).reshape(b, heads * nk, -1)
        k_bias = (k_h @ q_proj.bias.view(heads, head_dim, 1)).reshape(b, heads * nk, 1)
    out = []
    for i in range(b):
        img = image[min(i, image.shape[0] - 1)]
        if q is None:
            scores_t = _product(k_fold[i], img).add_(k_bias[i])  # (heads * Nk, N)
        else:
            q_t = img.view(-1, heads, head_dim).permute(1, 2, 0)  # (H, hd, N)
            scores_t = (k_h[i] @ q_t).view(heads * nk, -1)
        weights_t = torch.softmax(scores_t.view(heads, nk, -1), dim=1).view(heads * nk, -1)
        res = residual[min(i, residual.shape[0] - 1)]
        weights = pad_rows(weights_t).t().contiguous()
        out.append(torch_ops.fused_linear_add(weights, res, v_fold_t[i], out_proj.bias))
    return out[0].unsqueeze(0) if b == 1 else torch.stack(out)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Softmax attention over (B, heads, tokens, head_dim) tensors."""
    if q.device.type == "cpu":
        if q.dtype == torch.bfloat16 and k.shape[-2] <= _SMALL_ATTENTION_KEYS:
            return _small_attention(q, k, v)
        if (
            k.shape[-2] > _SMALL_ATTENTION_KEYS
            and q.shape[-2] >= ONEDNN_MIN_ROWS
            and fast_cpu_kernels(q, k, v)
        ):
            return _blocked_attention(q, k, v)
    return F.scaled_dot_product_attention(q, k, v)

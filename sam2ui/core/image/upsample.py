"""Thresholded bilinear upsampling of low-res mask logits: the boolean masks of
``F.interpolate(low_res, size, mode="bilinear", align_corners=False) > threshold``, bit for
bit, computed on the CPU without interpolating most pixels.

Why it is exact. Every output pixel of a bilinear resize combines four source taps, rows
``(i, i1)`` by columns ``(j, j1)``, with non-negative weights that sum to one up to rounding;
all pixels whose first taps are ``(i, j)`` form a cell and share the four taps. Where all four
taps of a cell are above ``threshold + margin`` (or all below ``threshold - margin``), every
pixel of the cell lands on that side whatever its weights: the margin,
``2**-16 * (|threshold| + max|logit|) + 1e-30``, is hundreds of times the kernel's rounding
error (a few units in the last place of ``max|logit|``) plus any underflow. Those pixels are
copied from the cell map. The pixels of the other cells, along mask boundaries, are computed
with torch's per-axis indices and weights, in the order of its CPU kernel, fused
multiply-adds included: each fused step is rounded once (round-to-odd in float64, then to
float32), and the last one is compared with the threshold without rounding, through the
exact float64 sum and the float32 rounding boundary just above the threshold.

Which arithmetic torch uses depends on its build (fused multiply-adds in its AVX2 and
AVX-512 kernels) and on the call (its channels-last kernel serves 3 channels on one thread;
channels are therefore resized one at a time, see :func:`upsample_logits`), so the
formula is checked against ``F.interpolate`` on small random inputs once per setting.
Where none matches bit for bit, off the CPU, for downscaling, tiny outputs, non-finite
logits, or logits without a clear boundary (noise: too many mixed cells to win), this simply
runs ``F.interpolate`` and the comparison.

The fast path runs in numpy on one thread: its many small steps would otherwise each wait
for every thread of torch's pool, which costs a scheduler time slice apiece on a busy CPU.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import torch

from ..modeling.layers import resize_bilinear

__all__ = ["upsample_logits", "upsample_masks"]

# Outputs with fewer pixels than this go straight to F.interpolate (fixed costs dominate).
MIN_FAST_PIXELS = 64 * 64
# A boundary pixel costs about this many plainly interpolated pixels; when boundary pixels
# would cost more than the whole plain interpolation, F.interpolate is used.
BOUNDARY_COST_RATIO = 10.0
_MARGIN_REL = 2.0**-16
_MARGIN_ABS = 1e-30
# Larger logits or thresholds (or non-finite ones) take the F.interpolate route.
_MAX_LOGIT = 1e30
_F32, _F64 = np.float32, np.float64


def upsample_logits(low_res: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) float logits -> (B, C, H, W) by bilinear interpolation with half-pixel
    centres (``align_corners=False``): exactly ``F.interpolate`` of each channel on its own
    (:func:`~sam2ui.core.modeling.layers.resize_bilinear`, the same whatever the thread
    count)."""
    return resize_bilinear(low_res, size)


def upsample_masks(
    low_res: torch.Tensor, size: tuple[int, int], threshold: float = 0.0
) -> torch.Tensor:
    """Boolean masks of upsampled logits: ``upsample_logits(low_res, size) > threshold``.

    Args:
        low_res: (B, C, h, w) mask logits, typically (B, 3, 256, 256) float32.
        size: output (H, W), e.g. the original image's (height, width) in pixels.
        threshold: logit threshold. As in ``tensor > threshold``, it is compared at the
            logits' precision (rounded to float32).

    Returns:
        (B, C, H, W) bool on the device of ``low_res``, equal element for element to
        ``F.interpolate(low_res, size, mode="bilinear", align_corners=False) > threshold``
        (see the module docstring for why). Never tracks gradients.
    """
    if not isinstance(low_res, torch.Tensor) or low_res.ndim != 4:
        got = f"shape {tuple(low_res.shape)}" if isinstance(low_res, torch.Tensor) else None
        raise ValueError(
            f"low_res must be a (B, C, h, w) tensor, got {got or type(low_res).__name__}"
        )
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"size must be (H, W) with positive integers, got {size!r}")
    height, width = int(size[0]), int(size[1])
    b, c, h, w = low_res.shape
    with torch.no_grad():
        if low_res.device.type == "cpu":  # one channel at a time (see upsample_logits)
            low_res = low_res.reshape(b * c, 1, h, w)
        plan = _plan(low_res, height, width, float(threshold))
        masks = None if plan is None else _fast_masks(low_res, plan)
        if masks is None:
            return (upsample_logits(low_res, (height, width)) > threshold).view(b, c, height, width)
        return torch.from_numpy(masks).view(b, c, height, width)


# ---------------------------------------------------------------------------- per-axis tables
class _Axis(NamedTuple):
    """One axis, n_in -> n_out positions, as torch's CPU kernel resamples it (numpy).

    Output position d reads source positions ``i0[d]`` and ``i0[d] + 1`` (clamped to the
    last; the same position when ``shifted`` is False, i.e. equal sizes) with float32 weights
    ``w0[d]`` and ``w1[d]``. The output positions with first tap k (a cell, contiguous since
    ``i0`` never decreases) are cut into segments of at most ``span`` positions: segment s
    reads ``src[s]``; its positions are ``pos[:, s]`` (span,), the last one repeated where
    the segment is short, with weights ``seg_w0[:, s]`` and ``seg_w1[:, s]``. The segments of
    source position k are ``first[k] <= s < first[k] + n_seg[k]``.
    """

    i0: np.ndarray
    w0: np.ndarray
    w1: np.ndarray
    shifted: bool
    pos: np.ndarray
    seg_w0: np.ndarray
    seg_w1: np.ndarray
    src: np.ndarray
    first: np.ndarray
    n_seg: np.ndarray
    span: int


@functools.lru_cache(maxsize=64)
def _axis(n_in: int, n_out: int, fused: bool) -> _Axis:
    """Source index ``scale * (d + 0.5) - 0.5`` in float32 with ``scale = n_in / n_out``,
    clamped at zero; ``fused`` rounds it once, as a fused multiply-add (torch's AVX2 and
    AVX-512 builds do). Weight ``w1`` is its fraction, ``w0 = 1 - w1``."""
    d = np.arange(n_out)
    shifted = n_in != n_out
    if shifted:
        scale = _F32(n_in) / _F32(n_out)
        half = d.astype(_F32) + _F32(0.5)
        # The product of two float32 is exact in float64, and so is the difference here:
        # one rounding, as in a fused multiply-add.
        src = (_F64(scale) * half - 0.5).astype(_F32) if fused else scale * half - _F32(0.5)
        src = np.maximum(src, _F32(0))
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        w1 = np.clip(src - i0.astype(_F32), _F32(0), _F32(1))
    else:
        i0, w1 = d, np.zeros(n_out, _F32)
    w0 = _F32(1) - w1
    counts = np.bincount(i0, minlength=n_in)
    # Edge cells also hold the clamped positions; cut them to the size of inner cells.
    span = max(1, int((counts[1:-1] if n_in > 2 else counts).max()))
    n_seg = (counts + span - 1) // span
    first = np.cumsum(n_seg) - n_seg
    src_of = np.repeat(np.arange(n_in), n_seg)
    cell_start = (np.cumsum(counts) - counts)[src_of]
    start = cell_start + (np.arange(len(src_of)) - first[src_of]) * span
    stop = np.minimum(start + span, cell_start + counts[src_of])
    pos = np.minimum(start + np.arange(span)[:, None], stop - 1)  # (span, S)
    return _Axis(i0, w0, w1, shifted, pos, w0[pos], w1[pos], src_of, first, n_seg, span)


class _Columns(NamedTuple):
    """Lookup tables that widen a boolean cell map (R, w) to output columns (R, W). Output
    columns come in ``blocks`` blocks of ``width``; block q depends on the 8 cells from
    ``start[q]``, which, with the cells bit-packed 8 to a byte, are bits ``start % 8`` and
    up of bytes ``start // 8`` and the next; their byte picks row ``256 q + byte`` of
    ``table`` (blocks * 256, width) bool."""

    start: np.ndarray
    table: np.ndarray
    blocks: int
    width: int

    def rows(self, index: np.ndarray) -> np.ndarray:
        """Table rows ``index`` (...,) -> (..., width) bool, copied a row at a time."""
        whole = self.table.view(np.dtype((np.void, self.width))).reshape(-1)
        return whole.take(index).view(bool).reshape(*index.shape, self.width)


@functools.lru_cache(maxsize=8)
def _columns(n_in: int, n_out: int, fused: bool) -> _Columns | None:
    """Tables for widening cell maps, or None where blocks would be narrow (little to gain).

    Prefers a block width that divides n_out, so that blocks tile the output rows exactly.
    """
    i0 = _axis(n_in, n_out, fused).i0

    def fits(width: int) -> bool:  # every block depends on at most 8 cells
        lasts = np.minimum(np.arange(width - 1, n_out + width - 1, width), n_out - 1)
        return int((i0[lasts] - i0[::width]).max()) < 8

    widths = [wd for wd in range(min(n_out, 8 * -(-n_out // n_in)), 7, -1) if fits(wd)]
    if not widths:
        return None
    width = next((wd for wd in widths if n_out % wd == 0 and 2 * wd >= widths[0]), widths[0])
    start = i0[::width]
    blocks = len(start)
    cols = np.minimum(np.arange(blocks * width), n_out - 1)
    offset = (i0[cols] - np.repeat(start, width)).reshape(blocks, 1, width)
    table = (np.arange(256)[None, :, None] >> offset) & 1  # (blocks, 256, width)
    return _Columns(start, table.astype(bool).reshape(blocks * 256, width), blocks, width)


# ---------------------------------------------------------------------------- exact arithmetic
def _two_sum_error(s: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact rounding error of ``s = a + b`` (float64): ``a + b == s + error``."""
    back = s - a
    return (a - (s - back)) + (b - back)


def _round_sum(p: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 rounding of the exact ``p + c``, p float64 (an exact product of two float32),
    c float32: what a float32 fused multiply-add returns. Where the float64 sum is inexact it
    is made round-to-odd (last bit set), so that its rounding to float32 is correct."""
    s = p + c
    err = _two_sum_error(s, p, c.astype(_F64))
    inexact = err != 0
    if inexact.any():
        bits = s.view(np.int64)
        away = (err > 0) == (s > 0)  # the exact sum lies further from zero than s
        s = (bits + np.where(away, 1, -1) * (inexact & ((bits & 1) == 0))).view(_F64)
    return s.astype(_F32)


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 ``fma(a, b, c)``: ``a * b + c`` rounded once."""
    return _round_sum(a.astype(_F64) * b, c)


def _sum_above(p: np.ndarray, c: np.ndarray, threshold: float) -> np.ndarray:
    """``float32(p + c) > threshold`` for p float64 (exact product), c float32 and a float32
    threshold, without rounding: the float32 sum exceeds the threshold exactly when the
    exact sum passes the midpoint between the threshold and the next float32 up, or meets
    it and rounds up (ties go to the even neighbour)."""
    up = np.nextafter(_F32(threshold), _F32(np.inf))
    mid = (threshold + float(up)) / 2  # exact in float64
    s = p + c
    above = s > mid
    on_mid = s == mid
    if on_mid.any():
        err = _two_sum_error(s, p, c.astype(_F64))
        tie_up = int(up.view(np.int32)) % 2 == 0
        above |= on_mid & ((err > 0) | ((err == 0) & tie_up))
    return above


# ---------------------------------------------------------------------------- kernel formulas
# "separable": torch's generic kernel, per output pixel
#     fma(fma(x00, wx0, x01 * wx1), wy0, fma(x10, wx0, x11 * wx1) * wy1)
# "four_tap": its channels-last kernel, weights multiplied first
#     fma(x11, wy1 * wx1, fma(x10, wy1 * wx0, fma(x00, wy0 * wx0, x01 * (wy0 * wx1))))
# each with the source index computed fused (one rounding) or not: (kind, fused) pairs.
_FORMULAS = (("separable", True), ("four_tap", True), ("separable", False), ("four_tap", False))


class _Plan(NamedTuple):
    kind: str
    fused: bool
    rows: _Axis
    cols: _Axis
    threshold: float  # rounded to float32


def _segment_values(
    x: np.ndarray, segs: np.ndarray, rows: _Axis, cols: _Axis, kind: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixels of K segment pairs, up to their last fused step.

    x: (N, h, w) float32 logits; segs: (3, K) int64 rows plane, row segment, column segment.
    Returns (p, c, flat), each (rows.span, cols.span, K): a pixel's value is
    ``float32(p + c)`` with p float64 (an exact product) and c float32; flat is its index in
    the (N, H, W) output. Short segments repeat their last row or column (same value, same
    index). Pairs run along the last dimension, so that operations run over long rows.
    """
    plane, sy, sx = segs
    _, h, w = x.shape
    height, width = len(rows.i0), len(cols.i0)
    i, j = rows.src.take(sy), cols.src.take(sx)
    top = plane * (h * w) + i * w + j
    bottom = top + (i < h - 1) * w if rows.shifted else top
    right = (j < w - 1) if cols.shifted else 0
    taps = x.take(np.stack((top, bottom, top + right, bottom + right)))  # (4, K)
    wx0, wx1 = cols.seg_w0.take(sx, 1), cols.seg_w1.take(sx, 1)  # (CW, K)
    wy0, wy1 = rows.seg_w0.take(sy, 1)[:, None], rows.seg_w1.take(sy, 1)[:, None]  # (CH, 1, K)
    if kind == "separable":
        pair = _fma(taps[:2, None], wx0, taps[2:, None] * wx1)  # (2, CW, K): rows i, i1
        p = pair[0] * wy0.astype(_F64)  # (CH, CW, K)
        c = pair[1] * wy1
    else:
        x00, x10, x01, x11 = taps[:, None]
        u = _fma(x00, wy0 * wx0, x01 * (wy0 * wx1))
        c = _fma(x10, wy1 * wx0, u)
        p = x11.astype(_F64) * (wy1 * wx1)
    y = rows.pos.take(sy, 1)
    flat = (plane * (height * width) + y * width)[:, None] + cols.pos.take(sx, 1)
    return p, c, flat


def _interpolate_all(x: np.ndarray, rows: _Axis, cols: _Axis, kind: str) -> np.ndarray:
    """Every output value by one formula: (N, h, w) -> (N, H, W) float32 (for checks)."""
    grid = np.meshgrid(np.arange(len(x)), np.arange(len(rows.src)), np.arange(len(cols.src)))
    segs = np.stack([g.reshape(-1) for g in grid])
    p, c, flat = _segment_values(x, segs, rows, cols, kind)
    out = np.empty(len(x) * len(rows.i0) * len(cols.i0), _F32)
    out[flat.reshape(-1)] = _round_sum(p, c).reshape(-1)
    return out.reshape(len(x), len(rows.i0), len(cols.i0))


@functools.lru_cache(maxsize=32)
def _formula(channels: int, channels_last: bool, threads: int) -> tuple[str, bool] | None:
    """The (kind, fused) formula that reproduces F.interpolate bit for bit in this setting,
    found on small random inputs (one with an axis of equal sizes), or None."""
    gen = torch.Generator().manual_seed(0)
    probes = []
    for (h, w), size in (((5, 7), (67, 71)), ((6, 9), (6, 131))):
        x = torch.randn(1, channels, h, w, generator=gen) * 8
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        probes.append((x[0].contiguous().numpy(), size, upsample_logits(x, size)[0].numpy()))
    for kind, fused in _FORMULAS:
        if all(
            np.array_equal(
                _interpolate_all(x, _axis(h, size[0], fused), _axis(w, size[1], fused), kind), ref
            )
            for x, size, ref in probes
            for h, w in [x.shape[1:]]
        ):
            return kind, fused
    return None


def _plan(low_res: torch.Tensor, height: int, width: int, threshold: float) -> _Plan | None:
    """How to take the fast path, or None for plain F.interpolate."""
    b, ch, h, w = low_res.shape
    if (
        low_res.device.type != "cpu"
        or low_res.dtype != torch.float32
        or height < h
        or width < w
        or b * ch * height * width < MIN_FAST_PIXELS
        or height + width <= 128  # torch's small-output kernel: not worth reproducing
        or not abs(threshold) <= _MAX_LOGIT
    ):
        return None
    channels_last = low_res.is_contiguous(memory_format=torch.channels_last) and not (
        low_res.is_contiguous()
    )
    formula = _formula(ch, channels_last, torch.get_num_threads())
    if formula is None:
        return None
    kind, fused = formula
    rows, cols = _axis(h, height, fused), _axis(w, width, fused)
    return _Plan(kind, fused, rows, cols, float(_F32(threshold)))


# ---------------------------------------------------------------------------- the fast path
def _mixed_cells(
    top: np.ndarray, bottom: np.ndarray, t: float, margin: float, cols: _Axis
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of cells, from the logits of their first and second row taps (N, r, w) -> per
    cell (N, r, w) bool: all four taps above ``t + margin``; mixed (neither that nor all
    four below ``t - margin``)."""
    above = (top > t + margin) & (bottom > t + margin)
    below = (top < t - margin) & (bottom < t - margin)
    if cols.shifted:  # overlapping in-place operands are safe in numpy
        np.logical_and(above[:, :, :-1], above[:, :, 1:], out=above[:, :, :-1])
        np.logical_and(below[:, :, :-1], below[:, :, 1:], out=below[:, :, :-1])
    return above, ~(above | below)


def _expand(cells: np.ndarray, plan: _Plan) -> np.ndarray:
    """(N, h, w) bool per cell -> (N, H, W) bool per output pixel (new memory)."""
    rows, cols = plan.rows, plan.cols
    n, h, w = cells.shape
    lut = _columns(w, len(cols.i0), plan.fused) if cols.shifted else None
    if lut is None:
        wide = cells[:, :, cols.i0] if cols.shifted else cells
    else:
        # Bit-pack the cells, read each block's byte, look the block up.
        packed = np.zeros((n * h, w // 8 + 2), np.uint16)
        packed[:, : -(-w // 8)] = np.packbits(cells.reshape(n * h, w), -1, bitorder="little")
        pair = packed[:, lut.start // 8] | packed[:, lut.start // 8 + 1] << 8
        index = (pair >> (lut.start % 8)).astype(np.intp) & 255
        index += np.arange(0, 256 * lut.blocks, 256)
        wide = lut.rows(index).reshape(n, h, lut.blocks * lut.width)[:, :, : len(cols.i0)]
    return np.take(wide, rows.i0, axis=1)  # whole rows


def _segments(cells: np.ndarray, shape: tuple[int, ...], rows: _Axis, cols: _Axis) -> np.ndarray:
    """Flat indices of mixed cells in (N, h, w) -> (3, K') their (plane, row segment, column
    segment): one per cell, several for edge cells, none for cells that no pixel reads."""
    plane, i, j = np.unravel_index(cells, shape)
    n_x = cols.n_seg[j]
    per_cell = rows.n_seg[i] * n_x
    if (per_cell == 1).all():
        return np.stack((plane, rows.first[i], cols.first[j]))
    owner = np.repeat(np.arange(len(cells)), per_cell)
    local = np.arange(len(owner)) - (np.cumsum(per_cell) - per_cell)[owner]
    n_x = n_x[owner]
    return np.stack(
        (plane[owner], rows.first[i[owner]] + local // n_x, cols.first[j[owner]] + local % n_x)
    )


def _fast_masks(low_res: torch.Tensor, plan: _Plan) -> np.ndarray | None:
    """(N, H, W) bool masks, or None where too many cells are mixed to win."""
    b, ch, h, w = low_res.shape
    rows, cols, t = plan.rows, plan.cols, plan.threshold
    pixels = b * ch * len(rows.i0) * len(cols.i0)
    x = low_res.detach().reshape(b * ch, h, w).contiguous().numpy()
    biggest = max(-float(x.min()), float(x.max()))
    if not biggest <= _MAX_LOGIT:  # also NaN
        return None
    margin = _MARGIN_REL * (abs(t) + biggest) + _MARGIN_ABS
    slot_cost = BOUNDARY_COST_RATIO * rows.span * cols.span  # per mixed cell, in pixels
    # A first look at every 8th row of cells: noise-like logits (most cells mixed) leave here.
    if h > 16 and rows.shifted:
        sample = _mixed_cells(x[:, : h - 1 : 8], x[:, 1::8], t, margin, cols)[1]
        if np.count_nonzero(sample) * 8 * slot_cost > pixels:
            return None
    second = np.concatenate((x[:, 1:], x[:, -1:]), 1) if rows.shifted else x
    above, mixed = _mixed_cells(x, second, t, margin, cols)
    cells = np.flatnonzero(mixed)
    if len(cells) * slot_cost > pixels:
        return None
    out = _expand(above, plan)
    if len(cells):
        segs = _segments(cells, x.shape, rows, cols)
        p, c, flat = _segment_values(x, segs, rows, cols, plan.kind)
        out.reshape(-1)[flat.reshape(-1)] = _sum_above(p, c, t).reshape(-1)
    return out

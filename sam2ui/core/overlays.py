"""Overlays of masks on images and videos: tinted PNG-ready images, cut-outs, and H.264 MP4s
that browsers play. Conventions (results, masks, colours, overlap rule) are those of
:mod:`sam2ui.core.exports`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .exports import (
    Color,
    FrameMasks,
    MaskLike,
    PathLike,
    Results,
    as_mask,
    atomic_output,
    frame_masks,
    palette_color,
)

__all__ = ["cutout_png", "overlay_image", "write_overlay_mp4"]


def _check_image(image: np.ndarray, where: str) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"{where} must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    return img


def _contour(mask: np.ndarray, width: int) -> np.ndarray:
    """Inner boundary band of ``width`` pixels of an ``(H, W)`` bool mask: mask pixels with a
    background pixel within ``width`` (Chebyshev distance). The image edge is not a boundary.
    Works on the mask's bounding box, by a separable erosion of shifted ANDs."""
    out = np.zeros_like(mask)
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if ys.size == 0:
        return out
    y0, y1 = max(ys[0] - width, 0), min(ys[-1] + width + 1, mask.shape[0])
    x0, x1 = max(xs[0] - width, 0), min(xs[-1] + width + 1, mask.shape[1])
    sub = mask[y0:y1, x0:x1]
    h, w = sub.shape
    padded = np.pad(sub, width, mode="edge")  # outside the image = its edge pixel
    rows = padded[:h].copy()
    for d in range(1, 2 * width + 1):
        rows &= padded[d : d + h]
    eroded = rows[:, :w].copy()
    for d in range(1, 2 * width + 1):
        eroded &= rows[:, d : d + w]
    out[y0:y1, x0:x1] = sub & ~eroded
    return out


def _blend(
    image: np.ndarray,
    masks: Mapping[int, np.ndarray],
    colors: Mapping[int, Color] | None,
    alpha: float,
    contours: bool,
) -> np.ndarray:
    """Tint each mask with its colour (smallest id on top); optional solid contours."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    out = image.astype(np.float32)
    order = sorted(masks, reverse=True)
    rgb = {i: np.asarray(colors[i] if colors and i in colors else palette_color(i)) for i in order}
    for i in order:
        m = masks[i]
        out[m] = out[m] * (1.0 - alpha) + rgb[i] * alpha
    if contours:
        width = max(1, min(5, min(image.shape[:2]) // 200))
        for i in order:
            out[_contour(masks[i], width)] = rgb[i]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def overlay_image(
    image: np.ndarray,
    masks: Mapping[int, MaskLike],
    colors: Mapping[int, Color] | None = None,
    alpha: float = 0.5,
    draw_contours: bool = False,
) -> np.ndarray:
    """``(H, W, 3)`` uint8 copy of ``image`` with each object's mask blended in its colour
    (``colors[obj_id]`` or :func:`palette_color`): ``(1 - alpha) * pixel + alpha * colour``,
    smallest id on top; ``draw_contours`` adds a solid band of 1-5 pixels (by image size)."""
    img = _check_image(image, "image")
    _, valid = frame_masks(0, masks, img.shape[:2])
    return _blend(img, valid, colors, alpha, draw_contours)


def cutout_png(image: np.ndarray, mask: MaskLike) -> np.ndarray:
    """``(H, W, 4)`` uint8 RGBA: the image with alpha = 255 on the mask, 0 elsewhere (save it
    with ``PIL.Image.fromarray(rgba, "RGBA").save("cutout.png")``)."""
    img = _check_image(image, "image")
    m = as_mask(mask, img.shape[:2], "cutout")
    return np.dstack([img, m.astype(np.uint8) * 255])


def _frame_rate(fps: float | Fraction) -> Fraction:
    """Exact frame rate: Fractions (e.g. PyAV's ``stream.average_rate``) as given; floats
    within 0.005 of an NTSC rate ``k * 1000/1001`` (29.97, 23.976, 59.94) and nearer it than
    ``k`` snap to it, others become the nearest fraction with a denominator up to 1001
    (25.0 -> 25, 12.5 -> 25/2)."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        k = round(float(fps) * 1.001)
        off = abs(k * 1000 / 1001 - float(fps))
        near = off < min(0.005, abs(k - float(fps)))  # closer to k/1.001 than to k itself
        rate = Fraction(k * 1000, 1001) if near else Fraction(float(fps)).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


def write_overlay_mp4(
    frames: Iterable[np.ndarray],
    results: Results,
    path: PathLike,
    *,
    fps: float | Fraction,
    colors: Mapping[int, Color] | None = None,
    alpha: float = 0.5,
    draw_contours: bool = True,
    crf: int = 18,
) -> Path:
    """Write the source frames with their masks overlaid as an H.264 MP4; returns the path.

    ``frames`` are streamed ``(H, W, 3)`` uint8 RGB images with indices 0, 1, ...; frame i
    gets ``results[i]`` (a mapping: missing frames are left untinted, extra keys ignored) or
    the next pending item of an iterable of pairs (which must then come in increasing frame
    order; pass a dict for reverse propagation). Output: yuv420p, ``+faststart`` (the index
    is moved before the data, so browsers play while downloading), frame rate ``fps`` made
    exact (29.97 gives 30000/1001, see ``_frame_rate``), constant-rate pts. Odd heights or
    widths are padded by one row/column replicating the edge (nothing is cropped). Needs
    PyAV (``pip install av``).
    """
    import av

    rate = _frame_rate(fps)
    if isinstance(results, Mapping):
        pending: Iterator[tuple[Any, FrameMasks]] = iter(())
    else:
        pending = iter(results)
    nxt = next(pending, None)
    with atomic_output(path) as tmp:
        container = av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"})
        try:
            stream: Any = None
            size = (0, 0)
            last = -1
            for n, frame in enumerate(frames):
                img = _check_image(frame, f"frame {n}")
                h, w = img.shape[:2]
                if stream is None:
                    size = (h, w)
                    stream = container.add_stream("libx264", rate=rate)
                    stream.width, stream.height = w + w % 2, h + h % 2
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf), "preset": "veryfast"}
                elif (h, w) != size:
                    raise ValueError(f"frame {n} is {h}x{w}, the first frame {size[0]}x{size[1]}")
                valid: dict[int, np.ndarray] = {}
                if isinstance(results, Mapping):
                    _, valid = frame_masks(n, results.get(n, {}), (h, w))
                while nxt is not None and nxt[0] <= n:  # only for iterable results
                    f, got = frame_masks(nxt[0], nxt[1], (h, w))
                    if f <= last:
                        raise ValueError(
                            f"iterable results must come in increasing frame order ({f} after "
                            f"{last}); pass a dict instead"
                        )
                    last = f
                    if f == n:
                        valid = got
                    nxt = next(pending, None)
                out = _blend(img, valid, colors, alpha, draw_contours)
                out = np.pad(out, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                vf = av.VideoFrame.from_ndarray(out, format="rgb24")
                vf.pts, vf.time_base = n, 1 / rate
                for packet in stream.encode(vf):
                    container.mux(packet)
            if stream is None:
                raise ValueError("no frames to write")
            for packet in stream.encode(None):
                container.mux(packet)
        finally:
            container.close()
    return Path(path)

"""The one renderer: tinted masks, contours, boxes and click markers, for every front end.

The annotators (and so the web app and the notebook widgets), the overlay MP4 and the command
line's overlay PNG all draw with these functions, so a mask looks the same everywhere. Colours
come from the DAVIS palette (:func:`palette_color`), so an object has the same colour in an
overlay as in the indexed PNG of :mod:`sam2ui.core.exports`.

Everything works on ``(H, W, 3)`` uint8 RGB images in numpy and touches only the pixels it
must: tinting is limited to the masks' bounding boxes (and, in :class:`TintCache`, to the
region whose masks changed since the last call); markers are stamped into small windows.
Coordinates are pixels, x right, y down; masks are ``(H, W)`` bool. Where masks overlap, the
smallest object id is on top, as in the exports.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TypeAlias

import numpy as np

from .masks import MaskLike, check_obj_id, frame_masks

__all__ = [
    "NEGATIVE_COLOR",
    "OUTLINE_COLOR",
    "POSITIVE_COLOR",
    "TintCache",
    "contour",
    "davis_palette",
    "draw_box",
    "draw_click",
    "marker_sizes",
    "overlay_image",
    "palette_color",
    "tint",
]

Color: TypeAlias = tuple[int, int, int]
XYXY = tuple[float, float, float, float]
Region = tuple[int, int, int, int]  # y0, y1, x0, x1 (end exclusive)

POSITIVE_COLOR: Color = (40, 200, 60)
NEGATIVE_COLOR: Color = (230, 40, 40)
OUTLINE_COLOR: Color = (255, 255, 255)

# ---------------------------------------------------------------------------------------------
# Palette
# ---------------------------------------------------------------------------------------------


def davis_palette() -> np.ndarray:
    """The 256-colour DAVIS / PASCAL VOC palette, ``(256, 3)`` uint8.

    Entry ``i`` spreads the bits of ``i`` over the channels from the top bit down: bit 0 to
    red, bit 1 to green, bit 2 to blue, bit 3 to red's next bit, and so on, giving
    (0,0,0), (128,0,0), (0,128,0), (128,128,0), (0,0,128), ...
    """
    idx = np.arange(256)
    pal = np.zeros((256, 3), dtype=np.int64)
    for j in range(8):
        for c in range(3):
            pal[:, c] |= ((idx >> (3 * j + c)) & 1) << (7 - j)
    return pal.astype(np.uint8)


DAVIS_PALETTE = davis_palette()


def palette_color(obj_id: int) -> Color:
    """The overlay colour of an object: DAVIS entry ``obj_id`` for ids 1..255; larger ids
    cycle through entries 1..255 (never the black background)."""
    oid = check_obj_id(obj_id)
    r, g, b = (int(v) for v in DAVIS_PALETTE[(oid - 1) % 255 + 1])
    return r, g, b


# ---------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------


def mask_region(mask: np.ndarray) -> Region | None:
    """Bounding box of a mask's pixels as ``(y0, y1, x0, x1)``, or None when it is empty."""
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def union(regions: Iterable[Region | None]) -> Region | None:
    """Smallest region holding every given one (None entries are skipped)."""
    got = [r for r in regions if r is not None]
    if not got:
        return None
    return (
        min(r[0] for r in got),
        max(r[1] for r in got),
        min(r[2] for r in got),
        max(r[3] for r in got),
    )


def tint_region(
    image: np.ndarray,
    out: np.ndarray,
    masks: Mapping[int, np.ndarray],
    colors: Mapping[int, Color],
    alpha: float,
    region: Region,
) -> None:
    """Write ``image`` with the masks blended in (``(1 - alpha) * pixel + alpha * colour``,
    with alpha in 1/256 steps, rounded to nearest) into ``out`` inside ``region`` only. Where
    masks overlap, only the smallest id's colour is blended (it is on top)."""
    y0, y1, x0, x1 = region
    order = sorted(masks, reverse=True)
    # Label k+1 = order[k]; the largest label wins, so the smallest id ends on top. Built by
    # branch-free max of uint8 planes, which costs the same for ragged and smooth masks.
    dtype = np.uint8 if len(order) < 256 else np.uint16
    label = np.zeros((y1 - y0, x1 - x0), dtype=dtype)
    tmp = np.empty_like(label)
    for k, oid in enumerate(order, 1):
        np.multiply(masks[oid][y0:y1, x0:x1], k, out=tmp, dtype=dtype)
        np.maximum(label, tmp, out=label)
    a = round(alpha * 256)
    # Per label and channel, a table of all 256 results: background keeps the pixel, an
    # object's label blends it with the object's colour, (x * (256 - a) + c * a) / 256
    # rounded to nearest, ties to even (as np.rint). A pixel is then one table lookup.
    values = np.arange(256, dtype=np.uint32)
    rgb = np.array([colors[oid] for oid in order], dtype=np.uint32).reshape(-1, 3)
    blend = values * (256 - a) + rgb.T[:, :, None] * a  # (3, objects, 256)
    table = np.empty((3, len(order) + 1, 256), dtype=np.uint8)
    table[:, 0] = values
    table[:, 1:] = (blend + 127 + ((blend >> 8) & 1)) >> 8
    index_dtype = np.uint16 if len(order) < 256 else np.uint32
    base = np.left_shift(label, 8, dtype=index_dtype)  # label * 256 + pixel: a table entry
    index = np.empty_like(base)
    for c in range(3):
        np.bitwise_or(base, image[y0:y1, x0:x1, c], out=index)
        out[y0:y1, x0:x1, c] = table[c].ravel().take(index)


class TintCache:
    """The image with every mask tinted, updated only where masks changed.

    Masks are compared by identity: the annotators replace a mask array rather than write
    into it, so an unchanged object keeps the same array and costs nothing.
    """

    def __init__(self) -> None:
        self._image: np.ndarray | None = None
        self._out: np.ndarray | None = None
        self._masks: dict[int, np.ndarray] = {}
        self._regions: dict[int, Region | None] = {}
        self._style: tuple[float, dict[int, Color]] | None = None

    def clear(self) -> None:
        self._image = self._out = self._style = None
        self._masks, self._regions = {}, {}

    def _region(self, oid: int, mask: np.ndarray) -> Region | None:
        if self._masks.get(oid) is not mask:
            return mask_region(mask)
        return self._regions[oid]

    def get(
        self,
        image: np.ndarray,
        masks: Mapping[int, np.ndarray],
        colors: Mapping[int, Color],
        alpha: float,
    ) -> np.ndarray:
        """The tinted image (owned by the cache: copy it before drawing on it)."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        style = (float(alpha), {oid: colors[oid] for oid in masks})
        regions = {oid: self._region(oid, m) for oid, m in masks.items()}
        if self._out is None or self._image is not image or self._style != style:
            self._out = image.copy()
            dirty = union(regions.values())
        else:
            changed = [
                oid
                for oid in set(masks) | set(self._masks)
                if masks.get(oid) is not self._masks.get(oid)
            ]
            dirty = union(
                [regions.get(oid) for oid in changed] + [self._regions.get(oid) for oid in changed]
            )
        if dirty is not None:
            tint_region(image, self._out, masks, style[1], alpha, dirty)
        self._image, self._style = image, style
        self._masks, self._regions = dict(masks), regions
        return self._out


def contour(
    mask: np.ndarray, width: int, region: Region | None = None
) -> tuple[Region, np.ndarray]:
    """Inner boundary band (``width`` pixels) of a mask, within its bounding box: returns the
    box and the band's ``(h, w)`` bool array there. The image edge is not a boundary."""
    region = region if region is not None else mask_region(mask)
    if region is None:
        return (0, 0, 0, 0), np.zeros((0, 0), dtype=bool)
    y0, y1, x0, x1 = region
    sub = mask[y0:y1, x0:x1]
    h, w = sub.shape
    # Pad by the width (edge-replicated), then erode by ANDing shifted copies, rows then columns.
    ys0, ys1 = max(y0 - width, 0), min(y1 + width, mask.shape[0])
    xs0, xs1 = max(x0 - width, 0), min(x1 + width, mask.shape[1])
    padded = np.pad(
        mask[ys0:ys1, xs0:xs1],
        ((width - (y0 - ys0), width - (ys1 - y1)), (width - (x0 - xs0), width - (xs1 - x1))),
        mode="edge",
    )
    rows = padded[:h].copy()
    for d in range(1, 2 * width + 1):
        rows &= padded[d : d + h]
    eroded = rows[:, :w].copy()
    for d in range(1, 2 * width + 1):
        eroded &= rows[:, d : d + w]
    return region, sub & ~eroded


def band_pixels(region: Region, band: np.ndarray, width: int) -> np.ndarray:
    """Flat indices (into ``H * W`` for an image ``width`` wide) of a band's pixels."""
    ys, xs = np.nonzero(band)
    return (ys + region[0]) * width + (xs + region[2])


def paint(out: np.ndarray, pixels: np.ndarray, color: Color) -> None:
    """Set the pixels at flat indices ``pixels`` of a C-contiguous image to ``color``."""
    out.reshape(-1, 3)[pixels] = color


def draw_box(out: np.ndarray, box: XYXY, color: Color, width: int) -> None:
    """Outline of an XYXY box, ``width`` pixels thick, inside the box's pixels."""
    h, w = out.shape[:2]
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    if x1 <= x0 or y1 <= y0:
        return
    out[y0 : min(y0 + width, y1), x0:x1] = color
    out[max(y1 - width, y0) : y1, x0:x1] = color
    out[y0:y1, x0 : min(x0 + width, x1)] = color
    out[y0:y1, max(x1 - width, x0) : x1] = color


@lru_cache(maxsize=16)
def _disc(radius: int, border: int) -> tuple[np.ndarray, np.ndarray]:
    """Fill and outline stamps of a click marker, each ``(2r+1, 2r+1)`` bool."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    d2 = yy * yy + xx * xx
    outer = d2 <= (radius + 0.5) ** 2
    inner = d2 <= (radius - border + 0.5) ** 2
    return inner, outer & ~inner


def draw_click(out: np.ndarray, x: float, y: float, positive: bool, radius: int) -> None:
    """A filled disc (green positive, red negative) with a white outline, centred on the
    pixel that holds ``(x, y)``."""
    h, w = out.shape[:2]
    border = max(1, radius // 4)
    fill, ring = _disc(radius, border)
    cx, cy = int(np.floor(x)), int(np.floor(y))
    y0, y1 = max(cy - radius, 0), min(cy + radius + 1, h)
    x0, x1 = max(cx - radius, 0), min(cx + radius + 1, w)
    if y1 <= y0 or x1 <= x0:
        return
    sy, sx = y0 - (cy - radius), x0 - (cx - radius)
    win = out[y0:y1, x0:x1]
    stamp = (slice(sy, sy + y1 - y0), slice(sx, sx + x1 - x0))
    win[fill[stamp]] = POSITIVE_COLOR if positive else NEGATIVE_COLOR
    win[ring[stamp]] = OUTLINE_COLOR


def marker_sizes(height: int, width: int) -> tuple[int, int, int]:
    """(click radius, box line width, contour width) in pixels for an image of this size."""
    short = min(height, width)
    return max(3, round(short / 110)), max(1, round(short / 360)), max(1, round(short / 400))


def check_image(image: np.ndarray, where: str) -> np.ndarray:
    """``image`` as an array, or ValueError unless it is ``(H, W, 3)`` uint8 RGB."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"{where} must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    return img


def tint(
    image: np.ndarray,
    masks: Mapping[int, np.ndarray],
    colors: Mapping[int, Color] | None = None,
    alpha: float = 0.5,
    contour_width: int = 0,
) -> np.ndarray:
    """A new image: ``image`` with each ``(H, W)`` bool mask blended in its colour
    (``colors[obj_id]`` or :func:`palette_color`), smallest id on top, and with
    ``contour_width`` > 0 a solid band of that many pixels along each mask's inner edge."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = {i: colors[i] if colors and i in colors else palette_color(i) for i in masks}
    out = image.copy()
    region = union(mask_region(m) for m in masks.values())
    if region is not None:
        tint_region(image, out, masks, rgb, alpha, region)
    if contour_width > 0:
        width = out.shape[1]
        for i in sorted(masks, reverse=True):  # the smallest id's band is painted last
            box, band = contour(masks[i], contour_width)
            paint(out, band_pixels(box, band, width), rgb[i])
    return out


def overlay_contour_width(height: int, width: int) -> int:
    """Width of the contours drawn on exported overlays: 1 to 5 pixels by image size."""
    return max(1, min(5, min(height, width) // 200))


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
    img = check_image(image, "image")
    _, valid = frame_masks(0, masks, img.shape[:2])
    width = overlay_contour_width(*img.shape[:2]) if draw_contours else 0
    return tint(img, valid, colors, alpha, width)

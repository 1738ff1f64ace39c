"""Results people can take away: DAVIS PNG zips, SA-V masklet JSON, overlay MP4s and images.

Results are per-frame: a mapping ``frame_idx -> {obj_id: mask}`` or an iterable of
``(frame_idx, {obj_id: mask})`` pairs, so long videos stream (only RLE strings are kept, for
the JSON). Frame indices are ints >= 0 and unique; object ids are ints > 0. A mask is an
``(H, W)`` bool array (numpy or torch, any device; leading singleton axes such as the
predictor's ``(1, H, W)`` are dropped; non-bool masks are thresholded at ``> 0``, which is the
logit threshold and also right for 0/1 and 0/255 masks). Images are ``(H, W, 3)`` uint8 RGB,
row (y) first. Writers go through a ``<name>.part`` file renamed into place at the end, so a
failure (e.g. a bad mask found mid-stream) leaves no half-written output; results holding no
frames at all are a ValueError rather than an empty file. Colours come from the DAVIS palette,
so an object looks the same in the overlay as in the indexed PNG. Where objects overlap, the
smallest id wins (it is painted last), as in Meta's ``tools/vos_inference.py``.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from PIL import Image

from .masks import (
    FrameMasks,
    MaskLike,
    as_mask,
    check_obj_id,
    encode_rle_counts,
    frame_masks,
    masks_to_coco_rle,
    rle_area,
    rle_to_mask,
)
from .render import DAVIS_PALETTE, Color, check_image, overlay_contour_width, tint

__all__ = [
    "MAX_OBJECT_ID",
    "cutout_png",
    "indexed_png",
    "iter_sav_json",
    "read_sav_json",
    "write_davis_png_zip",
    "write_image_masks_zip",
    "write_overlay_mp4",
    "write_sav_json",
]

# The largest object id a mask picture holds (16-bit PNGs); the JSON formats have no limit.
MAX_OBJECT_ID = 65535

Results: TypeAlias = Mapping[int, FrameMasks] | Iterable[tuple[int, FrameMasks]]
PathLike: TypeAlias = str | os.PathLike[str]


def _check_size(height: int, width: int) -> None:
    if height <= 0 or width <= 0:
        raise ValueError(f"frame size must be positive, got {height}x{width}")


def _iter_results(
    results: Results, height: int, width: int
) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
    """Validated ``(frame_idx, {obj_id: (H, W) bool})``; mappings in frame order."""
    _check_size(height, width)
    items = sorted(results.items()) if isinstance(results, Mapping) else results
    seen: set[int] = set()
    for frame_idx, masks in items:
        f, out = frame_masks(frame_idx, masks, (height, width))
        if f in seen:
            raise ValueError(f"frame {f} appears twice in the results")
        seen.add(f)
        yield f, out
    if not seen:
        raise ValueError("the results hold no frames: nothing to write")


@contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """Yield a ``<name>.part`` path next to ``path``; rename it into place on success and
    delete it on failure."""
    final = Path(path)
    tmp = final.with_name(final.name + ".part")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def indexed_png(
    masks: Mapping[int, np.ndarray], height: int, width: int, palette: list[int] | None = None
) -> bytes:
    """PNG bytes of one picture of the masks: pixel value = object id, 0 = background, the
    smallest id where masks overlap. While every id fits 8 bits (<= 255) it is a mode "P"
    image carrying ``palette`` (768 ints, default: DAVIS); with a larger id (up to
    :data:`MAX_OBJECT_ID`) it is a 16-bit grayscale PNG (Pillow's mode "I;16", no palette),
    whose pixel values are the ids just the same."""
    top = max(masks, default=0)
    if top > MAX_OBJECT_ID:
        raise ValueError(f"object id {top} does not fit a 16-bit PNG (ids <= {MAX_OBJECT_ID})")
    indexed = np.zeros((height, width), dtype=np.uint8 if top <= 255 else np.uint16)
    for oid in sorted(masks, reverse=True):
        indexed[masks[oid]] = oid
    if top > 255:
        return _png_bytes(Image.frombytes("I;16", (width, height), indexed.astype("<u2").tobytes()))
    img = Image.frombytes("P", (width, height), indexed.tobytes())
    img.putpalette(palette if palette is not None else DAVIS_PALETTE.reshape(-1).tolist())
    return _png_bytes(img)


def write_image_masks_zip(masks: Mapping[int, np.ndarray], path: PathLike) -> Path:
    """Zip of one image's masks (``{obj_id: (H, W) bool}``): ``masks.png`` (value = object
    id, the smallest id where objects overlap: indexed with the DAVIS palette, or 16-bit
    grayscale when an id is over 255, see :func:`indexed_png`) and one 8-bit PNG per object
    (``object_<id>.png``, 255 = object); returns the path. ValueError when there is no
    mask."""
    if not masks:
        raise ValueError("no object has a mask: nothing to write")
    height, width = next(iter(masks.values())).shape
    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("masks.png", indexed_png(masks, height, width))
        for oid, m in masks.items():
            zf.writestr(f"object_{oid}.png", _png_bytes(Image.fromarray(m.astype(np.uint8) * 255)))
    return Path(path)


# ---------------------------------------------------------------------------------------------
# DAVIS-style PNG zip
# ---------------------------------------------------------------------------------------------


def write_davis_png_zip(
    results: Results,
    path: PathLike,
    *,
    height: int,
    width: int,
    palette: str | np.ndarray | Sequence[Sequence[int]] = "davis",
) -> Path:
    """Write the results as a zip of PNG masks, one frame at a time; returns the path.

    Entries (``NNNNN`` is the frame index, zero-padded to 5 digits):

    * ``NNNNN.png``: mode "P" indexed PNG, pixel value = object id, 0 = background, carrying
      ``palette`` (``"davis"`` or 256 RGB triplets). Where objects overlap, the smallest id
      wins, as in Meta's ``vos_inference.py``.
    * ``OOO/NNNNN.png`` (``OOO`` the object id zero-padded to 3 digits, as SA-V and
      ``vos_inference.py --per_obj_png_file`` name them): a 1-bit PNG per object for *every*
      frame (all-zero where the object is absent or has not appeared yet), so overlapping
      masks survive exactly and each object folder is a complete per-object mask sequence.

    Tools that read one layout per video folder (e.g. SA-V's ``sav_evaluator.py``) want
    either only the ``NNNNN.png`` files (DAVIS layout) or only the ``OOO`` folders.

    A frame with an object id above 255, which an 8-bit indexed PNG cannot hold, gets a
    16-bit grayscale ``NNNNN.png`` instead (pixel value = object id, no palette; see
    :func:`indexed_png`); the other frames keep the palette. Entries are stored uncompressed
    (PNG data is already compressed).
    """
    if isinstance(palette, str) and palette != "davis":
        raise ValueError(f"palette must be 'davis' or 256 RGB triplets, got {palette!r}")
    pal = DAVIS_PALETTE if isinstance(palette, str) else np.asarray(palette)
    if pal.shape != (256, 3):
        raise ValueError(f"palette must have shape (256, 3), got {pal.shape}")
    pal_list = pal.astype(np.uint8).reshape(-1).tolist()
    _check_size(height, width)
    empty = _png_bytes(Image.fromarray(np.zeros((height, width), dtype=bool)))
    frames_done: list[int] = []
    objects: set[int] = set()
    with atomic_output(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for f, masks in _iter_results(results, height, width):
            zf.writestr(f"{f:05d}.png", indexed_png(masks, height, width, pal_list))
            for oid in sorted(objects | set(masks)):
                if oid not in objects:  # first seen now: back-fill the frames before
                    for g in frames_done:
                        zf.writestr(f"{oid:03d}/{g:05d}.png", empty)
                    objects.add(oid)
                m = masks.get(oid)
                data = _png_bytes(Image.fromarray(m)) if m is not None and m.any() else empty
                zf.writestr(f"{oid:03d}/{f:05d}.png", data)
            frames_done.append(f)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# SA-V masklet JSON
# ---------------------------------------------------------------------------------------------


def write_sav_json(
    results: Results,
    path: PathLike,
    *,
    height: int,
    width: int,
    video_id: str | None = None,
    fps: float | Fraction | None = None,
    frame_count: int | None = None,
    object_names: Mapping[int, str] | None = None,
) -> Path:
    """Write the results as an SA-V style masklet JSON (COCO compressed RLE); returns the path.

    SA-V fields written, with SA-V's meanings and types (checked on Meta's example files):

    * ``video_id`` (default: the file stem); ``video_duration`` = ``frame_count / fps``
      (only with ``fps``); ``video_frame_count`` = ``frame_count`` (default: last frame
      index + 1); ``video_height``, ``video_width``, ``video_resolution`` (floats, as SA-V).
    * ``masklet``: rows = the result frames by increasing index, columns = objects by
      increasing id; an absent object gets the empty-mask RLE. ``masklet_id``, ``masklet_num``.
    * ``masklet_size_abs`` / ``masklet_size_rel``: mean area over the rows where the object
      is visible, in pixels / over H*W; ``masklet_size_bucket``: "small" < 32², "medium"
      < 96², else "large"; ``masklet_visibility_changes``: visible<->invisible flips after
      the first appearance; ``masklet_first_appeared_frame``: the *row* of the first
      non-empty mask (0 if never visible); ``masklet_frame_count``: the number of rows.

    Not written (unknown to us): ``video_environment``, ``video_split``,
    ``masklet_edited_frame_count``, ``masklet_type``, ``masklet_stability_score``. Under
    ``"sam2ui"``: ``format_version`` (1), ``frame_indices`` (the video frame of each row;
    rows may skip frames), ``object_names`` (str(id) -> name) and ``fps``. Only RLE strings
    are held while streaming, not masks.
    """
    rows: dict[int, dict[int, str]] = {}
    row_areas: dict[int, dict[int, int]] = {}
    for f, masks in _iter_results(results, height, width):
        ids = sorted(masks)
        stack = np.stack([masks[i] for i in ids]) if ids else np.zeros((0, height, width), bool)
        rows[f] = {i: r["counts"] for i, r in zip(ids, masks_to_coco_rle(stack))}
        row_areas[f] = {i: int(np.count_nonzero(masks[i])) for i in ids}
    frames = sorted(rows)
    obj_ids = sorted({i for r in rows.values() for i in r})
    empty = encode_rle_counts([height * width])
    size = [height, width]
    masklet = [[{"size": size, "counts": rows[f].get(i, empty)} for i in obj_ids] for f in frames]
    areas = np.array(
        [[row_areas[f].get(i, 0) for i in obj_ids] for f in frames], dtype=np.float64
    ).reshape(len(frames), len(obj_ids))
    visible = areas > 0
    n_visible = visible.sum(0)
    size_abs = np.where(n_visible > 0, areas.sum(0) / np.maximum(n_visible, 1), 0.0)
    first = np.where(visible.any(0), visible.argmax(0), 0)
    flips = visible[1:] != visible[:-1]
    changes = [int(flips[first[j] :, j].sum()) for j in range(len(obj_ids))]
    n_frames = frames[-1] + 1 if frame_count is None else int(frame_count)
    names = {str(check_obj_id(k)): str(v) for k, v in (object_names or {}).items()}
    data: dict[str, Any] = {"video_id": video_id if video_id is not None else Path(path).stem}
    if fps is not None:
        data["video_duration"] = n_frames / float(fps)
    data.update(
        video_frame_count=float(n_frames),
        video_height=float(height),
        video_width=float(width),
        video_resolution=float(height * width),
        masklet=masklet,
        masklet_id=obj_ids,
        masklet_size_rel=(size_abs / (height * width)).tolist(),
        masklet_size_abs=size_abs.tolist(),
        masklet_size_bucket=[
            "small" if a < 32**2 else "medium" if a < 96**2 else "large" for a in size_abs
        ],
        masklet_visibility_changes=changes,
        masklet_first_appeared_frame=first.tolist(),
        masklet_frame_count=[len(frames)] * len(obj_ids),
        masklet_num=len(obj_ids),
        sam2ui={
            "format_version": 1,
            "frame_indices": frames,
            "object_names": names,
            "fps": None if fps is None else float(fps),
        },
    )
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    return Path(path)


def load_sav(path_or_data: PathLike | Mapping[str, Any]) -> tuple[list[int], list[int], list]:
    """``(frame_indices, masklet_ids, masklet)`` of an SA-V JSON (file or loaded dict)."""
    if isinstance(path_or_data, Mapping):
        data = path_or_data
    else:
        data = json.loads(Path(path_or_data).read_text(encoding="utf-8"))
    if "masklet" not in data or "masklet_id" not in data:
        raise ValueError("not an SA-V masklet JSON: 'masklet' or 'masklet_id' is missing")
    masklet, ids = data["masklet"], [int(i) for i in data["masklet_id"]]
    extra = data.get("sam2ui") or {}
    frames = [int(f) for f in extra.get("frame_indices", range(len(masklet)))]
    if len(frames) != len(masklet):
        raise ValueError(f"{len(frames)} frame indices for {len(masklet)} masklet rows")
    for k, row in enumerate(masklet):
        if len(row) != len(ids):
            raise ValueError(f"masklet row {k} has {len(row)} masks for {len(ids)} ids")
    return frames, ids, masklet


def iter_sav_json(
    path_or_data: PathLike | Mapping[str, Any],
) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
    """Stream ``(frame_idx, {obj_id: (H, W) bool})`` from an SA-V JSON, decoding one row at
    a time. Empty masks (absent objects) are left out. Frame indices come from
    ``sam2ui.frame_indices``; files without it (SA-V's own) use the row index (SA-V train
    rows are every 4th video frame). Ids are as stored (SA-V's own start at 0)."""
    frames, ids, masklet = load_sav(path_or_data)
    for f, row in zip(frames, masklet):
        yield f, {i: rle_to_mask(r) for i, r in zip(ids, row) if rle_area(r) > 0}


def read_sav_json(path_or_data: PathLike | Mapping[str, Any]) -> dict[int, dict[int, np.ndarray]]:
    """All masks of an SA-V JSON: ``frame_idx -> {obj_id: (H, W) bool}`` (see
    :func:`iter_sav_json`; a frame where every object is absent maps to ``{}``)."""
    return dict(iter_sav_json(path_or_data))


# ---------------------------------------------------------------------------------------------
# Cut-outs and overlay videos
# ---------------------------------------------------------------------------------------------


def cutout_png(image: np.ndarray, mask: MaskLike) -> np.ndarray:
    """``(H, W, 4)`` uint8 RGBA: the image with alpha = 255 on the mask, 0 elsewhere (save it
    with ``PIL.Image.fromarray(rgba).save("cutout.png")``, which reads it as RGBA)."""
    img = check_image(image, "image")
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
    from .compat.pyav import add_video_stream, open_output, video_frame

    rate = _frame_rate(fps)
    if isinstance(results, Mapping):
        pending: Iterator[tuple[Any, FrameMasks]] = iter(())
    else:
        pending = iter(results)
    nxt = next(pending, None)
    with atomic_output(path) as tmp:
        container = open_output(tmp, format="mp4", options={"movflags": "+faststart"})
        try:
            stream: Any = None
            size = (0, 0)
            band = 0
            last = -1
            for n, frame in enumerate(frames):
                img = check_image(frame, f"frame {n}")
                h, w = img.shape[:2]
                if stream is None:
                    size = (h, w)
                    band = overlay_contour_width(h, w) if draw_contours else 0
                    stream = add_video_stream(
                        container,
                        "libx264",
                        rate,
                        width=w + w % 2,
                        height=h + h % 2,
                        pix_fmt="yuv420p",
                        options={"crf": str(crf), "preset": "veryfast"},
                    )
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
                out = tint(img, valid, colors, alpha, band)
                out = np.pad(out, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                vf = video_frame(out, pts=n, time_base=1 / rate)
                for packet in stream.encode(vf):
                    container.mux(packet)
            if stream is None:
                raise ValueError("no frames to write")
            for packet in stream.encode(None):
                container.mux(packet)
        finally:
            container.close()
    return Path(path)

"""The annotation canvas every front end shows: its ES module and the updates it is sent.

The canvas is one plain ES module, ``static/canvas.js`` (no build step), mounted by the web
app (inside a ``gradio.HTML``) and by the notebook widgets (as an anywidget module). The
browser composites the masks over the picture itself, so an update carries only what changed:

* ``picture``: ``{"src", "width", "height", "key"}`` when the picture (image or frame) is new;
* ``masks``: ``{"<obj_id>": {"rle": "..."}}`` for each object whose mask changed on the
  picture shown, ``null`` for a mask that is gone; ``rle`` holds the lengths of alternating
  runs of off and on pixels in row-major order, starting with off (:func:`mask_runs`), as
  base64 of varints (:func:`pack_runs`);
* ``objects`` (id, name, RGB colour, frames with prompts), ``active``, ``prompts`` (the clicks
  and boxes on the picture shown), ``message``, ``can_undo`` / ``can_redo``; for images
  ``candidates`` (the active object's candidate masks: index, score, shown, thumbnail) when
  they changed; for videos
  ``frame``, ``num_frames``, ``fps``, ``lanes`` (per object, the frame ranges with a mask) and
  ``progress``.

A :class:`CanvasFeed` belongs to one canvas on one page and remembers what that canvas was
sent. The events the canvas sends back are described in ``static/canvas.js``.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

import numpy as np

from sam2ui.core.annotate.image import ImageAnnotator
from sam2ui.core.annotate.video import VideoAnnotator
from sam2ui.core.compat.pillow import image_from_array
from sam2ui.core.render import overlay_image

__all__ = [
    "CanvasFeed",
    "canvas_css",
    "canvas_js",
    "frame_ranges",
    "mask_runs",
    "pack_runs",
    "picture_url",
    "thumbnail_url",
    "unpack_runs",
]

# Pictures up to this many pixels travel as PNG (exact); larger ones as JPEG, which keeps a
# 1080p frame near 300 KB and its encoding near 15 ms.
PNG_MAX_PIXELS = 500_000
JPEG_QUALITY = 90
THUMBNAIL_SIDE = 160  # longest side of a candidate mask's thumbnail, in pixels


@cache
def canvas_js() -> str:
    """The canvas ES module's source: ``static/canvas_parts.js`` (helpers, legend, timeline),
    ``static/canvas.js`` (the canvas) and ``static/canvas_hosts.js`` (the web app's and the
    notebook's hosts), joined in that order."""
    static = resources.files(__package__).joinpath("static")
    parts = ("canvas_parts.js", "canvas.js", "canvas_hosts.js")
    return "\n".join(static.joinpath(name).read_text("utf-8") for name in parts)


@cache
def canvas_css() -> str:
    """The canvas's style sheet."""
    return resources.files(__package__).joinpath("static/canvas.css").read_text("utf-8")


def mask_runs(mask: np.ndarray) -> list[int]:
    """Run lengths of a boolean ``(H, W)`` mask in row-major order, alternating off and on and
    starting with off (a mask whose first pixel is on starts with a 0); they sum to H*W."""
    flat = np.ascontiguousarray(mask, dtype=bool).ravel()
    if flat.size == 0:
        return []
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], edges, [flat.size])))
    if flat[0]:
        runs = np.concatenate(([0], runs))
    return runs.astype(np.int64).tolist()


def pack_runs(runs: list[int] | np.ndarray) -> str:
    """Run lengths as base64 of unsigned LEB128 varints (7 bits a byte, low bits first, the
    high bit set on every byte but a number's last): a 1080p mask's runs are mostly one or two
    bytes each, a third of their JSON size."""
    values = np.asarray(runs, dtype=np.int64)
    if values.size and values.min() < 0:
        raise ValueError("run lengths cannot be negative")
    count = np.ones(values.shape, np.int64)
    for k in range(1, 10):
        count += values >= (1 << (7 * k))
    ends = np.cumsum(count)
    starts = ends - count
    out = np.zeros(int(ends[-1]) if values.size else 0, np.uint8)
    for k in range(int(count.max()) if values.size else 0):
        here = count > k
        byte = (values[here] >> (7 * k)) & 0x7F
        more = (count[here] > k + 1).astype(np.int64) << 7
        out[starts[here] + k] = (byte | more).astype(np.uint8)
    return base64.b64encode(out.tobytes()).decode("ascii")


def unpack_runs(text: str) -> list[int]:
    """The run lengths :func:`pack_runs` packed (what the canvas does in the browser)."""
    runs, value, shift = [], 0, 0
    for byte in base64.b64decode(text):
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
        else:
            runs.append(value)
            value, shift = 0, 0
    return runs


def picture_url(image: np.ndarray) -> str:
    """A ``data:`` URL of an ``(H, W, 3)`` uint8 picture: PNG when small, else JPEG."""
    buffer = io.BytesIO()
    picture = image_from_array(np.ascontiguousarray(image), "RGB")
    if image.shape[0] * image.shape[1] <= PNG_MAX_PIXELS:
        picture.save(buffer, format="PNG", compress_level=1)
        kind = "png"
    else:
        picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
        kind = "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail_url(image: np.ndarray, mask: np.ndarray, color: Iterable[int]) -> str:
    """A small picture of ``mask`` tinted on ``image`` (subsampled by striding, plenty for
    choosing a candidate), as a ``data:`` URL."""
    step = max(1, int(np.ceil(max(image.shape[:2]) / THUMBNAIL_SIDE)))
    small = np.ascontiguousarray(image[::step, ::step])
    tinted = overlay_image(
        small, {1: np.ascontiguousarray(mask[::step, ::step])}, {1: _rgb(color)}, alpha=0.6
    )
    buffer = io.BytesIO()
    image_from_array(tinted, "RGB").save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _rgb(color: Iterable[int]) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in color)
    return r, g, b


def frame_ranges(frames: Iterable[int]) -> list[list[int]]:
    """Sorted frame indices as ``[[first, last], ...]`` ranges of consecutive frames."""
    out: list[list[int]] = []
    for f in sorted(set(frames)):
        if out and f == out[-1][1] + 1:
            out[-1][1] = f
        else:
            out.append([f, f])
    return out


_UNSENT = object()


def _same_candidates(a: tuple[Any, ...] | None, b: tuple[Any, ...] | None) -> bool:
    """Whether two (object, candidate list, chosen) triples match, the list by identity (the
    annotator makes a new list for new candidates; the feed holds the old one)."""
    if a is None or b is None:
        return a is b
    return a[0] == b[0] and a[1] is b[1] and a[2] == b[2]


def _digest(mask: np.ndarray) -> bytes:
    packed = np.packbits(np.ascontiguousarray(mask, dtype=bool))
    return hashlib.blake2b(packed.tobytes(), digest_size=16).digest() + bytes(
        str(mask.shape), "ascii"
    )


class CanvasFeed:
    """What one canvas has been sent: each update carries the picture only when it changed,
    and only the masks that changed since the last update."""

    def __init__(self) -> None:
        self.seq = 0
        self._picture: Any = None
        self._candidates: Any = _UNSENT  # (object, its candidate list, chosen) last sent
        # Per object: the array last looked at (held, so its identity stays its own) and the
        # digest of what was sent; an unchanged array is not hashed again.
        self._masks: dict[int, tuple[np.ndarray, bytes]] = {}

    def reset(self) -> None:
        """Forget what was sent (the next update carries everything)."""
        self._picture = None
        self._candidates = _UNSENT
        self._masks = {}

    def _masks_patch(self, masks: Mapping[int, np.ndarray]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for obj_id, mask in masks.items():
            known = self._masks.get(obj_id)
            if known is not None and known[0] is mask:
                continue
            key = _digest(mask)
            if known is None or known[1] != key:
                out[str(obj_id)] = {"rle": pack_runs(mask_runs(mask))}
            self._masks[obj_id] = (mask, key)
        for obj_id in [i for i in self._masks if i not in masks]:
            out[str(obj_id)] = None
            del self._masks[obj_id]
        return out

    def _update(
        self,
        picture_key: Any,
        get_picture: Callable[[], np.ndarray],
        masks: Mapping[int, np.ndarray],
    ) -> dict[str, Any]:
        """The shared part of an update; the picture is fetched only when it is new."""
        self.seq += 1
        update: dict[str, Any] = {"seq": self.seq}
        if picture_key != self._picture:
            picture = get_picture()
            height, width = picture.shape[:2]
            update["picture"] = {
                "src": picture_url(picture),
                "width": int(width),
                "height": int(height),
                "key": str(picture_key),
            }
            self._picture = picture_key
            self._masks = {}
            update["masks_reset"] = True
        update["masks"] = self._masks_patch(masks)
        return update

    def image_update(
        self, annotator: ImageAnnotator, active: int | None, message: str = ""
    ) -> dict[str, Any]:
        """The update for an image annotator's canvas (``active``: the selected object)."""
        image = annotator.image
        update = self._update(("image", id(image), image.shape), lambda: image, annotator.masks)
        prompts: list[dict[str, Any]] = []
        objects = []
        for obj_id, obj in annotator.objects.items():
            objects.append(_object_row(obj_id, obj.name, obj.color))
            prompts.extend(_prompt_rows(obj_id, obj.clicks, obj.box))
        update.update(
            objects=objects,
            active=active,
            prompts=prompts,
            message=message,
            can_undo=annotator.can_undo,
            can_redo=annotator.can_redo,
        )
        candidates = self._candidates_patch(annotator, active)
        if candidates is not None:
            update["candidates"] = candidates
        return update

    def _candidates_patch(
        self, annotator: ImageAnnotator, active: int | None
    ) -> list[dict[str, Any]] | None:
        """The active object's candidate masks (index, score, shown, thumbnail) when they
        changed since the last update, else None."""
        obj = annotator.objects.get(active) if active is not None else None
        now = None if obj is None else (active, obj.candidates, obj.chosen)
        if self._candidates is not _UNSENT and _same_candidates(self._candidates, now):
            return None
        self._candidates = now
        if obj is None:
            return []
        return [
            {
                "index": i,
                "score": round(float(c.score), 4),
                "shown": i == obj.chosen,
                "src": thumbnail_url(annotator.image, c.mask, obj.color),
            }
            for i, c in enumerate(obj.candidates)
        ]

    def video_update(
        self,
        annotator: VideoAnnotator,
        frame_idx: int,
        active: int | None,
        message: str = "",
        *,
        progress: tuple[int, int] | None = None,
        source_key: Any = None,
        masks: Mapping[int, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        """The update for a video annotator's canvas showing frame ``frame_idx`` (``masks``:
        that frame's masks when the caller has them already; the frame is decoded only when
        the canvas does not show it yet)."""
        update = self._update(
            ("frame", source_key, frame_idx),
            lambda: annotator.frame(frame_idx),
            annotator.masks(frame_idx) if masks is None else masks,
        )
        objects, prompts, lanes = [], [], {}
        for obj_id, obj in annotator.objects.items():
            objects.append(_object_row(obj_id, obj.name, obj.color, sorted(obj.prompts)))
            here = obj.prompts.get(frame_idx)
            if here is not None:
                prompts.extend(_prompt_rows(obj_id, here.clicks, here.box))
            lanes[str(obj_id)] = frame_ranges(annotator.mask_frames(obj_id))
        update.update(
            frame=int(frame_idx),
            num_frames=annotator.num_frames,
            fps=annotator.fps,
            objects=objects,
            active=active,
            prompts=prompts,
            lanes=lanes,
            progress=None if progress is None else {"done": progress[0], "total": progress[1]},
            message=message,
            can_undo=annotator.can_undo,
            can_redo=annotator.can_redo,
        )
        return update


def _object_row(
    obj_id: int, name: str, color: Iterable[int], frames: list[int] | None = None
) -> dict[str, Any]:
    row: dict[str, Any] = {"id": int(obj_id), "name": name, "color": [int(c) for c in color]}
    if frames is not None:
        row["frames"] = [int(f) for f in frames]
    return row


def _prompt_rows(obj_id: int, clicks: Iterable[Any], box: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [
        {"obj": int(obj_id), "index": i, "x": float(c.x), "y": float(c.y), "positive": c.positive}
        for i, c in enumerate(clicks)
    ]
    if box is not None:
        rows.append({"obj": int(obj_id), "box": [float(v) for v in box]})
    return rows

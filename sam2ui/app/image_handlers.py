"""The image tab's actions as plain functions of (session id, arguments) -> view.

Each browser tab's :class:`~sam2ui.core.ImageAnnotator` lives in the shared
:class:`~sam2ui.core.SessionManager` as an :class:`ImageWork`; every action holds the
session while it runs and takes a model slot only around model calls. Coordinates are pixels
of the uploaded image, x right, y down; boxes are XYXY. ``obj_id`` ``None`` or 0 means "the
selected object" (a new one when there is none), so an API client can click right after
uploading.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sam2ui.core import (
    CanvasFeed,
    ImageAnnotator,
    ImageReadError,
    ImageTooLargeError,
    MaskGenerationCancelled,
    SessionNotFound,
    image_from_array,
    load_image,
    make_folder,
    mask_to_coco_rle,
)

from .context import AppContext, UserError, check_inside, chosen_object, target_object
from .uploads import is_path, regular_file
from .views import ObjectRow, object_rows, thumbnail
from .zerogpu import on_zero_gpu

__all__ = ["ImageHandlers", "ImageView", "ImageWork"]

KIND = "image"


@dataclass
class ImageWork:
    """One tab's image session: the annotator, the selected object and a folder for its
    downloads (removed on close)."""

    annotator: ImageAnnotator
    selected: int | None = None
    feed: CanvasFeed | None = None  # set when a browser canvas shows this session
    # Each mask's pixel count, keyed by the array itself (held here, so never confused with a
    # new one).
    areas: dict[int, tuple[np.ndarray, int]] = field(default_factory=dict)
    # Each mask's COCO RLE for API clients, keyed the same way.
    rles: dict[int, tuple[np.ndarray, dict[str, Any]]] = field(default_factory=dict)
    folder: Path = field(default_factory=lambda: make_folder("image"))

    def close(self) -> None:
        self.annotator.close()
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class ImageView:
    """What the image tab shows after an action.

    ``overlay`` is the ``(H, W, 3)`` uint8 image with masks, prompts and the selected object's
    contour, rendered for API clients; a session shown on the browser canvas gets ``canvas``,
    the canvas's update, instead. ``candidates``: the selected object's candidate masks as
    ``(thumbnail, caption)``.
    """

    overlay: np.ndarray | None
    objects: list[ObjectRow]
    selected: int | None
    candidates: list[tuple[np.ndarray, str]] | None  # None for the canvas, which shows its own
    message: str = ""
    canvas: dict[str, Any] | None = None
    # API clients: each object's mask as compressed COCO RLE (``counts``, ``size`` as
    # (height, width)), keyed by the object id as a string; None for the canvas.
    masks: dict[str, dict[str, Any]] | None = None


def _coco_masks(work: ImageWork) -> dict[str, dict[str, Any]]:
    """Every object's mask as COCO RLE, each computed once per mask (kept in ``work``)."""
    out: dict[str, dict[str, Any]] = {}
    for obj_id, obj in work.annotator.objects.items():
        if obj.mask is None:
            continue
        known = work.rles.get(obj_id)
        if known is None or known[0] is not obj.mask:
            rle = mask_to_coco_rle(obj.mask)
            counts = rle["counts"]
            rle = {"size": [int(v) for v in rle["size"]], "counts": _text(counts)}
            known = work.rles[obj_id] = (obj.mask, rle)
        out[str(obj_id)] = known[1]
    for gone in [i for i in work.rles if i not in work.annotator.objects]:
        del work.rles[gone]
    return out


def _text(counts: Any) -> Any:
    return counts.decode("ascii") if isinstance(counts, bytes) else counts


def _as_rgb(image: Any, max_pixels: int | None = None) -> np.ndarray:
    """``(H, W, 3)`` uint8 from an upload (array of any channel count, PIL image or path),
    upright, any file mode (16-bit, CMYK, palette, ...), under the pixel limit."""
    if image is None:
        raise UserError("Upload an image first.")
    if is_path(image):
        image = regular_file(image, "an image")
    try:
        return load_image(image, max_pixels=max_pixels)
    except ImageTooLargeError as exc:
        size = f"{exc.size[0]} x {exc.size[1]} pixels, " if exc.size else ""
        raise UserError(
            f"This image is {size}{exc.pixels / 1e6:.1f} MP; this app accepts images up to "
            f"{exc.limit / 1e6:g} MP (--max-image-mp). Scale it down and upload it again."
        ) from None
    except (ImageReadError, FileNotFoundError) as exc:
        raise UserError(f"Cannot use this image: {exc}.") from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"Expected an RGB image: {exc}.") from None


def _prompt_state(obj: Any) -> tuple[list[Any], int | None]:
    """What an undo of the object changes: its prompts and its chosen candidate."""
    return list(obj.prompts), obj.chosen


class ImageHandlers:
    """The image tab's actions on an :class:`~sam2ui.app.context.AppContext`."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    # ------------------------------------------------------------------ view
    def _view(self, work: ImageWork, message: str = "") -> ImageView:
        ann = work.annotator
        if work.selected is not None and work.selected not in ann.objects:
            work.selected = None
        details = {}
        for obj_id, obj in ann.objects.items():
            if obj.mask is None:
                details[obj_id] = "no mask yet"
                continue
            known = work.areas.get(obj_id)
            if known is None or known[0] is not obj.mask:
                known = work.areas[obj_id] = (obj.mask, int(obj.mask.sum()))
            score = "" if obj.score is None else f", IoU {obj.score:.2f}"
            details[obj_id] = f"{known[1]} px{score}"
        for gone in [i for i in work.areas if i not in ann.objects]:
            del work.areas[gone]
        candidates: list[tuple[np.ndarray, str]] | None = None  # the canvas shows its own
        if work.feed is None:
            candidates = []
            chosen = ann.objects.get(work.selected) if work.selected is not None else None
            for i, cand in enumerate(chosen.candidates if chosen is not None else []):
                assert chosen is not None
                mark = " (shown)" if i == chosen.chosen else ""
                picture = thumbnail(ann.image, cand.mask, chosen.color)
                candidates.append((picture, f"{i}: {cand.score:.3f}{mark}"))
        rows = object_rows(ann.objects, details)
        if not message and work.selected is not None:
            obj = ann.objects[work.selected]
            clicks = len(obj.clicks)
            prompts = f"{clicks} point{'s' * (clicks != 1)}" + (", a box" if obj.box else "")
            message = f"Object {work.selected} ({prompts}): {details[work.selected]}."
        if work.feed is not None:
            update = work.feed.image_update(ann, work.selected, message)
            return ImageView(None, rows, work.selected, candidates, message, update)
        overlay = ann.render(selected=work.selected)
        masks = _coco_masks(work)
        return ImageView(overlay, rows, work.selected, candidates, message, masks=masks)

    # ------------------------------------------------------------------ actions
    def upload(
        self,
        session_id: str | None,
        image: Any,
        owner: str | None = None,
        *,
        canvas: bool = False,
    ) -> tuple[str, ImageView]:
        """Start annotating ``image`` (array, PIL image or path); reuses the tab's session
        when it is still live. ``canvas``: the session is shown on the browser canvas (views
        carry canvas updates instead of rendered overlays). Returns the session id and the
        view."""
        rgb = _as_rgb(image, int(self.ctx.config.max_image_mp * 1e6))
        height, width = rgb.shape[:2]
        hello = (
            f"{width} x {height} image. Click on an object (Shift+click or right click: "
            "background), drag a box, click a point again to remove it."
        )
        if session_id and session_id in self.ctx.sessions:
            with self.ctx.use(session_id, KIND) as work:
                work.annotator, _ = self.ctx.call_heavy(
                    ImageAnnotator.set_image, work.annotator, rgb
                )
                work.selected = None
                if canvas and work.feed is None:
                    work.feed = CanvasFeed()
                return session_id, self._view(work, hello)
        self.ctx.admit()  # before the embedding: a full server refuses at once
        config = self.ctx.config
        annotator = ImageAnnotator(
            self.ctx.image_predictor(),
            max_prompts=config.max_prompts,
            max_objects=config.max_objects,
        )
        try:
            annotator, _ = self.ctx.call_heavy(ImageAnnotator.set_image, annotator, rgb)
        except BaseException:
            annotator.close()
            raise
        work = ImageWork(annotator, feed=CanvasFeed() if canvas else None)
        new_id = self.ctx.create_session(work, KIND, owner)
        with self.ctx.use(new_id, KIND) as work:
            return new_id, self._view(work, hello)

    def sync(self, session_id: str | None) -> ImageView:
        """Everything again for the canvas (after it missed an update or reloaded)."""
        with self.ctx.use(session_id, KIND) as work:
            if work.feed is not None:
                work.feed.reset()
            return self._view(work)

    def show(self, session_id: str | None) -> ImageView:
        with self.ctx.use(session_id, KIND) as work:
            return self._view(work)

    def add_object(self, session_id: str | None, name: str | None = None) -> ImageView:
        with self.ctx.use(session_id, KIND) as work:
            work.selected = work.annotator.add_object(name.strip() if name else None)
            return self._view(work, "New object: click on it.")

    def select_object(self, session_id: str | None, obj_id: int | None) -> ImageView:
        with self.ctx.use(session_id, KIND) as work:
            if obj_id:
                target_object(work, obj_id)
            return self._view(work)

    def rename_object(self, session_id: str | None, obj_id: int | None, name: str) -> ImageView:
        if not name or not name.strip():
            raise UserError("Type a name first.")
        with self.ctx.use(session_id, KIND) as work:
            if not obj_id and work.selected is None:
                raise UserError("Select an object to rename.")
            target = target_object(work, obj_id)
            work.annotator.rename_object(target, name.strip())
            return self._view(work, f"Renamed object {target} to {name.strip()!r}.")

    def remove_object(self, session_id: str | None, obj_id: int | None) -> ImageView:
        with self.ctx.use(session_id, KIND) as work:
            target = chosen_object(work, obj_id, "remove")
            work.annotator.remove_object(target)
            remaining = list(work.annotator.objects)
            work.selected = remaining[-1] if remaining else None
            return self._view(work, f"Removed object {target}.")

    def click(
        self,
        session_id: str | None,
        obj_id: int | None,
        x: float,
        y: float,
        positive: bool = True,
    ) -> ImageView:
        """A point prompt at ``(x, y)`` image pixels for the object (positive or background)."""
        with self.ctx.use(session_id, KIND, action=True) as work:
            check_inside(work.annotator.size, x, y, "image")
            target = target_object(work, obj_id)
            work.annotator, _ = self.ctx.call(
                ImageAnnotator.add_click,
                work.annotator,
                target,
                float(x),
                float(y),
                bool(positive),
            )
            return self._view(work)

    def box(
        self,
        session_id: str | None,
        obj_id: int | None,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
    ) -> ImageView:
        """Set the object's box (corners in any order, image pixels)."""
        with self.ctx.use(session_id, KIND, action=True) as work:
            check_inside(work.annotator.size, x0, y0, "image")
            check_inside(work.annotator.size, x1, y1, "image")
            target = target_object(work, obj_id)
            work.annotator, _ = self.ctx.call(
                ImageAnnotator.set_box,
                work.annotator,
                target,
                float(x0),
                float(y0),
                float(x1),
                float(y1),
            )
            return self._view(work)

    def undo(self, session_id: str | None, obj_id: int | None = None) -> ImageView:
        with self.ctx.use(session_id, KIND, action=True) as work:
            if not obj_id and work.selected is None:
                return self._view(work, "Nothing to undo.")
            target = target_object(work, obj_id)
            before = _prompt_state(work.annotator.objects[target])
            work.annotator, _ = self.ctx.call(ImageAnnotator.undo, work.annotator, target)
            if _prompt_state(work.annotator.objects[target]) == before:
                return self._view(work, f"Nothing to undo for object {target}.")
            return self._view(work, f"Undid the last change of object {target}.")

    def undo_last(self, session_id: str | None) -> ImageView:
        """Take back the last prompt change, whichever object it was."""
        with self.ctx.use(session_id, KIND, action=True) as work:
            target = work.annotator.last_changed
            if target is None:
                return self._view(work, "Nothing to undo.")
            work.annotator, _ = self.ctx.call(ImageAnnotator.undo, work.annotator, target)
            work.selected = target
            return self._view(work, f"Undid the last change of object {target}.")

    def redo(self, session_id: str | None) -> ImageView:
        """Apply again what the last undo took back."""
        with self.ctx.use(session_id, KIND, action=True) as work:
            if not work.annotator.can_redo:
                return self._view(work, "Nothing to redo.")
            work.annotator, obj = self.ctx.call(ImageAnnotator.redo, work.annotator)
            if obj is not None:
                work.selected = obj.obj_id
            return self._view(work, f"Redid a change of object {work.selected}.")

    def remove_point(self, session_id: str | None, obj_id: int, index: int) -> ImageView:
        """Remove one click of an object (its ``index``-th, 0-based)."""
        with self.ctx.use(session_id, KIND, action=True) as work:
            target = target_object(work, obj_id)
            work.annotator, _ = self.ctx.call(
                ImageAnnotator.remove_click, work.annotator, target, int(index)
            )
            work.selected = target
            return self._view(work, f"Removed a point of object {target}.")

    def clear_object(self, session_id: str | None, obj_id: int | None = None) -> ImageView:
        with self.ctx.use(session_id, KIND, action=True) as work:
            if not obj_id and work.selected is None:
                return self._view(work, "Select an object to clear.")
            target = target_object(work, obj_id)
            work.annotator.clear_object(target)
            return self._view(work, f"Cleared object {target}.")

    def choose_candidate(self, session_id: str | None, obj_id: int | None, index: int) -> ImageView:
        with self.ctx.use(session_id, KIND, action=True) as work:
            if not obj_id and work.selected is None:
                raise UserError("Select an object first.")
            target = target_object(work, obj_id)
            count = len(work.annotator.objects[target].candidates)
            if not 0 <= int(index) < count:
                raise UserError(
                    f"Object {target} has {count} candidate masks; pick 0 to {count - 1}."
                    if count
                    else f"Object {target} has no candidate masks (click once on it first)."
                )
            work.annotator.choose_candidate(target, int(index))
            return self._view(work, f"Object {target} shows candidate mask {int(index)}.")

    def segment_everything(
        self,
        session_id: str | None,
        points_per_side: int = 32,
        progress: Callable[[int, int], None] | None = None,
    ) -> ImageView:
        """Automatic masks: one new object per mask found. ``progress(done, total)`` gets the
        grid points prompted so far; :meth:`cancel` stops the run between batches of points
        and keeps the objects found until then."""
        if not 1 <= int(points_per_side) <= 64:
            raise UserError(f"points_per_side must be 1 to 64, got {points_per_side}.")
        with self.ctx.use(session_id, KIND) as work:
            assert session_id is not None  # checked by use()
            if on_zero_gpu():  # a GPU worker is another process: no callbacks into it
                work.annotator, new_ids = self.ctx.call_heavy(
                    ImageAnnotator.segment_everything,
                    work.annotator,
                    points_per_side=int(points_per_side),
                )
                msg = f"Found {len(new_ids)} objects."
            else:
                with self.ctx.sessions.cancellable(session_id) as stop:
                    try:
                        work.annotator, new_ids = self.ctx.call_heavy(
                            ImageAnnotator.segment_everything,
                            work.annotator,
                            progress=progress,
                            should_stop=stop.is_set,
                            points_per_side=int(points_per_side),
                        )
                        msg = f"Found {len(new_ids)} objects."
                    except MaskGenerationCancelled as stopped:
                        new_ids = stopped.object_ids
                        msg = (
                            f"Stopped after {stopped.points_done} of {stopped.points_total} "
                            f"points; kept the {len(new_ids)} objects found so far."
                        )
            if new_ids:
                work.selected = new_ids[0]
            return self._view(work, msg)

    def cancel(self, session_id: str | None) -> str:
        """Ask a running "segment everything" of this session to stop after its current
        batch of points."""
        if session_id:
            with suppress(SessionNotFound):
                if self.ctx.sessions.cancel(session_id):
                    return "Stopping after the current batch of points…"
        return "Nothing is running."

    def export(self, session_id: str | None) -> list[Path]:
        """Write the downloads: a zip of PNG masks, COCO-RLE JSON and, for the selected
        object (else the first with a mask), a transparent cut-out PNG. Returns their paths."""
        with self.ctx.use(session_id, KIND) as work:
            ann = work.annotator
            masks = ann.masks
            if not masks:
                raise UserError("No masks yet: click on an object first.")
            folder = work.folder
            paths = [Path(str(ann.write_masks_zip(folder / "masks.zip")))]
            coco = folder / "masks_coco.json"
            coco.write_text(json.dumps(ann.coco_json()), encoding="utf-8")
            paths.append(coco)
            obj_id = work.selected if work.selected in masks else next(iter(masks))
            cutout = folder / f"cutout_object_{obj_id}.png"
            image_from_array(ann.cutout(obj_id), "RGBA").save(cutout)
            paths.append(cutout)
            return paths

    def close(self, session_id: str | None) -> None:
        self.ctx.close_session(session_id)

"""Interactive annotation state shared by the Gradio app and the notebook widgets.

The front ends turn mouse events into calls on an :class:`ImageAnnotator` or a
:class:`~sam2ui.core.annotate.video.VideoAnnotator`; everything about objects, prompts,
undo, candidate masks, rendering and exports lives here, once, so both front ends behave the
same. Coordinates are pixels of the original image or video frame: x to the right, y down,
floats allowed; boxes are XYXY (top-left corner first).

An annotator is a plain object: put it in a
:class:`~sam2ui.core.serving.sessions.SessionManager` as a session's state (its ``close()``
is called when the session ends).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sam2ui.core.exports import PathLike, cutout_png, write_image_masks_zip
from sam2ui.core.masks import PackedMask, mask_to_coco_rle, rle_area, rle_to_bbox
from sam2ui.core.render import (
    Color,
    TintCache,
    band_pixels,
    contour,
    draw_box,
    draw_click,
    marker_sizes,
    mask_region,
    paint,
)
from sam2ui.core.transforms import image_to_array, to_uint8_rgb

from .objects import (
    DEFAULT_MAX_OBJECTS,
    DEFAULT_MAX_PROMPTS,
    ObjectTable,
    SharedEmbedding,
    check_box,
    check_click,
    check_limit,
    check_prompt_room,
)
from .prompts import Box, Click, Prompt

if TYPE_CHECKING:
    from sam2ui.core.image.predictor import SAM2ImagePredictor

__all__ = [
    "AnnotatedObject",
    "Box",
    "Candidate",
    "Click",
    "ImageAnnotator",
    "Prompt",
]


@dataclass(frozen=True)
class Candidate:
    """One of the decoder's candidate masks for an object: ``(H, W)`` bool and predicted IoU."""

    mask: np.ndarray
    score: float


@dataclass
class AnnotatedObject:
    """One object of an image annotation.

    ``prompts`` holds clicks and at most one box in the order they were given (undo pops the
    last one); ``clicks`` and ``box`` are the same prompts split by kind. ``mask`` is the
    current ``(H, W)`` bool mask (``None`` before any prompt); ``candidates`` the three masks
    of the last multimask prediction (empty when the prompt was unambiguous or the object came
    from "segment everything"), ``chosen`` the index of the one shown in ``mask``. Read these
    fields; change them only through the :class:`ImageAnnotator`.
    """

    obj_id: int
    name: str
    color: Color
    clicks: list[Click] = field(default_factory=list)
    box: Box | None = None
    mask: np.ndarray | None = None
    score: float | None = None
    candidates: list[Candidate] = field(default_factory=list)
    chosen: int | None = None
    prompts: list[Prompt] = field(default_factory=list)


def split_prompts(prompts: list[Prompt]) -> tuple[list[Click], Box | None]:
    clicks = [p for p in prompts if isinstance(p, Click)]
    boxes = [p for p in prompts if not isinstance(p, Click)]
    return clicks, (boxes[-1] if boxes else None)


@dataclass
class _Undo:
    """What an undo goes back to: the object's prompts and the candidate shown then."""

    prompts: list[Prompt]
    chosen: int | None


class ImageAnnotator(ObjectTable[AnnotatedObject]):
    """Objects, prompts and masks on one image, computed with a
    :class:`~sam2ui.core.image.predictor.SAM2ImagePredictor`.

    Args:
        predictor: the predictor to use (this annotator calls its ``set_image``; give each
            annotator its own predictor, e.g. from :func:`sam2ui.core.image_predictor`, which
            shares the model).
        multimask: when True (default), a single click predicts three candidates and shows the
            best; with more prompts one mask is predicted (the reference's advice).
        max_prompts: most prompts (clicks and box) of one object (``None``: no limit).
        max_objects: most objects at once (``None``: no limit).

    Every prompt change predicts again from all of the object's prompts (about one decoder
    run; the image embedding is computed once, in :meth:`set_image`). Unknown object ids and
    bad coordinates raise ValueError, and so does a prompt or object past the limits
    (:class:`~sam2ui.core.annotate.objects.LimitReached`, saying what to do); calls that need
    an image before :meth:`set_image` (or after :meth:`close`) raise RuntimeError.
    """

    def __init__(
        self,
        predictor: SAM2ImagePredictor,
        *,
        multimask: bool = True,
        max_prompts: int | None = DEFAULT_MAX_PROMPTS,
        max_objects: int | None = DEFAULT_MAX_OBJECTS,
    ) -> None:
        for name in ("set_image", "predict", "reset_predictor"):
            if not callable(getattr(predictor, name, None)):
                raise TypeError(
                    f"predictor must be a SAM2ImagePredictor, got {type(predictor).__name__}"
                )
        super().__init__(max_objects)
        self.predictor = predictor
        self.multimask = bool(multimask)
        self.max_prompts = check_limit("max_prompts", max_prompts)
        self._image: np.ndarray | None = None
        self._undo: dict[int, list[_Undo]] = {}
        self._history: list[int] = []  # the object of each undoable change, oldest first
        self._redo: list[tuple[int, _Undo]] = []  # what undo took back, newest last
        # Masks of "segment everything" objects: what undoing their last click goes back to,
        # bit-packed (kept beside the object's current mask for as long as it has prompts).
        self._auto: dict[int, tuple[PackedMask, float | None]] = {}
        self._tint = TintCache()
        self._contours: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ image
    def set_image(self, image: object) -> None:
        """Compute the embedding of ``image`` (anything ``SAM2ImagePredictor.set_image``
        accepts) and forget every object. ``self.image`` becomes the ``(H, W, 3)`` uint8 RGB."""
        rgb = to_uint8_rgb(image_to_array(image))
        # The model sees exactly the pixels that are shown (the same for uint8 input).
        self.predictor.set_image(rgb)
        rgb.flags.writeable = False
        self._image = rgb
        self._objects.clear()
        self._undo.clear()
        self._history.clear()
        self._redo.clear()
        self._auto.clear()
        self._tint.clear()
        self._contours.clear()

    @property
    def image(self) -> np.ndarray:
        """The current ``(H, W, 3)`` uint8 RGB image (read-only); RuntimeError before
        ``set_image``."""
        if self._image is None:
            raise RuntimeError("no image is set: call set_image(...) first")
        return self._image

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the image."""
        h, w = self.image.shape[:2]
        return h, w

    # ------------------------------------------------------------------ objects
    def add_object(self, name: str | None = None) -> int:
        """A new empty object; ids are 1, 2, ... never reused; default name "object N"."""
        return self._new_object(name, AnnotatedObject)

    def remove_object(self, obj_id: int) -> None:
        """KeyError-free ValueError naming the id when it does not exist (for every method)."""
        self._obj(obj_id)
        del self._objects[obj_id]
        self._forget_history(obj_id)
        self._auto.pop(obj_id, None)
        self._contours.pop(obj_id, None)

    # ------------------------------------------------------------------ prompts
    def add_click(self, obj_id: int, x: float, y: float, positive: bool = True) -> AnnotatedObject:
        """Add a click to ``obj_id`` and predict its mask again; returns the object."""
        obj = self._obj(obj_id)
        h, w = self.size
        fx, fy = check_click(x, y, h, w)
        check_prompt_room(obj_id, len(obj.prompts), self.max_prompts)
        return self._change(obj, [*obj.prompts, Click(fx, fy, bool(positive))])

    def set_box(self, obj_id: int, x0: float, y0: float, x1: float, y1: float) -> AnnotatedObject:
        """Set (replace) the object's box, corners in any order (clipped to the image), and
        predict again. Undo brings back the box it replaced."""
        obj = self._obj(obj_id)
        h, w = self.size
        box = check_box(x0, y0, x1, y1, h, w)
        if obj.box is None:  # a new prompt; a replaced box is not
            check_prompt_room(obj_id, len(obj.prompts), self.max_prompts)
        return self._change(obj, [p for p in obj.prompts if isinstance(p, Click)] + [box])

    def remove_click(self, obj_id: int, index: int) -> AnnotatedObject:
        """Remove the object's click number ``index`` (0-based, in the order given) and
        predict again; undo brings it back."""
        obj = self._obj(obj_id)
        clicks = [i for i, p in enumerate(obj.prompts) if isinstance(p, Click)]
        if isinstance(index, bool) or not 0 <= int(index) < len(clicks):
            raise ValueError(f"object {obj_id} has {len(clicks)} clicks; no click {index!r}")
        drop = clicks[int(index)]
        return self._change(obj, [p for i, p in enumerate(obj.prompts) if i != drop])

    def _change(self, obj: AnnotatedObject, prompts: list[Prompt]) -> AnnotatedObject:
        self._redo.clear()  # a new edit starts a new branch: nothing to redo
        return self._edit(obj, prompts)

    def _edit(
        self, obj: AnnotatedObject, prompts: list[Prompt], chosen: int | None = None
    ) -> AnnotatedObject:
        if not obj.prompts and obj.mask is not None and obj.obj_id not in self._auto:
            # The first click on an automatic mask: keep that mask for undo.
            self._auto[obj.obj_id] = (PackedMask.pack(obj.mask), obj.score)
        before = _Undo(list(obj.prompts), obj.chosen)
        self._predict(obj, prompts, chosen)
        self._undo.setdefault(obj.obj_id, []).append(before)
        self._history.append(obj.obj_id)
        return obj

    @property
    def can_undo(self) -> bool:
        return bool(self._history)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def last_changed(self) -> int | None:
        """The object an undo without an id would change (None: nothing to undo)."""
        return self._history[-1] if self._history else None

    def undo(self, obj_id: int | None = None) -> AnnotatedObject | None:
        """Take back the object's last prompt change (click, box, removed click) and predict
        again (no prompt left: no mask, or the mask "segment everything" gave it). Without
        ``obj_id``, the last change of any object. Nothing to undo is not an error (returns
        the object, or None without an id)."""
        if obj_id is None:
            if not self._history:
                return None
            obj_id = self._history[-1]
        obj = self._obj(obj_id)
        stack = self._undo.get(obj_id)
        if not stack:
            return obj
        state = stack.pop()
        self._redo.append((obj_id, _Undo(list(obj.prompts), obj.chosen)))
        last = len(self._history) - 1 - self._history[::-1].index(obj_id)
        del self._history[last]
        self._predict(obj, state.prompts, state.chosen)
        return obj

    def redo(self, obj_id: int | None = None) -> AnnotatedObject | None:
        """Apply again what the last :meth:`undo` (of ``obj_id``, or of any object) took back;
        None when there is nothing to redo."""
        picks = [i for i, (oid, _) in enumerate(self._redo) if obj_id in (None, oid)]
        if not picks:
            return None
        oid, state = self._redo.pop(picks[-1])
        return self._edit(self._obj(oid), state.prompts, state.chosen)

    def _forget_history(self, obj_id: int) -> None:
        self._undo.pop(obj_id, None)
        self._history = [i for i in self._history if i != obj_id]
        self._redo = [(i, s) for i, s in self._redo if i != obj_id]

    def clear_object(self, obj_id: int) -> AnnotatedObject:
        """Remove every prompt and the mask of the object; the object stays."""
        obj = self._obj(obj_id)
        self._forget_history(obj_id)
        self._auto.pop(obj_id, None)
        self._set_result(obj, [], None, None, [], None)
        return obj

    def choose_candidate(self, obj_id: int, index: int) -> AnnotatedObject:
        """Show candidate ``index`` (0-2) as the object's mask."""
        obj = self._obj(obj_id)
        if not obj.candidates:
            raise ValueError(
                f"object {obj_id} has no candidate masks (only a single click gives three)"
            )
        if isinstance(index, bool) or not 0 <= int(index) < len(obj.candidates):
            raise ValueError(f"candidate index must be 0..{len(obj.candidates) - 1}, got {index!r}")
        cand = obj.candidates[int(index)]
        obj.mask, obj.score, obj.chosen = cand.mask, cand.score, int(index)
        return obj

    def _predict(
        self, obj: AnnotatedObject, prompts: list[Prompt], chosen: int | None = None
    ) -> None:
        """Predict ``obj``'s mask from ``prompts`` (all of them, no previous logits) and
        store it; ``chosen`` picks the candidate shown (default: the best)."""
        clicks, box = split_prompts(prompts)
        if not clicks and box is None:
            packed, score = self._auto.get(obj.obj_id, (None, None))
            mask = None if packed is None else packed.unpack()
            self._set_result(obj, prompts, mask, score, [], None)
            return
        multi = self.multimask and len(clicks) == 1 and box is None
        coords = np.array([[c.x, c.y] for c in clicks], dtype=np.float32) if clicks else None
        labels = np.array([int(c.positive) for c in clicks], dtype=np.int32) if clicks else None
        masks, scores, _ = self.predictor.predict(
            point_coords=coords,
            point_labels=labels,
            box=None if box is None else np.array(box, dtype=np.float32),
            multimask_output=multi,
        )
        if multi:
            cands = [Candidate(masks[i], float(scores[i])) for i in range(len(masks))]
            pick = int(np.argmax(scores)) if chosen is None else chosen
            self._set_result(obj, prompts, cands[pick].mask, cands[pick].score, cands, pick)
        else:
            self._set_result(obj, prompts, masks[0], float(scores[0]), [], None)

    @staticmethod
    def _set_result(
        obj: AnnotatedObject,
        prompts: list[Prompt],
        mask: np.ndarray | None,
        score: float | None,
        candidates: list[Candidate],
        chosen: int | None,
    ) -> None:
        obj.prompts = list(prompts)
        obj.clicks, obj.box = split_prompts(obj.prompts)
        obj.mask, obj.score, obj.candidates, obj.chosen = mask, score, candidates, chosen

    def segment_everything(
        self,
        progress: Callable[[int, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        **generator_kwargs: Any,
    ) -> list[int]:
        """Run the automatic mask generator (``generator_kwargs`` go to
        :class:`~sam2ui.core.image.mask_generator.SAM2AutomaticMaskGenerator`) and add one
        object per mask, largest first, as many as ``max_objects`` leaves room for; returns
        the new ids. The image embedding of
        :meth:`set_image` is reused.

        ``progress(done, total)`` reports the grid points prompted so far; when
        ``should_stop()`` answers true the run ends after the current batch, the masks found
        so far are added all the same, and the generator's
        :class:`~sam2ui.core.image.mask_generator.MaskGenerationCancelled` is raised with
        their ids in ``object_ids``."""
        from sam2ui.core.image.mask_generator import (
            MaskGenerationCancelled,
            SAM2AutomaticMaskGenerator,
        )

        image = self.image
        mode = generator_kwargs.pop("output_mode", "binary_mask")
        if mode != "binary_mask":
            raise ValueError(f"segment_everything needs output_mode='binary_mask', got {mode!r}")
        shared: Any = SharedEmbedding(self.predictor, image)
        generator = SAM2AutomaticMaskGenerator(shared, **generator_kwargs)
        try:
            records = generator.generate(image, progress=progress, should_stop=should_stop)
        except MaskGenerationCancelled as stopped:
            stopped.object_ids = self._add_automatic(stopped.records)
            raise
        return self._add_automatic(records)

    def _add_automatic(self, records: list[dict[str, Any]]) -> list[int]:
        """One new object per generator record, largest first; their ids."""
        records = sorted(records, key=lambda r: -int(r["area"]))  # ties keep the given order
        room = self.object_room
        records = records if room is None else records[:room]
        ids = []
        for rec in records:
            obj_id = self.add_object()
            obj = self._objects[obj_id]
            obj.mask, obj.score = rec["segmentation"], float(rec["predicted_iou"])
            ids.append(obj_id)
        return ids

    # ------------------------------------------------------------------ results
    @property
    def masks(self) -> dict[int, np.ndarray]:
        """``{obj_id: (H, W) bool}`` of the objects that have a mask."""
        return {i: o.mask for i, o in self._objects.items() if o.mask is not None}

    def render(self, selected: int | None = None, *, alpha: float = 0.5) -> np.ndarray:
        """``(H, W, 3)`` uint8: the image with every mask tinted in its object's colour, the
        clicks drawn (green positive, red negative, white outline) and boxes outlined in the
        object's colour; ``selected`` gets a contour in its colour. A new array each call;
        only the regions whose masks changed since the last call are tinted again."""
        image = self.image
        if selected is not None:
            self._obj(selected)
        objs = self._objects
        colors = {i: o.color for i, o in objs.items()}
        out = self._tint.get(image, self.masks, colors, alpha).copy()
        radius, line, band = marker_sizes(*image.shape[:2])
        sel = objs.get(selected) if selected is not None else None
        if sel is not None and sel.mask is not None:
            cached = self._contours.get(sel.obj_id)
            if cached is None or cached[0] is not sel.mask:
                region, ring = contour(sel.mask, band, mask_region(sel.mask))
                cached = (sel.mask, band_pixels(region, ring, image.shape[1]))
                self._contours[sel.obj_id] = cached
            paint(out, cached[1], sel.color)
        for o in objs.values():
            if o.box is not None:
                draw_box(out, o.box, o.color, line)
        for o in objs.values():
            for c in o.clicks:
                draw_click(out, c.x, c.y, c.positive, radius)
        return out

    def cutout(self, obj_id: int) -> np.ndarray:
        """``(H, W, 4)`` uint8 RGBA cut-out of one object (alpha 255 on its mask, 0 outside);
        ValueError when the object has no mask."""
        obj = self._obj(obj_id)
        if obj.mask is None:
            raise ValueError(f"object {obj_id} has no mask yet: add a click or a box first")
        return cutout_png(self.image, obj.mask)

    def write_masks_zip(self, path: PathLike) -> Path:
        """Zip of ``masks.png`` (value = object id, the smallest id where objects overlap;
        indexed with the DAVIS palette, 16-bit grayscale when an id is over 255) and one 8-bit
        PNG per object (``object_<id>.png``, 255 = object); returns the path. ValueError when
        no object has a mask. See :func:`~sam2ui.core.exports.write_image_masks_zip`."""
        return write_image_masks_zip(self.masks, path)

    def coco_json(self) -> dict[str, Any]:
        """``{"image": {"height", "width"}, "annotations": [{"id", "name", "segmentation"
        (COCO RLE), "area", "bbox" (XYWH), "predicted_iou"}]}``, one annotation per object
        with a mask, by id."""
        h, w = self.size
        anns = []
        for oid, obj in self._objects.items():
            if obj.mask is None:
                continue
            rle = mask_to_coco_rle(obj.mask)
            anns.append(
                {
                    "id": oid,
                    "name": obj.name,
                    "segmentation": rle,
                    "area": rle_area(rle),
                    "bbox": rle_to_bbox(rle),
                    "predicted_iou": obj.score,
                }
            )
        return {"image": {"height": h, "width": w}, "annotations": anns}

    def close(self) -> None:
        """Drop the image, the embedding and every object."""
        self.predictor.reset_predictor()
        self._image = None
        self._objects.clear()
        self._undo.clear()
        self._auto.clear()
        self._tint.clear()
        self._contours.clear()

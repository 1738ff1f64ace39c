"""Interactive segmentation of one image in a notebook.

Built on ipywidgets 8 and anywidget: the picture, the legend and the mouse input are the
engine's annotation canvas (:class:`~.canvas.PromptCanvas`, the web app's canvas too: an ES
module shipped with sam2ui, no CDN, no build step). Runs in JupyterLab 4, Notebook 7, VS Code
and Colab.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sam2ui.core import ImageAnnotator, MaskGenerationCancelled, image_predictor, load_image

from .base import DEFAULT_MODEL, SegmenterBase
from .canvas import CanvasAction

# Least seconds between two progress messages of "segment everything".
PROGRESS_INTERVAL_S = 0.25

if TYPE_CHECKING:
    from sam2ui.core import ModelCache, SAM2ImagePredictor

__all__ = ["ImageSegmenter"]


def open_image(image: object) -> object:
    """A path is read as an upright RGB array (any file mode); arrays and PIL images go to
    the predictor as they are."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    return image


class ImageSegmenter(SegmenterBase):
    """Click to segment objects in an image; the masks are numpy arrays in :attr:`masks`.

    On the picture: a click adds an object point to the selected object, shift-, alt- or
    right-click a background point (the Object/Background toggle swaps the two), a drag draws
    the object's box, and a click on a point removes it. The mask is predicted again after
    each prompt and drawn in the object's colour. The legend beside the picture selects,
    hides, renames (double-click) and removes objects; "+ Add object" starts another one.
    Undo and redo (Ctrl+Z, Ctrl+Shift+Z) take back and apply again the last prompt changes.
    After a single click the model's three candidate masks can be compared with the
    "Candidate" buttons.

    Args:
        image: an ``(H, W, 3)`` uint8 array, a PIL image or an image file path.
        model: a variant name, hub id or checkpoint path (from the shared model cache), or a
            ready :class:`~sam2ui.core.SAM2ImagePredictor`.
        device, dtype: for a model loaded by name (default: cuda, then mps, then cpu; float32).
        cache: the model cache to use (default: the process-wide one the app shares).
        multimask: predict three candidates for a single click (the reference's advice).
        display_width: width of the canvas (picture and legend) in screen pixels (0: the
            notebook's width).

    Coordinates everywhere are image pixels, x right, y down; boxes XYXY. The engine's
    annotator is :attr:`annotator` (:class:`~sam2ui.core.ImageAnnotator`).
    """

    annotator: ImageAnnotator

    def __init__(
        self,
        image: object,
        model: str | os.PathLike[str] | SAM2ImagePredictor = DEFAULT_MODEL,
        *,
        device: Any = None,
        dtype: Any = "float32",
        cache: ModelCache | None = None,
        multimask: bool = True,
        display_width: int = 0,
    ) -> None:
        predictor = image_predictor(model, device=device, dtype=dtype, cache=cache)
        annotator = ImageAnnotator(predictor, multimask=multimask)
        annotator.set_image(open_image(image))
        super().__init__(annotator, display_width=display_width)
        self.add_object()

    def _on_action(self, event: CanvasAction) -> str | None:
        if event.type == "choose":  # a candidate mask picked on the canvas
            target = self._target(None)
            if target is None:
                raise ValueError("there is no object to choose a candidate for")
            with self._lock:
                self.annotator.choose_candidate(target, int(event.index or 0))
            return f"Object {target}: candidate {event.index} shown."
        return super()._on_action(event)

    # ------------------------------------------------------------------ results
    @property
    def masks(self) -> dict[int, np.ndarray]:
        """``{object id: (H, W) bool}`` of every object that has a mask."""
        with self._lock:
            return self.annotator.masks

    @property
    def image(self) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 RGB image being segmented."""
        return self.annotator.image

    def set_image(self, image: object) -> None:
        """Segment another image (array, PIL image or path); every object is forgotten."""
        with self._lock:
            self.annotator.set_image(open_image(image))
            self._active = None
            self._feed.reset()  # a new picture, whatever its id
        self.add_object()

    def choose_candidate(self, index: int, obj_id: int | None = None) -> None:
        """Show candidate ``index`` (0-2) as the object's mask."""
        target = self._target(obj_id)
        if target is None:
            raise ValueError("there is no object to choose a candidate for")
        with self._lock:
            self.annotator.choose_candidate(target, index)
        self.refresh()

    def segment_everything(
        self, should_stop: Callable[[], bool] | None = None, **generator_kwargs: Any
    ) -> list[int]:
        """Add one object per mask of the automatic mask generator (slow: a grid of points);
        ``generator_kwargs`` go to :class:`~sam2ui.core.SAM2AutomaticMaskGenerator`. The
        status line counts the grid points done. When ``should_stop()`` answers true the run
        ends after its current batch of points and the masks found so far are kept."""
        self._check_idle()
        sent = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal sent
            if time.monotonic() - sent >= PROGRESS_INTERVAL_S or done == total:
                sent = time.monotonic()
                self.refresh(f"Segment everything: {done}/{total} points")

        with self._lock:
            try:
                ids = self.annotator.segment_everything(
                    progress=progress, should_stop=should_stop, **generator_kwargs
                )
                message = f"Found {len(ids)} objects."
            except MaskGenerationCancelled as stopped:
                ids = stopped.object_ids
                message = (
                    f"Stopped after {stopped.points_done} of {stopped.points_total} points; "
                    f"kept the {len(ids)} objects found so far."
                )
            if ids:
                self._active = ids[0]
        self.refresh(message)
        return ids

    def cutout(self, obj_id: int) -> np.ndarray:
        """``(H, W, 4)`` uint8 RGBA cut-out of one object."""
        with self._lock:
            return self.annotator.cutout(obj_id)

    def write_masks_zip(self, path: str | os.PathLike[str]) -> Path:
        """Zip of an indexed ``masks.png`` (value = object id) and one PNG per object."""
        with self._lock:
            return Path(str(self.annotator.write_masks_zip(Path(path))))

    def coco_json(self) -> dict:
        """The masks as COCO-style annotations with RLE segmentations."""
        with self._lock:
            return self.annotator.coco_json()

    # ------------------------------------------------------------------ hooks
    def _update(self, message: str) -> dict[str, Any]:
        return self._feed.image_update(self.annotator, self._active, message)

    def _click(self, obj_id: int, x: float, y: float, positive: bool) -> None:
        self.annotator.add_click(obj_id, x, y, positive)

    def _box(self, obj_id: int, x0: float, y0: float, x1: float, y1: float) -> None:
        self.annotator.set_box(obj_id, x0, y0, x1, y1)

    def _remove_click(self, obj_id: int, index: int) -> None:
        self.annotator.remove_click(obj_id, index)

    def _undo(self, obj_id: int) -> None:
        self.annotator.undo(obj_id)

    def _undo_last(self) -> int | None:
        obj = self.annotator.undo()
        return None if obj is None else int(obj.obj_id)

    def _redo(self) -> int | None:
        obj = self.annotator.redo()
        return None if obj is None else int(obj.obj_id)

    def _clear(self, obj_id: int) -> None:
        self.annotator.clear_object(obj_id)

    def _status_text(self) -> str:
        obj_id = self.selected
        if obj_id is None:
            return "No object: click on the picture to start one."
        obj = self.annotator.objects[obj_id]
        positive = sum(c.positive for c in obj.clicks)
        negative = len(obj.clicks) - positive
        parts = [f"{positive} object point(s)", f"{negative} background point(s)"]
        if obj.box is not None:
            parts.append("a box")
        if obj.mask is None:
            result = "no mask yet"
        else:
            score = f", predicted IoU {obj.score:.2f}" if obj.score is not None else ""
            result = f"mask of {int(obj.mask.sum()):,} px{score}"
        return f"{obj.name} (#{obj_id}): {', '.join(parts)}; {result}"

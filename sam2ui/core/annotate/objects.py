"""Helpers of the annotators: their object table, prompt validation, display images, and a
shared embedding for "segment everything". Coordinates are pixels, x right, y down; boxes
XYXY."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np
import torch

from sam2ui.core.render import Color, palette_color

from .prompts import Box

if TYPE_CHECKING:
    from sam2ui.core.image.predictor import SAM2ImagePredictor

ObjT = TypeVar("ObjT")

# Declared limits of one annotation. Every prompt of an object goes to the mask decoder as a
# token at each prediction, and is kept in the undo history; every object holds masks. 200
# prompts is far beyond what an object needs (a handful of clicks, a box); 255 objects is
# what an 8-bit indexed PNG export (values 1-255) holds. Front ends pass their own.
DEFAULT_MAX_PROMPTS = 200
DEFAULT_MAX_OBJECTS = 255


class LimitReached(ValueError):
    """An annotation is at a declared limit (prompts per object, objects); the message says
    which and what to do."""


def check_limit(name: str, value: int | None) -> int | None:
    """``value`` as a limit (``None``: none), or ValueError when it is not an int >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1 or None, got {value!r}")
    return int(value)


def check_prompt_room(obj_id: int, count: int, max_prompts: int | None) -> None:
    """LimitReached when an object with ``count`` prompts may take no more."""
    if max_prompts is not None and count >= max_prompts:
        raise LimitReached(
            f"Object {obj_id} has {count} prompts, the most allowed here; "
            "undo or remove some before adding more."
        )


def check_name(name: object) -> str:
    if not isinstance(name, str):
        raise TypeError(f"an object name must be a str, got {type(name).__name__}")
    return name


class ObjectTable(Generic[ObjT]):
    """The annotators' objects: ids 1, 2, ... never reused, a name ("object N" by default) and
    the id's palette colour, kept in creation order."""

    def __init__(self, max_objects: int | None = DEFAULT_MAX_OBJECTS) -> None:
        self._objects: dict[int, ObjT] = {}
        self._next_id = 1
        self.max_objects = check_limit("max_objects", max_objects)

    @property
    def object_room(self) -> int | None:
        """How many more objects may be added (None: no limit)."""
        if self.max_objects is None:
            return None
        return max(0, self.max_objects - len(self._objects))

    @property
    def objects(self) -> dict[int, ObjT]:
        """Objects by id, in creation order (a copy of the mapping; objects are live)."""
        return dict(self._objects)

    def _obj(self, obj_id: int) -> ObjT:
        obj = self._objects.get(obj_id) if isinstance(obj_id, (int, np.integer)) else None
        if obj is None:
            raise ValueError(f"unknown object id {obj_id!r}; known ids: {list(self._objects)}")
        return obj

    def _new_object(self, name: str | None, make: Callable[[int, str, Color], ObjT]) -> int:
        if self.object_room == 0:
            n = len(self._objects)
            raise LimitReached(
                f"There {'is 1 object' if n == 1 else f'are {n} objects'}, the most allowed "
                "here; remove one before adding another."
            )
        obj_id = self._next_id
        label = f"object {obj_id}" if name is None else check_name(name)
        self._objects[obj_id] = make(obj_id, label, palette_color(obj_id))
        self._next_id += 1
        return obj_id

    def rename_object(self, obj_id: int, name: str) -> None:
        self._obj(obj_id).name = check_name(name)  # type: ignore[attr-defined]


def check_click(x: float, y: float, height: int, width: int) -> tuple[float, float]:
    """``(x, y)`` as floats, or ValueError when not finite or outside the ``height`` x
    ``width`` image (its border, x = width or y = height, counts as inside)."""
    try:
        fx, fy = float(x), float(y)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"click coordinates must be numbers, got ({x!r}, {y!r})") from exc
    if not (math.isfinite(fx) and math.isfinite(fy)):
        raise ValueError(f"click coordinates must be finite, got ({x!r}, {y!r})")
    if not (0 <= fx <= width and 0 <= fy <= height):
        raise ValueError(
            f"click ({fx:g}, {fy:g}) is outside the {width}x{height} image "
            f"(x in [0, {width}], y in [0, {height}])"
        )
    return fx, fy


def check_box(x0: float, y0: float, x1: float, y1: float, height: int, width: int) -> Box:
    """Corners in any order -> XYXY clipped to the image; ValueError when a value is not
    finite or the box lies entirely outside the image."""
    try:
        vals = [float(v) for v in (x0, y0, x1, y1)]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"box corners must be numbers, got {(x0, y0, x1, y1)!r}") from exc
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"box corners must be finite, got {(x0, y0, x1, y1)!r}")
    ax, bx = sorted((vals[0], vals[2]))
    ay, by = sorted((vals[1], vals[3]))
    if bx < 0 or by < 0 or ax > width or ay > height:
        raise ValueError(f"box {tuple(vals)} lies outside the {width}x{height} image")
    return Box(max(ax, 0.0), max(ay, 0.0), min(bx, float(width)), min(by, float(height)))


class SharedEmbedding:
    """The annotator's predictor as the automatic mask generator sees it: the whole image
    reuses the embedding already computed (no second encoder run); crops (``crop_n_layers``
    > 0) are embedded by a second predictor on the same model, so the annotator's embedding
    is never replaced or reset."""

    def __init__(self, own: SAM2ImagePredictor, image: np.ndarray) -> None:
        self._own = own
        self._image = image
        self._other: SAM2ImagePredictor | None = None
        self._active: SAM2ImagePredictor = own

    @property
    def device(self) -> torch.device:
        return self._own.device

    @property
    def max_hole_area(self) -> float:
        return self._own.max_hole_area

    @max_hole_area.setter
    def max_hole_area(self, value: float) -> None:
        for p in (self._own, self._other):
            if p is not None:
                p.max_hole_area = value

    @property
    def max_sprinkle_area(self) -> float:
        return self._own.max_sprinkle_area

    @max_sprinkle_area.setter
    def max_sprinkle_area(self, value: float) -> None:
        for p in (self._own, self._other):
            if p is not None:
                p.max_sprinkle_area = value

    def set_image(self, image: np.ndarray) -> None:
        if image.shape == self._image.shape and np.may_share_memory(image, self._image):
            self._active = self._own  # the whole image (a full crop is a view of it)
            return
        if self._other is None:
            from sam2ui.core.image.predictor import SAM2ImagePredictor

            own = self._own
            self._other = SAM2ImagePredictor(
                own.model, own.mask_threshold, own.max_hole_area, own.max_sprinkle_area
            )
        self._other.set_image(image)
        self._active = self._other

    def reset_predictor(self) -> None:
        if self._active is not self._own:
            self._active.reset_predictor()
        self._active = self._own

    def transform_coords(
        self, coords: torch.Tensor, normalize: bool = False, orig_hw: tuple[int, int] | None = None
    ) -> torch.Tensor:
        return self._active.transform_coords(coords, normalize, orig_hw)

    def predict_torch(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        return self._active.predict_torch(*args, **kwargs)

    def predict_low_res(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ...]:
        return self._active.predict_low_res(*args, **kwargs)

"""What the handlers hand to the UI: object rows, the legend, candidate thumbnails.

Presentation only; every mask, prompt and colour comes from the engine's annotators.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sam2ui.core import overlay_image

__all__ = [
    "ObjectRow",
    "choices",
    "describe_frame",
    "legend_html",
    "object_rows",
    "thumbnail",
]

THUMBNAIL_SIDE = 192  # longest side of a candidate thumbnail, in pixels


@dataclass(frozen=True)
class ObjectRow:
    """One line of the object list: id, name, RGB colour and a short description."""

    obj_id: int
    name: str
    color: tuple[int, int, int]
    detail: str

    @property
    def label(self) -> str:
        return f"{self.obj_id}: {self.name}"


def object_rows(objects: Mapping[int, Any], details: Mapping[int, str]) -> list[ObjectRow]:
    """Rows for an annotator's ``objects`` (anything with ``obj_id``, ``name``, ``color``)."""
    return [
        ObjectRow(obj.obj_id, obj.name, tuple(obj.color), details.get(obj_id, ""))
        for obj_id, obj in objects.items()
    ]


def choices(rows: list[ObjectRow]) -> list[tuple[str, int]]:
    """``(label, id)`` pairs for a gradio Radio or Dropdown."""
    return [(row.label, row.obj_id) for row in rows]


def legend_html(rows: list[ObjectRow], selected: int | None) -> str:
    """The object list as HTML: a colour swatch, the name and the detail of each object."""
    if not rows:
        return "<div class='sam2ui-legend'><em>No objects yet: click on the picture.</em></div>"
    items = []
    for row in rows:
        r, g, b = row.color
        mark = " <strong>(selected)</strong>" if row.obj_id == selected else ""
        items.append(
            f"<li data-obj-id='{row.obj_id}'>"
            f"<span style='display:inline-block;width:0.9em;height:0.9em;"
            f"background:rgb({r},{g},{b});border:1px solid #444;margin-right:0.4em'></span>"
            f"{html.escape(row.label)} <small>{html.escape(row.detail)}</small>{mark}</li>"
        )
    return f"<ul class='sam2ui-legend' style='list-style:none;padding:0'>{''.join(items)}</ul>"


def thumbnail(
    image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], side: int = THUMBNAIL_SIDE
) -> np.ndarray:
    """A small ``(h, w, 3)`` uint8 preview of ``mask`` ((H, W) bool) tinted on ``image``
    ((H, W, 3) uint8); subsampled by striding, which is plenty for choosing a candidate."""
    step = max(1, int(np.ceil(max(image.shape[:2]) / side)))
    small_image = np.ascontiguousarray(image[::step, ::step])
    small_mask = np.ascontiguousarray(mask[::step, ::step])
    return overlay_image(small_image, {1: small_mask}, {1: color}, alpha=0.6)


def describe_frame(work: Any, details: Mapping[int, str]) -> str:
    """The video status line when an action has nothing else to say: the frame shown and the
    selected object (``work``: a video session's ``frame_idx``, ``selected``, ``annotator``)."""
    where = f"Frame {work.frame_idx} of {work.annotator.num_frames - 1}"
    if work.selected is None:
        return f"{where}. Click on an object to segment it."
    return f"{where}. Object {work.selected}: {details.get(work.selected, '')}."

"""The one prompt vocabulary: what a person (or a prompt file) tells the model about an object.

Every front end speaks it: the app and the widgets build :class:`Click` and :class:`Box` from
mouse events, the command line parses ``--point`` / ``--box`` and its prompts JSON into the
same types (:mod:`sam2ui.core.annotate.prompt_file`), and the annotators keep them per object
(:class:`FramePrompts` per video frame). Coordinates are pixels of the original image or video
frame: x to the right, y down, floats allowed; boxes are XYXY, top-left corner first.

This module imports no numpy or torch, so a command line can parse prompts before it loads
anything heavy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Box", "Click", "FramePrompts", "MaskPrompt", "ObjectPrompt", "Prompt"]


@dataclass(frozen=True)
class Click:
    """One point prompt: ``(x, y)`` in pixels; ``positive`` False marks background.

    ``Click(x, y, 1)`` and ``Click(x, y, 0)`` are accepted too (the reference's labels, as the
    command line writes them): ``positive`` is stored as a bool, and :attr:`label` gives it
    back as the reference's 1 / 0.
    """

    x: float
    y: float
    positive: bool = True

    def __post_init__(self) -> None:
        if self.positive not in (True, False):  # 1 and 0 compare equal to True and False
            raise ValueError(
                f"a click's label must be 1 (object) or 0 (background), got {self.positive!r}"
            )
        object.__setattr__(self, "positive", bool(self.positive))

    @property
    def label(self) -> int:
        """1 for an object click, 0 for a background click (the predictors' point labels)."""
        return 1 if self.positive else 0


class Box(NamedTuple):
    """A box prompt in pixels, XYXY: ``(x0, y0)`` top-left, ``(x1, y1)`` bottom-right. It is a
    tuple, so it unpacks and converts like the reference's ``box=np.array([x0, y0, x1, y1])``."""

    x0: float
    y0: float
    x1: float
    y1: float


Prompt = Click | Box  # one prompt of an object, in the order it was given


@dataclass
class FramePrompts:
    """An object's prompts on one frame: clicks in order and at most one box."""

    clicks: list[Click] = field(default_factory=list)
    box: Box | None = None

    def copy(self) -> FramePrompts:
        return FramePrompts(list(self.clicks), self.box)

    @property
    def empty(self) -> bool:
        return not self.clicks and self.box is None


class MaskPrompt(NamedTuple):
    """A mask to give the video predictor: ``add_new_mask(state, frame_idx, obj_id, mask)``."""

    frame_idx: int
    mask: np.ndarray  # (H, W) bool


@dataclass(frozen=True, eq=False)
class ObjectPrompt:
    """Prompts for one object on one frame, as a prompt file or the command line gives them:
    clicks and/or a box, or a mask.

    ``obj_id`` is >= 1; ``name`` an optional label for the object; ``where`` names the prompt's
    origin for error messages (``prompts.json: objects[2]``).
    """

    obj_id: int
    frame: int
    points: tuple[Click, ...] = ()
    box: Box | None = None
    mask: np.ndarray | None = field(default=None, repr=False)  # (H, W) bool
    name: str | None = None
    where: str = "prompt"

    @property
    def prompts(self) -> FramePrompts:
        """The clicks and box as an annotator keeps them."""
        return FramePrompts(list(self.points), self.box)

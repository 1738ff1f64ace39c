"""The output objects of the transformers-style API: dataclasses read by attribute or by key.

transformers' outputs are both (``outputs.pred_masks`` and ``outputs["pred_masks"]``); fields
left at None are absent from the key view, as there. ``BatchFeature`` is the processors'
result: a dict with attribute access and ``.to(device)``, so ``model(**inputs)`` works.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch

__all__ = [
    "BatchFeature",
    "ModelOutput",
    "Sam2ImageSegmentationOutput",
    "Sam2VideoSegmentationOutput",
]


class ModelOutput:
    """Base of the output dataclasses: attribute, key and index access to the set fields."""

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]  # type: ignore[arg-type]

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, k) for k in self.keys())


@dataclass
class Sam2ImageSegmentationOutput(ModelOutput):
    """What :class:`~sam2ui.hf.Sam2Model` returns.

    ``iou_scores`` (B, P, M) predicted IoU of each mask; ``pred_masks`` (B, P, M, S/4, S/4) mask
    logits (256 x 256 for the official 1024 input), to be brought to the image size with
    ``processor.post_process_masks``; ``object_score_logits`` (B, P, 1) whether the object is
    there; ``image_embeddings``, the three feature levels (finest first) that ``forward`` takes
    back as ``image_embeddings=`` to prompt the same images again. B images, P objects (prompt
    sets) per image, M = 3 masks per object with ``multimask_output`` (else 1).
    """

    iou_scores: torch.Tensor | None = None
    pred_masks: torch.Tensor | None = None
    object_score_logits: torch.Tensor | None = None
    image_embeddings: list[torch.Tensor] | None = None
    vision_hidden_states: tuple[torch.Tensor, ...] | None = None
    vision_attentions: tuple[torch.Tensor, ...] | None = None
    mask_decoder_attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class Sam2VideoSegmentationOutput(ModelOutput):
    """One frame of a video session: ``pred_masks`` (N, 1, S/4, S/4) mask logits of the N
    objects in ``object_ids`` order, ``object_score_logits`` (N, 1) (the shape transformers
    returns; its documentation says (N,)), and the ``frame_idx``."""

    object_ids: list[Any] | None = None
    pred_masks: torch.Tensor | None = None
    object_score_logits: torch.Tensor | None = None
    frame_idx: int | None = None


class BatchFeature(dict[str, Any]):
    """A processor's result: ``inputs["pixel_values"]`` and ``inputs.pixel_values`` alike."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, *args: Any, **kwargs: Any) -> BatchFeature:
        """Tensors moved (``.to(device)``); a dtype casts only floating-point tensors."""
        out = BatchFeature()
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                if value.is_floating_point():
                    value = value.to(*args, **kwargs)
                else:
                    device = _device_of(args, kwargs)
                    value = value if device is None else value.to(device)
            out[key] = value
        return out


def _device_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.device | None:
    """The device among ``.to`` arguments (positional or ``device=``), if any."""
    if "device" in kwargs:
        return torch.device(kwargs["device"])
    for arg in args:
        if isinstance(arg, (str, torch.device)):
            return torch.device(arg)
    return None

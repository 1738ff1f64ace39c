"""``Sam2Model``: transformers' image model API over the engine's :class:`~sam2ui.core.SAM2Model`.

The network is the engine's (image encoder, prompt encoder, mask decoder, with its CPU fast
paths); this module only moves transformers' batched, padded prompt tensors through it, one
image at a time with all of that image's prompt sets as the decoder batch, as the engine's own
predictor does.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sam2ui.core import SAM2Model

from .config import Sam2Config, core_config
from .loading import ModelSource, config_for, dtype_argument, fetch, load_core_model, parse_to
from .outputs import Sam2ImageSegmentationOutput

__all__ = ["Sam2Model", "Sam2PreTrainedModel"]

# Images whose prompt-independent decoder work is kept (see Sam2Model._image_keys).
KEYS_CACHE_SIZE = 4


class Sam2PreTrainedModel(nn.Module):
    """What the image and the video model share: loading, the engine model, device and dtype."""

    config_class: type[Sam2Config] = Sam2Config
    is_video = False

    def __init__(
        self,
        config: Sam2Config | None = None,
        *,
        core: SAM2Model | None = None,
        origin: ModelSource | None = None,
    ) -> None:
        super().__init__()
        self.config = config if config is not None else self.config_class()
        if core is None:  # random weights, as transformers' Model(config)
            core = SAM2Model(core_config(self.config, video=self.is_video)).eval()
        self.core = core
        self._origin = origin

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike[str], *args: Any, **kwargs: Any
    ) -> Any:
        """Load a transformers-format folder (``config.json`` + ``model.safetensors``) or an
        official hub id / variant name. ``torch_dtype=`` / ``dtype=`` pick the compute dtype
        (float32, bfloat16 or float16), ``device_map=`` a single device."""
        dtype = dtype_argument(kwargs)
        device = kwargs.pop("device_map", None) or kwargs.pop("device", None)
        if device == "auto":
            device = None
        config = config_for(pretrained_model_name_or_path, cls.config_class)
        core, origin = load_core_model(
            pretrained_model_name_or_path, config, video=cls.is_video, device=device, dtype=dtype
        )
        return cls(config, core=core, origin=origin)

    @torch.no_grad()
    def get_image_embeddings(self, pixel_values: torch.Tensor, **kwargs: Any) -> list[torch.Tensor]:
        """(B, 3, S, S) normalised pixels -> the three feature levels the decoder reads,
        finest first: (B, 32, S/4, S/4), (B, 64, S/8, S/8) and (B, 256, S/16, S/16), the
        last with the "no memory" embedding added."""
        size = self.core.config.image_size
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise ValueError(
                f"pixel_values must have shape (batch, 3, {size}, {size}), got "
                f"{tuple(pixel_values.shape)}"
            )
        features = self.core.image_features(pixel_values.to(self.core.device))
        return [*features.high_res_feats, features.image_embed]

    @property
    def device(self) -> torch.device:
        return self.core.device

    @property
    def dtype(self) -> torch.dtype:
        return self.core.compute_dtype

    def to(self, *args: Any, **kwargs: Any) -> Any:
        """Move to a device and/or switch the compute dtype (``.to("cuda", dtype=...)``).

        A model from the shared cache is swapped for the cache's model of that device and
        dtype (the cached one is never changed in place); one of its own is moved.
        """
        device, dtype = parse_to(*args, **kwargs)
        device = device if device is not None else self.core.device
        dtype = dtype if dtype is not None else self.core.compute_dtype
        if device == self.core.device and dtype == self.core.compute_dtype:
            return self
        if self._origin is not None and self._origin.shared:
            self.core = fetch(self._origin, video=self.is_video, device=device, dtype=dtype)
        else:
            self.core.to(device)
            self.core.set_compute_dtype(dtype)
        return self

    def cuda(self, device: Any = None) -> Any:
        return self.to(torch.device("cuda" if device is None else device))

    def cpu(self) -> Any:
        return self.to(torch.device("cpu"))


class Sam2Model(Sam2PreTrainedModel):
    """transformers' ``Sam2Model``: images and prompts in, low-resolution masks out."""

    @torch.no_grad()
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_points: torch.Tensor | None = None,
        input_labels: torch.Tensor | None = None,
        input_boxes: torch.Tensor | None = None,
        input_masks: torch.Tensor | None = None,
        image_embeddings: list[torch.Tensor] | None = None,
        multimask_output: bool = True,
        attention_similarity: torch.Tensor | None = None,
        target_embedding: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Sam2ImageSegmentationOutput:
        """Masks for B images and P prompt sets per image.

        ``input_points`` (B, P, N, 2) and ``input_labels`` (B, P, N) in model-input pixels
        (the processor scales them; label -10 is padding), ``input_boxes`` (B, P, 4) XYXY,
        ``input_masks`` (B, 1, S/4, S/4) logits of an earlier prediction (other sizes are
        resized); ``pixel_values`` (B, 3, S, S) or the ``image_embeddings`` of an earlier
        output, not both. Other keyword arguments (``original_sizes``) are ignored.
        """
        if (pixel_values is None) == (image_embeddings is None):
            raise ValueError("give exactly one of pixel_values or image_embeddings")
        if attention_similarity is not None or target_embedding is not None:
            raise NotImplementedError(
                "attention_similarity and target_embedding (PerSAM) are not supported"
            )
        if pixel_values is not None:
            image_embeddings = self.get_image_embeddings(pixel_values)
        assert image_embeddings is not None
        levels = [e.to(self.core.device) for e in image_embeddings]
        batch = levels[-1].shape[0]
        points, labels, boxes, masks = _checked_prompts(
            input_points, input_labels, input_boxes, input_masks, batch, self.core.device
        )
        # Decoded in inference mode (cheaper small operations, as in the engine's predictor);
        # stacking outside it gives ordinary tensors, which callers may change in place.
        with torch.inference_mode():
            outputs = [
                self._decode_image(levels, i, points, labels, boxes, masks, multimask_output)
                for i in range(batch)
            ]
        return Sam2ImageSegmentationOutput(
            iou_scores=torch.stack([o[1] for o in outputs]),
            pred_masks=torch.stack([o[0] for o in outputs]),
            object_score_logits=torch.stack([o[2] for o in outputs]),
            image_embeddings=levels,
        )

    def _image_keys(self, embed: torch.Tensor, no_mask_dense: torch.Tensor) -> Any:
        """The decoder's prompt-independent work on one image embedding (1, C, h, w), kept
        for the last few embeddings: clicks on the same ``image_embeddings`` (the usual
        interactive loop) then cost what a click on the engine's predictor costs."""
        cache: dict[tuple[Any, ...], Any] = self.__dict__.setdefault("_keys_cache", {})
        key = (_identity(embed), id(self.core))
        keys = cache.get(key)
        if keys is None:
            encoder = self.core.sam_prompt_encoder
            keys = self.core.sam_mask_decoder.image_keys(
                embed, encoder.get_dense_pe(), no_mask_dense
            )
            while len(cache) >= KEYS_CACHE_SIZE:
                cache.pop(next(iter(cache)))
            cache[key] = keys
        return keys

    def _decode_image(
        self,
        levels: list[torch.Tensor],
        i: int,
        points: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Image ``i``'s P prompt sets through the decoder: (P, M, h, w), (P, M), (P, 1)."""
        core = self.core
        encoder = core.sam_prompt_encoder
        embed = levels[-1][i : i + 1]
        high_res = [level[i : i + 1] for level in levels[:-1]]
        parts = []
        if points is not None and labels is not None:
            # Without a box, one "not a point" token ends the prompt, as in the engine.
            parts.append(encoder.embed_points(points[i], labels[i], pad=boxes is None))
        if boxes is not None:
            corners = boxes[i].reshape(-1, 2, 2)
            corner_labels = torch.tensor([[2, 3]], device=corners.device).expand(len(corners), 2)
            parts.append(encoder.embed_points(corners, corner_labels, pad=True))
        sparse = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        if masks is not None:
            dense = encoder.embed_mask(
                resize_mask_prompt(masks[i : i + 1], encoder.mask_input_size)
            )
            keys = None
        else:
            dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(embed)
            keys = self._image_keys(embed, dense)
        out = core.sam_mask_decoder(
            embed,
            encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output=multimask_output,
            high_res_features=high_res,
            image_keys=keys,
        )
        return out.masks.float(), out.iou_pred.float(), out.object_score_logits.float()


def _identity(tensor: torch.Tensor) -> tuple[Any, ...]:
    """What tells one image embedding from another without reading it: its storage, place,
    shape and (for tensors that have one) version counter, which in-place changes bump."""
    version = None if tensor.is_inference() else tensor._version
    return (tensor.data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.device,
            tensor.dtype, version)  # fmt: skip


def _checked_prompts(
    points: torch.Tensor | None,
    labels: torch.Tensor | None,
    boxes: torch.Tensor | None,
    masks: torch.Tensor | None,
    batch: int,
    device: torch.device,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Prompt tensors checked against the image batch and moved to ``device``. Without any
    point or box, each image gets one "not a point" point (a mask-only or empty prompt)."""
    if points is not None:
        if points.ndim != 4 or points.shape[-1] != 2:
            raise ValueError(
                "input_points must have shape (images, objects, points, 2), got "
                f"{tuple(points.shape)}"
            )
        if labels is None:
            labels = torch.ones(points.shape[:-1], dtype=torch.int64)
        if tuple(labels.shape) != tuple(points.shape[:-1]):
            raise ValueError(
                f"input_labels of shape {tuple(labels.shape)} do not fit input_points of shape "
                f"{tuple(points.shape)}: one label per point"
            )
    elif labels is not None:
        raise ValueError("input_labels given without input_points")
    if boxes is not None:
        if boxes.ndim != 3 or boxes.shape[-1] != 4:
            raise ValueError(
                f"input_boxes must have shape (images, boxes, 4), got {tuple(boxes.shape)}"
            )
        if points is not None and points.shape[1] != boxes.shape[1]:
            raise ValueError(
                f"{points.shape[1]} point sets but {boxes.shape[1]} boxes per image: give as "
                "many boxes as point sets"
            )
    if points is None and boxes is None:
        points = torch.zeros(batch, 1, 1, 2)
        labels = -torch.ones(batch, 1, 1, dtype=torch.int64)
    for name, value in (("input_points", points), ("input_boxes", boxes), ("input_masks", masks)):
        if value is not None and value.shape[0] != batch:
            raise ValueError(f"{name} is for {value.shape[0]} images, but there are {batch}")
    if masks is not None and (masks.ndim != 4 or masks.shape[1] != 1):
        raise ValueError(
            f"input_masks must have shape (images, 1, height, width), got {tuple(masks.shape)}"
        )
    points = None if points is None else points.to(device, torch.float32)
    labels = None if labels is None else labels.to(device)
    boxes = None if boxes is None else boxes.to(device, torch.float32)
    if masks is not None:
        masks = masks.to(device, torch.float32)
    return points, labels, boxes, masks


def resize_mask_prompt(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Mask logits (B, 1, H, W) at the prompt encoder's mask size (antialiased bilinear)."""
    if tuple(masks.shape[-2:]) == size:
        return masks
    return F.interpolate(masks, size=size, mode="bilinear", align_corners=False, antialias=True)

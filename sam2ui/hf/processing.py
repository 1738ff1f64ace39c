"""``Sam2ImageProcessor`` and ``Sam2Processor``: pictures and prompts into model inputs.

Pictures are resized to the model's square input (1024 x 1024 for the official models, the
aspect ratio is not kept) with antialiased bilinear interpolation on their 8-bit values, the
result rounded to 8 bits, then normalised with the ImageNet mean and deviation: the arithmetic
of transformers' torchvision-based processor, done with torch alone. Prompts are read and
padded by :mod:`sam2ui.hf.prompts` and scaled from each picture's pixels to the model input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .config import read_config_json
from .outputs import BatchFeature
from .prompts import BOXES, LABELS, PAD_VALUE, POINTS, read_nested, scale_coords

__all__ = ["Sam2ImageProcessor", "Sam2Processor", "input_size_of", "post_process_masks"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def input_size_of(source: str | os.PathLike[str]) -> int:
    """The model input side a local folder's ``config.json`` declares (1024 otherwise)."""
    path = Path(source).expanduser()
    data = read_config_json(path) if path.is_dir() else None
    if data is None:
        return 1024
    if data.get("model_type") == "sam2_video" and "image_size" in data:
        return int(data["image_size"])
    return int((data.get("prompt_encoder_config") or {}).get("image_size", 1024))


def _to_chw(image: Any, convert_rgb: bool) -> torch.Tensor:
    """One picture as a (3, H, W) tensor, uint8 or float as given."""
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        if convert_rgb and image.mode != "RGB":
            image = image.convert("RGB")
        array = np.asarray(image)
        tensor = torch.from_numpy(np.array(array, copy=True))
        tensor = tensor[..., None] if tensor.ndim == 2 else tensor
        tensor = tensor.permute(2, 0, 1)
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        tensor = torch.as_tensor(image)
        if tensor.ndim == 2:
            tensor = tensor[None]
        elif tensor.ndim != 3:
            raise ValueError(
                f"an image must have 2 or 3 dimensions, got shape {tuple(image.shape)}"
            )
        elif tensor.shape[-1] in (1, 3, 4) and tensor.shape[0] not in (1, 3, 4):
            tensor = tensor.permute(2, 0, 1)  # channels last
    else:
        raise TypeError(
            f"images must be PIL images, numpy arrays or tensors, got {type(image).__name__}"
        )
    if tensor.shape[0] == 4:
        tensor = tensor[:3]
    if tensor.shape[0] == 1:
        tensor = tensor.expand(3, -1, -1)
    if tensor.shape[0] != 3:
        raise ValueError(f"an image must have 1, 3 or 4 channels, got shape {tuple(image.shape)}")
    return tensor


def _as_list(images: Any) -> list[Any]:
    if isinstance(images, (list, tuple)):
        return list(images)
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return list(images)
    return [images]


def post_process_masks(
    masks: Sequence[torch.Tensor | np.ndarray] | torch.Tensor,
    original_sizes: Any,
    mask_threshold: float = 0.0,
    binarize: bool = True,
    max_hole_area: float = 0.0,
    max_sprinkle_area: float = 0.0,
    apply_non_overlapping_constraints: bool = False,
    **kwargs: Any,
) -> list[torch.Tensor]:
    """Mask logits at each image's size: ``masks[i]`` (P, M, h, w) is resized with bilinear
    interpolation to ``original_sizes[i]`` (H, W); with ``binarize`` the result is
    ``logits > mask_threshold`` (bool). ``apply_non_overlapping_constraints`` gives each pixel
    to the object (first dimension) with the highest logit. ``max_hole_area`` and
    ``max_sprinkle_area`` are accepted and unused, as in transformers."""
    if isinstance(original_sizes, (torch.Tensor, np.ndarray)):
        original_sizes = original_sizes.tolist()
    if len(masks) < len(original_sizes):
        raise ValueError(f"{len(original_sizes)} original sizes but masks for {len(masks)} images")
    out = []
    for i, size in enumerate(original_sizes):
        mask = masks[i]
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(mask)
        elif not isinstance(mask, torch.Tensor):
            raise TypeError("masks must be a list of tensors or numpy arrays")
        if mask.ndim != 4:
            raise ValueError(
                f"masks[{i}] must have 4 dimensions (objects, masks, height, width), got "
                f"shape {tuple(mask.shape)}"
            )
        height, width = (int(v) for v in size)
        resized = F.interpolate(mask, (height, width), mode="bilinear", align_corners=False)
        if apply_non_overlapping_constraints and resized.shape[0] > 1:
            winner = resized.argmax(dim=0, keepdim=True)
            ids = torch.arange(resized.shape[0], device=resized.device)[:, None, None, None]
            resized = torch.where(winner == ids, resized, resized.clamp(max=-10.0))
        out.append(resized > mask_threshold if binarize else resized)
    return out


class Sam2ImageProcessor:
    """Resize and normalise pictures for the model; see the module docstring.

    ``size``: ``{"height": S, "width": S}``, the model input (1024 for the official models).
    Pictures in [0, 255] (uint8, or floats with ``do_rescale=True``) or floats in [0, 1] with
    ``do_rescale=False``; PIL images, numpy arrays (H, W, C) or (C, H, W), or tensors.
    """

    model_input_names: ClassVar[list[str]] = ["pixel_values"]

    def __init__(
        self,
        size: dict[str, int] | int | None = None,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        do_resize: bool = True,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        do_convert_rgb: bool = True,
        mask_size: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        if size is None:
            size = 1024
        if isinstance(size, int):
            size = {"height": size, "width": size}
        self.size = {"height": int(size["height"]), "width": int(size["width"])}
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.do_resize = do_resize
        self.do_rescale = do_rescale
        self.rescale_factor = rescale_factor
        self.do_normalize = do_normalize
        self.do_convert_rgb = do_convert_rgb
        self.mask_size = mask_size or {"height": 256, "width": 256}

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike[str], **kwargs: Any) -> Sam2ImageProcessor:
        """The processor of a model: its input size from a local folder's ``config.json``
        (the official models: 1024), ImageNet statistics."""
        return cls(**{"size": input_size_of(source), **kwargs})

    def _resize(self, image: torch.Tensor) -> torch.Tensor:
        size = (self.size["height"], self.size["width"])
        if not self.do_resize or tuple(image.shape[-2:]) == size:
            return image
        if image.dtype == torch.uint8:
            # On 8-bit values, rounded back to 8 bits, as torchvision resizes uint8 images.
            return F.interpolate(
                image[None], size=size, mode="bilinear", align_corners=False, antialias=True
            )[0]
        resized = F.interpolate(
            image[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True
        )
        return resized[0]

    def _normalise(self, batch: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.image_mean, device=batch.device)
        std = torch.tensor(self.image_std, device=batch.device)
        scale = self.rescale_factor if self.do_rescale else 1.0
        if self.do_normalize:
            # Rescaling folded into the statistics (one pass, the same rounding as transformers).
            mean, std = mean * (1.0 / scale), std * (1.0 / scale)
            return (batch.float() - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        return batch.float() * scale

    def preprocess(
        self,
        images: Any,
        return_tensors: str | None = None,
        device: str | torch.device | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """``pixel_values`` (B, 3, S, S) float32 and ``original_sizes`` (B, 2) as (H, W)."""
        pictures = [_to_chw(img, self.do_convert_rgb) for img in _as_list(images)]
        if not pictures:
            raise ValueError("no images given")
        if device is not None:
            pictures = [p.to(device) for p in pictures]
        sizes = [[int(p.shape[-2]), int(p.shape[-1])] for p in pictures]
        pixel_values = self._normalise(torch.stack([self._resize(p) for p in pictures]))
        return _finish({"pixel_values": pixel_values, "original_sizes": sizes}, return_tensors)

    def __call__(self, images: Any, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def post_process_masks(self, masks: Any, original_sizes: Any, *args: Any, **kwargs: Any) -> Any:
        return post_process_masks(masks, original_sizes, *args, **kwargs)


def _finish(data: dict[str, Any], return_tensors: str | None) -> BatchFeature:
    """Sizes become an int64 tensor with ``return_tensors="pt"``, numpy with ``"np"``."""
    out = BatchFeature(data)
    if return_tensors in ("pt", "np") and "original_sizes" in out:
        sizes = torch.as_tensor(out["original_sizes"], dtype=torch.int64)
        out["original_sizes"] = sizes if return_tensors == "pt" else sizes.numpy()
    if return_tensors == "np":
        for key, value in out.items():
            if isinstance(value, torch.Tensor):
                out[key] = value.cpu().numpy()
    elif return_tensors not in (None, "pt"):
        raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
    return out


class Sam2Processor:
    """Pictures and nested prompts into the inputs of :class:`~sam2ui.hf.Sam2Model`.

    ``processor(images=..., input_points=..., input_labels=..., input_boxes=...,
    return_tensors="pt")``; without ``images``, ``original_sizes`` (H, W) per image says how to
    scale the prompts. Padding of ragged point lists uses ``point_pad_value`` (-10).
    """

    def __init__(
        self,
        image_processor: Sam2ImageProcessor | None = None,
        target_size: int | None = None,
        point_pad_value: int = PAD_VALUE,
        **kwargs: Any,
    ) -> None:
        if point_pad_value != PAD_VALUE:
            raise ValueError(f"only point_pad_value={PAD_VALUE} is supported (the model's)")
        self.image_processor = image_processor or Sam2ImageProcessor()
        self.point_pad_value = point_pad_value
        self.target_size = target_size or self.image_processor.size["height"]

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike[str], **kwargs: Any) -> Any:
        return cls(Sam2ImageProcessor.from_pretrained(source), **kwargs)

    def __call__(
        self,
        images: Any = None,
        segmentation_maps: Any = None,
        input_points: Any = None,
        input_labels: Any = None,
        input_boxes: Any = None,
        original_sizes: Any = None,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        if segmentation_maps is not None:
            raise NotImplementedError("segmentation_maps (training labels) are not supported")
        if images is not None:
            out = self.image_processor(images, return_tensors=return_tensors, **kwargs)
            sizes = _size_list(out["original_sizes"])
        elif original_sizes is not None:
            sizes = _size_list(original_sizes)
            out = _finish({"original_sizes": sizes}, return_tensors)
        else:
            raise ValueError("give images, or original_sizes to scale prompts without images")
        out.update(self.encode_prompts(input_points, input_labels, input_boxes, sizes))
        if return_tensors == "np":
            out = _finish(dict(out), "np")
        return out

    def encode_prompts(
        self,
        input_points: Any,
        input_labels: Any,
        input_boxes: Any,
        original_sizes: list[list[int]],
    ) -> dict[str, torch.Tensor]:
        """Checked, padded and scaled prompt tensors: ``input_points`` (B, P, N, 2),
        ``input_labels`` (B, P, N) int64, ``input_boxes`` (B, P, 4)."""
        out: dict[str, torch.Tensor] = {}
        n_images = len(original_sizes)
        if input_points is not None:
            points, point_sizes = read_nested(input_points, POINTS, pad=True)
            _check_images(POINTS.name, point_sizes[0], n_images)
            out["input_points"] = scale_coords(
                points, original_sizes, self.target_size, boxes=False
            )
        if input_labels is not None:
            labels, label_sizes = read_nested(input_labels, LABELS, pad=True)
            _check_images(LABELS.name, label_sizes[0], n_images)
            if input_points is not None and label_sizes != point_sizes:
                raise ValueError(
                    f"input_points and input_labels disagree: padded to [images, objects, "
                    f"points] = {point_sizes} and {label_sizes}; give one label per point"
                )
            out["input_labels"] = labels.to(torch.int64)
        if input_boxes is not None:
            boxes, box_sizes = read_nested(input_boxes, BOXES, pad=False)
            _check_images(BOXES.name, box_sizes[0], n_images)
            out["input_boxes"] = scale_coords(boxes, original_sizes, self.target_size, boxes=True)
        return out

    def post_process_masks(self, masks: Any, original_sizes: Any, *args: Any, **kwargs: Any) -> Any:
        """See :func:`post_process_masks`."""
        return post_process_masks(masks, original_sizes, *args, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return [*self.image_processor.model_input_names, "original_sizes"]


def _size_list(sizes: Any) -> list[list[int]]:
    if isinstance(sizes, (torch.Tensor, np.ndarray)):
        sizes = sizes.tolist()
    out = [[int(v) for v in size] for size in sizes]
    if any(len(size) != 2 for size in out):
        raise ValueError(f"original_sizes must hold (height, width) pairs, got {sizes!r}")
    return out


def _check_images(name: str, n_prompted: int, n_images: int) -> None:
    if n_prompted != n_images:
        raise ValueError(
            f"{name} has prompts for {n_prompted} image(s) at its image level, but "
            f"{n_images} image(s) were given"
        )

"""Image input conversion and the model's preprocessing.

Any common image becomes a (3, H, W) float32 tensor in [0, 1]; preprocessing resizes it to the
model's square input with antialiased bilinear interpolation and normalises it with the
ImageNet statistics, as SAM 2 was trained. :func:`check_prompt_points` is the one check that
clicks and box corners lie on the image, shared by the image and the video predictors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sam2ui.core.modeling.prompt_encoder import POINT_LABELS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ImageLike = Any  # np.ndarray (H, W[, C]) or PIL.Image.Image


def _pil_to_array(image: Any) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(image).astype(np.uint16)
    if mode == "I":  # 32-bit integer images hold 16-bit data in practice (e.g. PNG 16-bit grey)
        arr = np.asarray(image)
        if arr.min() < 0 or arr.max() > 65535:
            raise ValueError("32-bit integer images must hold values in [0, 65535]")
        return arr.astype(np.uint16)
    if mode == "F":
        return np.asarray(image, dtype=np.float32)
    if mode in ("RGB", "L", "RGBA", "LA"):
        return np.asarray(image)
    return np.asarray(
        image.convert("RGBA" if "A" in mode or "transparency" in image.info else "RGB")
    )


def image_to_array(image: ImageLike) -> np.ndarray:
    """Any supported image as an (H, W, 3) array (uint8, uint16, bool or float), alpha dropped.

    Accepts numpy arrays (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) and PIL images of any mode.
    Raises TypeError/ValueError with the reason for anything else.
    """
    if hasattr(image, "mode") and hasattr(image, "size") and hasattr(image, "convert"):
        arr = _pil_to_array(image)
    elif isinstance(image, np.ndarray):
        arr = image
    elif isinstance(image, torch.Tensor):
        raise TypeError(
            "pass the image as a numpy array (H, W, C) or a PIL image, not a torch tensor "
            "(e.g. tensor.permute(1, 2, 0).cpu().numpy() for a (C, H, W) tensor)"
        )
    else:
        raise TypeError(
            f"unsupported image type {type(image).__name__}; use a numpy array or PIL image"
        )

    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise ValueError(
            "image must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
            f"got {tuple(arr.shape)}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image is empty: shape {tuple(arr.shape)}")
    channels = arr.shape[2]
    if channels in (2, 4):  # grey+alpha or RGBA: drop alpha
        arr = arr[:, :, : channels - 1]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.dtype not in (np.uint8, np.uint16, np.bool_) and not np.issubdtype(
        arr.dtype, np.floating
    ):
        if np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 65535:
            arr = arr.astype(np.uint16)
        else:
            raise ValueError(
                f"unsupported image dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]"
            )
    return arr


def to_uint8_rgb(arr: np.ndarray) -> np.ndarray:
    """``image_to_array`` output (uint8, uint16, bool or float in [0, 1]) -> uint8 RGB."""
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.uint16:
        return np.rint(arr / 257.0).astype(np.uint8)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    return np.rint(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)


def image_to_tensor(image: ImageLike) -> torch.Tensor:
    """Any supported image -> (3, H, W) float32 tensor in [0, 1].

    uint8 is divided by 255 and uint16 by 65535; float images must already lie in [0, 1].
    """
    arr = image_to_array(image)
    tensor = torch.from_numpy(np.require(arr, requirements=["C", "W"])).permute(2, 0, 1)
    if arr.dtype == np.uint8:
        return tensor.float().div(255)
    if arr.dtype == np.uint16:
        return tensor.float().div(65535)
    if arr.dtype == np.bool_:
        return tensor.float()
    tensor = tensor.float()
    if not torch.isfinite(tensor).all():
        raise ValueError("image contains NaN or infinite values")
    lo, hi = float(tensor.min()), float(tensor.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"float images must lie in [0, 1]; this one spans [{lo:.3g}, {hi:.3g}] "
            "(convert to uint8 or scale it first)"
        )
    return tensor


def preprocess(images: list[torch.Tensor], size: int) -> torch.Tensor:
    """(3, H_i, W_i) tensors in [0, 1] -> (B, 3, size, size) normalised model input."""
    resized = [
        F.interpolate(
            img[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        for img in images
    ]
    batch = torch.cat(resized)
    mean = torch.tensor(IMAGENET_MEAN, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std


def check_point_labels(labels: torch.Tensor, name: str, noun: str = "label") -> torch.Tensor:
    """Point labels as int32; ValueError (TypeError for complex numbers) for fractions and
    for labels the prompt encoder does not know."""
    if labels.is_complex():
        raise TypeError(f"{name} must be integers (1 positive, 0 negative)")
    if labels.is_floating_point() and (
        not torch.isfinite(labels).all() or (labels != labels.round()).any()
    ):
        raise ValueError(f"{name} must be integers (1 positive, 0 negative)")
    labels = labels.to(torch.int32)
    bad = ~torch.isin(labels, torch.tensor(POINT_LABELS, dtype=torch.int32))
    if bad.any():
        raise ValueError(
            f"{noun} {int(labels[bad][0])} in {name} is not one the model knows: use 1 "
            "(positive), 0 (negative), -1 (padding), 2/3 (box corners)"
        )
    return labels


def check_prompt_points(
    coords: torch.Tensor,
    name: Callable[[int], str],
    size: tuple[int, int],
    normalized: bool,
    image: str = "image",
) -> None:
    """ValueError unless every (x, y) row of ``coords`` (K, 2) is finite and lies on the
    image of ``size`` (W, H): in [0, W] x [0, H] for pixels (the border, x = W or y = H, is
    inside: the annotators clip boxes to it), in [0, 1] x [0, 1] for ``normalized`` fractions.
    ``name(k)`` names row k in the message (e.g. ``"point_coords[1]"``)."""
    width, height = size
    rows = coords.detach().reshape(-1, 2).to(device="cpu", dtype=torch.float64)
    finite = torch.isfinite(rows).all(dim=1)
    limit = torch.tensor([1.0, 1.0] if normalized else [float(width), float(height)])
    inside = finite & (rows >= 0).all(dim=1) & (rows <= limit).all(dim=1)
    if bool(inside.all()):
        return
    k = int((~inside).nonzero()[0, 0])
    x, y = (str(np.float32(v)) for v in rows[k].tolist())  # as the model reads them
    where = f"{name(k)} = ({x}, {y})"
    if not bool(finite[k]):
        raise ValueError(f"{where} contains NaN or infinite values ({width} x {height} {image})")
    if normalized:
        raise ValueError(
            f"{where} lies outside [0, 1] x [0, 1]: with normalize_coords=False coordinates "
            f"are fractions of the {width} x {height} {image}"
        )
    raise ValueError(f"{where} lies outside the {width} x {height} {image}")

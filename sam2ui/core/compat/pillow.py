"""Pillow across the releases sam2ui's range admits: 9.4 up to 13.

What moved (read from each release's ``PIL/Image.py``):

- ``Image.fromarray(array, mode)``: any ``mode`` is a DeprecationWarning in 11.3; from 12.0
  only a mode that changes the data type is (``bool`` read as ``"L"``, ``int32`` as ``"L"``),
  and 13.0 turns that case into ``ValueError("Invalid mode for data type")``. A mode of the
  same layout (``"P"`` for uint8 ``(H, W)``, ``"RGBX"`` for uint8 ``(H, W, 4)``) is fine from 12
  on but still warns in 11.3. :func:`image_from_array` never passes ``mode``.
- ``Image.Image.getdata`` is deprecated from 12.1 (removal planned for 14) in favour of
  ``get_flattened_data``; saving an ``"I"`` image as PNG was deprecated in 12 and is an
  OSError in 13. sam2ui uses neither (its PNGs are modes ``"1"``, ``"L"``, ``"P"``,
  ``"RGB"`` and ``"RGBA"``).
- Unchanged over the range and used as is: ``Image.open``, ``convert``, ``resize`` (bicubic by
  default), ``frombytes``, ``putpalette``, ``Image.Resampling``,
  ``Image.DecompressionBombError`` and ``ImageOps.exif_transpose(image)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageMode

__all__ = ["image_from_array"]


def image_from_array(array: Any, mode: str | None = None) -> Image.Image:
    """A PIL image holding ``array`` (numpy or anything with ``__array_interface__``).

    Without ``mode`` (or with the mode Pillow infers: ``"1"`` for bool ``(H, W)``, ``"L"`` for
    uint8 ``(H, W)``, ``"RGB"``/``"RGBA"`` for uint8 ``(H, W, 3|4)``) this is
    ``Image.fromarray(array)``. A ``mode`` with the same bytes per pixel (``"P"`` for uint8
    ``(H, W)``, ``"RGBX"``/``"CMYK"`` for uint8 ``(H, W, 4)``, ``"YCbCr"`` for ``(H, W, 3)``)
    reads the same bytes as that mode, which is what ``fromarray(array, mode)`` did; any
    other ``mode`` is a conversion (``image.convert(mode)``: bool to ``"L"`` gives 0/255).
    """
    arr = np.asarray(array)
    image = Image.fromarray(arr)
    if mode is None or image.mode == mode:
        return image
    try:
        descriptor = ImageMode.getmode(mode)
    except KeyError:
        raise ValueError(f"unknown image mode {mode!r}") from None
    channels = arr.shape[2] if arr.ndim == 3 else 1
    if arr.dtype.str == descriptor.typestr and channels == len(descriptor.bands):
        height, width = arr.shape[:2]
        return Image.frombytes(mode, (width, height), np.ascontiguousarray(arr).tobytes())
    return image.convert(mode)

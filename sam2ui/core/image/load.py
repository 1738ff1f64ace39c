"""Reading a picture the way people expect to see it: one loader for the app, the widgets and
the command line.

:func:`load_image` gives an upright ``(H, W, 3)`` uint8 RGB array from a file path, a PIL image
or a numpy array, whatever the file's mode:

- 16-bit greyscale PNGs and TIFFs (Pillow modes ``I;16*``, ``I``) and float TIFFs (``F``) are
  scaled to 8 bits over their full range (``convert("RGB")`` clips them: all white);
- CMYK, palette (with or without transparency), LA and RGBA are converted to RGB, alpha
  dropped;
- the EXIF orientation is applied, so a phone's portrait photo is upright.

Pictures over ``max_pixels`` (width x height; :data:`DEFAULT_MAX_PIXELS`, 40 MP, settable
per call or with the environment variable ``SAM2UI_MAX_IMAGE_PIXELS``) are refused with
:class:`ImageTooLargeError` before they are decoded, or scaled down to fit when
``downscale=True``. A file that is not a picture, or is cut short, raises
:class:`ImageReadError` with a sentence meant for the user (no temporary paths, no errno).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sam2ui.core.transforms import image_to_array, to_uint8_rgb

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "ImageReadError",
    "ImageTooLargeError",
    "load_image",
    "max_image_pixels",
]

DEFAULT_MAX_PIXELS = 40_000_000


class ImageReadError(ValueError):
    """The file could not be read as a picture."""


class ImageTooLargeError(ValueError):
    """The picture has more pixels than allowed."""

    def __init__(self, pixels: int, limit: int, size: tuple[int, int] | None = None) -> None:
        self.pixels, self.limit, self.size = pixels, limit, size
        what = f"{pixels / 1e6:.1f} MP"
        if size is not None:
            what = f"{size[0]} x {size[1]} ({what})"
        super().__init__(
            f"the image is {what}, over the {limit / 1e6:g} MP limit; scale it down first, or "
            "raise the limit (max_pixels, or the SAM2UI_MAX_IMAGE_PIXELS environment variable)"
        )


def max_image_pixels(max_pixels: int | None = None) -> int:
    """The pixel limit in effect: ``max_pixels``, else ``SAM2UI_MAX_IMAGE_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`."""
    if max_pixels is not None:
        value: Any = max_pixels
    else:
        value = os.environ.get("SAM2UI_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS)
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"the image pixel limit must be a whole number, got {value!r}") from None
    if limit < 1:
        raise ValueError(f"the image pixel limit must be positive, got {limit}")
    return limit


def _fit(width: int, height: int, limit: int) -> tuple[int, int]:
    scale = math.sqrt(limit / (width * height))
    return max(int(width * scale), 1), max(int(height * scale), 1)


def _owned(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous, writable array of its own (torch warns on read-only buffers)."""
    if arr.flags.c_contiguous and arr.flags.writeable and arr.flags.owndata:
        return arr
    return np.array(arr, order="C")


def _from_pil(image: Image.Image, limit: int, downscale: bool) -> np.ndarray:
    width, height = image.size
    if width * height > limit:
        if not downscale:
            raise ImageTooLargeError(width * height, limit, (width, height))
        # draft() lets JPEG decode at 1/2, 1/4 or 1/8 size: the full picture is never in RAM.
        image.draft(image.mode, _fit(width, height, limit))
        image = image.resize(_fit(width, height, limit))
    upright = ImageOps.exif_transpose(image)
    return _owned(to_uint8_rgb(image_to_array(upright)))


def load_image(
    source: str | os.PathLike[str] | Image.Image | np.ndarray,
    *,
    max_pixels: int | None = None,
    downscale: bool = False,
) -> np.ndarray:
    """An upright ``(H, W, 3)`` uint8 RGB array of ``source`` (see the module's docstring).

    Raises:
        FileNotFoundError: no such file.
        ImageReadError: not a picture, or a damaged one.
        ImageTooLargeError: over the pixel limit (and ``downscale`` is False).
        TypeError, ValueError: an array or object that is not an image.
    """
    limit = max_image_pixels(max_pixels)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"no image file {path.name}")
        try:
            with warnings.catch_warnings():
                # Pillow warns past ~89 MP at open; the limit here is checked right after.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    return _from_pil(image, limit, downscale)
        except Image.DecompressionBombError as exc:
            # Past ~179 MP Pillow refuses at open, before the size can be read.
            found = re.search(r"(\d+) pixels", str(exc))
            raise ImageTooLargeError(int(found.group(1)) if found else limit + 1, limit) from None
        except UnidentifiedImageError:
            raise ImageReadError(
                f"{path.name} is not a picture sam2ui can read (PNG, JPEG, TIFF, WebP, BMP, ...)"
            ) from None
        except (OSError, SyntaxError, ValueError) as exc:
            if isinstance(exc, (ImageTooLargeError, FileNotFoundError)):
                raise
            raise ImageReadError(
                f"{path.name} is damaged or cut short and cannot be read"
            ) from None
    if isinstance(source, Image.Image):
        return _from_pil(source, limit, downscale)
    arr = image_to_array(source)
    height, width = arr.shape[:2]
    if width * height > limit:
        if not downscale:
            raise ImageTooLargeError(width * height, limit, (width, height))
        small = Image.fromarray(to_uint8_rgb(arr)).resize(_fit(width, height, limit))
        return np.asarray(small).copy()
    return _owned(to_uint8_rgb(arr))

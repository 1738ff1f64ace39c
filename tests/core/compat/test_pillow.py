"""Pillow releases that reject ``Image.fromarray(array, mode)``, simulated on the installed one.

Pillow 11.3 deprecates the ``mode`` argument, 12 only where it changes the data type, and 13
raises ValueError there; :func:`image_from_array` must give the same pixels without it.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pytest
from PIL import Image

import sam2ui.core
from sam2ui.core.compat.pillow import image_from_array
from sam2ui.core.exports import cutout_png

REAL_FROMARRAY = Image.fromarray


def strict_fromarray(obj: Any, mode: str | None = None) -> Image.Image:
    """``Image.fromarray`` that refuses ``mode`` outright (stricter than any release)."""
    if mode is not None:
        raise ValueError("Invalid mode for data type")
    return REAL_FROMARRAY(obj)


@pytest.fixture
def strict_pillow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "fromarray", strict_fromarray)


def png_round_trip(image: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    buf.seek(0)
    with Image.open(buf) as loaded:
        loaded.load()
        return loaded


@pytest.mark.usefixtures("strict_pillow")
def test_modes_without_fromarray_mode() -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    mask = np.zeros((5, 7), bool)
    mask[1:4, 2:6] = True
    rgba = cutout_png(rgb, mask)

    image = image_from_array(rgba, "RGBA")
    assert image.mode == "RGBA" and image.size == (7, 5)
    assert np.array_equal(np.asarray(png_round_trip(image)), rgba)
    assert (
        np.asarray(png_round_trip(image))[..., 3].tobytes() == (mask * 255).astype("u1").tobytes()
    )

    as_bits = image_from_array(mask)
    assert as_bits.mode == "1"
    assert np.array_equal(np.asarray(png_round_trip(as_bits)), mask)

    as_grey = image_from_array(mask, "L")  # a conversion: 0/255, not raw bytes
    assert as_grey.mode == "L" and np.asarray(as_grey).tolist() == (mask * 255).tolist()

    indexed = image_from_array(mask.astype(np.uint8) * 3, "P")  # same bytes, read as "P"
    indexed.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    loaded = png_round_trip(indexed)
    assert loaded.mode == "P" and np.asarray(loaded).tolist() == (mask * 3).tolist()
    assert loaded.convert("RGB").getpixel((2, 1)) == (0, 0, 255)

    padded = image_from_array(rgba, "RGBX")
    assert padded.mode == "RGBX" and padded.getpixel((0, 0))[:3] == tuple(rgb[0, 0])


def test_no_deprecation_warning_on_the_installed_pillow() -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert image_from_array(rgba, "RGBA").mode == "RGBA"
        assert image_from_array(np.zeros((2, 3), np.uint8), "P").mode == "P"
        assert image_from_array(np.zeros((2, 3), bool), "L").mode == "L"
    with pytest.raises(ValueError, match="unknown image mode"):
        image_from_array(rgba, "NOPE")


def test_front_ends_reach_it_through_the_core_door() -> None:
    assert sam2ui.core.image_from_array is image_from_array
    assert "image_from_array" in sam2ui.core.__all__

"""load_image: pictures of every common mode, upright, under a pixel limit, with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2ui.core.image.load import (
    DEFAULT_MAX_PIXELS,
    ImageReadError,
    ImageTooLargeError,
    load_image,
    max_image_pixels,
)

H, W = 24, 40


def ramp16() -> np.ndarray:
    """(H, W) uint16 over the whole 16-bit range, left to right."""
    return np.tile(np.linspace(0, 65535, W).round().astype(np.uint16), (H, 1))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"grey16{suffix}"
    Image.fromarray(ramp16()).save(path)
    with Image.open(path) as opened:
        assert opened.mode.startswith("I")  # what made convert("RGB") all white
    rgb = load_image(path)
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
    assert rgb.flags.writeable and rgb.flags.c_contiguous
    want = np.rint(ramp16() / 257.0).astype(np.uint8)
    assert np.array_equal(rgb[..., 0], want)
    assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255 and len(np.unique(rgb)) > 30


def test_float_tiff(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    values = np.tile(np.linspace(0, 1, W, dtype=np.float32), (H, 1))
    Image.fromarray(values).save(path)  # mode "F"
    rgb = load_image(path)
    assert np.array_equal(rgb[..., 1], np.rint(values * 255).astype(np.uint8))


def test_cmyk_palette_la_and_rgba(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    cmyk = tmp_path / "cmyk.jpg"
    base.convert("CMYK").save(cmyk, quality=100)
    want_cmyk = np.asarray(base.convert("CMYK").convert("RGB")).astype(int)
    assert np.abs(load_image(cmyk).astype(int) - want_cmyk).max() < 40

    pal = tmp_path / "pal.png"
    p_img = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    p_img.info["transparency"] = 0
    p_img.save(pal, transparency=0)
    got = load_image(pal)
    want = np.asarray(p_img.convert("RGBA"))[..., :3]
    assert np.array_equal(got, want)

    la = tmp_path / "la.png"
    grey = rng.integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(np.dstack([grey, np.full_like(grey, 128)])).save(la)
    assert np.array_equal(load_image(la), np.repeat(grey[..., None], 3, axis=2))

    rgba = np.dstack([np.asarray(base), np.zeros((H, W), np.uint8)])
    assert np.array_equal(load_image(rgba), np.asarray(base))


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = np.zeros((H, W, 3), np.uint8)
    img[:4, :8] = 255  # a white patch at the top left of the stored pixels
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view"
    Image.fromarray(img).save(path, exif=exif, quality=100)
    rgb = load_image(path)
    assert rgb.shape == (W, H, 3)
    # after a 90 degree clockwise turn the patch sits at the top right
    assert rgb[:8, -4:].mean() > 200 and rgb[:8, :4].mean() < 50


def test_arrays_of_other_dtypes() -> None:
    assert np.array_equal(load_image(ramp16())[..., 2], np.rint(ramp16() / 257.0).astype(np.uint8))
    mask = np.zeros((H, W), bool)
    mask[3:5] = True
    assert load_image(mask)[4, 0, 0] == 255 and load_image(mask)[0, 0, 0] == 0


def test_pixel_limit_refuses_or_downscales(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(np.full((300, 500, 3), 90, np.uint8)).save(path)
    with pytest.raises(ImageTooLargeError, match=r"500 x 300 \(0.1 MP\), over the 0.1 MP limit"):
        load_image(path, max_pixels=100_000)
    small = load_image(path, max_pixels=100_000, downscale=True)
    h, w = small.shape[:2]
    assert h * w <= 100_000 and abs(w / h - 500 / 300) < 0.02 and small[5, 5, 0] == 90
    with pytest.raises(ImageTooLargeError):
        load_image(np.zeros((300, 500, 3), np.uint8), max_pixels=1000)
    monkeypatch.setenv("SAM2UI_MAX_IMAGE_PIXELS", "1000")
    assert max_image_pixels() == 1000
    with pytest.raises(ImageTooLargeError, match="SAM2UI_MAX_IMAGE_PIXELS"):
        load_image(path)
    monkeypatch.setenv("SAM2UI_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="whole number"):
        max_image_pixels()
    monkeypatch.delenv("SAM2UI_MAX_IMAGE_PIXELS")
    assert max_image_pixels() == DEFAULT_MAX_PIXELS == 40_000_000


def test_a_picture_past_pillows_own_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    # A 20000 x 20000 PNG header (Pillow refuses past ~179 MP at open): refused in our words.
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)
    with pytest.raises(ImageTooLargeError) as info:
        load_image(path)
    assert "400.0 MP" in str(info.value) and "decompression" not in str(info.value).lower()


def test_files_that_are_not_pictures(tmp_path: Path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(ImageReadError, match="notes.png is not a picture"):
        load_image(text)
    good = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)).save(good)
    good.write_bytes(good.read_bytes()[:300])
    with pytest.raises(ImageReadError, match="cut.png is damaged or cut short") as info:
        load_image(good)
    assert str(tmp_path) not in str(info.value) and "errno" not in str(info.value).lower()
    with pytest.raises(FileNotFoundError, match="no image file missing.png"):
        load_image(tmp_path / "missing.png")

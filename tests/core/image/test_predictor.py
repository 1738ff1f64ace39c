"""SAM2ImagePredictor behaviour that needs no reference: input conversion and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sam2ui.core.image.predictor import SAM2ImagePredictor
from sam2ui.core.loading.build import build_sam2
from sam2ui.core.loading.devices import resolve_device, resolve_dtype
from sam2ui.core.transforms import image_to_tensor


@pytest.fixture(scope="module")
def predictor() -> SAM2ImagePredictor:
    torch.manual_seed(0)
    pred = SAM2ImagePredictor(build_sam2("sam2.1-hiera-tiny"))
    pred.set_image(np.full((60, 80, 3), 128, dtype=np.uint8))
    return pred


def test_predict_before_set_image_is_a_runtime_error():
    pred = SAM2ImagePredictor(build_sam2("sam2.1-hiera-tiny"))
    with pytest.raises(RuntimeError, match="set_image"):
        pred.predict(point_coords=np.array([[1, 1]]), point_labels=np.array([1]))
    with pytest.raises(RuntimeError, match="set_image"):
        pred.get_image_embedding()
    with pytest.raises(RuntimeError, match="set_image_batch"):
        pred.predict_batch([np.array([[1, 1]])], [np.array([1])])


def test_output_shapes_and_dtypes(predictor):
    masks, iou, low = predictor.predict(
        point_coords=np.array([[10, 20]]), point_labels=np.array([1])
    )
    assert masks.shape == (3, 60, 80) and masks.dtype == np.bool_
    assert iou.shape == (3,) and iou.dtype == np.float32
    assert low.shape == (3, 256, 256)
    masks, iou, low = predictor.predict(
        point_coords=np.array([[10, 20]]), point_labels=np.array([1]), multimask_output=False
    )
    assert masks.shape == (1, 60, 80) and iou.shape == (1,)
    boxes = np.array([[0, 0, 30, 30], [10, 10, 70, 50]])
    masks, iou, low = predictor.predict(box=boxes, multimask_output=False)
    assert masks.shape == (2, 1, 60, 80) and iou.shape == (2, 1) and low.shape == (2, 1, 256, 256)
    assert predictor.orig_hw == [(60, 80)]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(point_coords=np.array([[1.0, 2.0]])), ValueError, "point_labels"),
        (dict(point_labels=np.array([1])), ValueError, "without point_coords"),
        (
            dict(point_coords=np.array([[np.nan, 2.0]]), point_labels=np.array([1])),
            ValueError,
            "NaN",
        ),
        (
            dict(point_coords=np.array([[np.inf, 2.0]]), point_labels=np.array([1])),
            ValueError,
            "infinite",
        ),
        (
            dict(point_coords=np.array([1.0, 2.0, 3.0]), point_labels=np.array([1])),
            ValueError,
            r"\(N, 2\)",
        ),
        (
            dict(point_coords=np.array([[1.0, 2.0]]), point_labels=np.array([1, 0])),
            ValueError,
            "does not match",
        ),
        (
            dict(point_coords=np.array([[1.0, 2.0]]), point_labels=np.array([7])),
            ValueError,
            "label 7",
        ),
        (
            dict(point_coords=np.array([[1.0, 2.0]]), point_labels=np.array([0.5])),
            ValueError,
            "integers",
        ),
        (
            dict(point_coords=np.array([["a", "b"]]), point_labels=np.array([1])),
            TypeError,
            "numeric",
        ),
        (dict(box=np.array([50, 10, 20, 40])), ValueError, "x1 >= x0"),
        (dict(box=np.array([10, 50, 20, 40])), ValueError, "y1 >= y0"),
        (dict(box=np.array([1, 2, 3])), ValueError, "XYXY"),
        (dict(mask_input=np.zeros((1, 64, 64))), ValueError, "256"),
        (
            dict(
                box=np.array([[0, 0, 5, 5], [1, 1, 6, 6]]),
                point_coords=np.zeros((3, 1, 2)),
                point_labels=np.ones((3, 1)),
            ),
            ValueError,
            "one set of points per box",
        ),
    ],
)
def test_bad_prompts_are_clear_errors(predictor, kwargs, error, match):
    with pytest.raises(error, match=match):
        predictor.predict(**kwargs)


def test_points_on_the_border_are_legal_and_outside_is_an_error(predictor):
    # The border (x = W, y = H) is inside: the annotators clip boxes to it.
    masks, iou, _ = predictor.predict(
        point_coords=np.array([[0.0, 0.0], [80.0, 60.0]]), point_labels=np.array([1, 0])
    )
    assert masks.shape == (3, 60, 80)
    assert np.isfinite(iou).all()
    with pytest.raises(
        ValueError, match=r"point_coords\[1\] = \(80.5, 10.0\) lies outside the 80 x 60"
    ):
        predictor.predict(point_coords=np.array([[1.0, 1.0], [80.5, 10.0]]), point_labels=[1, 0])


def test_normalized_coordinates_equal_pixel_coordinates(predictor):
    pix = predictor.predict(
        point_coords=np.array([[40.0, 15.0]]), point_labels=np.array([1]), return_logits=True
    )
    rel = predictor.predict(
        point_coords=np.array([[0.5, 0.25]]),
        point_labels=np.array([1]),
        normalize_coords=False,
        return_logits=True,
    )
    np.testing.assert_allclose(rel[0], pix[0], atol=1e-5)


GREY_200 = 200 / 255


def _palette_image() -> Image.Image:
    image = Image.new("P", (50, 40), 1)
    image.putpalette([0, 0, 0, 200, 200, 200])
    return image


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: np.full((40, 50), 200, np.uint8), GREY_200),  # grey
        (lambda: np.full((40, 50, 1), 200, np.uint8), GREY_200),
        (
            lambda: np.dstack([np.full((40, 50, 3), 200, np.uint8), np.zeros((40, 50), np.uint8)]),
            GREY_200,
        ),
        (lambda: np.full((40, 50, 3), 200 * 257, np.uint16), GREY_200),  # 16-bit
        (lambda: np.full((40, 50, 3), GREY_200, np.float32), GREY_200),
        (lambda: np.ones((40, 50), bool), 1.0),
        (lambda: Image.new("L", (50, 40), 200), GREY_200),
        (lambda: Image.new("RGBA", (50, 40), (200, 200, 200, 0)), GREY_200),
        (lambda: Image.fromarray(np.full((40, 50), 200 * 257, np.uint16)), GREY_200),  # PIL I;16
        (_palette_image, GREY_200),
        (lambda: Image.new("CMYK", (50, 40), (0, 0, 0, 0)), 1.0),
    ],
)
def test_image_conversions(make, expected):
    tensor = image_to_tensor(make())
    assert tensor.shape == (3, 40, 50) and tensor.dtype == torch.float32
    np.testing.assert_allclose(tensor.numpy(), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((4, 5, 6), np.uint8), ValueError, "shape"),
        (np.zeros((0, 5, 3), np.uint8), ValueError, "empty"),
        (np.full((4, 5, 3), 2.0, np.float32), ValueError, r"\[0, 1\]"),
        (np.full((4, 5, 3), np.nan, np.float32), ValueError, "NaN"),
        (np.zeros((4, 5, 3), np.int64) - 1, ValueError, "dtype"),
        (torch.zeros(3, 4, 5), TypeError, "numpy"),
        ("image.png", TypeError, "unsupported image type"),
    ],
)
def test_bad_images_are_clear_errors(image, error, match):
    with pytest.raises(error, match=match):
        image_to_tensor(image)


def test_set_image_prepares_the_decoder_so_clicks_do_not(monkeypatch):
    model = build_sam2("sam2.1-hiera-tiny")
    pred = SAM2ImagePredictor(model)
    calls = []
    original = model.decoder_image_keys
    monkeypatch.setattr(model, "decoder_image_keys", lambda f: calls.append(1) or original(f))
    click = dict(point_coords=np.array([[10, 20]]), point_labels=np.array([1]))
    pred.set_image(np.full((60, 80, 3), 90, dtype=np.uint8))
    assert calls == [1]
    eager = pred.predict(**click, return_logits=True)[0]
    pred.predict(**click)
    assert calls == [1]  # the clicks reuse the work of set_image
    # The same logits as when a click prepares it (a batch of one, made on first use).
    pred.set_image_batch([np.full((60, 80, 3), 90, dtype=np.uint8)])
    assert calls == [1]
    lazy = pred.predict_batch([click["point_coords"]], [click["point_labels"]], return_logits=True)
    assert calls == [1, 1]
    np.testing.assert_array_equal(lazy[0][0], eager)


def test_set_image_batch_validation(predictor):
    with pytest.raises(TypeError, match="list"):
        predictor.set_image_batch(np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="at least one"):
        predictor.set_image_batch([])


def test_device_and_dtype_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda", "mps")
    assert resolve_dtype("bfloat16") is torch.bfloat16
    assert resolve_dtype(torch.float32) is torch.float32
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int8")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_bfloat16_switch_keeps_decoder_in_float32():
    model = build_sam2("sam2.1-hiera-tiny").set_compute_dtype(torch.bfloat16)
    assert model.image_encoder.trunk.patch_embed.proj.weight.dtype == torch.bfloat16
    assert model.sam_mask_decoder.iou_token.weight.dtype == torch.float32
    pred = SAM2ImagePredictor(model)
    pred.set_image(np.full((30, 40, 3), 90, np.uint8))
    masks, iou, _ = pred.predict(
        point_coords=np.array([[5, 5]]), point_labels=np.array([1]), return_logits=True
    )
    assert masks.dtype == np.float32 and iou.dtype == np.float32
    assert pred.get_image_embedding().dtype == torch.float32

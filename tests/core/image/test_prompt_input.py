"""Prompt forms of SAM2ImagePredictor.predict / predict_batch: ragged points (objects with
different numbers of points), and clear errors for prompts that cannot be read or lie off the
image. A 256-pixel tiny model with random weights, on an 80 x 60 image."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sam2ui.core.image.predictor import SAM2ImagePredictor
from sam2ui.core.loading.build import build_sam2
from sam2ui.core.modeling.config import get_config

W, H = 80, 60
A = np.array([[10.0, 20.0]])  # one point
B = np.array([[30.0, 40.0], [50.0, 10.0], [70.0, 50.0]])  # three points
C = np.array([[5.0, 55.0]])  # one point
LA, LB, LC = np.array([1]), np.array([1, 0, 1]), np.array([1])


def _image(w: int = W, h: int = H, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 3, yy * 4, (xx + yy) * 2], axis=-1) + rng.integers(0, 30, (h, w, 3))
    return base.clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_sam2(replace(get_config("sam2.1-hiera-tiny"), image_size=256)).eval()


@pytest.fixture(scope="module")
def predictor(model) -> SAM2ImagePredictor:
    pred = SAM2ImagePredictor(model)
    pred.set_image(_image())
    return pred


def test_ragged_points_give_each_object_its_own_result(predictor):
    masks, iou, low = predictor.predict([A, B, C], [LA, LB, LC], return_logits=True)
    assert masks.shape == (3, 3, H, W) and iou.shape == (3, 3) and low.shape == (3, 3, 64, 64)
    # Objects with the same number of points decode together: exactly the rectangular batch.
    same = predictor.predict(np.stack([A, C]), np.stack([LA, LC]), return_logits=True)
    alone = predictor.predict(B, LB, return_logits=True)
    for got, a_c, b in zip((masks, iou, low), same, alone):
        assert np.array_equal(got[[0, 2]], a_c)
        assert np.array_equal(got[1], b)  # alone in its group: bit-exact with its own call
    # And each equals its own call up to float32 rounding of the batch.
    for i, (pts, labs) in enumerate(((A, LA), (B, LB), (C, LC))):
        own = predictor.predict(pts, labs, return_logits=True)
        np.testing.assert_allclose(masks[i], own[0], atol=1e-5, rtol=0)
        np.testing.assert_allclose(iou[i], own[1], atol=1e-5, rtol=0)
    # Boolean masks are the same objects' masks.
    bool_masks, _, _ = predictor.predict([A, B, C], [LA, LB, LC])
    assert bool_masks.dtype == np.bool_ and np.array_equal(bool_masks, masks > 0)


def test_ragged_points_with_boxes_and_masks(predictor):
    boxes = np.array([[0, 0, 40, 40], [20, 5, 80, 60], [0, 30, 30, 60]], dtype=np.float32)
    low = predictor.predict([A, B, C], [LA, LB, LC], multimask_output=False)[2]  # (3, 1, 64, 64)
    kwargs = dict(box=boxes, mask_input=low, multimask_output=False, return_logits=True)
    got = predictor.predict([A, B, C], [LA, LB, LC], **kwargs)
    assert got[0].shape == (3, 1, H, W)
    pick = [0, 2]
    same = predictor.predict(
        np.stack([A, C]), np.stack([LA, LC]), box=boxes[pick], mask_input=low[pick],
        multimask_output=False, return_logits=True,
    )  # fmt: skip
    alone = predictor.predict(
        B, LB, box=boxes[1], mask_input=low[1], multimask_output=False, return_logits=True
    )
    for g, s, a in zip(got, same, alone):
        assert np.array_equal(g[pick], s)
        assert np.array_equal(g[1], a)


def test_label_minus_one_is_a_token_not_nothing(predictor, model):
    """Why ragged prompts are decoded in groups rather than padded with label -1."""
    enc = model.sam_prompt_encoder
    coords = torch.tensor([[[10.0, 20.0], [200.0, 3.0]]])
    with torch.inference_mode():
        tokens = enc.embed_points(coords, torch.tensor([[-1, -1]]), pad=False)
    # A padding point's position is ignored: its token is the "not a point" embedding ...
    assert torch.equal(tokens[0, 0], enc.not_a_point_embed.weight[0])
    assert torch.equal(tokens[0, 1], enc.not_a_point_embed.weight[0])
    # ... but the token is still there: the decoder's tokens attend to it.
    plain = predictor.predict(A, LA, return_logits=True)[0]
    padded = predictor.predict(np.vstack([A, [[0.0, 0.0]]]), [1, -1], return_logits=True)[0]
    assert np.abs(plain - padded).max() > 1e-3


def test_predict_batch_takes_ragged_prompts_per_image(model):
    pred = SAM2ImagePredictor(model)
    pred.set_image_batch([_image(), _image(50, 70, seed=1)])
    coords = [[A, B], np.array([[1.0, 2.0], [49.0, 69.0], [50.0, 70.0]])]
    labels = [[LA, LB], np.array([1, 1, 0])]
    masks, iou, low = pred.predict_batch(coords, labels, return_logits=True)
    assert masks[0].shape == (2, 3, H, W) and masks[1].shape == (3, 70, 50)
    first = pred.predict_batch([A, coords[1]], [LA, labels[1]], return_logits=True)
    second = pred.predict_batch([B, coords[1]], [LB, labels[1]], return_logits=True)
    for got, one, two in zip((masks, iou, low), first, second):
        assert np.array_equal(got[0][0], one[0]) and np.array_equal(got[0][1], two[0])
        assert np.array_equal(got[1], one[1])


def test_predict_batch_checks_every_image_before_decoding(model, monkeypatch):
    pred = SAM2ImagePredictor(model)
    pred.set_image_batch([_image(), _image(50, 70, seed=1)])
    calls = []
    monkeypatch.setattr(pred, "predict_torch", lambda *a, **k: calls.append(1))
    match = r"point_coords_batch\[1\]\[0\] = \(60.0, 5.0\) lies outside the 50 x 70 image"
    with pytest.raises(ValueError, match=match):
        pred.predict_batch([A, np.array([[60.0, 5.0]])], [LA, [1]])
    with pytest.raises(ValueError, match=r"box_batch\[0\] must have shape \(4,\) or \(B, 4\)"):
        pred.predict_batch(box_batch=[np.array([1, 2, 3]), np.array([0, 0, 5, 5])])
    assert calls == []


def test_the_border_is_inside(predictor):
    on_border = predictor.predict(np.array([[W, H], [0, 0]]), [1, 0], return_logits=True)
    fractions = predictor.predict(
        np.array([[1.0, 1.0], [0, 0]]), [1, 0], normalize_coords=False, return_logits=True
    )
    np.testing.assert_allclose(fractions[0], on_border[0], atol=1e-5, rtol=0)
    masks, _, _ = predictor.predict(box=np.array([0, 0, W, H]), multimask_output=False)
    assert masks.shape == (1, H, W)


def _ragged(**kwargs):
    return {"point_coords": [A, B], "point_labels": [LA, LB], **kwargs}


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            dict(point_coords=[[1.0, 2.0], [900.0, 20.0]], point_labels=[1, 1]),
            ValueError,
            r"^point_coords\[1\] = \(900.0, 20.0\) lies outside the 80 x 60 image$",
        ),
        (
            dict(point_coords=[[1.0, 2.0], [-0.5, 20.0]], point_labels=[1, 1]),
            ValueError,
            r"point_coords\[1\] = \(-0.5, 20.0\) lies outside the 80 x 60 image",
        ),
        (
            dict(point_coords=[A, np.array([[1.0, 1.0], [3.0, 61.0]])], point_labels=[LA, [1, 0]]),
            ValueError,
            r"point_coords\[1\]\[1\] = \(3.0, 61.0\) lies outside the 80 x 60 image",
        ),
        (
            dict(point_coords=[[0.5, 1.5]], point_labels=[1], normalize_coords=False),
            ValueError,
            r"point_coords\[0\] = \(0.5, 1.5\) lies outside \[0, 1\] x \[0, 1\]: with "
            r"normalize_coords=False coordinates are fractions of the 80 x 60 image",
        ),
        (
            dict(point_coords=[[np.inf, 2.0]], point_labels=[1]),
            ValueError,
            r"point_coords\[0\] = \(inf, 2.0\) contains NaN or infinite values \(80 x 60 image\)",
        ),
        (
            dict(box=np.array([10.0, 10.0, 20.0, np.nan])),
            ValueError,
            r"box corner \(x1, y1\) = \(20.0, nan\) contains NaN",
        ),
        (
            dict(box=np.array([[0, 0, 10, 10], [10, 10, 81, 20]])),
            ValueError,
            r"box\[1\] corner \(x1, y1\) = \(81.0, 20.0\) lies outside the 80 x 60 image",
        ),
        (
            dict(point_coords=np.zeros((2, 3)), point_labels=[1, 1]),
            ValueError,
            r"point_coords must have shape \(N, 2\) or \(B, N, 2\).*got shape \(2, 3\)",
        ),
        (
            dict(point_coords=[A, np.zeros((2, 3))], point_labels=[LA, [1, 1]]),
            ValueError,
            r"point_coords\[1\] must have shape \(N, 2\).*got shape \(2, 3\)",
        ),
        (
            dict(point_coords=B, point_labels=[1, 0]),
            ValueError,
            r"point_labels shape \(2,\) does not match point_coords shape \(3, 2\)",
        ),
        (
            _ragged(point_labels=[LA, [1, 0]]),
            ValueError,
            r"point_labels\[1\] shape \(2,\) does not match point_coords\[1\] shape \(3, 2\)",
        ),
        (
            _ragged(point_labels=[LA, [1, 0, 1], [1]]),
            ValueError,
            r"point_labels is a list of 3 label arrays but point_coords has 2",
        ),
        (
            _ragged(point_labels=[LA]),
            ValueError,
            r"point_labels shape \(1, 1\) does not match point_coords \(a list of 2 arrays",
        ),
        (
            _ragged(point_labels=[1, 1]),
            ValueError,
            r"point_labels shape \(2,\) does not match point_coords \(a list of 2 arrays of "
            r"shapes \[\(1, 2\), \(3, 2\)\]\)",
        ),
        (
            dict(box=np.array([1, 2, 3])),
            ValueError,
            r"box must have shape \(4,\) or \(B, 4\) in XYXY.*got shape \(3,\)",
        ),
        (
            dict(box=[[0, 0, 5, 5], [1, 2, 3]]),
            ValueError,
            r"box\[1\] must be 4 numbers in XYXY.*got shape \(3,\)",
        ),
        (_ragged(box=np.array([0, 0, 5, 5])), ValueError, "1 boxes but 2 sets of points"),
        (
            _ragged(mask_input=np.zeros((3, 1, 64, 64))),
            ValueError,
            "mask_input has 3 masks for 2 prompts",
        ),
        (_ragged(point_labels=[LA, [1, 7, 0]]), ValueError, "point label 7 in point_labels"),
        (dict(point_coords=[A, [["a", "b"]]], point_labels=[LA, [1]]), TypeError, "numeric"),
    ],
)
def test_prompts_that_cannot_be_read_are_clear_errors(predictor, kwargs, error, match):
    with pytest.raises(error, match=match):
        predictor.predict(**kwargs)


def test_padding_label_is_a_zero_token(model):
    """Label -10 (transformers' padding of ragged point lists) gives a token of zeros; the
    other tokens are those of the same points without it."""
    enc = model.sam_prompt_encoder
    coords = torch.tensor([[[10.0, 20.0], [-10.0, -10.0], [200.0, 3.0]]])
    with torch.inference_mode():
        tokens = enc.embed_points(coords, torch.tensor([[1, -10, 0]]), pad=True)
        plain = enc.embed_points(coords[:, [0, 2]], torch.tensor([[1, 0]]), pad=True)
    assert tokens.shape == (1, 4, plain.shape[-1])
    assert torch.equal(tokens[0, 1], torch.zeros_like(tokens[0, 1]))
    torch.testing.assert_close(tokens[0, [0, 2, 3]], plain[0], rtol=0, atol=1e-5)

"""Parity of SAM2ImagePredictor with the reference's, same random weights, float32.

Two kernel settings are checked (sam2ui.core.modeling.layers.set_onednn_linear):

- "exact" (oneDNN linear off): sam2ui performs the reference's float32 operations with the
  same kernels; only a few element-wise steps are re-associated. Logits agree to 1e-5 (measured
  ~5e-7) and thresholded masks are identical at every pixel.
- "fast" (the default, oneDNN linear layers on the CPU): the linear layers accumulate in another
  order, so the image embedding differs by float32 rounding (measured ~1e-5 on values up to
  ~8) and mask logits by ~1e-6. Logits must agree to 1e-4. A pixel whose reference logit lies
  within that tolerance of the threshold is genuinely undecided and may flip; every other pixel
  must be identical, and flips must stay below one pixel in 10,000.

Any real numerical difference (a wrong constant, a missing term) shows up at 1e-2 or more.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2ui.core.image.predictor import SAM2ImagePredictor
from sam2ui.core.loading.checkpoint import load_sam2
from sam2ui.core.modeling.layers import set_onednn_linear
from tests.reference_models import build_reference_model

TOLERANCE = {"exact": 1e-5, "fast": 1e-4}
CASES = [
    ("sam2.1-hiera-tiny", "exact"),
    ("sam2.1-hiera-tiny", "fast"),
    ("sam2-hiera-small", "fast"),
]


@pytest.fixture(scope="module", params=CASES, ids=[f"{v}-{m}" for v, m in CASES])
def case(request):
    return request.param


@pytest.fixture(autouse=True)
def kernel_mode(case):
    """Every test runs (and its module fixtures were built) under its case's kernel setting."""
    previous = set_onednn_linear(case[1] == "fast")
    yield case[1]
    set_onednn_linear(previous)


@pytest.fixture(scope="module")
def predictors(case, meta_checkpoint):
    from sam2.sam2_image_predictor import SAM2ImagePredictor as ReferencePredictor

    variant, mode = case
    previous = set_onednn_linear(mode == "fast")
    path = meta_checkpoint(variant)
    state = torch.load(path, weights_only=True)["model"]
    ref_model = build_reference_model(variant, state_dict=state)
    ours = SAM2ImagePredictor(load_sam2(path))
    set_onednn_linear(previous)
    assert ours.model.config.name == variant  # inferred from the checkpoint
    return ReferencePredictor(ref_model), ours


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    # Smooth structure plus noise: odd size, not square, so resizing is exercised.
    yy, xx = np.mgrid[0:333, 0:517]
    base = np.stack([(xx * 0.5) % 255, (yy * 0.7) % 255, ((xx + yy) * 0.3) % 255], -1)
    return (base + rng.integers(0, 40, base.shape)).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def both_set(predictors, image, case):
    ref, ours = predictors
    previous = set_onednn_linear(case[1] == "fast")
    ref.set_image(image)
    ours.set_image(image)
    set_onednn_linear(previous)
    return ref, ours


def _compare(ref_out, our_out, tol):
    for name, a, b in zip(("masks", "iou", "low_res"), ref_out, our_out):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(b, a, atol=tol, rtol=0, err_msg=name)


def _assert_masks_match(ours, ref_logits, tol, mode):
    """Identical masks; in "fast" mode pixels within ``tol`` of the threshold may differ."""
    ref_masks = ref_logits > 0
    if mode == "exact":
        np.testing.assert_array_equal(ours, ref_masks)
        return
    differ = ours != ref_masks
    assert not (differ & (np.abs(ref_logits) > tol)).any()
    assert differ.mean() < 1e-4


PROMPTS = {
    "one_point": dict(point_coords=[[100, 120]], point_labels=[1]),
    "points_with_negatives": dict(
        point_coords=[[100, 120], [300, 200], [450, 40]],
        point_labels=[1, 0, 1],
        multimask_output=False,
    ),
    "box": dict(box=[40, 50, 300, 280], multimask_output=False),
    "several_boxes": dict(box=[[40, 50, 300, 280], [10, 10, 100, 100], [200, 30, 500, 320]]),
    "normalized_point": dict(point_coords=[[0.3, 0.6]], point_labels=[1], normalize_coords=False),
    # The image is 517 x 333: its far corner is the last legal point.
    "points_on_the_border": dict(point_coords=[[517, 333], [0, 120]], point_labels=[1, 1]),
}


def test_image_embedding_matches(both_set, kernel_mode):
    ref, ours = both_set
    a, b = ref.get_image_embedding(), ours.get_image_embedding()
    assert a.shape == b.shape == (1, 256, 64, 64)
    # The embedding's values reach ~8: relative agreement of a few float32 ulps.
    assert (a - b).abs().max().item() < 10 * TOLERANCE[kernel_mode]
    assert a.std().item() > 0.1  # not trivially constant


@pytest.mark.parametrize("prompt", list(PROMPTS))
def test_prompt_parity(both_set, prompt, kernel_mode):
    ref, ours = both_set
    tol = TOLERANCE[kernel_mode]
    kwargs = {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in PROMPTS[prompt].items()}
    ref_logits = ref.predict(**kwargs, return_logits=True)
    our_logits = ours.predict(**kwargs, return_logits=True)
    _compare(ref_logits, our_logits, tol)
    ref_masks = ref.predict(**kwargs)[0].astype(bool)
    np.testing.assert_array_equal(ref_masks, ref_logits[0] > 0)
    our_masks = ours.predict(**kwargs)[0]
    assert our_masks.dtype == np.bool_
    _assert_masks_match(our_masks, ref_logits[0], tol, kernel_mode)
    # Not trivially empty or full: random weights still give structured masks here.
    frac = our_masks.mean()
    assert 0.01 < frac < 0.99, frac


def test_box_points_and_mask_input(both_set, kernel_mode):
    ref, ours = both_set
    tol = TOLERANCE[kernel_mode]
    first = ref.predict(
        point_coords=np.array([[100, 120]]), point_labels=np.array([1]), multimask_output=False
    )
    ours_first = ours.predict(
        point_coords=np.array([[100, 120]]), point_labels=np.array([1]), multimask_output=False
    )
    np.testing.assert_allclose(ours_first[2], first[2], atol=tol, rtol=0)
    kwargs = dict(
        point_coords=np.array([[100, 120], [150, 90]]),
        point_labels=np.array([1, 0]),
        box=np.array([40, 50, 300, 280]),
        mask_input=first[2],
        multimask_output=False,
    )
    ref_out = ref.predict(**kwargs, return_logits=True)
    our_out = ours.predict(**kwargs, return_logits=True)
    _compare(ref_out, our_out, tol)
    # The mask prompt matters: without it the logits differ.
    no_mask = ours.predict(**{**kwargs, "mask_input": None}, return_logits=True)
    assert np.abs(no_mask[0] - our_out[0]).max() > 1e-2


def test_batch_of_images_of_different_sizes(predictors, image, kernel_mode):
    ref, ours = predictors
    tol = TOLERANCE[kernel_mode]
    small = image[:200, :150]
    tall = np.ascontiguousarray(np.transpose(image, (1, 0, 2)))
    images = [image, small, tall]
    ref.set_image_batch(images)
    ours.set_image_batch(images)
    np.testing.assert_allclose(
        ours.get_image_embedding().numpy(),
        ref.get_image_embedding().numpy(),
        atol=10 * tol,
        rtol=0,
    )
    points = [np.array([[100, 120]]), np.array([[20, 30], [100, 100]]), np.array([[200, 400]])]
    labels = [np.array([1]), np.array([1, 0]), np.array([1])]
    boxes = [None, None, np.array([10, 20, 300, 500])]
    ref_out = ref.predict_batch(
        points, labels, box_batch=boxes, multimask_output=True, return_logits=True
    )
    our_out = ours.predict_batch(
        points, labels, box_batch=boxes, multimask_output=True, return_logits=True
    )
    for ref_list, our_list in zip(ref_out, our_out):
        for a, b in zip(ref_list, our_list):
            assert a.shape == b.shape
            np.testing.assert_allclose(b, a, atol=tol, rtol=0)
    assert [m.shape[-2:] for m in our_out[0]] == [img.shape[:2] for img in images]


def test_mask_threshold_and_outputs_consistent(both_set):
    _, ours = both_set
    logits, iou, low = ours.predict(
        point_coords=np.array([[100, 120]]), point_labels=np.array([1]), return_logits=True
    )
    masks, iou2, _ = ours.predict(point_coords=np.array([[100, 120]]), point_labels=np.array([1]))
    np.testing.assert_array_equal(masks, logits > 0)
    np.testing.assert_array_equal(iou, iou2)
    assert np.all(np.abs(low) <= 32.0)

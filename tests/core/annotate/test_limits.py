"""Declared limits of an annotation (prompts per object, objects) and what a session holds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sam2ui.core import SAM2ImagePredictor, SAM2VideoPredictor, build_sam2, get_config
from sam2ui.core.annotate.image import ImageAnnotator
from sam2ui.core.annotate.objects import DEFAULT_MAX_OBJECTS, DEFAULT_MAX_PROMPTS, LimitReached
from sam2ui.core.annotate.video import VideoAnnotator
from sam2ui.core.masks import PackedMask
from sam2ui.core.serving.footprint import estimate_nbytes
from tests.reference_models import perturbed_state_dict

H, W = 96, 128


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = build_sam2(replace(get_config("sam2.1-hiera-tiny"), image_size=256))
    net.load_state_dict(perturbed_state_dict(net, seed=1))
    return net.eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(60, 120, (H, W, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:H, :W]
    img[(xx - 40) ** 2 + (yy - 45) ** 2 < 400] = (230, 40, 40)
    return img


def test_image_prompt_cap(model, image) -> None:
    ann = ImageAnnotator(SAM2ImagePredictor(model), max_prompts=3)
    assert ImageAnnotator(SAM2ImagePredictor(model)).max_prompts == DEFAULT_MAX_PROMPTS == 200
    ann.set_image(image)
    obj = ann.add_object()
    ann.add_click(obj, 40, 45)
    ann.add_click(obj, 10, 10, positive=False)
    ann.set_box(obj, 20, 25, 60, 65)
    message = (
        "Object 1 has 3 prompts, the most allowed here; undo or remove some before adding more."
    )
    with pytest.raises(LimitReached) as info:
        ann.add_click(obj, 50, 50)
    assert str(info.value) == message and isinstance(info.value, ValueError)
    assert len(ann.objects[obj].prompts) == 3  # nothing changed
    ann.set_box(obj, 15, 20, 70, 70)  # replacing the box is no new prompt
    assert ann.objects[obj].box is not None and ann.objects[obj].box.x0 == 15
    ann.undo()
    ann.undo()  # back to the two clicks
    ann.add_click(obj, 50, 50)
    assert len(ann.objects[obj].clicks) == 3
    with pytest.raises(LimitReached):
        ann.set_box(obj, 20, 25, 60, 65)  # a first box is a new prompt
    ann.remove_click(obj, 0)
    ann.set_box(obj, 20, 25, 60, 65)
    assert len(ann.objects[obj].prompts) == 3


def test_image_object_cap_and_segment_everything(model, image) -> None:
    ann = ImageAnnotator(SAM2ImagePredictor(model), max_objects=3)
    assert ImageAnnotator(SAM2ImagePredictor(model)).max_objects == DEFAULT_MAX_OBJECTS == 255
    ann.set_image(image)
    first = ann.add_object()
    assert ann.object_room == 2
    ids = ann.segment_everything(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    assert len(ids) == 2 and len(ann.objects) == 3 and ann.object_room == 0
    with pytest.raises(LimitReached, match="^There are 3 objects, the most allowed here; remove"):
        ann.add_object()
    ann.remove_object(first)
    assert ann.add_object() == ids[-1] + 1  # ids are never reused
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="must be an int >= 1 or None"):
            ImageAnnotator(SAM2ImagePredictor(model), max_objects=bad)  # type: ignore[arg-type]
    unlimited = ImageAnnotator(SAM2ImagePredictor(model), max_prompts=None, max_objects=None)
    assert unlimited.object_room is None


def test_automatic_masks_kept_packed_for_undo(model, image) -> None:
    ann = ImageAnnotator(SAM2ImagePredictor(model))
    ann.set_image(image)
    ids = ann.segment_everything(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    auto = ann.objects[ids[0]].mask
    assert auto is not None and auto.any()
    ann.add_click(ids[0], 40, 45)
    kept = ann._auto[ids[0]][0]
    assert isinstance(kept, PackedMask) and kept.nbytes < auto.nbytes
    assert not np.array_equal(ann.objects[ids[0]].mask, auto)
    ann.undo()
    np.testing.assert_array_equal(ann.objects[ids[0]].mask, auto)


def test_video_caps(model) -> None:
    frames = np.random.default_rng(0).integers(0, 255, (3, H, W, 3), dtype=np.uint8)
    ann = VideoAnnotator(SAM2VideoPredictor(model), frames, max_prompts=3, max_objects=1)
    obj = ann.add_object()
    with pytest.raises(LimitReached, match="^There is 1 object, the most allowed here"):
        ann.add_object()
    ann.add_click(0, obj, 40, 45)
    ann.set_box(1, obj, 20, 25, 60, 65)
    ann.add_click(2, obj, 40, 45)
    assert ann.objects[obj].prompt_count == 3
    with pytest.raises(LimitReached, match="^Object 1 has 3 prompts"):
        ann.add_click(1, obj, 30, 30)
    with pytest.raises(LimitReached):
        ann.set_box(0, obj, 20, 25, 60, 65)
    ann.set_box(1, obj, 10, 10, 60, 65)  # a replaced box
    ann.undo(2, obj)
    ann.add_click(1, obj, 30, 30)
    assert ann.objects[obj].prompt_count == 3
    ann.close()


def test_a_1080p_session_after_200_clicks(model) -> None:
    """What an image session holds is counted (embedding, image, masks, drawing caches,
    history), and 200 clicks add less than 20 MB to it at 1080p."""
    rng = np.random.default_rng(0)
    big = rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    ann = ImageAnnotator(SAM2ImagePredictor(model))
    ann.set_image(big)
    uploaded = estimate_nbytes(ann)
    # The embedding (a tuple of tensors) and the decoder's cached image keys.
    held = [ann.predictor.features, ann.predictor._image_keys]
    embedding = estimate_nbytes(held) - estimate_nbytes([(), {}])
    assert uploaded >= embedding + big.nbytes
    obj = ann.add_object()
    for i in range(200):
        ann.add_click(obj, float(rng.uniform(0, 1920)), float(rng.uniform(0, 1080)), i % 3 > 0)
        if i % 50 == 0:
            ann.render(selected=obj)
    ann.render(selected=obj)
    after = estimate_nbytes(ann)
    history = estimate_nbytes(ann._undo)
    assert len(ann.objects[obj].prompts) == 200
    assert 200 * 100 < history < 1_000_000  # prompts only: no masks in the undo records
    mask = ann.objects[obj].mask
    assert mask is not None and after - uploaded >= mask.nbytes + history
    assert after - uploaded <= 20 * 2**20

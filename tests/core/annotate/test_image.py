"""ImageAnnotator: the same masks as direct predictor calls, undo, candidates, exports."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from sam2ui.core import SAM2AutomaticMaskGenerator, SAM2ImagePredictor, build_sam2, get_config
from sam2ui.core.annotate.image import ImageAnnotator
from sam2ui.core.masks import rle_to_mask
from sam2ui.core.render import NEGATIVE_COLOR, POSITIVE_COLOR, palette_color
from tests.reference_models import perturbed_state_dict

H, W = 96, 128


@pytest.fixture(scope="module")
def model():
    # Seeded: the random init (which the perturbation keeps) must not depend on how many
    # random numbers other tests drew before this fixture.
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
    img[20:60, 80:115] = (30, 200, 60)
    return img


@pytest.fixture(scope="module")
def direct(model, image) -> SAM2ImagePredictor:
    pred = SAM2ImagePredictor(model)
    pred.set_image(image)
    return pred


@pytest.fixture
def ann(model, image) -> ImageAnnotator:
    a = ImageAnnotator(SAM2ImagePredictor(model))
    a.set_image(image)
    return a


def _nontrivial(mask: np.ndarray) -> None:
    assert mask.shape == (H, W) and mask.dtype == bool
    assert 0 < mask.sum() < mask.size


def test_clicks_undo_and_candidates(ann, direct):
    oid = ann.add_object()
    assert oid == 1 and ann.objects[1].name == "object 1" and ann.objects[1].color == (128, 0, 0)
    obj = ann.add_click(oid, 40, 45)
    masks, scores, _ = direct.predict(np.array([[40, 45]]), np.array([1]), multimask_output=True)
    assert len(obj.candidates) == 3 and obj.chosen == int(np.argmax(scores))
    for cand, m, s in zip(obj.candidates, masks, scores):
        assert np.array_equal(cand.mask, m) and cand.score == pytest.approx(float(s))
    assert np.array_equal(obj.mask, masks[obj.chosen])
    _nontrivial(obj.mask)
    other = (obj.chosen + 1) % 3
    ann.choose_candidate(oid, other)
    assert np.array_equal(obj.mask, masks[other]) and obj.chosen == other
    first = obj.mask

    ann.add_click(oid, 100, 80, positive=False)
    m2, s2, _ = direct.predict(
        np.array([[40, 45], [100, 80]]), np.array([1, 0]), multimask_output=False
    )
    assert obj.candidates == [] and obj.chosen is None
    assert np.array_equal(obj.mask, m2[0]) and obj.score == pytest.approx(float(s2[0]))
    assert [c.positive for c in obj.clicks] == [True, False] and len(obj.prompts) == 2

    ann.undo(oid)  # back to one click, with the candidate that was shown
    assert np.array_equal(obj.mask, first) and obj.chosen == other and len(obj.clicks) == 1
    ann.undo(oid)
    assert obj.mask is None and obj.prompts == [] and ann.masks == {}
    ann.undo(oid)  # nothing to undo: fine


def test_box_replace_undo_and_clear(ann, direct):
    oid = ann.add_object("shape")
    ann.set_box(oid, 115, 60, 80, 20)  # corners in any order
    obj = ann.objects[oid]
    assert obj.box == (80.0, 20.0, 115.0, 60.0)
    m1, _, _ = direct.predict(box=np.array([80, 20, 115, 60]), multimask_output=False)
    assert np.array_equal(obj.mask, m1[0])
    ann.set_box(oid, 10, 10, 200, 90)  # replaced, clipped to the image
    assert obj.box == (10.0, 10.0, float(W), 90.0) and len(obj.prompts) == 1
    ann.add_click(oid, 90, 30)
    m3, _, _ = direct.predict(
        np.array([[90, 30]]), np.array([1]), box=np.array([10, 10, W, 90]), multimask_output=False
    )
    assert np.array_equal(obj.mask, m3[0])
    ann.undo(oid)
    ann.undo(oid)  # the first box comes back
    assert obj.box == (80.0, 20.0, 115.0, 60.0) and np.array_equal(obj.mask, m1[0])
    ann.clear_object(oid)
    assert obj.mask is None and obj.box is None and oid in ann.objects
    ann.undo(oid)
    assert obj.mask is None


def test_segment_everything_reuses_embedding(ann, model, image, direct):
    kwargs = {
        "points_per_side": 4,
        "pred_iou_thresh": 0,
        "stability_score_thresh": 0,
        "box_nms_thresh": 1.0,
    }
    embedding = ann.predictor.features.image_embed
    ann.add_object()
    ids = ann.segment_everything(**kwargs)
    assert ann.predictor.features.image_embed is embedding  # not recomputed, not reset
    records = SAM2AutomaticMaskGenerator(SAM2ImagePredictor(model), **kwargs).generate(image)
    assert len(ids) == len(records) > 1 and ids[0] == 2
    records.sort(key=lambda r: -r["area"])
    for oid, rec in zip(ids, records):
        assert np.array_equal(ann.objects[oid].mask, rec["segmentation"])
    areas = [int(ann.objects[i].mask.sum()) for i in ids]
    assert areas == sorted(areas, reverse=True)
    # A click on an automatic object predicts from the click; undo brings the mask back.
    auto = ann.objects[ids[0]].mask
    ann.add_click(ids[0], 40, 45)
    masks, scores, _ = direct.predict(np.array([[40, 45]]), np.array([1]))
    assert np.array_equal(ann.objects[ids[0]].mask, masks[np.argmax(scores)])
    ann.undo(ids[0])
    np.testing.assert_array_equal(ann.objects[ids[0]].mask, auto)  # kept packed meanwhile
    with pytest.raises(ValueError, match="binary_mask"):
        ann.segment_everything(output_mode="coco_rle")


def test_exports_read_back(ann, image, tmp_path):
    a, b = ann.add_object(), ann.add_object()
    ann.add_click(a, 40, 45)
    ann.set_box(b, 30, 30, 120, 70)
    ann.add_object()  # no mask: left out
    masks = ann.masks
    assert set(masks) == {a, b}
    rgba = ann.cutout(a)
    assert rgba.shape == (H, W, 4) and np.array_equal(rgba[..., :3], image)
    assert np.array_equal(rgba[..., 3], masks[a].astype(np.uint8) * 255)

    path = ann.write_masks_zip(tmp_path / "m.zip")
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["masks.png", "object_1.png", "object_2.png"]
        indexed = Image.open(io.BytesIO(zf.read("masks.png")))
        assert indexed.mode == "P" and indexed.getpalette()[3:6] == [128, 0, 0]
        expected = np.where(masks[a], a, np.where(masks[b], b, 0))  # smallest id on top
        assert np.array_equal(np.asarray(indexed), expected)
        for oid in (a, b):
            png = np.asarray(Image.open(io.BytesIO(zf.read(f"object_{oid}.png"))))
            assert np.array_equal(png, masks[oid].astype(np.uint8) * 255)

    coco = ann.coco_json()
    assert coco["image"] == {"height": H, "width": W}
    for ann_rec in coco["annotations"]:
        m = masks[ann_rec["id"]]
        assert np.array_equal(rle_to_mask(ann_rec["segmentation"]), m)
        assert ann_rec["area"] == int(m.sum()) and ann_rec["name"] == f"object {ann_rec['id']}"
        ys, xs = np.nonzero(m)
        assert ann_rec["bbox"] == [
            xs.min(),
            ys.min(),
            xs.max() - xs.min() + 1,
            ys.max() - ys.min() + 1,
        ]
        assert ann_rec["predicted_iou"] == ann.objects[ann_rec["id"]].score


def test_render(ann, image):
    a, b = ann.add_object(), ann.add_object()
    ann.add_click(a, 40, 45)
    ann.add_click(b, 100, 80, positive=False)
    plain = ann.render(alpha=0.0)
    # alpha 0: the image itself except the markers.
    changed = np.any(plain != image, axis=2)
    assert changed.sum() < 2 * 50 and changed[45, 40] and changed[80, 100]
    assert tuple(plain[45, 40]) == POSITIVE_COLOR and tuple(plain[80, 100]) == NEGATIVE_COLOR
    out = ann.render(selected=a, alpha=0.5)
    ma, mb = ann.masks[a], ann.masks[b]
    only_b = mb & ~ma & ~changed
    only_b[70:90, 90:110] = False
    ys, xs = np.nonzero(only_b)
    assert ys.size > 0  # blended with alpha in 1/256 steps, rounded to nearest (ties to even)
    want = np.rint((image[ys, xs].astype(int) * 128 + np.array(palette_color(b)) * 128) / 256)
    assert np.array_equal(out[ys, xs], want)
    bg = ~(ma | mb | changed)
    assert np.array_equal(out[bg], image[bg])
    assert np.any(np.all(out == palette_color(a), axis=2))  # the selected contour
    # Cached and incremental renders give the same image as a fresh one.
    ann.add_click(b, 20, 20)
    again = ann.render(selected=a)
    fresh = ImageAnnotator(ann.predictor)
    fresh._image = ann.image
    fresh._objects = ann.objects
    assert np.array_equal(again, fresh.render(selected=a))
    assert np.array_equal(again, ann.render(selected=a))


def test_errors_and_close(model, image):
    ann = ImageAnnotator(SAM2ImagePredictor(model))
    with pytest.raises(RuntimeError, match="set_image"):
        ann.render()
    ann.set_image(image)
    oid = ann.add_object()
    for call in (
        lambda: ann.add_click(7, 1, 1),
        lambda: ann.rename_object(7, "x"),
        lambda: ann.remove_object(7),
        lambda: ann.undo(7),
        lambda: ann.cutout(7),
    ):
        with pytest.raises(ValueError, match="unknown object id 7"):
            call()
    with pytest.raises(ValueError, match="finite"):
        ann.add_click(oid, float("nan"), 3)
    with pytest.raises(ValueError, match="outside"):
        ann.add_click(oid, W + 5, 3)
    with pytest.raises(ValueError, match="finite"):
        ann.set_box(oid, 0, 0, float("nan"), 10)
    with pytest.raises(ValueError, match="outside"):
        ann.set_box(oid, -20, -20, -10, -10)
    with pytest.raises(ValueError, match="no candidate"):
        ann.choose_candidate(oid, 0)
    with pytest.raises(ValueError, match="no mask"):
        ann.cutout(oid)
    with pytest.raises(ValueError, match="nothing to write"):
        ann.write_masks_zip("unused.zip")
    ann.add_click(oid, 40, 45)
    with pytest.raises(ValueError, match="candidate index"):
        ann.choose_candidate(oid, 3)
    ann.rename_object(oid, "ball")
    assert ann.objects[oid].name == "ball"
    ann.remove_object(oid)
    assert ann.add_object() == 2  # ids are not reused
    ann.close()
    assert not ann.predictor.is_image_set and ann.objects == {}
    with pytest.raises(RuntimeError):
        _ = ann.image
    assert torch.is_grad_enabled()


# ------------------------------------------------------------------ history: undo, redo, remove
def test_undo_redo_across_objects(ann: ImageAnnotator, direct: SAM2ImagePredictor) -> None:
    a, b = ann.add_object(), ann.add_object()
    ann.add_click(a, 40, 45)
    ann.add_click(b, 95, 40)
    ann.add_click(a, 30, 40, positive=False)
    two_clicks = ann.objects[a].mask.copy()
    assert ann.can_undo and not ann.can_redo and ann.last_changed == a
    assert ann.undo() is ann.objects[a]  # the last change of any object: a's second click
    assert len(ann.objects[a].clicks) == 1 and len(ann.objects[b].clicks) == 1
    assert ann.undo().obj_id == b and ann.objects[b].mask is None
    assert ann.can_redo
    assert ann.redo().obj_id == b and len(ann.objects[b].clicks) == 1
    assert ann.redo().obj_id == a
    assert np.array_equal(ann.objects[a].mask, two_clicks) and not ann.can_redo
    # A new change after an undo drops what could be redone.
    ann.undo()
    ann.add_click(b, 100, 30)
    assert not ann.can_redo and ann.redo() is None
    while ann.can_undo:
        ann.undo()
    assert ann.undo() is None and not ann.masks


def test_remove_click_is_undoable(ann: ImageAnnotator, direct: SAM2ImagePredictor) -> None:
    obj = ann.add_object()
    ann.add_click(obj, 40, 45)
    ann.add_click(obj, 30, 40, positive=False)
    ann.add_click(obj, 45, 50)
    ann.remove_click(obj, 1)  # the background click
    assert [(c.x, c.y, c.positive) for c in ann.objects[obj].clicks] == [
        (40, 45, True),
        (45, 50, True),
    ]
    expected, _, _ = direct.predict(
        point_coords=np.array([[40, 45], [45, 50]], np.float32),
        point_labels=np.array([1, 1]),
        multimask_output=False,
    )
    assert np.array_equal(ann.objects[obj].mask, expected[0])
    ann.undo()
    assert len(ann.objects[obj].clicks) == 3
    with pytest.raises(ValueError, match="has 3 clicks; no click 3"):
        ann.remove_click(obj, 3)
    ann.remove_object(obj)
    assert not ann.can_undo and not ann.can_redo  # its history went with it

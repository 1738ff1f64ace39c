"""SAM2AutomaticMaskGenerator against the reference generator.

Two kinds of parity test, both with the same random weights in float32:

* logic: our generator drives the *reference* predictor through a thin adapter exposing the
  predictor contract, so any difference comes from the generator itself; records must be
  identical (same floats, same masks, same order);
* end to end: our generator with our predictor against the reference generator with the
  reference predictor.

With random weights the mask logits are small noise (about +-0.3), so the thresholds below
are chosen to leave a handful of records (asserted non-empty): a mask threshold of 0.4 gives
small, scattered masks whose boxes differ, so NMS and the crop-edge filter have real work.

To keep the file fast, the image encoder and the reference's prompt decoding are memoised:
both generators must issue exactly the same predictor calls, so each is computed once.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from sam2ui.core.image.generator_parts import (
    MaskRecords,
    batched_mask_to_box,
    build_all_layer_point_grids,
    build_point_grid,
    generate_crop_boxes,
    is_box_near_crop_edge,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from sam2ui.core.image.mask_generator import MaskGenerationCancelled, SAM2AutomaticMaskGenerator
from sam2ui.core.masks import masks_to_rle
from tests.core.test_masks import cv2_get_connected_components

VARIANT = "sam2.1-hiera-tiny"
BASE = dict(
    points_per_side=4,
    points_per_batch=8,  # two batches per crop
    pred_iou_thresh=0.45,
    stability_score_thresh=0.01,
    stability_score_offset=0.05,
    mask_threshold=0.4,
    box_nms_thresh=0.7,
)
CONFIGS: dict[str, dict[str, Any]] = {
    "base": {},
    # No filter at all: empty masks (area 0, NaN stability) reach the NMS and the records.
    "unfiltered": dict(
        pred_iou_thresh=0.0, stability_score_thresh=0.0, output_mode="uncompressed_rle"
    ),
    "m2m_coco": dict(use_m2m=True, output_mode="coco_rle"),
    "crops": dict(crop_n_layers=1, crop_n_points_downscale_factor=2, output_mode="coco_rle"),
    "min_region_area": dict(min_mask_region_area=25, multimask_output=False),
    # Every candidate reaches the stability filter, which drops most of them.
    "stability": dict(pred_iou_thresh=0.0, stability_score_thresh=0.04),
}


def settings(name: str, **overrides: Any) -> dict[str, Any]:
    return {**BASE, **CONFIGS[name], **overrides}


def _digest(t: torch.Tensor | None) -> str | None:
    return None if t is None else hashlib.sha1(t.detach().cpu().numpy().tobytes()).hexdigest()


class ReferenceAdapter:
    """The reference SAM2ImagePredictor behind sam2ui's predictor contract (test only)."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    device = property(lambda self: self.ref.device)
    mask_threshold = property(lambda self: self.ref.mask_threshold)
    orig_hw = property(lambda self: list(self.ref._orig_hw))

    @property
    def max_hole_area(self) -> float:
        return self.ref._transforms.max_hole_area

    @max_hole_area.setter
    def max_hole_area(self, value: float) -> None:
        self.ref._transforms.max_hole_area = value

    @property
    def max_sprinkle_area(self) -> float:
        return self.ref._transforms.max_sprinkle_area

    @max_sprinkle_area.setter
    def max_sprinkle_area(self, value: float) -> None:
        self.ref._transforms.max_sprinkle_area = value

    def set_image(self, image: np.ndarray) -> None:
        self.ref.set_image(image)

    def reset_predictor(self) -> None:
        self.ref.reset_predictor()

    def transform_coords(self, coords, normalize=False, orig_hw=None):
        return self.ref._transforms.transform_coords(coords, normalize=normalize, orig_hw=orig_hw)

    def predict_torch(self, *args, **kwargs):
        return self.ref._predict(*args, **kwargs)

    def predict_low_res(
        self, point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True
    ):
        """The reference's logits before upsampling: its post-processing (hole and
        sprinkle clean-up, then a bilinear resize) run with the low-resolution size as the
        image size, where the resize is the identity."""
        saved = self.ref._orig_hw
        side = self.ref.model.image_size // 4
        self.ref._orig_hw = [(side, side)]
        try:
            return self.ref._predict(
                point_coords, point_labels, boxes, mask_input, multimask_output, True
            )
        finally:
            self.ref._orig_hw = saved


class FullSizeAdapter(ReferenceAdapter):
    """The adapter without ``predict_low_res``: the generator's fallback path."""

    predict_low_res = None  # type: ignore[assignment]


class Memo:
    """Memoises image encodings of a reference model and decodings of its predictors."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.store: dict[Any, Any] = {}
        encode = model.forward_image

        def forward_image(img):
            key = ("image", _digest(img))
            if key not in self.store:
                self.store[key] = encode(img)
            # set_image rebinds list items; hand out fresh lists.
            return {k: list(v) if isinstance(v, list) else v for k, v in self.store[key].items()}

        model.forward_image = forward_image

    def predictor(self, **kwargs: Any) -> Any:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        return self.wrap(SAM2ImagePredictor(self.model, **kwargs))

    def wrap(self, pred: Any) -> Any:
        decode = pred._predict

        def _predict(
            point_coords,
            point_labels,
            boxes=None,
            mask_input=None,
            multimask_output=True,
            return_logits=False,
            img_idx=-1,
        ):
            tf = pred._transforms
            key = (
                _digest(pred._features["image_embed"]),
                *(_digest(t) for t in (point_coords, point_labels, boxes, mask_input)),
                multimask_output,
                return_logits,
                tuple(pred._orig_hw[img_idx]),
                (tf.mask_threshold, tf.max_hole_area, tf.max_sprinkle_area),
            )
            if key not in self.store:
                self.store[key] = decode(
                    point_coords, point_labels, boxes, mask_input, multimask_output, return_logits
                )
            return tuple(t.clone() for t in self.store[key])

        pred._predict = _predict
        return pred


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    yy, xx = np.mgrid[0:200, 0:300]
    img = np.stack([(xx * 2) % 255, (yy * 3) % 255, (xx + yy) % 255], -1).astype(np.uint8)
    img[50:120, 80:200] = [200, 30, 30]
    img[140:190, 20:90] = [20, 220, 60]
    return img


@pytest.fixture(scope="module")
def checkpoint(meta_checkpoint):
    return meta_checkpoint(VARIANT)


@pytest.fixture(scope="module")
def memo(checkpoint):
    import sam2.utils.misc

    from tests.reference_models import build_reference_model

    state = torch.load(checkpoint, weights_only=True)["model"]
    # The reference skips hole/sprinkle removal on CPU (no CUDA extension): give it OpenCV's.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sam2.utils.misc, "get_connected_components", cv2_get_connected_components)
        yield Memo(build_reference_model(VARIANT, state_dict=state))


@pytest.fixture(scope="module")
def reference_records(memo, image):
    """``reference_records(config_name)``: the reference generator's output, computed once."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as ReferenceGenerator

    cache: dict[str, list[dict[str, Any]]] = {}

    def get(name: str) -> list[dict[str, Any]]:
        if name not in cache:
            gen = ReferenceGenerator(memo.model, **settings(name))
            memo.wrap(gen.predictor)
            cache[name] = gen.generate(image)
        return cache[name]

    return get


def assert_same_records(ours, ref, score_tol: float = 0.0, max_pixel_diff: int = 0):
    assert len(ref) > 0
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        assert set(a) == set(b)
        assert type(a["area"]) is int and a["area"] == b["area"]
        assert a["bbox"] == b["bbox"]
        assert a["crop_box"] == b["crop_box"]
        assert a["point_coords"] == b["point_coords"]
        for key in ("predicted_iou", "stability_score"):
            assert a[key] == pytest.approx(b[key], abs=score_tol, rel=0, nan_ok=True)
        seg_a, seg_b = a["segmentation"], b["segmentation"]
        if isinstance(seg_b, dict):
            assert seg_a == seg_b
        else:
            assert seg_a.dtype == bool and seg_a.shape == seg_b.shape
            assert int((seg_a != seg_b).sum()) <= max_pixel_diff


@pytest.mark.parity
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=[pytest.mark.slow] if n == "crops" else []) for n in CONFIGS]
)
def test_generator_logic_matches_reference(memo, image, reference_records, name):
    ref = reference_records(name)
    pred = ReferenceAdapter(memo.predictor())
    ours = SAM2AutomaticMaskGenerator(pred, **settings(name)).generate(image)
    assert_same_records(ours, ref)
    assert pred.max_hole_area == 0  # the generator's setting did not leak
    if name == "crops":
        assert len({tuple(r["crop_box"]) for r in ours}) > 2
    if name == "unfiltered":
        assert any(r["area"] == 0 for r in ours) and len(ours) > 10
    if name == "min_region_area":
        plain = SAM2AutomaticMaskGenerator(pred, **settings(name, min_mask_region_area=0))
        assert [r["area"] for r in plain.generate(image)] != [r["area"] for r in ours]
    if name == "stability":
        assert len(ours) < len(reference_records("unfiltered"))
        assert all(r["stability_score"] >= 0.04 for r in ours)


@pytest.mark.parity
@pytest.mark.parametrize("name", ["base", "m2m_coco", "min_region_area"])
def test_generator_full_size_path_matches_reference(memo, image, reference_records, name):
    """A predictor without ``predict_low_res``: every mask comes upsampled, as the reference's."""
    pred = FullSizeAdapter(memo.predictor())
    ours = SAM2AutomaticMaskGenerator(pred, **settings(name)).generate(image)
    assert_same_records(ours, reference_records(name))


@pytest.mark.parity
def test_cancel_keeps_the_records_of_the_points_done(memo, image, reference_records):
    """Stopped after the first of two batches, the records are those of a run over the first
    batch's points alone, and the predictor is restored."""
    pred = ReferenceAdapter(memo.predictor())
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)

    gen = SAM2AutomaticMaskGenerator(pred, **settings("unfiltered"))
    with pytest.raises(MaskGenerationCancelled) as info:
        gen.generate(image, progress=progress, should_stop=lambda: len(seen) == 1)
    err = info.value
    assert (err.points_done, err.points_total, seen) == (8, 16, [8])
    first_half = settings("unfiltered", points_per_side=None, point_grids=[build_point_grid(4)[:8]])
    alone = SAM2AutomaticMaskGenerator(pred, **first_half).generate(image)
    assert_same_records(err.records, alone)
    assert 0 < len(err.records) < len(reference_records("unfiltered"))
    assert pred.max_hole_area == 0 and pred.ref._features is None  # restored and reset


@pytest.fixture(scope="module")
def our_predictor(checkpoint):
    from sam2ui.core.image.predictor import SAM2ImagePredictor
    from sam2ui.core.loading.checkpoint import load_sam2

    predictor = SAM2ImagePredictor(load_sam2(checkpoint))
    encode = predictor.model.image_features
    cache: dict[Any, Any] = {}

    def image_features(batch):
        key = _digest(batch)
        if key not in cache:
            cache[key] = encode(batch)
        return cache[key]

    predictor.model.image_features = image_features
    return predictor


@pytest.mark.parity
@pytest.mark.parametrize(
    "name",
    [
        "base",
        "min_region_area",
        "stability",
        pytest.param("crops", marks=pytest.mark.slow),
    ],
)
def test_generator_end_to_end_matches_reference(our_predictor, image, reference_records, name):
    ours = SAM2AutomaticMaskGenerator(our_predictor, **settings(name)).generate(image)
    # Different float32 kernels: allow a few ulps on scores and a stray pixel on a boundary.
    assert_same_records(ours, reference_records(name), score_tol=1e-4, max_pixel_diff=2)
    assert our_predictor.max_hole_area == our_predictor.max_sprinkle_area == 0


# ------------------------------------------------------------------ model-free unit tests


class FakePredictor:
    """Returns fixed logits (a square around each point) to test the generator alone."""

    device = torch.device("cpu")
    mask_threshold = 0.0

    def __init__(self) -> None:
        self.max_hole_area = 7.0
        self.max_sprinkle_area = 3.0
        self.hw: tuple[int, int] | None = None
        self.calls = 0

    def set_image(self, image):
        self.hw = image.shape[:2]

    def reset_predictor(self):
        self.hw = None

    def transform_coords(self, coords, normalize=False, orig_hw=None):
        h, w = orig_hw
        return coords / torch.tensor([w, h]) * 1024

    def predict_torch(
        self, point_coords, point_labels, mask_input=None, multimask_output=True, **_
    ):
        self.calls += 1
        h, w = self.hw
        xy = point_coords[:, 0] / 1024 * torch.tensor([w, h])
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        dist = torch.maximum((xx - xy[:, 0, None, None]).abs(), (yy - xy[:, 1, None, None]).abs())
        sizes = torch.tensor([4.0, 8.0, 30.0][: 3 if multimask_output else 1])
        logits = 3 * (sizes[None, :, None, None] - dist[:, None]) / sizes[None, :, None, None]
        iou = torch.tensor([0.9, 0.95, 0.85][: len(sizes)]).expand(len(xy), -1)
        return logits, iou.clone(), torch.zeros(len(xy), len(sizes), 256, 256)


def test_generator_with_fake_predictor_and_pil_input():
    pred = FakePredictor()
    gen = SAM2AutomaticMaskGenerator(pred, points_per_side=2, stability_score_thresh=0.15)
    records = gen.generate(Image.fromarray(np.zeros((60, 80, 3), dtype=np.uint8)))
    assert pred.calls == 1 and pred.hw is None
    assert (pred.max_hole_area, pred.max_sprinkle_area) == (7.0, 3.0)  # restored
    # 4 points x 3 squares; squares of different points overlap too little for NMS, so all
    # stay, in NMS order: by predicted IoU, ties in point order.
    assert len(records) == 12
    ious = [round(r["predicted_iou"], 4) for r in records]
    assert ious == [0.95] * 4 + [0.9] * 4 + [0.85] * 4
    points = [r["point_coords"][0] for r in records]
    assert points[:4] == [[20.0, 15.0], [60.0, 15.0], [20.0, 45.0], [60.0, 45.0]]
    for r in records:
        x, y, w, h = r["bbox"]
        cx, cy = r["point_coords"][0]
        assert x <= cx <= x + w and y <= cy <= y + h
        assert r["segmentation"].shape == (60, 80) and r["segmentation"].sum() == r["area"]
        assert r["crop_box"] == [0.0, 0.0, 80.0, 60.0]
    # Side 2 * 8 - 1 = 15 around (20, 15): XYWH box [13, 8, 14, 14].
    assert records[0]["bbox"] == [13.0, 8.0, 14.0, 14.0] and records[0]["area"] == 225


def test_progress_counts_grid_points_over_every_crop():
    pred = FakePredictor()
    calls: list[tuple[int, int]] = []
    gen = SAM2AutomaticMaskGenerator(
        pred,
        points_per_side=4,
        points_per_batch=3,
        crop_n_layers=1,
        crop_n_points_downscale_factor=2,
        stability_score_thresh=0.15,
    )
    records = gen.generate(
        np.zeros((60, 80, 3), dtype=np.uint8), progress=lambda d, t: calls.append((d, t))
    )
    # 16 points on the whole image in batches of 3, then 4 crops of 2 x 2 points.
    assert calls == [(n, 32) for n in (3, 6, 9, 12, 15, 16, 19, 20, 23, 24, 27, 28, 31, 32)]
    assert pred.calls == 6 + 4 * 2 and len(records) > 0


def test_cancel_before_the_first_batch_returns_nothing():
    pred = FakePredictor()
    gen = SAM2AutomaticMaskGenerator(pred, points_per_side=2)
    with pytest.raises(MaskGenerationCancelled) as info:
        gen.generate(np.zeros((60, 80, 3), dtype=np.uint8), should_stop=lambda: True)
    assert (info.value.records, info.value.points_done, info.value.points_total) == ([], 0, 4)
    assert pred.calls == 0 and (pred.max_hole_area, pred.max_sprinkle_area) == (7.0, 3.0)


def test_generator_validates_arguments():
    pred = FakePredictor()
    with pytest.raises(ValueError):
        SAM2AutomaticMaskGenerator(pred, point_grids=[np.zeros((4, 2))])  # both given
    with pytest.raises(ValueError):
        SAM2AutomaticMaskGenerator(pred, points_per_side=None)  # neither given
    with pytest.raises(ValueError):
        SAM2AutomaticMaskGenerator(pred, output_mode="polygon")
    for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
        with pytest.raises(ValueError):
            SAM2AutomaticMaskGenerator(pred, **{name: 1.5})
    with pytest.raises(ValueError):
        SAM2AutomaticMaskGenerator(pred, points_per_side=None, point_grids=[], crop_n_layers=0)
    with pytest.raises(ValueError):
        SAM2AutomaticMaskGenerator(pred).generate(np.zeros((10, 10), dtype=np.uint8))
    grid = np.array([[0.5, 0.5]])
    gen = SAM2AutomaticMaskGenerator(pred, points_per_side=None, point_grids=[grid])
    assert np.array_equal(gen.point_grids[0], grid)


def test_from_pretrained_splits_keyword_arguments(monkeypatch):
    from sam2ui.core.image import predictor as image_predictor

    seen = {}

    def fake_from_pretrained(model_id, **kwargs):
        seen.update(kwargs, model_id=model_id)
        return FakePredictor()

    monkeypatch.setattr(image_predictor.SAM2ImagePredictor, "from_pretrained", fake_from_pretrained)
    gen = SAM2AutomaticMaskGenerator.from_pretrained(
        "facebook/sam2.1-hiera-tiny", points_per_side=8, device="cpu", max_hole_area=5
    )
    assert seen == {"model_id": "facebook/sam2.1-hiera-tiny", "device": "cpu", "max_hole_area": 5}
    assert len(gen.point_grids[0]) == 64


def test_point_grids_and_crops_match_reference():
    from sam2.utils import amg

    for n, layers, scale in ((32, 0, 1), (5, 2, 2), (7, 1, 1)):
        ours = build_all_layer_point_grids(n, layers, scale)
        ref = amg.build_all_layer_point_grids(n, layers, scale)
        assert len(ours) == len(ref) == layers + 1
        for a, b in zip(ours, ref):
            np.testing.assert_array_equal(a, b)
    for size, layers, ratio in (
        ((200, 300), 1, 512 / 1500),
        ((1080, 1920), 2, 0.3),
        ((7, 5), 1, 0.5),
    ):
        assert generate_crop_boxes(size, layers, ratio) == amg.generate_crop_boxes(
            size, layers, ratio
        )


def test_uncrop_and_crop_edge_match_reference():
    from sam2.utils import amg

    gen = torch.Generator().manual_seed(0)
    xy = torch.randint(0, 120, (50, 2), generator=gen)
    boxes = torch.cat([xy, xy + torch.randint(1, 60, (50, 2), generator=gen)], 1)
    crop, orig = [40, 30, 180, 150], [0, 0, 200, 150]
    assert torch.equal(uncrop_boxes_xyxy(boxes, crop), amg.uncrop_boxes_xyxy(boxes, crop))
    near = is_box_near_crop_edge(boxes, crop, orig)
    assert torch.equal(near, amg.is_box_near_crop_edge(boxes, crop, orig))
    assert 0 < int(near.sum()) < 50
    pts = torch.rand(10, 2, generator=gen) * 100
    assert torch.equal(uncrop_points(pts, crop), amg.uncrop_points(pts, crop))
    masks = torch.rand(3, 120, 140, generator=gen) > 0.5
    assert torch.equal(uncrop_masks(masks, crop, 150, 200), amg.uncrop_masks(masks, crop, 150, 200))
    full = [0, 0, 140, 120]
    assert uncrop_masks(masks, full, 120, 140) is masks


def test_mask_records_filter_and_cat():
    rec = MaskRecords(a=torch.arange(4), b=np.arange(4) * 10, c=["w", "x", "y", "z"])
    rec.filter(torch.tensor([True, False, True, True]))
    assert rec["a"].tolist() == [0, 2, 3] and rec["b"].tolist() == [0, 20, 30]
    assert rec["c"] == ["w", "y", "z"] and len(rec) == 3
    rec.filter(torch.tensor([2, 0]))
    assert rec["a"].tolist() == [3, 0] and rec["c"] == ["z", "w"]
    rec.cat(MaskRecords(a=torch.tensor([9]), b=np.array([90]), c=["q"]))
    assert rec["a"].tolist() == [3, 0, 9] and rec["b"].tolist() == [30, 0, 90]
    assert rec["c"] == ["z", "w", "q"]
    rec.to_numpy()
    assert rec["a"].dtype == np.float32
    with pytest.raises(TypeError):
        rec["d"] = 3  # type: ignore[assignment]


def test_postprocess_small_regions_matches_reference():
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as ReferenceGenerator
    from sam2.utils.amg import MaskData

    from tests.core.test_masks import blobby

    masks = blobby(6, 60, 70, seed=9, cell=5, level=0.3)[:, 0]
    masks[5] = masks[4]  # a duplicate for the NMS
    rles = masks_to_rle(masks)
    boxes = batched_mask_to_box(masks).float()
    ours = MaskRecords(rles=[dict(r) for r in rles], boxes=boxes.clone(), iou=torch.arange(6.0))
    ref = MaskData(rles=[dict(r) for r in rles], boxes=boxes.clone(), iou=torch.arange(6.0))
    SAM2AutomaticMaskGenerator.postprocess_small_regions(ours, 20, 0.7)
    ReferenceGenerator.postprocess_small_regions(ref, 20, 0.7)
    assert ours["rles"] == ref["rles"]
    assert torch.equal(ours["boxes"], ref["boxes"]) and torch.equal(ours["iou"], ref["iou"])
    assert 0 < len(ours) < 6

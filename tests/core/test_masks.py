"""Mask utilities against their ground truths: pycocotools (RLE), OpenCV (connected
components), the reference's amg/misc helpers, and torchvision-semantics NMS (the test stub)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as coco_mask

from sam2ui.core import masks as M
from sam2ui.core.image import generator_parts as A


def blobby(n: int, h: int, w: int, seed: int, cell: int = 8, level: float = 0.0) -> torch.Tensor:
    """(n, 1, h, w) bool masks: thresholded smooth noise, so blobs, holes and specks."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(n, 1, h // cell + 2, w // cell + 2, generator=gen)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False) > level


def spiral(n: int) -> np.ndarray:
    """One 1-pixel-wide square spiral: a worst case for label propagation."""
    m = np.zeros((n, n), dtype=bool)
    t, left, b, r = 0, 0, n - 1, n - 1
    while t <= b and left <= r:
        m[t, left : r + 1] = m[t : b + 1, r] = m[b, left : r + 1] = True
        m[t + 2 : b + 1, left] = True
        if t + 2 <= b - 2 and left + 2 <= r - 2:
            m[t + 2, left + 1] = True  # bridge to the next ring
        t, left, b, r = t + 2, left + 2, b - 2, r - 2
    return m


def cv2_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return labels, np.where(labels > 0, stats[labels, cv2.CC_STAT_AREA], 0)


def cv2_get_connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stand-in for the reference's CUDA ``get_connected_components`` (N, 1, H, W)."""
    out = [cv2_components(m[0].numpy()) for m in mask.cpu()]
    labels = torch.from_numpy(np.stack([o[0] for o in out])[:, None].astype(np.int32))
    areas = torch.from_numpy(np.stack([o[1] for o in out])[:, None].astype(np.int32))
    return labels, areas


# --------------------------------------------------------------------------------------- RLE


def _rle_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    single = np.zeros((11, 13), dtype=bool)
    single[5, 7] = True
    corner = np.zeros((4, 6), dtype=bool)
    corner[0, 0] = True
    large = np.zeros((700, 1900), dtype=bool)  # long runs: multi-digit and negative deltas
    large[3:690, 5:1800] = True
    large[100:200, 300:1500] = False
    return [
        rng.random((7, 5)) < 0.5,
        rng.random((1, 9)) < 0.5,
        rng.random((9, 1)) < 0.5,
        rng.random((37, 53)) < 0.1,
        rng.random((61, 47)) < 0.9,
        blobby(1, 97, 131, seed=3)[0, 0].numpy(),
        np.zeros((3, 4), dtype=bool),
        np.ones((13, 17), dtype=bool),
        np.ones((1, 1), dtype=bool),
        single,
        corner,
        large,
    ]


RLE_CASES = _rle_cases()


@pytest.mark.parametrize("mask", RLE_CASES, ids=lambda m: "x".join(map(str, m.shape)))
def test_rle_matches_pycocotools(mask):
    ref = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    ours = M.mask_to_coco_rle(mask)
    assert ours == {"size": [int(v) for v in ref["size"]], "counts": ref["counts"].decode()}
    uncompressed = M.mask_to_rle(mask)
    assert M.decode_rle_counts(ref["counts"]) == uncompressed["counts"]
    assert coco_mask.frPyObjects(uncompressed, *mask.shape)["counts"].decode() == ours["counts"]
    assert M.rle_area(ours) == M.rle_area(uncompressed) == int(coco_mask.area(ref)) == mask.sum()
    assert M.rle_to_bbox(ours) == coco_mask.toBbox(ref).tolist()
    for rle in (ours, uncompressed, M.coco_to_rle(ours), M.rle_to_coco(uncompressed)):
        decoded = M.rle_to_mask(rle)
        assert decoded.dtype == bool and decoded.flags.c_contiguous
        np.testing.assert_array_equal(decoded, mask)


def test_rle_counts_convention():
    m = np.array([[1, 0], [1, 1]], dtype=bool)  # column-major: 1 1 0 1
    assert M.mask_to_rle(m) == {"size": [2, 2], "counts": [0, 2, 1, 1]}
    assert M.mask_to_rle(~m)["counts"] == [2, 1, 1]
    assert M.rle_to_bbox(M.mask_to_rle(np.zeros((3, 3), dtype=bool))) == [0.0] * 4


def test_batched_rle_matches_single_and_reference():
    from sam2.utils.amg import mask_to_rle_pytorch

    batch = torch.cat([blobby(4, 45, 38, seed=1)[:, 0], torch.zeros(1, 45, 38, dtype=torch.bool)])
    batch[2, 0, 0] = True
    ours = M.masks_to_rle(batch)
    assert ours == mask_to_rle_pytorch(batch)
    assert ours == [M.mask_to_rle(m.numpy()) for m in batch]
    assert M.masks_to_rle(torch.zeros(0, 5, 5, dtype=torch.bool)) == []


def test_rle_rejects_inconsistent_size():
    with pytest.raises(ValueError):
        M.rle_to_mask({"size": [3, 3], "counts": [4, 4]})


# ------------------------------------------------------------------- connected components


def _late_first_block() -> torch.Tensor:
    """Component A's first run is right of B's, but A reaches the first 2x2 block earlier."""
    m = torch.zeros(5, 13, dtype=torch.bool)
    m[0:3, 10] = m[3, 0:11] = m[1:3, 0] = True  # A: a hook from (0, 10) round to (1, 0)
    m[0, 5] = True  # B
    return m[None, None]


COMPONENT_CASES = {
    "late_first_block": _late_first_block(),
    "blobs": blobby(3, 96, 128, seed=0),
    "specks": torch.rand(2, 1, 33, 17, generator=torch.Generator().manual_seed(1)) > 0.55,
    "spiral": torch.from_numpy(spiral(64))[None, None],
    "empty_and_full": torch.stack([torch.zeros(1, 9, 7), torch.ones(1, 9, 7)]).bool(),
    "one_row": torch.rand(3, 1, 1, 20, generator=torch.Generator().manual_seed(2)) > 0.5,
    "one_col": torch.rand(3, 1, 20, 1, generator=torch.Generator().manual_seed(3)) > 0.5,
}


@pytest.mark.parametrize("name", list(COMPONENT_CASES))
def test_connected_components_match_opencv(name):
    masks = COMPONENT_CASES[name]
    labels, areas = M.connected_components(masks)
    assert labels.shape == areas.shape == masks.shape
    assert labels.dtype == areas.dtype == torch.int32
    for i in range(masks.shape[0]):
        ref_labels, ref_areas = cv2_components(masks[i, 0].numpy())
        # Same numbering as OpenCV, hence the same partition.
        np.testing.assert_array_equal(labels[i, 0].numpy(), ref_labels)
        np.testing.assert_array_equal(areas[i, 0].numpy(), ref_areas)
    if name == "spiral":
        assert labels.max() == 1 and areas.max() == masks.sum()


def test_connected_components_any_leading_shape():
    masks = blobby(6, 40, 50, seed=4).reshape(2, 3, 40, 50)
    labels, areas = M.connected_components(masks)
    flat_labels, flat_areas = M.connected_components(masks.reshape(6, 1, 40, 50))
    assert torch.equal(labels.reshape(6, 1, 40, 50), flat_labels)
    assert torch.equal(areas.reshape(6, 1, 40, 50), flat_areas)


@pytest.fixture
def reference_cc(monkeypatch):
    """Give the reference's CPU-less post-processing an OpenCV labelling to run on."""
    import sam2.utils.misc

    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", cv2_get_connected_components)


@pytest.mark.parametrize(("hole", "sprinkle"), [(0, 0), (12, 0), (0, 12), (40, 25)])
def test_fill_holes_and_remove_sprinkles_match_reference(reference_cc, hole, sprinkle):
    from sam2.utils.transforms import SAM2Transforms

    gen = torch.Generator().manual_seed(5)
    coarse = torch.randn(2, 3, 12, 12, generator=gen)
    logits = F.interpolate(coarse, size=(64, 64), mode="bicubic", align_corners=False) * 3
    tf = SAM2Transforms(1024, mask_threshold=0.5, max_hole_area=hole, max_sprinkle_area=sprinkle)
    # The reference upsamples after cleaning; at the same size that is the identity.
    expected = tf.postprocess_masks(logits, (64, 64))
    ours = M.fill_holes_and_remove_sprinkles(logits, 0.5, hole, sprinkle)
    assert ours.dtype == torch.float32 and ours.shape == logits.shape
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    changed = int((ours != logits).sum())
    assert (changed == 0) == (hole == 0 and sprinkle == 0)


def test_fill_holes_matches_reference(reference_cc):
    from sam2.utils.misc import fill_holes_in_mask_scores

    logits = (F.interpolate(torch.randn(3, 1, 10, 10), size=(50, 50), mode="bicubic") * 2).float()
    ours = M.fill_holes(logits, 30)
    assert torch.equal(ours, fill_holes_in_mask_scores(logits, 30))
    assert int((ours == 0.1).sum()) > 0
    with pytest.raises(ValueError):
        M.fill_holes(logits, 0)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", ["holes", "islands"])
def test_remove_small_regions_matches_reference(seed, mode):
    from sam2.utils.amg import remove_small_regions

    mask = blobby(1, 150, 211, seed=seed, cell=6, level=0.4 * (seed % 3 - 1))[0, 0].numpy()
    saw_change = False
    for thresh in (0, 5, 30, 400, 1e9):
        ours, changed = M.remove_small_regions(mask, thresh, mode)
        expected, ref_changed = remove_small_regions(mask, thresh, mode)
        assert changed == ref_changed
        np.testing.assert_array_equal(ours, expected)
        saw_change |= changed and not np.array_equal(ours, mask)
    assert saw_change


def test_remove_small_regions_keeps_first_largest_island_on_ties():
    from sam2.utils.amg import remove_small_regions

    mask = np.zeros((10, 12), dtype=bool)
    mask[1:3, 0:2] = True  # first in OpenCV's 2x2-block order (block row 0, column 0)...
    mask[0:2, 6:8] = True  # ...though this equal one has the first pixel in raster order
    ours, changed = M.remove_small_regions(mask, 10, "islands")
    expected, _ = remove_small_regions(mask, 10, "islands")
    assert changed
    np.testing.assert_array_equal(ours, expected)
    assert ours.sum() == 4 and ours[1, 0]
    with pytest.raises(ValueError):
        M.remove_small_regions(mask, 10, "specks")  # type: ignore[arg-type]


# --------------------------------------------- amg_utils: boxes, NMS and stability score


def test_batched_mask_to_box_matches_reference():
    from sam2.utils.amg import batched_mask_to_box

    masks = blobby(6, 30, 41, seed=6, level=1.2).reshape(2, 3, 30, 41)
    masks[0, 1] = False
    ours = A.batched_mask_to_box(masks)
    assert ours.dtype == torch.int64 and ours.shape == (2, 3, 4)
    assert torch.equal(ours, batched_mask_to_box(masks))
    assert ours[0, 1].tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("seed", range(3))
def test_nms_matches_torchvision_semantics(seed):
    from torchvision.ops import batched_nms, nms  # the test stub: torchvision's algorithm

    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(300, 2, generator=gen) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(300, 2, generator=gen) * 40], 1)
    boxes[::7] = boxes[3]  # exact duplicates: IoU 1
    scores = torch.rand(300, generator=gen)
    scores[::11] = 0.5  # ties: stable order
    cats = torch.randint(0, 3, (300,), generator=gen)
    for thresh in (0.0, 0.3, 0.7, 1.0):
        assert torch.equal(A.nms(boxes, scores, thresh), nms(boxes, scores, thresh))
        assert torch.equal(
            A.batched_nms(boxes, scores, cats, thresh), batched_nms(boxes, scores, cats, thresh)
        )
    keep = A.nms(boxes, scores, 0.5)
    assert 0 < len(keep) < 300
    assert A.nms(boxes[:0], scores[:0], 0.5).shape == (0,)


def test_box_helpers():
    boxes = torch.tensor([[1, 2, 4, 8], [0, 0, 0, 0]])
    assert A.box_area(boxes).tolist() == [18, 0]
    assert A.box_xyxy_to_xywh(boxes).tolist() == [[1, 2, 3, 6], [0, 0, 0, 0]]
    assert A.box_xyxy_to_xywh(boxes.numpy().astype(np.float32)).tolist() == [[1, 2, 3, 6], [0] * 4]


def test_stability_score_matches_reference():
    from sam2.utils.amg import calculate_stability_score

    logits = torch.randn(5, 40, 60, generator=torch.Generator().manual_seed(7)) * 3
    for thresh, offset in ((0.0, 1.0), (0.5, 0.25)):
        ours = A.calculate_stability_score(logits, thresh, offset)
        assert ours.dtype == torch.float32
        assert torch.equal(ours, calculate_stability_score(logits, thresh, offset))
    # Nothing above either cut: 0 / 0, NaN, which every threshold rejects.
    assert A.calculate_stability_score(torch.full((1, 4, 4), -5.0), 0.0, 1.0).isnan().all()


def test_rle_strings_of_counts_of_every_digit_width_match_pycocotools():
    # Each count and each difference from the count two places earlier at the edges of the
    # 1- to 7-digit ranges (5 bits per digit, the top one a sign), up and down.
    edges = [(1 << (5 * d - 1)) + k for d in range(1, 7) for k in (-2, -1, 0, 1)]
    rng = np.random.default_rng(5)
    counts = [0, *edges, *edges[::-1], *rng.integers(1, 1 << 31, 40).tolist(), 1, 2, 3]
    counts = [int(c) for c in counts]
    rle = {"size": [sum(counts), 1], "counts": counts}
    want = coco_mask.frPyObjects(rle, sum(counts), 1)["counts"].decode()
    assert M.encode_rle_counts(counts) == want
    assert M.decode_rle_counts(want) == counts
    assert M.encode_rle_counts([]) == ""

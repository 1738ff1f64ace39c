"""VideoAnnotator: the same masks as direct SAM2VideoPredictor runs, corrections, undo,
propagation that can be stopped, exports read back."""

from __future__ import annotations

import io
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from sam2ui.core import SAM2VideoPredictor, build_sam2, get_config
from sam2ui.core.annotate.video import PropagationStep, VideoAnnotator
from sam2ui.core.exports import read_sav_json
from sam2ui.core.render import POSITIVE_COLOR
from sam2ui.core.video.sources.base import DEFAULT_FPS
from tests.reference_models import perturbed_state_dict

T, H, W = 5, 64, 96
CLICK = (40.0, 30.0)
BOX = (55.0, 5.0, 90.0, 40.0)


@pytest.fixture(scope="module")
def predictor() -> SAM2VideoPredictor:
    config = replace(
        get_config("sam2.1-hiera-tiny"), image_size=256, binarize_mask_from_pts_for_mem_enc=True
    )
    # Seeded: the random init (which the perturbation keeps) must not depend on how many
    # random numbers other tests drew before this fixture.
    torch.manual_seed(0)
    net = build_sam2(config)
    net.load_state_dict(perturbed_state_dict(net, seed=2))
    return SAM2VideoPredictor(net.eval())


@pytest.fixture(scope="module")
def video() -> np.ndarray:
    rng = np.random.default_rng(0)
    frames = rng.integers(60, 110, (T, H, W, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:H, :W]
    for t in range(T):
        frames[t][(xx - 36 - 2 * t) ** 2 + (yy - 30) ** 2 < 150] = (230, 40, 40)
        frames[t, 8:36, 60 + t : 86 + t] = (30, 200, 60)
    return frames


def _direct(predictor, video, passes, prompts) -> dict[int, dict[int, np.ndarray]]:
    """A plain predictor run: prompts [(frame, obj, kwargs)], passes [(start, reverse)]."""
    state = predictor.init_state(video)
    for f, oid, kwargs in prompts:
        predictor.add_new_points_or_box(state, f, oid, **kwargs)
    out: dict[int, dict[int, np.ndarray]] = {}
    for start, reverse in passes:
        for f, ids, logits in predictor.propagate_in_video(state, start, reverse=reverse):
            out[f] = {i: (logits[k, 0] > 0).numpy() for k, i in enumerate(ids)}
    return out


PROMPTS = [
    (1, 1, {"points": np.array([CLICK]), "labels": np.array([1])}),
    (1, 2, {"box": np.array(BOX)}),
]


@pytest.fixture(scope="module")
def expected_both(predictor, video):
    return _direct(predictor, video, [(1, False), (1, True)], PROMPTS)


def _equal(a: dict[int, np.ndarray], b: dict[int, np.ndarray]) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def _prompted(predictor, video) -> VideoAnnotator:
    ann = VideoAnnotator(predictor, video)
    one, two = ann.add_object("ball"), ann.add_object()
    masks = ann.add_click(1, one, *CLICK)
    assert set(masks) == {one} and 0 < masks[one].sum() < H * W
    ann.set_box(1, two, BOX[2], BOX[1], BOX[0], BOX[3])  # corners in any order
    return ann


def test_propagate_both_matches_predictor(predictor, video, expected_both):
    ann = _prompted(predictor, video)
    assert (ann.num_frames, ann.size, ann.fps) == (T, (H, W), DEFAULT_FPS)
    steps = list(ann.propagate("both"))
    # forward 1..4, then backward 1, 0
    assert [s.frame_idx for s in steps] == [1, 2, 3, 4, 1, 0]
    assert steps[-1] == PropagationStep(0, 6, 6)
    assert ann.tracked_frames == list(range(T))
    results = ann.results()
    for f in range(T):
        assert _equal(results[f], expected_both[f]), f
        assert results[f][1].any() and not results[f][1].all()
    # The frame's prompts are drawn, the masks tinted.
    img = ann.render(1, selected=1)
    assert tuple(img[30, 40]) == POSITIVE_COLOR
    assert not np.array_equal(img, ann.frame(1))
    ann.close()
    with pytest.raises(RuntimeError, match="closed"):
        _ = ann.num_frames


def test_backward_and_forward_only(predictor, video):
    ann = VideoAnnotator(predictor, video)
    oid = ann.add_object()
    ann.add_click(3, oid, *CLICK)
    assert [s.frame_idx for s in ann.propagate("backward")] == [3, 2, 1, 0]
    assert ann.tracked_frames == [0, 1, 2, 3]
    want = _direct(predictor, video, [(3, True)], [(3, 1, {"points": [CLICK], "labels": [1]})])
    for f in range(4):
        assert _equal(ann.masks(f), want[f])
    assert [s.frame_idx for s in ann.propagate("forward", start_frame=2, max_frames=1)] == [2, 3]
    assert list(ann.propagate("backward", start_frame=0)) == []


def test_correction_undo_and_repropagation(predictor, video):
    ann = _prompted(predictor, video)
    list(ann.propagate("forward"))
    before = {f: ann.masks(f) for f in range(T)}
    fixed = ann.add_click(3, 1, 40, 30, positive=False)  # a correction on a tracked frame
    assert not np.array_equal(fixed[1], before[3][1])
    assert np.array_equal(ann.masks(3)[1], fixed[1])
    list(ann.propagate("forward", start_frame=3))
    assert not np.array_equal(ann.masks(4)[1], before[4][1])  # carried on
    # The same steps on the predictor directly.
    state = predictor.init_state(video)
    for f, oid, kwargs in PROMPTS:
        predictor.add_new_points_or_box(state, f, oid, **kwargs)
    list(predictor.propagate_in_video(state))
    _, ids, logits = predictor.add_new_points_or_box(state, 3, 1, [(40, 30)], [0])
    assert np.array_equal(fixed[1], (logits[ids.index(1), 0] > 0).numpy())
    for f, ids, logits in predictor.propagate_in_video(state, 3):
        assert np.array_equal(ann.masks(f)[1], (logits[ids.index(1), 0] > 0).numpy()), f
    # Undo on an untracked frame gives back the previous prompt's mask exactly.
    first = ann.add_click(0, 2, 70, 20)
    second = ann.add_click(0, 2, 10, 50, positive=False)
    assert not np.array_equal(first[2], second[2])
    assert np.array_equal(ann.undo(0, 2)[2], first[2])
    assert len(ann.objects[2].prompts[0].clicks) == 1
    ann.undo(0, 2)
    assert 0 not in ann.objects[2].prompts
    ann.undo(0, 2)  # nothing left: fine
    ann.close()


def test_stop_early_then_continue(predictor, video, expected_both):
    ann = _prompted(predictor, video)
    gen = ann.propagate("forward")
    assert next(gen).frame_idx == 1 and next(gen) == PropagationStep(2, 2, 4)
    with pytest.raises(RuntimeError, match="propagation is running"):
        ann.add_click(2, 1, 5, 5)
    gen.close()
    assert ann.tracked_frames == [1, 2]
    assert _equal(ann.masks(2), expected_both[2])
    steps = list(ann.propagate("forward"))
    assert steps[-1] == PropagationStep(4, 4, 4)
    for f in range(1, T):  # the tracked frames come out as in one uninterrupted run
        assert _equal(ann.masks(f), expected_both[f]), f
    ann.close()


def test_objects_clear_and_remove(predictor, video):
    ann = VideoAnnotator(predictor, video)
    idle = ann.add_object()
    ann.remove_object(idle)  # never prompted
    one, two = ann.add_object(), ann.add_object()
    assert (one, two) == (2, 3)
    ann.add_click(1, one, *CLICK)
    ann.add_click(2, two, 60, 20)
    ann.add_click(3, two, 62, 20)
    list(ann.propagate("forward"))
    assert set(ann.masks(4)) == {one, two}
    ann.clear_frame(2, two)  # still prompted on frame 3
    assert 2 not in ann.objects[two].prompts and set(ann.masks(4)) == {one, two}
    ann.clear_frame(3, two)  # no prompt left: it leaves the tracking
    assert set(ann.masks(4)) == {one}
    ann.remove_object(one)
    assert ann.objects == {two: ann.objects[two]} and all(ann.masks(f) == {} for f in range(T))
    with pytest.raises(ValueError, match="no object has a prompt"):
        ann.propagate()
    ann.close()


def test_exports_read_back(predictor, video, tmp_path):
    ann = _prompted(predictor, video)
    list(ann.propagate("forward", max_frames=2))
    results = ann.results()
    assert sorted(results) == [1, 2, 3]
    with zipfile.ZipFile(ann.write_masks_zip(tmp_path / "m.zip")) as zf:
        for f, masks in results.items():
            indexed = np.asarray(Image.open(io.BytesIO(zf.read(f"{f:05d}.png"))))
            assert np.array_equal(indexed, np.where(masks[1], 1, np.where(masks[2], 2, 0)))
    back = read_sav_json(ann.write_json(tmp_path / "m.json"))
    for f, masks in results.items():
        assert _equal(back[f], {k: m for k, m in masks.items() if m.any()})
    pytest.importorskip("av")
    calls = []
    path = ann.write_overlay_mp4(tmp_path / "o.mp4", progress=lambda d, n: calls.append((d, n)))
    assert path.stat().st_size > 0 and calls == [(i, T) for i in range(1, T + 1)]
    ann.close()


def test_errors(predictor, video):
    ann = VideoAnnotator(predictor, video)
    oid = ann.add_object()
    with pytest.raises(ValueError, match=r"out of range \[0, 4\]"):
        ann.frame(5)
    with pytest.raises(ValueError, match="out of range"):
        ann.add_click(-1, oid, 1, 1)
    with pytest.raises(ValueError, match="unknown object id 9"):
        ann.add_click(0, 9, 1, 1)
    with pytest.raises(ValueError, match="finite"):
        ann.set_box(0, oid, 0, float("nan"), 5, 5)
    with pytest.raises(ValueError, match="outside"):
        ann.add_click(0, oid, W + 1, 1)
    with pytest.raises(ValueError, match="no object has a prompt"):
        ann.propagate()
    ann.add_click(0, oid, *CLICK)
    with pytest.raises(ValueError, match="direction"):
        ann.propagate("sideways")  # type: ignore[arg-type]
    ann.close()
    ann.close()
    assert torch.is_grad_enabled()


# ------------------------------------------------------------------ history: undo, redo, remove
def test_video_undo_redo_and_remove_click(predictor, video) -> None:
    ann = VideoAnnotator(predictor, video)
    a, b = ann.add_object(), ann.add_object()
    ann.add_click(0, a, 20, 30)
    after_one = ann.masks(0)[a].copy()
    ann.add_click(2, b, 50, 40)
    ann.add_click(0, a, 25, 32)
    assert ann.last_changed == (0, a) and not ann.can_redo
    ann.undo(*ann.last_changed)
    assert np.array_equal(ann.masks(0)[a], after_one)
    assert ann.last_changed == (2, b) and ann.next_redo == (0, a)
    assert ann.redo() == (0, a)
    assert len(ann.objects[a].prompts[0].clicks) == 2 and ann.redo() is None
    ann.remove_click(0, a, 1)
    assert len(ann.objects[a].prompts[0].clicks) == 1
    assert np.array_equal(ann.masks(0)[a], after_one)
    with pytest.raises(ValueError, match="no click 5"):
        ann.remove_click(0, a, 5)
    ann.clear_frame(2, b)
    assert ann.last_changed == (0, a)  # b's changes on frame 2 left the history
    assert ann.mask_frames(a) == [0]
    for _ in ann.propagate("forward"):
        pass
    assert ann.mask_frames(a) == [f for f in range(ann.num_frames) if ann.masks(f)[a].any()]
    ann.close()

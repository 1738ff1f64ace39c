"""Prompt forms of SAM2VideoPredictor: several objects in one call (``obj_id`` a list, or
``obj_ids=``) with ragged per-object prompts, and clear errors (prompts off the frame, bad
frame indices, unknown objects) that leave the session as it was.

A 256-pixel tiny model with random weights (Meta layout), fill_hole_area 0, and a 4-frame
64 x 48 synthetic video (a disc moving right, a box moving down, over a gradient).
"""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch

from sam2ui.core.loading.build import build_sam2
from sam2ui.core.modeling.config import get_config
from sam2ui.core.video.predictor import SAM2VideoPredictor
from sam2ui.core.video.state import UnknownObjectError, VideoSession

VARIANT = "sam2.1-hiera-tiny"
NUM_FRAMES = 4
H, W = 48, 64
# Three objects: one click; three clicks (one negative); a box.
IDS = [1, 2, 3]
POINTS = [[[16.0, 24.0]], np.array([[47.0, 12.0], [47.0, 16.0], [10.0, 40.0]]), None]
LABELS = [[1], np.array([1, 1, 0]), None]
BOXES = [None, None, [38.0, 4.0, 56.0, 22.0]]


def _frames() -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([xx * 3, yy * 4, xx + yy], axis=-1).clip(0, 255).astype(np.uint8)
    frames = np.repeat(base[None], NUM_FRAMES, axis=0)
    for t in range(NUM_FRAMES):
        disc = (xx - 16 - t) ** 2 / 100 + (yy - 24) ** 2 / 64 <= 1
        frames[t][disc] = (230, 40, 40)
        frames[t, 6 + t // 2 : 20 + t // 2, 40:54] = (30, 200, 60)
    return frames


@pytest.fixture(scope="module")
def video() -> np.ndarray:
    return _frames()


@pytest.fixture(scope="module")
def predictor(meta_checkpoint) -> SAM2VideoPredictor:
    config = replace(get_config(VARIANT), image_size=256, binarize_mask_from_pts_for_mem_enc=True)
    net = build_sam2(config)
    net.load_state_dict(torch.load(meta_checkpoint(VARIANT), weights_only=True)["model"])
    # Every frame's features cached: each session encodes each frame once.
    return SAM2VideoPredictor(net.eval(), fill_hole_area=0, feature_cache_size=NUM_FRAMES)


def _propagate(predictor, session, **kwargs) -> dict[int, torch.Tensor]:
    return {t: m for t, _, m in predictor.propagate_in_video(session, **kwargs)}


def _assert_equal_runs(a: dict[int, torch.Tensor], b: dict[int, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for t in a:
        assert torch.equal(a[t], b[t]), f"frame {t}"


def test_several_objects_in_one_call_equal_one_call_per_object(predictor, video):
    together = predictor.init_state(video)
    frame, ids, masks = predictor.add_new_points_or_box(
        together, 0, IDS, points=POINTS, labels=LABELS, box=BOXES
    )
    apart = predictor.init_state(video)
    for oid, p, lab, b in zip(IDS, POINTS, LABELS, BOXES):
        last = predictor.add_new_points_or_box(apart, 0, oid, points=p, labels=lab, box=b)
    assert (frame, ids) == (0, IDS) == last[:2]
    assert masks.shape == (3, 1, H, W)
    assert torch.equal(masks, last[2])
    assert all((masks[i] > 0).any() for i in range(3))  # every object got a mask
    for oid in IDS:
        a, b = together.objects[oid], apart.objects[oid]
        assert torch.equal(a.points[0].coords, b.points[0].coords)
        assert torch.equal(a.points[0].labels, b.points[0].labels)
        out_a, out_b = a.temp.cond[0], b.temp.cond[0]
        assert torch.equal(out_a.mask_logits, out_b.mask_logits)
        assert torch.equal(out_a.obj_ptr, out_b.obj_ptr)
    first = _propagate(predictor, together)
    _assert_equal_runs(first, _propagate(predictor, apart))

    # Corrections for two objects on a tracked frame, added to their clicks there, with the
    # transformers spelling (obj_ids=) and normalized coordinates.
    more_points = [np.array([[0.5, 0.5], [0.1, 0.9]]), [[0.8, 0.3]]]
    more_labels = [[0, 1], [1]]
    kwargs = dict(clear_old_points=False, normalize_coords=False)
    _, ids, fixed = predictor.add_new_points_or_box(
        together, 2, obj_ids=[3, 1], points=more_points, labels=more_labels, **kwargs
    )
    predictor.add_new_points_or_box(apart, 2, 3, more_points[0], more_labels[0], **kwargs)
    _, _, expected = predictor.add_new_points_or_box(
        apart, 2, 1, more_points[1], more_labels[1], **kwargs
    )
    assert ids == IDS and torch.equal(fixed, expected)
    assert together.objects[3].points[2].coords.shape == (1, 2, 2)
    second = _propagate(predictor, together, start_frame_idx=2)
    _assert_equal_runs(second, _propagate(predictor, apart, start_frame_idx=2))
    assert not torch.equal(second[3], first[3])  # the corrections changed the tracking


def test_several_masks_in_one_call_equal_one_call_per_object(predictor, video):
    masks = np.zeros((2, H, W), dtype=bool)
    masks[0, 10:30, 8:26] = True
    masks[1, 5:20, 40:54] = True
    together = predictor.init_state(video)
    frame, ids, got = predictor.add_new_mask(together, 2, obj_ids=["disc", "box"], mask=masks)
    apart = predictor.init_state(video)
    predictor.add_new_mask(apart, 2, "disc", masks[0])
    _, _, expected = predictor.add_new_mask(apart, 2, "box", masks[1])
    assert (frame, ids) == (2, ["disc", "box"]) and torch.equal(got, expected)
    # A list of masks (any sizes) is the same as an array of them.
    listed = predictor.init_state(video)
    _, _, as_list = predictor.add_new_mask(listed, 2, ["disc", "box"], [masks[0], masks[1]])
    assert torch.equal(as_list, got)
    _assert_equal_runs(
        _propagate(predictor, together, max_frame_num_to_track=1),
        _propagate(predictor, apart, max_frame_num_to_track=1),
    )


def test_object_id_forms(predictor, video):
    session = predictor.init_state(video)
    # One id given as obj_ids (as the transformers examples do) is one object.
    _, ids, masks = predictor.add_new_points_or_box(
        session, 0, obj_ids=5, points=[[9, 9]], labels=[1]
    )
    assert ids == [5] and masks.shape == (1, 1, H, W)
    # Array ids become plain ints.
    _, ids, _ = predictor.add_new_points_or_box(
        session, 0, np.array([6, 7]), points=[[[9, 9]], [[30, 30]]], labels=[[1], [1]]
    )
    assert ids == [5, 6, 7] and all(type(i) is int for i in ids)
    cases = [
        (dict(obj_id=1, obj_ids=[2]), TypeError, "not both"),
        (dict(), TypeError, "an object id is needed"),
        (dict(obj_id=[]), ValueError, "obj_ids is empty"),
        (dict(obj_id=[1, 1]), ValueError, "object id 1 appears twice"),
        (dict(obj_id=[[1]]), TypeError, "must be hashable"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            predictor.add_new_points_or_box(session, 0, points=[[[1, 1]]], labels=[[1]], **kwargs)
    assert session.obj_ids == [5, 6, 7]


def _snapshot(session: VideoSession) -> tuple:
    """What a failed call must leave alone: objects, prompts, outputs (the very objects),
    tracked frames and the results handed out."""
    objects = {
        oid: (
            {t: (p.coords.clone(), p.labels.clone()) for t, p in obj.points.items()},
            {t: m.clone() for t, m in obj.masks.items()},
            {t: id(o) for t, o in obj.outputs.cond.items()},
            {t: id(o) for t, o in obj.outputs.non_cond.items()},
            {t: id(o) for t, o in obj.temp.cond.items()},
            {t: id(o) for t, o in obj.temp.non_cond.items()},
            dict(obj.tracked),
        )
        for oid, obj in session.objects.items()
    }
    results = {t: session.results.frame(t) for t in session.results.frame_indices}
    return session.obj_ids, objects, results


def _assert_same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0]
    for oid in a[1]:
        (pa, ma, *rest_a), (pb, mb, *rest_b) = a[1][oid], b[1][oid]
        assert pa.keys() == pb.keys() and ma.keys() == mb.keys()
        assert all(torch.equal(pa[t][0], pb[t][0]) and torch.equal(pa[t][1], pb[t][1]) for t in pa)
        assert all(torch.equal(ma[t], mb[t]) for t in ma)
        assert rest_a == rest_b
    assert a[2].keys() == b[2].keys()
    for t in a[2]:
        assert a[2][t].keys() == b[2][t].keys()
        assert all(np.array_equal(a[2][t][o], b[2][t][o]) for o in a[2][t])


# Calls that must fail and change nothing: (method, args, kwargs, error, message pattern).
# The session has objects 1 and 2, tracked over the whole video.
ADD, MASK, CLEAR, RUN = (
    "add_new_points_or_box",
    "add_new_mask",
    "clear_all_prompts_in_frame",
    "propagate_in_video",
)
CLICK = dict(points=[[3, 4]], labels=[1])
TWO_LABELS = dict(labels=[[1], [1]])
FULL = np.ones((H, W))
BAD_CALLS = [
    # A prompt off the frame for the second object: the first object's is not applied either.
    (ADD, (2, [1, 9]), dict(points=[[[10, 10]], [[64.5, 10]]], **TWO_LABELS), ValueError,
     r"^points\[1\]\[0\] = \(64.5, 10.0\) lies outside the 64 x 48 frame$"),
    (ADD, (2, 1), dict(points=[[3, 4], [900, 20]], labels=[1, 1]), ValueError,
     r"^points\[1\] = \(900.0, 20.0\) lies outside the 64 x 48 frame$"),
    (ADD, (2, 1), dict(points=[[3, -1]], labels=[1]), ValueError,
     r"points\[0\] = \(3.0, -1.0\) lies outside the 64 x 48 frame"),
    (ADD, (2, 1), dict(points=[[0.2, 1.01]], labels=[1], normalize_coords=False), ValueError,
     r"points\[0\] = \(0.2, 1.01\) lies outside \[0, 1\] x \[0, 1\].*64 x 48 frame"),
    (ADD, (2, [1, 2]), dict(points=[[[3, 4]], [[np.nan, 4]]], **TWO_LABELS), ValueError,
     r"points\[1\]\[0\] = \(nan, 4.0\) contains NaN or infinite values \(64 x 48 frame\)"),
    (ADD, (2, [1, 2]), dict(box=[[0, 0, 10, 10], [0, 0, 10, np.inf]]), ValueError,
     r"box\[1\] corner \(x1, y1\) = \(10.0, inf\) contains NaN or infinite"),
    (ADD, (2, 2), dict(box=[10, 10, 70, 20]), ValueError,
     r"box corner \(x1, y1\) = \(70.0, 20.0\) lies outside the 64 x 48 frame"),
    (ADD, (2, 2), dict(box=[30, 10, 20, 20]), ValueError, "x1 >= x0"),
    (ADD, (2, 2), dict(box=[1, 2, 3]), ValueError, r"box must have 4 values"),
    (ADD, (2, [1, 2]), dict(points=[[[3, 4]]], labels=[[1]]), ValueError,
     r"points has 1 entries for the 2 objects \[1, 2\]"),
    (ADD, (2, [1, 2]), dict(points=[[[3, 4]], None], labels=[[1], None]), ValueError,
     r"object 2 has no prompt: give points\[1\]"),
    (ADD, (2, [1, 2]), dict(points=[[[3, 4]], [[5, 6], [7, 8]]], **TWO_LABELS), ValueError,
     r"2 points in points\[1\] but labels\[1\] of shape \(1, 1\)"),
    (ADD, (2, 1), dict(points=[[3, 4, 5]], labels=[1]), ValueError,
     r"points must have shape \(N, 2\), got \(1, 1, 3\)"),
    (ADD, (2, 1), dict(points=[[3, 4]], labels=[7]), ValueError,
     "label 7 in labels is not one the model knows"),
    (ADD, (2, 1), dict(points=[[3, 4]], labels=[0.5]), ValueError, "integers"),
    (ADD, (2, 1), dict(box=[0, 0, 5, 5], clear_old_points=False, **CLICK), ValueError,
     "clear_old_points=True"),
    (MASK, (2, [1, 2]), dict(mask=[FULL, np.ones((2, H, W))]), ValueError,
     r"mask\[1\] must be a non-empty 2-D"),
    (MASK, (2, 1), dict(mask=None), ValueError, "mask is missing"),
    # Frame indices: out of range, negative, not integers.
    (ADD, (NUM_FRAMES, 1), CLICK, IndexError,
     r"frame index 4 out of range \[0, 3\] for a video of 4 frames"),
    (ADD, (-1, 1), CLICK, IndexError, "out of range"),
    (ADD, (3.5, 1), CLICK, IndexError, r"frame index must be an integer, got 3.5 \(float\)"),
    (MASK, ("3", 1, FULL), {}, IndexError, r"got '3' \(str\)"),
    (MASK, (None, 1, FULL), {}, IndexError, "must be an integer"),
    (CLEAR, (True, 1), {}, IndexError, "must be an integer"),
    (CLEAR, (9, 1), {}, IndexError, "out of range"),
    (RUN, (), dict(start_frame_idx=-2), IndexError, "out of range"),
    (RUN, (), dict(start_frame_idx=2.0), IndexError, "must be an integer"),
    (RUN, (), dict(max_frame_num_to_track=-1), ValueError, "non-negative integer"),
    (RUN, (), dict(max_frame_num_to_track=2.5), ValueError, "non-negative integer"),
    # Unknown objects.
    (CLEAR, (0, 9), {}, UnknownObjectError,
     r"^unknown object id 9; the session's object ids are \[1, 2\]$"),
    ("remove_object", (9,), {}, UnknownObjectError,
     r"^cannot remove object id 9: no such object; the session's object ids are \[1, 2\]$"),
]  # fmt: skip


def _call(predictor, method, session, *args, **kwargs):
    out = getattr(predictor, method)(session, *args, **kwargs)
    return next(out) if method == "propagate_in_video" else out  # a generator: start it


def test_errors_leave_the_session_as_it_was(predictor, video):
    session, twin = predictor.init_state(video), predictor.init_state(video)
    for s in (session, twin):
        predictor.add_new_points_or_box(s, 0, [1, 2], POINTS[:2], LABELS[:2])
        tracked = _propagate(predictor, s)
    before = _snapshot(session)
    for method, args, kwargs, error, match in BAD_CALLS:
        with pytest.raises(error, match=match):
            _call(predictor, method, session, *args, **kwargs)
        _assert_same(_snapshot(session), before)
    # Still usable, nothing lost: the same results as a session that never saw the errors.
    for t, masks in tracked.items():
        assert all(
            np.array_equal(session.results.get(t, oid), (masks[i, 0] > 0).cpu().numpy())
            for i, oid in enumerate(IDS[:2])
        )
    for s in (session, twin):
        _, _, fixed = predictor.add_new_points_or_box(
            s, 3, [2, 3], points=[POINTS[1], None], labels=[[0, 1, 1], None], box=[None, BOXES[2]]
        )
    assert fixed.shape == (3, 1, H, W) and session.obj_ids == IDS
    _assert_equal_runs(
        _propagate(predictor, session, start_frame_idx=2),
        _propagate(predictor, twin, start_frame_idx=2),
    )


def test_border_points_and_boxes_are_inside(predictor, video):
    session = predictor.init_state(video)
    _, _, on_border = predictor.add_new_points_or_box(
        session, 0, [1, 2], points=[[[W, H], [0, 0]], None], labels=[[1, 0], None],
        box=[None, [0, 0, W, H]],
    )  # fmt: skip
    fractions = predictor.init_state(video)
    _, _, same = predictor.add_new_points_or_box(
        fractions, 0, [1, 2], points=[[[1.0, 1.0], [0, 0]], None], labels=[[1, 0], None],
        box=[None, [0, 0, 1.0, 1.0]], normalize_coords=False,
    )  # fmt: skip
    assert torch.equal(on_border, same)


def test_stream_frame_indices_are_checked(predictor, video):
    stream = predictor.init_stream(video[0])
    with pytest.raises(IndexError, match=r"frame index must be an integer, got 0.0"):
        stream.add_new_points_or_box(1, points=[[3, 4]], labels=[1], frame_idx=0.0)
    with pytest.raises(IndexError, match=r"frame 1 is not held"):
        stream.add_new_points_or_box(1, points=[[3, 4]], labels=[1], frame_idx=1)
    _, ids, masks = stream.add_new_points_or_box(
        [1, 2], points=[[[3, 4]], [[40, 10]]], labels=[[1], [1]]
    )
    assert ids == [1, 2] and masks.shape == (2, 1, H, W)
    idx, ids, masks = stream.push(video[1])
    assert idx == 1 and ids == [1, 2] and masks.shape == (2, 1, H, W)


def test_unknown_object_error():
    err = UnknownObjectError(7, [1, 2], "remove")
    assert isinstance(err, KeyError) and isinstance(err, ValueError)
    assert (
        str(err) == "cannot remove object id 7: no such object; the session's object ids are [1, 2]"
    )
    assert (
        str(UnknownObjectError("a", [])) == "unknown object id 'a'; the session has no objects yet"
    )
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is UnknownObjectError and str(copy) == str(err)
    assert (copy.obj_id, copy.known_ids) == (7, [1, 2])


def test_remove_object_strict_false_is_quiet(predictor, video):
    session = predictor.init_state(video)
    predictor.add_new_points_or_box(session, 0, 1, points=[[3, 4]], labels=[1])
    assert predictor.remove_object(session, 9, strict=False) == ([1], [])
    assert predictor.remove_object(session, 1, need_output=False) == ([], [])

"""Bounded tracking memory and streaming: same masks as the unpruned / offline tracker.

A 256-pixel tiny model with random weights (Meta layout), fill_hole_area 0, and a 22-frame
synthetic video (a disc moving right, a box moving down, over a gradient).
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from sam2ui.core.loading.build import build_sam2
from sam2ui.core.modeling.config import get_config
from sam2ui.core.serving.sessions import SessionManager
from sam2ui.core.video.memory import MemoryWindow, PackedMask, ResultStore, stored_counts
from sam2ui.core.video.predictor import SAM2VideoPredictor
from sam2ui.core.video.spill import DEFAULT_SPILL_BUDGET, SpillError

VARIANT = "sam2.1-hiera-tiny"
NUM_FRAMES = 21
HEIGHT, WIDTH = 48, 64
CLICK = dict(points=[[16.0, 24.0]], labels=[1])


def _frames(n: int = NUM_FRAMES) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([xx * 3, yy * 4, xx + yy], axis=-1).clip(0, 255).astype(np.uint8)
    frames = np.repeat(base[None], n, axis=0)
    for t in range(n):
        cx, cy = 16 + t, 24
        disc = (xx - cx) ** 2 / 100 + (yy - cy) ** 2 / 64 <= 1
        frames[t][disc] = (230, 40, 40)
        top = 6 + t // 2
        frames[t, top : top + 14, 40:54] = (30, 200, 60)
    return frames


@pytest.fixture(scope="module")
def video() -> np.ndarray:
    return _frames()


@pytest.fixture(scope="module")
def model(meta_checkpoint):
    config = replace(get_config(VARIANT), image_size=256, binarize_mask_from_pts_for_mem_enc=True)
    net = build_sam2(config)
    net.load_state_dict(torch.load(meta_checkpoint(VARIANT), weights_only=True)["model"])
    return net.eval()


def _prompt(predictor, session) -> None:
    predictor.add_new_points_or_box(session, 0, 1, **CLICK)


@pytest.fixture(scope="module")
def offline(model, video):
    """A pruned offline run: (predictor, session, masks by frame, stored counts by frame)."""
    predictor = SAM2VideoPredictor(model, fill_hole_area=0)
    session = predictor.init_state(video)
    _prompt(predictor, session)
    masks, counts = {}, {}
    for t, ids, m in predictor.propagate_in_video(session):
        assert ids == [1]
        masks[t] = m
        counts[t] = (*stored_counts(session.objects[1].outputs.non_cond), len(session.spill))
        # The kept (packed) result is the yielded mask.
        assert np.array_equal(session.results.get(t, 1), (m[0, 0] > 0).numpy())
    return predictor, session, masks, counts


def test_memory_window_and_packed_masks(model):
    cfg = model.config
    assert MemoryWindow.for_model(cfg, 100) == MemoryWindow(6, 15)
    assert MemoryWindow.for_model(cfg, 8) == MemoryWindow(6, 7)
    strided = replace(cfg, memory_temporal_stride_for_eval=3)
    assert MemoryWindow.for_model(strided, 100).memory_reach == 16
    mask = np.random.default_rng(0).random((5, 11)) > 0.5
    packed = PackedMask.pack(mask)  # noise: compressing does not pay, 8 pixels a byte
    assert packed.nbytes == 7 and not packed.compressed
    assert np.array_equal(packed.unpack(), mask)
    yy, xx = np.mgrid[0:480, 0:854]
    disc = (yy - 200) ** 2 + (xx - 300) ** 2 < 120**2
    packed = PackedMask.pack(torch.from_numpy(disc.astype(np.float32)) - 0.5)
    assert packed.compressed and packed.nbytes < 480 * 854 // 8 // 10
    assert np.array_equal(packed.unpack(), disc) and packed.shape == (480, 854)
    store = ResultStore()
    store.put(3, ["a", "b"], torch.tensor([[[[1.0, -1.0]]], [[[-2.0, 0.5]]]]))
    assert store.get(3, "b").tolist() == [[False, True]] and store.get(4, "a") is None


def test_pruned_tracking_is_identical_and_bounded(model, video, offline):
    _, session, pruned, counts = offline
    full = SAM2VideoPredictor(model, fill_hole_area=0, keep_all_memories=True)
    state = full.init_state(video)
    _prompt(full, state)
    frames = list(full.propagate_in_video(state))
    assert [t for t, _, _ in frames] == list(range(NUM_FRAMES))
    for t, _, ref in frames:
        assert torch.equal(ref, pruned[t]), f"frame {t} differs"
        frac = (ref > 0).float().mean().item()
        assert 0.005 < frac < 0.9, (t, frac)  # a real mask
    # After frame t, RAM holds the memory features of the 7 tracked frames t-6..t (what the
    # next frame reads, and a correction on frame t) and every frame's pointer and score;
    # the features and logits of the frames before those are on disk.
    out = session.objects[1].outputs.non_cond[1]
    per_frame = sum(x.numel() * x.element_size() for x in (out.obj_ptr, out.object_score_logits))
    for t, (features, pointers, nbytes, spilled) in counts.items():
        assert (features, pointers, spilled) == (min(t, 7), t, max(t - 7, 0)), t
        if t > 7:  # RAM grows by a pointer and a score a frame, nothing more
            assert nbytes - counts[t - 1][2] == per_frame, t
    assert per_frame < 2048
    assert len(session.spill) == NUM_FRAMES - 8
    features, pointers, _ = stored_counts(state.objects[1].outputs.non_cond)
    assert (features, pointers) == (NUM_FRAMES - 1, NUM_FRAMES - 1)
    assert state.spill.directory is None  # keep_all_memories writes nothing
    # Kept results: bit-packed, then compressed (a mask is mostly runs of one value).
    assert 0 < session.results.nbytes < NUM_FRAMES * (HEIGHT * WIDTH // 8) // 2


def test_stream_matches_offline(offline, video):
    predictor, _, expected, _ = offline
    stream = predictor.init_stream(video[0])
    assert stream.frame_idx == 0
    _, ids, masks = stream.add_new_points_or_box(1, **CLICK)
    assert ids == [1] and torch.equal(masks, expected[0])
    for t in range(1, NUM_FRAMES):
        idx, ids, masks = stream.push(video[t])
        assert idx == t and ids == [1]
        diff = (masks - expected[t]).abs().max().item()
        assert diff <= 1e-6, f"frame {t}: stream differs from offline by {diff}"
    s = stream.session
    # Bounded: a few frames and features, pruned outputs, no old bookkeeping.
    assert len(s.features) <= 4 and len(s.source._frames) == 4
    assert all(len(obj.tracked) <= 4 for obj in s.objects.values())
    assert s.results.frame_indices == list(range(NUM_FRAMES - 4, NUM_FRAMES))
    assert stored_counts(s.objects[1].outputs.non_cond)[:2] == (7, 16)
    with pytest.raises(IndexError, match="not held"):
        stream.add_new_points_or_box(1, frame_idx=NUM_FRAMES - 5, **CLICK)
    # A correction on the newest frame becomes a conditioning frame for the next ones.
    stream.add_new_points_or_box(1, points=[[5.0, 5.0]], labels=[0], clear_old_points=False)
    assert NUM_FRAMES - 1 in s.objects[1].temp.cond
    idx, _, after = stream.push(video[-1])
    assert idx == NUM_FRAMES and after.shape == (1, 1, HEIGHT, WIDTH)
    assert NUM_FRAMES - 1 in s.objects[1].outputs.cond


def test_disk_budget_hit_mid_video_loses_nothing(model, video, offline):
    """A budget that holds 3 spilled frames: the 4th spill raises SpillError after its frame
    was tracked and recorded; that memory stays in RAM. With a larger budget the session
    goes on from the next frame and gives the offline masks, bit for bit."""
    _, _, expected, _ = offline
    predictor = SAM2VideoPredictor(model, fill_hole_area=0)
    session = predictor.init_state(video)
    _prompt(predictor, session)
    seen: dict[int, torch.Tensor] = {}

    def track() -> None:
        for t, _, masks in predictor.propagate_in_video(session):
            seen[t] = masks
            out = session.objects[1].outputs.non_cond.get(1)  # sizes the budget: 3 frames
            if out is not None and session.spill.budget_bytes == DEFAULT_SPILL_BUDGET:
                feats = out.memory_features
                one = session.logits(out).numel() * 4 + feats.numel() * feats.element_size()
                session.spill.budget_bytes = 3 * one

    with pytest.raises(SpillError, match="disk budget") as info:
        track()
    assert "spill_budget_bytes" in str(info.value)
    # Frames 1..7 in RAM after frame 7; frames 1, 2, 3 spilled after 8, 9, 10; frame 11's
    # spill of frame 4 fails. Frame 11 itself was tracked and recorded first.
    last = max(seen)
    assert last == 10 and all(torch.equal(seen[t], expected[t]) for t in seen)
    assert np.array_equal(session.results.get(11, 1), (expected[11][0, 0] > 0).numpy())
    assert len(session.spill) == 3
    disc = session.objects[1].outputs.non_cond
    assert disc[4].memory_features is not None and disc[4].spilled is None
    session.spill.budget_bytes = DEFAULT_SPILL_BUDGET
    rest = list(predictor.propagate_in_video(session, start_frame_idx=12))
    assert [t for t, _, _ in rest] == list(range(12, NUM_FRAMES))
    for t, _, masks in rest:
        assert torch.equal(masks, expected[t]), f"frame {t} differs after the budget error"
    assert len(session.spill) == NUM_FRAMES - 8


def test_session_manager_close_and_eviction_delete_the_files(model, video):
    predictor = SAM2VideoPredictor(model, fill_hole_area=0)
    manager = SessionManager(max_sessions=1, active_window_s=0)  # idle ones make room
    directories, ids = [], []
    for _ in range(2):
        session = predictor.init_state(video[:12])
        _prompt(predictor, session)
        for _ in predictor.propagate_in_video(session):
            pass
        assert len(session.spill) == 12 - 8
        directories.append(session.spill.directory)
        ids.append(manager.create(session, kind="video"))  # the second evicts the first
    assert ids[0] not in manager and ids[1] in manager
    assert not os.path.exists(directories[0]) and os.path.isdir(directories[1])
    manager.close(ids[1])
    assert not os.path.exists(directories[1])


def test_correction_behind_the_window(model, video, offline):
    """Runs last: it changes the shared offline session. A correction on frame 3 (long out
    of the RAM window) and a reverse pass read its memories back from disk: the masks are
    those of keeping every memory in RAM, bit for bit."""
    predictor, session, first, _ = offline
    disc = session.objects[1]
    assert disc.outputs.non_cond[3].memory_features is None  # out of RAM ...
    assert disc.outputs.non_cond[3].spilled is not None  # ... on disk
    full = SAM2VideoPredictor(model, fill_hole_area=0, keep_all_memories=True)
    state = full.init_state(video)
    _prompt(full, state)
    for _ in full.propagate_in_video(state):
        pass
    fix = dict(points=[[40.0, 24.0]], labels=[1], clear_old_points=False)
    _, _, expected = full.add_new_points_or_box(state, 3, 1, **fix)
    _, _, fixed = predictor.add_new_points_or_box(session, 3, 1, **fix)
    assert 3 in disc.temp.cond
    assert torch.equal(fixed, expected)
    assert ((fixed[0] > 0) != (first[3][0] > 0)).sum() > 0
    for pass_args in ({}, {"start_frame_idx": NUM_FRAMES - 1, "reverse": True}):
        again = list(full.propagate_in_video(state, **pass_args))
        second = list(predictor.propagate_in_video(session, **pass_args))
        assert [t for t, _, _ in second] == [t for t, _, _ in again]
        for (t, _, ref), (_, _, m) in zip(again, second):
            assert torch.equal(m, ref), f"frame {t} differs"
    assert 3 in disc.outputs.cond and disc.outputs.cond[3].memory_features is not None
    assert 3 not in disc.outputs.non_cond
    # After the reverse pass, RAM holds the features of tracked frames 1, 2, 4, 5, 6 (0 and
    # 3 are conditioning frames, kept apart); the others are on disk, one file a frame.
    assert stored_counts(disc.outputs.non_cond)[:2] == (5, NUM_FRAMES - 2)
    assert len(session.spill) == NUM_FRAMES - 2 - 5
    directory = session.spill.directory
    assert directory is not None and len(os.listdir(directory)) == len(session.spill)
    predictor.reset_state(session)
    assert not os.path.exists(directory) and session.spill.directory is None


def test_stream_before_any_prompt(model, video):
    stream = SAM2VideoPredictor(model, fill_hole_area=0).init_stream(video[0])
    idx, ids, masks = stream.push(video[1])
    assert (idx, ids, masks.shape) == (1, [], (0, 1, HEIGHT, WIDTH))
    with pytest.raises(ValueError, match="same size"):
        stream.push(video[0][:10])
    _, ids, masks = stream.add_new_mask(7, np.ones((HEIGHT, WIDTH), dtype=bool))
    assert ids == [7] and (masks > 0).all()
    idx, _, tracked = stream.push(video[2])
    assert idx == 2 and tracked.shape == (1, 1, HEIGHT, WIDTH)

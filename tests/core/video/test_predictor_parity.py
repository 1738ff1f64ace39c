"""The video predictor against the reference's ``SAM2VideoPredictor`` (sam2 1.1.0).

Same random weights (sam2.1-hiera-tiny), float32, reference kernels, a 512-pixel model input
(the code paths are those of 1024, on a smaller grid) and a short synthetic JPEG video of odd
size. Two reference details need help on CPU:

* it stores memory features in bfloat16 and relies on CUDA autocast to mix them with float32
  activations; here its memory reads are upcast right before memory attention (the bfloat16
  rounding stays, and ours rounds the same way);
* its hole filling needs a CUDA extension and is skipped on CPU, so both sides run with
  ``fill_hole_area=0``; our hole filling is tested on its own.

Scenario: a click, a box and a mask on frame 0, propagation; a correction click on a
tracked frame (the reference built with ``add_all_frames_to_correct_as_cond``), propagation
again, then a short reverse propagation. After each pass every object's stored outputs are
compared too (pointers, scores, low-res logits and the bfloat16 memory features).

Tolerance: 1e-4 on logits; masks identical wherever the reference's logit is farther than
that from 0. Measured differences are below 1e-6.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from sam2ui.core.loading.build import build_sam2
from sam2ui.core.masks import fill_holes
from sam2ui.core.modeling.config import get_config
from sam2ui.core.modeling.layers import set_onednn_linear
from sam2ui.core.video.predictor import SAM2VideoPredictor
from sam2ui.core.video.state import UnknownObjectError
from tests.reference_models import build_reference_model

VARIANT = "sam2.1-hiera-tiny"
SIZE = 512
NUM_FRAMES = 8
WIDTH, HEIGHT = 97, 71
TOL = 1e-4


@pytest.fixture(autouse=True)
def reference_kernels():
    previous = set_onednn_linear(False)
    yield
    set_onednn_linear(previous)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A disc moving right and a box moving down over a smooth gradient, as JPEG frames."""
    folder = tmp_path_factory.mktemp("video")
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([xx * 2, yy * 3, (xx + yy)], axis=-1).clip(0, 255).astype(np.uint8)
    for t in range(NUM_FRAMES):
        image = Image.fromarray(base)
        draw = ImageDraw.Draw(image)
        cx, cy = 25 + 3 * t, 30
        draw.ellipse([cx - 14, cy - 12, cx + 14, cy + 12], fill=(230, 40, 40))
        draw.rectangle([60, 10 + 2 * t, 85, 35 + 2 * t], fill=(30, 200, 60))
        image.save(folder / f"{t:05d}.jpg", quality=95)
    return folder


@pytest.fixture(scope="module")
def state_dict(meta_checkpoint) -> dict[str, torch.Tensor]:
    return torch.load(meta_checkpoint(VARIANT), weights_only=True)["model"]


@pytest.fixture(scope="module")
def ours(state_dict) -> SAM2VideoPredictor:
    config = replace(get_config(VARIANT), image_size=SIZE, binarize_mask_from_pts_for_mem_enc=True)
    model = build_sam2(config)
    model.load_state_dict(state_dict)
    # Every memory is kept so that all stored outputs can be compared with the reference's.
    return SAM2VideoPredictor(model.eval(), fill_hole_area=0, keep_all_memories=True)


@pytest.fixture(scope="module")
def small(state_dict) -> SAM2VideoPredictor:
    """Our predictor at a 256-pixel input, for the tests of its own behaviour."""
    config = replace(get_config(VARIANT), image_size=256, binarize_mask_from_pts_for_mem_enc=True)
    model = build_sam2(config)
    model.load_state_dict(state_dict)
    return SAM2VideoPredictor(model.eval(), fill_hole_area=0)


def _upcast_memory_reads(ref: torch.nn.Module) -> None:
    """Make the reference read its bfloat16 memory features as float32 (see module doc)."""
    original = ref._prepare_memory_conditioned_features

    def upcast(**kwargs):
        def up(out):
            feats = out["maskmem_features"]
            return {**out, "maskmem_features": None if feats is None else feats.float()}

        kwargs["output_dict"] = {
            key: {t: up(out) for t, out in outputs.items()}
            for key, outputs in kwargs["output_dict"].items()
        }
        return original(**kwargs)

    ref._prepare_memory_conditioned_features = upcast


@pytest.fixture(scope="module")
def reference(state_dict):
    ref = build_reference_model(
        VARIANT,
        video=True,
        state_dict=state_dict,
        overrides=[
            f"++model.image_size={SIZE}",
            "++model.add_all_frames_to_correct_as_cond=true",
        ],
    )
    ref.fill_hole_area = 0  # its builder forces 8 after our overrides
    _upcast_memory_reads(ref)
    return ref


def _compare(ref_masks: torch.Tensor, our_masks: torch.Tensor, where: str) -> None:
    assert ref_masks.shape == our_masks.shape == (3, 1, HEIGHT, WIDTH), where
    diff = (ref_masks - our_masks).abs().max().item()
    assert diff < TOL, f"{where}: logits differ by {diff}"
    differ = (ref_masks > 0) != (our_masks > 0)
    assert not (differ & (ref_masks.abs() > TOL)).any(), f"{where}: masks differ"


def _compare_memory(ref_state, session) -> None:
    """Every object's stored outputs: the same frames, pointers, scores and low-res logits,
    and the same bfloat16 memory features (a few values may sit one bfloat16 step apart where
    float32 rounding put them on either side of a rounding boundary, and no further)."""
    for obj_idx, obj in enumerate(session.objects.values()):
        ref_out = ref_state["output_dict_per_obj"][obj_idx]
        for key, ours in (
            ("cond_frame_outputs", obj.outputs.cond),
            ("non_cond_frame_outputs", obj.outputs.non_cond),
        ):
            refs = ref_out[key]
            assert sorted(ours) == sorted(refs), (obj.obj_id, key)
            for t, out in ours.items():
                ref = refs[t]
                where = f"object {obj.obj_id} frame {t}"
                for name, a, b in (
                    ("mask logits", ref["pred_masks"], out.mask_logits),
                    ("obj_ptr", ref["obj_ptr"], out.obj_ptr),
                    ("object score", ref["object_score_logits"], out.object_score_logits),
                ):
                    diff = (a - b).abs().max().item()
                    assert diff < TOL, f"{where}: {name} differs by {diff}"
                a, b = ref["maskmem_features"], out.memory_features
                assert b is not None and b.dtype == a.dtype == torch.bfloat16, where
                same = (a == b).float().mean().item()
                assert same > 0.99, f"{where}: only {same:.4%} of memory features agree"
                # Those that differ are neighbours: one bfloat16 step apart (adjacent bit
                # patterns of the same sign), or, near 0 where a step is tiny, within a tenth
                # of TOL. How many straddle a rounding boundary depends on the CPU's float32
                # kernels (0.1% on an AVX2 host, fewer with AVX-512); a real error moves
                # values by many steps.
                steps = (a.view(torch.int16).int() - b.view(torch.int16).int()).abs()
                near = (a.float() - b.float()).abs() <= TOL / 10
                assert ((steps <= 1) | near).all(), f"{where}: memory features differ"
                assert torch.allclose(a.float(), b.float(), rtol=2**-7, atol=TOL), where


def _propagate_both(
    ref, ref_state, ours, session, frames: list[int], **kwargs
) -> dict[int, torch.Tensor]:
    with torch.inference_mode():
        ref_frames = list(ref.propagate_in_video(ref_state, **kwargs))
        our_frames = list(ours.propagate_in_video(session, **kwargs))
    assert [f for f, _, _ in our_frames] == [f for f, _, _ in ref_frames] == frames
    for (t, ref_ids, ref_masks), (_, our_ids, our_masks) in zip(ref_frames, our_frames):
        assert our_ids == ref_ids == [1, 2, 3]
        _compare(ref_masks, our_masks, f"frame {t}")
    _compare_memory(ref_state, session)
    return {t: masks for t, _, masks in our_frames}


@pytest.mark.parity
@pytest.mark.slow
def test_video_predictor_matches_reference(reference, ours, video_dir):
    with torch.inference_mode():
        ref_state = reference.init_state(str(video_dir))
    session = ours.init_state(video_dir)
    assert (session.num_frames, session.video_height, session.video_width) == (
        NUM_FRAMES,
        HEIGHT,
        WIDTH,
    )

    # Object 1: a click on the disc; object 2: a box around the green rectangle; object 3:
    # a mask (of the background's lower-left corner).
    click = dict(points=[[25.0, 30.0]], labels=[1])
    box = dict(box=[58.0, 8.0, 87.0, 37.0])
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[45:, :40] = True
    with torch.inference_mode():
        reference.add_new_points_or_box(ref_state, 0, 1, **click)
        reference.add_new_points_or_box(ref_state, 0, 2, **box)
        _, ref_ids, ref_masks = reference.add_new_mask(ref_state, 0, 3, mask)
    ours.add_new_points_or_box(session, 0, 1, **click)
    ours.add_new_points_or_box(session, 0, 2, **box)
    _, our_ids, our_masks = ours.add_new_mask(session, 0, 3, mask)
    assert our_ids == ref_ids == [1, 2, 3]
    _compare(ref_masks, our_masks, "prompted frame 0")

    all_frames = list(range(NUM_FRAMES))
    first = _propagate_both(reference, ref_state, ours, session, all_frames)
    for t, masks in first.items():  # neither object is empty or everything
        frac = (masks > 0).float().mean(dim=(1, 2, 3))
        assert ((frac > 0.005) & (frac < 0.995)).all(), (t, frac)

    # A negative correction click on a tracked frame, added to the earlier (empty) prompt.
    fix = dict(points=[[70.0, 25.0]], labels=[0], clear_old_points=False)
    with torch.inference_mode():
        _, _, ref_fixed = reference.add_new_points_or_box(ref_state, 4, 1, **fix)
    _, _, our_fixed = ours.add_new_points_or_box(session, 4, 1, **fix)
    _compare(ref_fixed, our_fixed, "corrected frame 4")
    assert 4 in session.objects[1].temp.cond  # the correction is a conditioning frame

    second = _propagate_both(reference, ref_state, ours, session, all_frames)
    changed = ((second[4][0] > 0) != (first[4][0] > 0)).sum().item()
    assert changed > 0, "the correction did not change object 1's mask"
    assert torch.equal(second[0], first[0])  # the first prompted frame keeps its output
    # The correction is kept as memory: later frames changed too.
    assert any(not torch.equal(second[t][0], first[t][0]) for t in range(5, NUM_FRAMES))

    # Backwards from the corrected frame over three frames (they are tracked again, now in
    # reverse, reading the memory of the frames after them).
    _propagate_both(
        reference, ref_state, ours, session, [4, 3, 2, 1],
        start_frame_idx=4, max_frame_num_to_track=3, reverse=True,
    )  # fmt: skip
    assert session.objects[2].tracked[2] is True


# ---------------------------------------------------------------------------- ours alone


def test_hole_filling_applies_to_every_output(small, video_dir):
    """fill_hole_area fills background holes of the low-res logits (the reference's CUDA-only
    post-processing), on prompted and on tracked frames."""
    area = 64
    filling = SAM2VideoPredictor(small.model, fill_hole_area=area)
    raw, filled = small.init_state(video_dir), filling.init_state(video_dir)
    for predictor, session in ((small, raw), (filling, filled)):
        predictor.add_new_points_or_box(session, 0, 1, points=[[25.0, 30.0]], labels=[1])
        for _ in predictor.propagate_in_video(session, max_frame_num_to_track=1):
            pass
    before = raw.objects[1].outputs.cond[0].mask_logits
    after = filled.objects[1].outputs.cond[0].mask_logits
    assert torch.equal(after, fill_holes(before, area))
    assert not torch.equal(after, before)  # this mask has small holes
    tracked = filled.objects[1].outputs.non_cond[1].mask_logits
    assert torch.equal(tracked, fill_holes(tracked, area))  # nothing left to fill


def test_non_overlapping_output(small, video_dir):
    """non_overlap_masks gives each pixel to the object with the highest logit."""
    overlapping = small.init_state(video_dir)
    exclusive_predictor = SAM2VideoPredictor(small.model, fill_hole_area=0, non_overlap_masks=True)
    exclusive = exclusive_predictor.init_state(video_dir)
    prompts = dict(points=[[25.0, 30.0], [70.0, 20.0]], labels=[1, 1])
    small.add_new_points_or_box(overlapping, 0, 1, **prompts)
    exclusive_predictor.add_new_points_or_box(exclusive, 0, 1, **prompts)
    _, _, raw = small.add_new_points_or_box(overlapping, 0, 2, box=[10, 10, 90, 60])
    _, _, kept = exclusive_predictor.add_new_points_or_box(exclusive, 0, 2, box=[10, 10, 90, 60])
    assert ((raw[0] > 0) & (raw[1] > 0)).any()  # the two objects overlap
    assert not ((kept[0] > 0) & (kept[1] > 0)).any()
    winner = raw.argmax(dim=0, keepdim=True) == torch.arange(2)[:, None, None, None]
    assert torch.equal(kept, torch.where(winner, raw, raw.clamp(max=-10.0)))


def test_clear_memory_around_corrections(small, video_dir):
    """clear_non_cond_mem_around_input drops the corrected object's tracked memories within
    num_maskmem frames of the correction (the reference names this per-object step but lacks
    it in 1.1.0); like the reference, propagation clears them again when it passes the
    corrected frame, so only the frames after it keep tracked memories."""
    predictor = SAM2VideoPredictor(
        small.model, fill_hole_area=0, clear_non_cond_mem_around_input=True
    )
    session = predictor.init_state(video_dir)
    predictor.add_new_points_or_box(session, 0, 1, points=[[25.0, 30.0]], labels=[1])
    predictor.add_new_points_or_box(session, 0, 2, box=[58.0, 8.0, 87.0, 37.0])
    list(predictor.propagate_in_video(session))
    predictor.add_new_points_or_box(session, 6, 1, points=[[40.0, 30.0]], labels=[1])
    predictor.propagate_in_video_preflight(session)
    reach = small.model.config.num_maskmem  # stride 1: frames 0..13 around frame 6
    assert reach == 7 and session.objects[1].outputs.non_cond == {}
    assert sorted(session.objects[2].outputs.non_cond) == list(range(1, NUM_FRAMES))
    list(predictor.propagate_in_video(session))
    assert sorted(session.objects[1].outputs.non_cond) == [7]
    assert sorted(session.objects[2].outputs.non_cond) == list(range(1, NUM_FRAMES))


def test_prompt_errors(small, video_dir):
    session = small.init_state(video_dir)
    with pytest.raises(IndexError, match="out of range"):
        small.add_new_points_or_box(session, NUM_FRAMES, 1, points=[[1, 2]], labels=[1])
    with pytest.raises(ValueError, match="labels"):
        small.add_new_points_or_box(session, 0, 1, points=[[1, 2], [3, 4]], labels=[1])
    with pytest.raises(ValueError, match="together"):
        small.add_new_points_or_box(session, 0, 1, points=[[1, 2]])
    with pytest.raises(ValueError, match="clear_old_points"):
        small.add_new_points_or_box(session, 0, 1, box=[1, 2, 3, 4], clear_old_points=False)
    with pytest.raises(ValueError, match="2-D"):
        small.add_new_mask(session, 0, 1, np.ones((2, HEIGHT, WIDTH), dtype=bool))
    with pytest.raises(RuntimeError, match="no object"):
        next(small.propagate_in_video(session))
    assert session.obj_ids == []  # failed calls add no object
    with pytest.raises(UnknownObjectError, match="cannot remove object id 7: no such object"):
        small.remove_object(session, 7)
    assert small.remove_object(session, 7, strict=False) == ([], [])


def test_objects_prompts_and_removal(small, video_dir):
    session = small.init_state(video_dir)
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[10:36, 60:86] = True
    _, ids, with_mask = small.add_new_mask(session, 0, "box", mask)
    assert ids == ["box"] and with_mask.shape == (1, 1, HEIGHT, WIDTH)
    # A mask prompt is used as the output: logits of +-10 around the given mask.
    iou = ((with_mask[0, 0] > 0) & torch.from_numpy(mask)).sum() / mask.sum()
    assert iou > 0.9, iou
    _, ids, both = small.add_new_points_or_box(session, 2, "disc", points=[[31, 30]], labels=[1])
    assert ids == ["box", "disc"]
    assert (both[0] == -1024.0).all()  # "box" has no output on frame 2 yet
    frames = [f for f, _, _ in small.propagate_in_video(session)]
    assert frames == list(range(NUM_FRAMES))
    disc = session.objects["disc"]
    # Tracking starts at the first prompted frame of any object (0): "disc" is tracked on
    # frames 0 and 1 too, from its memory of frame 2.
    assert sorted(disc.outputs.cond) == [2]
    # Pointers reach 7 frames back on this video; frame 0 is 7 frames behind the frame
    # tracked last, whose correction would read its pointer, so it is kept.
    assert sorted(disc.outputs.non_cond) == [0, 1, 3, 4, 5, 6, 7]
    assert disc.outputs.non_cond[0].memory_features is None  # beyond the memory reach (6)
    assert sorted(session.objects["box"].outputs.non_cond) == list(range(1, NUM_FRAMES))

    # Clearing the prompt turns the frame into an ordinary tracked frame.
    _, _, cleared = small.clear_all_prompts_in_frame(session, 2, "disc")
    assert 2 not in disc.outputs.cond and 2 in disc.outputs.non_cond
    assert cleared.shape == (2, 1, HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="unknown object"):
        small.clear_all_prompts_in_frame(session, 2, "nope")
    with pytest.raises(RuntimeError, match="'disc' has no prompt"):
        next(small.propagate_in_video(session))

    ids, updated = small.remove_object(session, "disc")
    assert ids == ["box"] and updated == []  # "disc" had no prompt left
    _, _, only_box = next(small.propagate_in_video(session, start_frame_idx=0))
    assert torch.equal(only_box, with_mask)
    small.reset_state(session)
    assert session.obj_ids == []


def test_clearing_an_untracked_prompt_leaves_no_mask(small, video_dir):
    session = small.init_state(video_dir)
    small.add_new_points_or_box(session, 0, 1, points=[[25, 30]], labels=[1])
    _, _, prompted = small.add_new_points_or_box(session, 3, 1, points=[[25, 30]], labels=[1])
    assert (prompted[0, 0] > 0).any()  # the click gave a mask on frame 3 ...
    _, ids, cleared = small.clear_all_prompts_in_frame(session, 3, 1)
    # ... which goes with the click: frame 3 was never tracked, so nothing is left there.
    assert ids == [1] and not (cleared > 0).any()
    assert not session.results.get(3, 1).any()
    assert session.results.get(0, 1).any()  # the other prompted frame keeps its mask


def test_from_pretrained_configures_for_video(meta_checkpoint):
    predictor = SAM2VideoPredictor.from_pretrained(
        meta_checkpoint(VARIANT), device="cpu", fill_hole_area=0
    )
    assert predictor.model.config.binarize_mask_from_pts_for_mem_enc
    assert predictor.fill_hole_area == 0 and predictor.add_all_frames_to_correct_as_cond
    assert predictor.image_size == 1024 and predictor.device == torch.device("cpu")


def test_fast_kernels_track_like_the_reference_kernels(ours, video_dir):
    """The default fast CPU kernels (oneDNN linear layers and blocked attention, including
    memory attention over ~7k keys here) against the reference's kernels, which the tests
    above tie to the reference: same tolerance, same masks away from the threshold."""
    runs = []
    for fast in (False, True):
        set_onednn_linear(fast)
        session = ours.init_state(video_dir)
        ours.add_new_points_or_box(session, 0, 1, points=[[25.0, 30.0]], labels=[1])
        ours.add_new_points_or_box(session, 0, 2, box=[58.0, 8.0, 87.0, 37.0])
        ours.add_new_points_or_box(session, 0, 3, points=[[10.0, 60.0]], labels=[1])
        runs.append({t: m for t, _, m in ours.propagate_in_video(session)})
    exact, fast = runs
    assert sorted(fast) == list(range(NUM_FRAMES))
    for t in range(NUM_FRAMES):
        _compare(exact[t], fast[t], f"frame {t}, fast kernels")
    assert any((exact[t] > 0).any() for t in range(1, NUM_FRAMES))  # not trivially empty

"""Parity of the model-level tracking step with the reference's ``SAM2Base.track_step``.

Same random weights, float32, reference kernels (``set_onednn_linear(False)``). Both sides are
fed the same backbone features, so this isolates memory attention, the memory encoder, object
pointers (with their temporal encodings and the pruning to the last 15 frames), mask prompts
and correction clicks. To keep it fast the models run at a 512-pixel input (a 32 x 32
embedding): the code paths are the same as at 1024, only the grid is smaller.

Tolerance: 1e-4 on mask logits and memory features; masks identical wherever the reference's
logit is farther than that from the threshold. The chain of up to 20 frames feeds each
frame's output into later frames' memory, so float32 rounding differences (a few ulps per
frame, measured ~1e-6) could grow a little; real errors (a wrong slot, sign or offset) show up
at 1e-2 or more.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from sam2ui.core.loading.build import build_sam2
from sam2ui.core.modeling.config import get_config
from sam2ui.core.modeling.layers import set_onednn_linear
from sam2ui.core.modeling.tracking import FrameMemory, PointPrompt, encode_memory, track_step
from tests.reference_models import build_reference_model

SIZE = 512
NUM_FRAMES = 20
TOL = 1e-4


@pytest.fixture(autouse=True)
def reference_kernels():
    previous = set_onednn_linear(False)
    yield
    set_onednn_linear(previous)


@pytest.fixture(scope="module", params=["sam2.1-hiera-tiny", "sam2-hiera-tiny"])
def models(request, meta_checkpoint):
    variant = request.param
    state = torch.load(meta_checkpoint(variant), weights_only=True)["model"]
    ref = build_reference_model(
        variant,
        state_dict=state,
        overrides=[f"++model.image_size={SIZE}", "++model.binarize_mask_from_pts_for_mem_enc=true"],
    )
    config = replace(get_config(variant), image_size=SIZE, binarize_mask_from_pts_for_mem_enc=True)
    ours = build_sam2(config)
    ours.load_state_dict(state)
    return ref, ours


@pytest.fixture(scope="module")
def frames(models):
    """Backbone outputs of three synthetic frames, used cyclically."""
    _, ours = models
    previous = set_onednn_linear(False)
    gen = torch.Generator().manual_seed(0)
    out = []
    with torch.inference_mode():
        for _ in range(3):
            image = torch.randn(1, 3, SIZE, SIZE, generator=gen)
            out.append(ours.forward_image(image))
    set_onednn_linear(previous)
    return out


def _reference_inputs(backbone, batch):
    feats = [f.expand(batch, -1, -1, -1) for f in backbone.backbone_fpn]
    pos = [p.expand(batch, -1, -1, -1) for p in backbone.vision_pos_enc]
    return (
        [f.flatten(2).permute(2, 0, 1) for f in feats],
        [p.flatten(2).permute(2, 0, 1) for p in pos],
        [tuple(f.shape[-2:]) for f in feats],
    )


class Runner:
    """Drives both implementations through the same sequence of frames and prompts."""

    def __init__(self, ref, ours, frames, batch):
        self.ref, self.ours, self.frames, self.batch = ref, ours, frames, batch
        self.ref_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        self.cond: dict[int, FrameMemory] = {}
        self.non_cond: dict[int, FrameMemory] = {}
        self.last_low_res: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def step(self, t, *, cond, init=False, points=None, mask=None, reverse=False, correct=False):
        backbone = self.frames[t % len(self.frames)]
        feats, pos, sizes = _reference_inputs(backbone, self.batch)
        ref_points = None
        our_points = None
        if points is not None:
            coords, labels = points
            ref_points = {"point_coords": coords, "point_labels": labels}
            our_points = PointPrompt(coords, labels)
        ref_prev = our_prev = None
        if correct:
            ref_prev, our_prev = self.last_low_res[t]
        with torch.inference_mode():
            ref_out = self.ref.track_step(
                t, init, feats, pos, sizes, ref_points, mask, self.ref_dict, NUM_FRAMES,
                track_in_reverse=reverse, prev_sam_mask_logits=ref_prev,
            )  # fmt: skip
            ours = track_step(
                self.ours, t, init,
                [f.expand(self.batch, -1, -1, -1) for f in backbone.backbone_fpn],
                backbone.vision_pos_enc[-1].expand(self.batch, -1, -1, -1),
                self.cond, self.non_cond, NUM_FRAMES,
                points=our_points, mask_inputs=mask, reverse=reverse, prev_mask_logits=our_prev,
            )  # fmt: skip
        store = "cond_frame_outputs" if cond else "non_cond_frame_outputs"
        self.ref_dict[store][t] = ref_out
        assert ours.memory is not None
        ref_logits = ref_out["pred_masks_high_res"]
        if points is not None and ((ref_logits > 0) != (ours.heads.high_res_masks > 0)).any():
            # A mask from clicks is binarized before the memory encoder, so a pixel whose
            # logit is undecided (within rounding of 0; `compare` checks that no other pixel
            # differs) changes the memory by far more than rounding. Encode our memory from
            # the reference's decision: the memory encoder is still compared at TOL, and
            # both chains go on from the same state.
            with torch.inference_mode():
                feats, pos = encode_memory(
                    self.ours, backbone.backbone_fpn[-1].expand(self.batch, -1, -1, -1),
                    ref_logits, ours.heads.object_score_logits, True,
                )  # fmt: skip
            ours = replace(ours, memory=replace(ours.memory, features=feats, pos_enc=pos))
        (self.cond if cond else self.non_cond)[t] = ours.memory
        if cond:
            self.non_cond.pop(t, None)
            self.ref_dict["non_cond_frame_outputs"].pop(t, None)
        self.last_low_res[t] = (ref_out["pred_masks"], ours.heads.low_res_masks)
        self.compare(ref_out, ours, t)
        return ours

    @staticmethod
    def compare(ref_out, ours, t):
        pairs = {
            "low_res_masks": (ref_out["pred_masks"], ours.heads.low_res_masks),
            "high_res_masks": (ref_out["pred_masks_high_res"], ours.heads.high_res_masks),
            "obj_ptr": (ref_out["obj_ptr"], ours.heads.obj_ptr),
            "object_score_logits": (ref_out["object_score_logits"], ours.heads.object_score_logits),
            "memory_features": (ref_out["maskmem_features"], ours.memory.features),
            "memory_pos_enc": (ref_out["maskmem_pos_enc"][-1], ours.memory.pos_enc),
        }
        for name, (a, b) in pairs.items():
            assert a.shape == b.shape, (t, name)
            diff = (a.float() - b.float()).abs().max().item()
            assert diff < TOL, f"frame {t}: {name} differs by {diff}"
        # Identical masks, except where the reference logit is within TOL of the threshold
        # (random weights leave many logits near 0, and such pixels are undecided).
        ref_logits = ref_out["pred_masks_high_res"]
        differ = (ref_logits > 0) != (ours.heads.high_res_masks > 0)
        assert not (differ & (ref_logits.abs() > TOL)).any(), f"frame {t}: masks differ"


def test_tracking_matches_reference(models, frames):
    ref, ours = models
    run = Runner(ref, ours, frames, batch=2)
    coords = torch.tensor([[[120.0, 200.0]], [[300.0, 310.0]]])
    labels = torch.tensor([[1], [1]], dtype=torch.int32)
    first = run.step(0, cond=True, init=True, points=(coords, labels))
    # Both objects are present and segmented on the prompted frame (not trivially empty).
    frac = (first.heads.high_res_masks > 0).float().mean(dim=(1, 2, 3))
    assert ((frac > 0.005) & (frac < 0.995)).all(), frac
    for t in range(1, NUM_FRAMES):  # > 16 frames: the pointer window is exercised
        run.step(t, cond=False)

    # A correction click on a tracked frame becomes a conditioning frame; re-track after it.
    fix = (
        torch.tensor([[[200.0, 150.0]], [[50.0, 60.0]]]),
        torch.tensor([[0], [1]], dtype=torch.int32),
    )
    before = run.last_low_res[10][1].clone()
    corrected = run.step(10, cond=True, points=fix, correct=True)
    assert (corrected.heads.low_res_masks - before).abs().max() > 1e-2  # the click changed it
    for t in range(11, 15):
        run.step(t, cond=False)

    # A mask prompt on the last frame, then tracking backwards from it.
    mask = torch.zeros(2, 1, SIZE, SIZE)
    mask[0, :, 100:300, 50:250] = 1
    mask[1, :, 300:420, 280:500] = 1
    run.step(NUM_FRAMES - 1, cond=True, mask=mask)
    for t in range(NUM_FRAMES - 2, NUM_FRAMES - 6, -1):
        run.step(t, cond=False, reverse=True)


def test_bfloat16_tracking_stays_close(models, frames):
    """The bfloat16 switch (memory modules in bf16) tracks the same objects."""
    _, ours = models
    exact = build_sam2(ours.config)
    exact.load_state_dict(ours.state_dict())
    fast = build_sam2(ours.config)
    fast.load_state_dict(ours.state_dict())
    fast.set_compute_dtype(torch.bfloat16)
    coords = torch.tensor([[[120.0, 200.0]]])
    labels = torch.tensor([[1]], dtype=torch.int32)
    results = []
    with torch.inference_mode():
        for model in (exact, fast):
            cond: dict[int, FrameMemory] = {}
            non_cond: dict[int, FrameMemory] = {}
            masks = []
            for t in range(6):
                backbone = frames[t % len(frames)]
                out = track_step(
                    model, t, t == 0, list(backbone.backbone_fpn), backbone.vision_pos_enc[-1],
                    cond, non_cond, NUM_FRAMES,
                    points=PointPrompt(coords, labels) if t == 0 else None,
                )  # fmt: skip
                assert out.memory is not None
                (cond if t == 0 else non_cond)[t] = out.memory
                masks.append(out.heads.high_res_masks > 0)
            results.append(masks)
    for a, b in zip(*results):
        iou = (a & b).sum() / (a | b).sum().clamp(min=1)
        assert iou > 0.9, iou

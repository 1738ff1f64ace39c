"""The correction loop against the reference's ``SAM2VideoPredictor`` (sam2 1.1.0), in
sam2ui's DEFAULT mode.

The reference keeps every frame's memory; it is built with
``add_all_frames_to_correct_as_cond=True`` (sam2ui's default, so corrections stick) and with
its hole filling on (``fill_hole_area=8``, its builder's value), its CUDA connected components
replaced by an OpenCV labelling (``tests.core.test_masks``; sam2ui's own labelling is tested
equal to it there). sam2ui runs with its default constructor arguments: hole filling 8 and
bounded RAM. Scenarios, each on a 20-frame video (wider than the 6-frame memory reach and
the 15-frame pointer reach) with two objects:

* a correction click on frame 10 after tracking, then tracking again from frame 0;
* a new object on frame 10 after tracking, then a pass forwards and one in reverse;
* a mask prompt on a tracked frame, then a pass;
* a reverse pass over the whole video after adding an object on frame 5;
* removing an object (after mask and point prompts of the others on other frames), then
  tracking again from frame 0.

Everything else as in ``test_parity_more.py``: random weights on both sides, float32,
reference kernels, a 256-pixel model input, the reference's memory reads upcast from
bfloat16. Tolerance 1e-4 on every logit.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2ui.core.loading.build import build_sam2
from sam2ui.core.modeling.config import get_config
from sam2ui.core.modeling.layers import set_onednn_linear
from sam2ui.core.video.predictor import SAM2VideoPredictor
from tests.core.test_masks import cv2_get_connected_components
from tests.core.video.test_parity_more import HEIGHT, WIDTH, _write_video
from tests.core.video.test_predictor_parity import _upcast_memory_reads
from tests.reference_models import build_reference_model

pytestmark = [pytest.mark.parity, pytest.mark.slow]

VARIANTS = ["sam2.1-hiera-tiny", "sam2-hiera-tiny"]
SIZE = 256
FRAMES = 20
TOL = 1e-4
DISC = dict(points=[[20.0, 26.0]], labels=[1])
BOX = dict(box=[48.0, 6.0, 70.0, 28.0])


@pytest.fixture(autouse=True)
def reference_kernels(monkeypatch):
    import sam2.utils.misc

    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", cv2_get_connected_components)
    previous = set_onednn_linear(False)
    yield
    set_onednn_linear(previous)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_video(tmp_path_factory.mktemp("video20"), FRAMES)


@pytest.fixture(scope="module", params=VARIANTS)
def pair(request, meta_checkpoint):
    """(reference, ours) on the same random weights of one variant."""
    variant = request.param
    state_dict = torch.load(meta_checkpoint(variant), weights_only=True)["model"]
    ref = build_reference_model(
        variant,
        video=True,
        state_dict=state_dict,
        overrides=[f"++model.image_size={SIZE}", "++model.add_all_frames_to_correct_as_cond=true"],
    )
    assert ref.add_all_frames_to_correct_as_cond is True and ref.fill_hole_area == 8
    _upcast_memory_reads(ref)
    config = replace(get_config(variant), image_size=SIZE, binarize_mask_from_pts_for_mem_enc=True)
    model = build_sam2(config)
    model.load_state_dict(state_dict)
    return ref, SAM2VideoPredictor(model.eval())  # the DEFAULT arguments


class Run:
    """Both predictors on one video, every output compared; records the worst difference."""

    def __init__(self, pair, video: Path) -> None:
        self.ref, self.ours = pair
        with torch.inference_mode():
            self.ref_state = self.ref.init_state(str(video))
        self.session = self.ours.init_state(video)
        self.worst = (0.0, "")
        self.phases: dict[str, float] = {}  # the worst difference of each step

    def compare(self, ref_masks: torch.Tensor, our_masks: torch.Tensor, where: str) -> None:
        assert ref_masks.shape == our_masks.shape, where
        assert our_masks.shape[1:] == (1, HEIGHT, WIDTH), where
        diff = (ref_masks - our_masks).abs().max().item() if our_masks.numel() else 0.0
        if diff >= self.worst[0]:
            self.worst = (diff, where)
        phase = where.split(", frame")[0]
        self.phases[phase] = max(self.phases.get(phase, 0.0), diff)

    def points(self, frame_idx: int, obj_id: int, **prompt) -> torch.Tensor:
        with torch.inference_mode():
            _, ref_ids, ref_m = self.ref.add_new_points_or_box(
                self.ref_state, frame_idx, obj_id, **prompt
            )
        _, ids, m = self.ours.add_new_points_or_box(self.session, frame_idx, obj_id, **prompt)
        assert ids == ref_ids
        self.compare(ref_m, m, f"points on frame {frame_idx} for object {obj_id}")
        return m

    def mask(self, frame_idx: int, obj_id: int, mask: np.ndarray) -> torch.Tensor:
        with torch.inference_mode():
            _, ref_ids, ref_m = self.ref.add_new_mask(self.ref_state, frame_idx, obj_id, mask)
        _, ids, m = self.ours.add_new_mask(self.session, frame_idx, obj_id, mask)
        assert ids == ref_ids
        self.compare(ref_m, m, f"mask on frame {frame_idx} for object {obj_id}")
        return m

    def propagate(self, label: str, **kwargs) -> dict[int, torch.Tensor]:
        with torch.inference_mode():
            ref_frames = list(self.ref.propagate_in_video(self.ref_state, **kwargs))
        ours = list(self.ours.propagate_in_video(self.session, **kwargs))
        assert [t for t, _, _ in ours] == [t for t, _, _ in ref_frames]
        for (t, ref_ids, ref_m), (_, ids, m) in zip(ref_frames, ours):
            assert ids == ref_ids
            self.compare(ref_m, m, f"{label}, frame {t}")
        return {t: m for t, _, m in ours}

    def remove(self, obj_id: int) -> None:
        with torch.inference_mode():
            ref_ids, ref_updated = self.ref.remove_object(self.ref_state, obj_id)
        ids, updated = self.ours.remove_object(self.session, obj_id)
        assert ids == ref_ids
        assert [t for t, _ in updated] == [t for t, _ in ref_updated]
        for (t, ref_m), (_, m) in zip(ref_updated, updated):
            self.compare(ref_m, m, f"after removing {obj_id}, frame {t}")

    def check(self) -> None:
        diff, where = self.worst
        steps = "; ".join(f"{k}: {v:.3g}" for k, v in self.phases.items())
        print(f"max |delta logit| {diff:.3g} at {where} [{steps}]")
        assert diff <= TOL, f"logits differ by {diff} ({where})"


def _two_objects_tracked(pair, video: Path) -> Run:
    run = Run(pair, video)
    run.points(0, 1, **DISC)
    run.points(0, 2, **BOX)
    run.propagate("first pass")
    return run


def test_correction_behind_the_window(pair, video):
    run = _two_objects_tracked(pair, video)
    fixed = run.points(10, 1, points=[[46.0, 20.0]], labels=[0], clear_old_points=False)
    assert fixed.shape[0] == 2
    run.propagate("after the correction")
    run.check()


def test_new_object_mid_video(pair, video):
    run = _two_objects_tracked(pair, video)
    run.points(10, 3, points=[[40.0, 26.0]], labels=[1])
    run.propagate("forwards")
    run.propagate("reverse", start_frame_idx=10, reverse=True)
    run.check()


def test_mask_prompt_on_a_tracked_frame(pair, video):
    run = _two_objects_tracked(pair, video)
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[18:40, 50:70] = True
    run.mask(10, 2, mask)
    run.propagate("after the mask")
    run.check()


def test_reverse_pass_adding_an_object(pair, video):
    run = _two_objects_tracked(pair, video)
    run.points(5, 3, box=[15.0, 10.0, 45.0, 40.0])
    run.propagate("reverse", start_frame_idx=FRAMES - 1, reverse=True)
    run.check()


@pytest.mark.parametrize("keep_all_memories", [False, True], ids=["default", "keep_all"])
def test_remove_object_then_propagate(pair, video, keep_all_memories):
    """Mask and point prompts of other objects on other frames, two passes, then removing
    object 1 and tracking again from frame 0: in the default mode (memories on disk) and
    with every memory in RAM."""
    ours = pair[1]
    ours.keep_all_memories = keep_all_memories
    try:
        _remove_object_then_propagate(pair, video)
    finally:
        ours.keep_all_memories = False


def _remove_object_then_propagate(pair, video) -> None:
    run = Run(pair, video)
    run.points(0, 1, **DISC)
    run.points(0, 2, **BOX)
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[40:, :30] = True
    run.mask(0, 3, mask)
    run.points(3, 2, points=[[59.0, 20.0]], labels=[1])
    run.propagate("first pass")
    run.points(12, 3, points=[[10.0, 50.0]], labels=[1], clear_old_points=False)
    run.propagate("second pass")
    run.remove(1)
    run.propagate("after removal", start_frame_idx=0)
    run.check()

"""VideoSegmenter driven as the front end drives it: slider, canvas messages, buttons."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sam2ui.core.exports import read_sav_json
from sam2ui.core.serving.model_cache import ModelCache, image_predictor, video_predictor
from sam2ui.widgets import ImageSegmenter, VideoSegmenter

from .conftest import MODEL


@pytest.fixture
def seg(model_cache: ModelCache, clip: np.ndarray) -> VideoSegmenter:
    return VideoSegmenter(clip, MODEL, cache=model_cache, device="cpu")


def test_prompt_on_a_frame_then_track_matches_the_predictor(
    seg: VideoSegmenter, model_cache: ModelCache, clip: np.ndarray
) -> None:
    seg.frame_slider.value = 1
    seg.canvas.send_event({"type": "click", "x": 20.0, "y": 20.0})
    prompts = seg.annotator.objects[1].prompts
    assert list(prompts) == [1] and prompts[1].clicks[0].positive
    assert set(seg.masks(1)) == {1} and seg.masks(0) == {}
    assert "1 point(s) on this frame" in seg.status.value

    seg.track_button.click()  # tracking runs in a background thread
    assert seg.wait(timeout=120)
    assert seg.last_error is None, seg.errors.outputs
    results = seg.results()
    assert sorted(results) == [1, 2, 3, 4]  # forward from the prompted frame
    assert seg.progress.value == seg.progress.max == 4
    assert seg.progress_label.value == "4/4 frames"
    assert seg.frame == 4  # the preview followed the tracking
    assert not seg.track_button.disabled and seg.cancel_button.disabled

    # The same prompt given to the predictor directly gives the same masks.
    predictor = video_predictor(MODEL, cache=model_cache, device="cpu")
    state = predictor.init_state(clip)
    predictor.add_new_points_or_box(state, frame_idx=1, obj_id=1, points=[[20, 20]], labels=[1])
    for frame_idx, obj_ids, logits in predictor.propagate_in_video(state, start_frame_idx=1):
        assert list(obj_ids) == [1]
        np.testing.assert_array_equal(results[frame_idx][1], logits[0, 0].numpy() > 0)

    # Backward from the prompt fills frame 0.
    seg.direction_picker.value = "backward"
    seg.track_button.click()
    assert seg.wait(timeout=120) and sorted(seg.results()) == [0, 1, 2, 3, 4]


def test_cancel_keeps_the_frames_tracked(seg: VideoSegmenter) -> None:
    seg.add_click(20, 20)
    refused: list[str] = []

    def on_progress(change: dict) -> None:
        if change["new"] == 2:  # two frames done: press Cancel, and try a click meanwhile
            seg.canvas.send_event({"type": "click", "x": 5, "y": 5})
            refused.append(str(seg.last_error))
            seg.cancel_button.click()

    seg.progress.observe(on_progress, names="value")
    seg.propagate()
    assert seg.running or seg.wait(0)
    assert seg.wait(timeout=120)
    seg.progress.unobserve(on_progress, names="value")
    assert refused == ["tracking is running: wait for it to finish or press Cancel"]
    assert seg.annotator.tracked_frames == [0, 1]  # the prompted frame and one more
    assert seg.progress_label.value.endswith("(cancelled)")
    assert len(seg.annotator.objects[1].prompts[0].clicks) == 1  # the refused click is not there
    # Usable again: a correction on frame 3, tracked again to the end.
    seg.frame = 3
    seg.canvas.send_event({"type": "click", "x": 30, "y": 18})
    seg.propagate(wait=True)
    assert seg.annotator.tracked_frames == [0, 1, 2, 3, 4]


def test_errors_show_in_the_widget(seg: VideoSegmenter) -> None:
    seg.track_button.click()  # no prompt yet
    assert "no object has a prompt" in seg.errors.outputs[-1]["text"]
    assert not seg.running and not seg.track_button.disabled
    with pytest.raises(ValueError, match="outside 0..4"):
        seg.frame = 9
    seg.remove_button.click()
    assert seg.selected is None and "No object" in seg.status.value
    seg.canvas.send_event({"type": "click", "x": 20, "y": 20})  # starts a new object
    assert seg.selected == 2 and set(seg.masks(0)) == {2}


def test_exports(seg: VideoSegmenter, tmp_path: Path) -> None:
    seg.add_click(20, 20)
    seg.add_object("second")
    seg.set_box(0, 35, 20, 47)
    seg.propagate(wait=True)
    results = seg.results()
    assert sorted(results) == [0, 1, 2, 3, 4] and all(set(m) == {1, 2} for m in results.values())
    seg.export_folder.value = str(tmp_path / "out")
    seg.export_button.click()
    assert seg.last_error is None, seg.errors.outputs
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["masks.json", "masks.zip", "overlay.mp4"]
    assert (out / "overlay.mp4").stat().st_size > 0
    with zipfile.ZipFile(out / "masks.zip") as zf:
        assert sum(name.endswith(".png") for name in zf.namelist()) >= 5
    saved = read_sav_json(json.loads((out / "masks.json").read_text()))
    for frame_idx, masks in results.items():
        for obj_id, mask in masks.items():
            np.testing.assert_array_equal(saved[frame_idx][obj_id], mask)
    with pytest.raises(ValueError, match="unknown export formats"):
        seg.export(tmp_path, formats=("gif",))


def test_image_and_video_widgets_share_one_model(
    model_cache: ModelCache, picture: np.ndarray, clip: np.ndarray
) -> None:
    image_seg = ImageSegmenter(picture, MODEL, cache=model_cache, device="cpu")
    video_seg = VideoSegmenter(clip, MODEL, cache=model_cache, device="cpu")
    assert len(model_cache) == 1
    image_model = image_seg.annotator.predictor.model
    video_model = video_seg.annotator.predictor.model
    assert image_model.image_encoder is video_model.image_encoder
    shared = image_predictor(MODEL, cache=model_cache, device="cpu").model
    assert shared is image_model
    with pytest.raises(TypeError, match="SAM2VideoPredictor"):
        VideoSegmenter(clip, image_seg.annotator.predictor)
    with pytest.raises(FileNotFoundError, match="no video file"):
        VideoSegmenter("missing.mp4", MODEL, cache=model_cache, device="cpu")

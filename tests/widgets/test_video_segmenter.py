"""VideoSegmenter driven as the front end drives it: canvas events, and the updates it sends."""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sam2ui.core.exports import read_sav_json
from sam2ui.core.serving.model_cache import ModelCache, image_predictor, video_predictor
from sam2ui.widgets import ImageSegmenter, VideoSegmenter

from .conftest import MODEL


@pytest.fixture
def seg(model_cache: ModelCache, clip: np.ndarray) -> Iterator[VideoSegmenter]:
    widget = VideoSegmenter(clip, MODEL, cache=model_cache, device="cpu")
    yield widget
    widget.close()


def test_prompt_on_a_frame_then_track_matches_the_predictor(
    seg: VideoSegmenter, model_cache: ModelCache, clip: np.ndarray, canvas_log
) -> None:
    log = canvas_log(seg)
    np.testing.assert_array_equal(log.picture, clip[0])
    assert (log.state["frame"], log.state["num_frames"], log.state["fps"]) == (0, 5, 30.0)
    assert log.state["playing"] is False and log.state["progress"] is None
    # A click the canvas sends for frame 1 (typed in its frame number) goes there.
    seg.canvas.send_event({"type": "click", "x": 20.0, "y": 20.0, "positive": True, "frame": 1})
    prompts = seg.annotator.objects[1].prompts
    assert list(prompts) == [1] and prompts[1].clicks[0].positive
    assert seg.frame == 1 and log.state["frame"] == 1
    np.testing.assert_array_equal(log.picture, clip[1])
    assert set(seg.masks(1)) == {1} and seg.masks(0) == {}
    np.testing.assert_array_equal(log.masks[1], seg.masks(1)[1])
    assert log.state["lanes"] == {"1": [[1, 1]]}
    assert log.state["objects"][0]["frames"] == [1]
    assert "1 point(s) on this frame" in seg.message

    start = len(log.updates)
    seg.canvas.send_event({"type": "propagate", "direction": "forward", "frame": 1})
    assert seg.wait(timeout=120)  # tracking runs in a background thread
    # The press is answered first; the tracking's progress comes after.
    assert log.updates[start]["message"] == "Tracking forward…"
    assert log.updates[start]["progress"] is None and log.updates[start + 1]["progress"]
    assert seg.last_error is None, seg.errors.outputs
    results = seg.results()
    assert sorted(results) == [1, 2, 3, 4]  # forward from the prompted frame
    assert seg.progress == (4, 4)
    assert log.state["message"] == seg.message == "Tracked 4/4 frames."
    # The canvas followed the tracking: it shows the last frame tracked, with its mask.
    assert seg.frame == 4 and log.state["frame"] == 4 and log.state["progress"] is None
    np.testing.assert_array_equal(log.picture, clip[4])
    np.testing.assert_array_equal(log.masks[1], results[4][1])
    assert log.state["lanes"] == {"1": [[1, 4]]}
    shown = [u["progress"]["done"] for u in log.updates if u.get("progress")]
    assert shown and shown == sorted(shown) and shown[-1] == 4

    # The same prompt given to the predictor directly gives the same masks.
    predictor = video_predictor(MODEL, cache=model_cache, device="cpu")
    state = predictor.init_state(clip)
    predictor.add_new_points_or_box(state, frame_idx=1, obj_id=1, points=[[20, 20]], labels=[1])
    for frame_idx, obj_ids, logits in predictor.propagate_in_video(state, start_frame_idx=1):
        assert list(obj_ids) == [1]
        np.testing.assert_array_equal(results[frame_idx][1], logits[0, 0].numpy() > 0)

    # Backward from the prompt fills frame 0.
    seg.canvas.send_event({"type": "propagate", "direction": "backward", "frame": 4})
    assert seg.wait(timeout=120) and sorted(seg.results()) == [0, 1, 2, 3, 4]
    assert log.state["lanes"] == {"1": [[0, 4]]}


def test_cancel_keeps_the_frames_tracked(seg: VideoSegmenter, canvas_log) -> None:
    log = canvas_log(seg)
    seg.preview_interval_s = seg.progress_interval_s = 0  # an update after every frame
    seg.add_click(20, 20)
    refused: list[str] = []
    send = seg.canvas.send

    def on_update(content: dict[str, Any], buffers: object = None) -> None:
        send(content, buffers)
        progress = content["update"].get("progress")
        if progress and progress["done"] == 2 and not refused:
            # Two frames done: a click is refused meanwhile, and Cancel is pressed.
            refused.append("")
            seg.canvas.send_event({"type": "click", "x": 5, "y": 5})
            refused[0] = str(seg.last_error)
            seg.canvas.send_event({"type": "cancel"})

    seg.canvas.send = on_update  # type: ignore[method-assign]
    seg.canvas.send_event({"type": "propagate", "direction": "forward", "frame": 0})
    assert seg.wait(timeout=120)
    assert refused == ["tracking is running: wait for it to finish or press Cancel"]
    assert seg.annotator.tracked_frames == [0, 1]  # the prompted frame and one more
    assert seg.message == log.state["message"]
    assert seg.message == "Tracking cancelled after 2/5 frames (those are kept)."
    assert len(seg.annotator.objects[1].prompts[0].clicks) == 1  # the refused click is not there
    assert log.state["lanes"] == {"1": [[0, 1]]}
    # Cancel pressed while the kernel is free: its answer is what the tracking said last.
    seg.canvas.send = send  # type: ignore[method-assign]
    seg.clear_errors()
    seg.canvas.send_event({"type": "propagate", "direction": "forward", "frame": 0})
    seg.canvas.send_event({"type": "cancel"})
    assert not seg.running and seg.last_error is None
    if log.last["message"] == "Nothing to cancel.":  # the clip was tracked before Cancel came
        assert log.updates[-2]["message"] == "Tracked 5/5 frames."
    else:
        assert log.last["message"] == log.updates[-2]["message"] == seg.message
        assert seg.message.startswith(("Tracking cancelled after", "Tracked 5/5 frames"))
    # Usable again: a correction on frame 3, tracked again to the end.
    seg.canvas.send_event({"type": "click", "x": 30, "y": 18, "frame": 3})
    seg.propagate(wait=True)
    assert seg.annotator.tracked_frames == [0, 1, 2, 3, 4]
    seg.canvas.send_event({"type": "cancel"})
    assert log.state["message"] == "Nothing to cancel."


def test_seek_play_and_pause(seg: VideoSegmenter, clip: np.ndarray, canvas_log) -> None:
    log = canvas_log(seg)
    seg.canvas.send_event({"type": "seek", "frame": 2})
    assert seg.frame == 2 and log.last["frame"] == 2 and "picture" in log.last
    np.testing.assert_array_equal(log.picture, clip[2])
    seg.canvas.send_event({"type": "seek", "frame": 9})
    assert "frame 9 is outside 0..4" in log.last["message"] and seg.frame == 2
    # Play from frame 0 to the end, at the clip's 30 fps.
    start = len(log.updates)
    seg.canvas.send_event({"type": "play", "frame": 0})
    assert seg._player is not None
    seg._player.join(timeout=30)
    played = [(u["frame"], u["playing"]) for u in log.updates[start:] if "frame" in u]
    assert played[0] == (0, True) and played[-1] == (4, False) and not seg.playing
    frames = [f for f, _ in played]
    assert frames == sorted(frames) and frames[0] == 0 and frames[-1] == 4  # late ones skipped
    np.testing.assert_array_equal(log.picture, clip[4])
    # Play from the last frame starts again at the first; pause stops on the frame shown.
    seg.annotator.session.source.fps = 2.0  # slow, so that pause comes first
    seg.canvas.send_event({"type": "play", "frame": 4})
    assert seg.playing and log.last["frame"] == 0 and log.last["playing"] is True
    seg.canvas.send_event({"type": "pause"})
    assert not seg.playing and log.last["playing"] is False
    count = len(log.updates)
    time.sleep(0.7)
    assert len(log.updates) == count  # nothing after the pause
    # A click while playing stops playback first, and prompts the frame shown.
    seg.play()
    seg.canvas.send_event({"type": "click", "x": 20, "y": 20, "frame": seg.frame})
    assert not seg.playing and log.last["playing"] is False
    assert list(seg.annotator.objects[1].prompts) == [seg.frame] == [log.last["frame"]]


def test_undo_and_redo_go_to_the_frame_they_change(seg: VideoSegmenter, canvas_log) -> None:
    log = canvas_log(seg)
    seg.canvas.send_event({"type": "click", "x": 20, "y": 20, "frame": 1})
    seg.canvas.send_event({"type": "click", "x": 26, "y": 20, "frame": 3})
    seg.canvas.send_event({"type": "click", "x": 5, "y": 5, "positive": False, "frame": 3})
    seg.canvas.send_event({"type": "remove_point", "obj": 1, "index": 0, "frame": 3})
    prompts = seg.annotator.objects[1].prompts
    assert [c.positive for c in prompts[3].clicks] == [False]
    assert [p.get("positive") for p in log.state["prompts"]] == [False]
    seg.canvas.send_event({"type": "seek", "frame": 0})
    seg.canvas.send_event({"type": "undo", "frame": 0})  # the removed point is back
    assert seg.frame == 3 and log.state["frame"] == 3 and len(prompts[3].clicks) == 2
    seg.canvas.send_event({"type": "undo", "frame": 3})
    seg.canvas.send_event({"type": "undo", "frame": 3})
    assert 3 not in prompts and log.state["prompts"] == []
    assert set(log.masks) == set(seg.masks(3))  # the canvas shows what the engine has
    for obj_id, mask in seg.masks(3).items():
        np.testing.assert_array_equal(log.masks[obj_id], mask)
    seg.canvas.send_event({"type": "undo", "frame": 3})
    assert prompts == {} and seg.frame == 1 and log.state["can_undo"] is False
    seg.canvas.send_event({"type": "undo", "frame": 1})
    assert log.state["message"] == "Nothing to undo."
    seg.canvas.send_event({"type": "redo"})
    assert list(prompts) == [1] and seg.frame == 1 and set(log.masks) == {1}
    np.testing.assert_array_equal(log.masks[1], seg.masks(1)[1])
    seg.redo()
    assert list(prompts) == [1, 3] and seg.frame == 3 and log.state["frame"] == 3


def test_errors_show_in_the_widget(seg: VideoSegmenter, canvas_log) -> None:
    log = canvas_log(seg)
    seg.canvas.send_event({"type": "propagate", "direction": "both", "frame": 0})  # no prompt
    assert "no object has a prompt" in seg.errors.outputs[-1]["text"]
    assert log.last["error"] is True and "no object has a prompt" in log.last["message"]
    assert not seg.running
    with pytest.raises(ValueError, match="outside 0..4"):
        seg.frame = 9
    seg.canvas.send_event({"type": "remove", "obj": 1})
    assert seg.selected is None and log.state["active"] is None and log.state["objects"] == []
    seg.refresh()
    assert "No object" in seg.message
    seg.canvas.send_event({"type": "click", "x": 20, "y": 20})  # starts a new object
    assert seg.selected == 2 and set(seg.masks(0)) == {2} and set(log.masks) == {2}


def test_exports(seg: VideoSegmenter, tmp_path: Path, canvas_log) -> None:
    log = canvas_log(seg)
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
    assert log.state["message"].startswith("Wrote ") and "overlay.mp4" in log.state["message"]
    assert any(u.get("progress") == {"done": 5, "total": 5} for u in log.updates)
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

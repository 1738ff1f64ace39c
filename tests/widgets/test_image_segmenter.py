"""ImageSegmenter driven as the front end drives it: canvas events, and the updates it sends."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2ui.core.serving.model_cache import ModelCache, image_predictor
from sam2ui.widgets import ImageSegmenter

from .conftest import MODEL


@pytest.fixture
def seg(model_cache: ModelCache, picture: np.ndarray) -> ImageSegmenter:
    return ImageSegmenter(picture, MODEL, cache=model_cache, device="cpu")


def reference_masks(cache: ModelCache, picture: np.ndarray, **prompt: object) -> np.ndarray:
    """What the predictor itself gives for one prompt (the widget must show the same)."""
    predictor = image_predictor(MODEL, cache=cache, device="cpu")
    predictor.set_image(picture)
    masks, scores, _ = predictor.predict(**prompt)
    return masks[int(np.argmax(scores))]


def test_click_message_adds_a_point_and_shows_its_mask(
    seg: ImageSegmenter, model_cache: ModelCache, picture: np.ndarray, canvas_log
) -> None:
    log = canvas_log(seg)
    # A canvas that asks (sync) gets everything: the picture, no masks yet, object 1 active.
    assert "picture" in log.last and log.last["masks_reset"] is True
    np.testing.assert_array_equal(log.picture, picture)  # small pictures travel as PNG
    assert log.masks == {} and log.state["active"] == 1 and seg.selected == 1
    assert log.state["objects"] == [{"id": 1, "name": "object 1", "color": [128, 0, 0]}]
    assert log.state["can_undo"] is False and log.state["can_redo"] is False

    seg.canvas.send_event({"type": "click", "x": 17.0, "y": 15.0, "positive": True})
    obj = seg.annotator.objects[1]
    assert [(c.x, c.y, c.positive) for c in obj.clicks] == [(17.0, 15.0, True)]
    expected = reference_masks(
        model_cache,
        picture,
        point_coords=np.array([[17.0, 15.0]]),
        point_labels=np.array([1]),
        multimask_output=True,
    )
    assert set(seg.masks) == {1} and seg.masks[1].dtype == bool
    np.testing.assert_array_equal(seg.masks[1], expected)
    assert 0 < expected.sum() < expected.size  # a real mask, neither empty nor everything
    # One update per click: the mask as runs (the picture is not sent again), the marker.
    assert len(log.updates) == 2 and "picture" not in log.last
    np.testing.assert_array_equal(log.masks[1], expected)
    assert log.state["prompts"] == [{"obj": 1, "index": 0, "x": 17.0, "y": 15.0, "positive": True}]
    assert log.state["can_undo"] is True
    assert f"mask of {int(expected.sum()):,} px" in seg.message == log.state["message"]
    # A single click gives three candidates, shown on the canvas; picking one shows its mask.
    shown = [c["shown"] for c in log.state["candidates"]]
    assert len(shown) == 3 and shown.index(True) == obj.chosen
    assert all(c["src"].startswith("data:image/jpeg;base64,") for c in log.state["candidates"])
    other = (obj.chosen + 1) % 3
    seg.canvas.send_event({"type": "choose", "index": other})
    assert [c["shown"] for c in log.state["candidates"]].index(True) == other
    np.testing.assert_array_equal(seg.masks[1], obj.candidates[other].mask)
    np.testing.assert_array_equal(log.masks[1], obj.candidates[other].mask)
    assert seg.last_error is None


def test_modifier_and_toggle_make_background_points(seg: ImageSegmenter) -> None:
    seg.canvas.send_event({"type": "click", "x": 17, "y": 15, "positive": True})
    seg.canvas.send_event({"type": "click", "x": 40, "y": 5, "positive": False})  # shift-click
    seg.label_toggle.value = False  # "Background (−)": plain clicks are background points
    seg.canvas.send_event({"type": "click", "x": 50, "y": 40, "positive": True})
    seg.canvas.send_event({"type": "click", "x": 12, "y": 20, "positive": False})
    labels = [c.positive for c in seg.annotator.objects[1].clicks]
    assert labels == [True, False, False, True]
    # Several prompts: one mask, no candidates to choose from.
    assert seg.canvas.last_update["candidates"] == []
    assert "2 object point(s), 2 background point(s)" in seg.message


def test_drag_sets_a_box(
    seg: ImageSegmenter, model_cache: ModelCache, picture: np.ndarray, canvas_log
) -> None:
    log = canvas_log(seg)
    seg.canvas.send_event({"type": "box", "x0": 28.0, "y0": 26.0, "x1": 6.0, "y1": 4.0})
    assert seg.annotator.objects[1].box == (6.0, 4.0, 28.0, 26.0)
    expected = reference_masks(
        model_cache, picture, box=np.array([6.0, 4.0, 28.0, 26.0]), multimask_output=False
    )
    np.testing.assert_array_equal(seg.masks[1], expected)
    np.testing.assert_array_equal(log.masks[1], expected)
    assert log.state["prompts"] == [{"obj": 1, "box": [6.0, 4.0, 28.0, 26.0]}]


def test_legend_events_undo_redo_and_clear(seg: ImageSegmenter, canvas_log) -> None:
    log = canvas_log(seg)
    seg.canvas.send_event({"type": "click", "x": 17, "y": 15})
    seg.canvas.send_event({"type": "add"})
    assert seg.selected == 2 and log.state["active"] == 2
    assert [o["id"] for o in log.state["objects"]] == [1, 2]
    seg.canvas.send_event({"type": "click", "x": 46, "y": 32})
    seg.canvas.send_event({"type": "click", "x": 5, "y": 40, "positive": False})
    assert set(seg.masks) == {1, 2} and set(log.masks) == {1, 2}
    objs = seg.annotator.objects
    assert objs[1].color != objs[2].color
    # Selecting in the legend routes clicks.
    seg.canvas.send_event({"type": "select", "obj": 1})
    assert seg.selected == 1 and log.state["active"] == 1
    seg.canvas.send_event({"type": "click", "x": 20, "y": 10})
    assert len(objs[1].clicks) == 2
    # A click on a marker removes that point (of whichever object it is).
    seg.canvas.send_event({"type": "remove_point", "obj": 2, "index": 1})
    assert [c.positive for c in objs[2].clicks] == [True] and seg.selected == 2
    assert [p["index"] for p in log.state["prompts"] if p["obj"] == 2] == [0]
    # Undo takes back the last change of any object and selects it; redo applies it again.
    seg.canvas.send_event({"type": "undo", "frame": 0})
    assert len(objs[2].clicks) == 2 and log.state["can_redo"] is True
    seg.canvas.send_event({"type": "undo", "frame": 0})  # the click on object 1
    assert len(objs[1].clicks) == 1 and seg.selected == 1 and log.state["active"] == 1
    seg.canvas.send_event({"type": "redo"})
    assert len(objs[1].clicks) == 2 and log.state["can_redo"] is True
    np.testing.assert_array_equal(log.masks[1], seg.masks[1])
    seg.canvas.send_event({"type": "redo"})
    assert len(objs[2].clicks) == 1 and log.state["can_redo"] is False
    seg.canvas.send_event({"type": "redo"})
    assert log.state["message"] == "Nothing to redo."
    # Clear (a button beside the canvas) empties the selected object's prompts and mask.
    seg.selected = 2
    seg.clear_button.click()
    assert set(seg.masks) == {1} and set(log.masks) == {1} and objs[2].clicks == []
    # Rename (double-click in the legend) and remove.
    seg.canvas.send_event({"type": "rename", "obj": 2, "name": "disc"})
    assert (
        objs[2].name == "disc"
        and {"id": 2, "name": "disc", "color": [0, 128, 0]} in (log.state["objects"])
    )
    seg.canvas.send_event({"type": "remove", "obj": 2})
    assert list(seg.annotator.objects) == [1] and seg.selected == 1
    assert [o["id"] for o in log.state["objects"]] == [1] and log.state["active"] == 1
    assert log.state["message"] == "Removed object 2."
    assert seg.last_error is None
    # Every update came in order, each with the next sequence number.
    seqs = [u["seq"] for u in log.updates]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_sync_sends_everything_again(seg: ImageSegmenter, canvas_log) -> None:
    seg.add_click(17, 15)
    seg.add_object("disc")
    seg.set_box(36, 22, 56, 42)
    log = canvas_log(seg)  # a canvas shown now (a new view, or one that missed an update)
    assert "picture" in log.last and set(log.masks) == {1, 2}
    for obj_id, mask in seg.masks.items():
        np.testing.assert_array_equal(log.masks[obj_id], mask)
    seg.canvas.send_event({"type": "select", "obj": 1})
    assert "picture" not in log.last and log.last["masks"] == {}  # nothing changed


def test_errors_go_to_the_canvas_and_the_output_area(seg: ImageSegmenter, canvas_log) -> None:
    log = canvas_log(seg)
    seg.canvas.send_event({"type": "click", "x": float("nan"), "y": 3})
    assert isinstance(seg.last_error, ValueError)
    assert "'x' must be a finite number" in seg.errors.outputs[-1]["text"]
    # The state as it is (message: the error), then the error itself, shown in red.
    assert log.updates[-2]["message"] == log.last["message"] == seg.message
    assert log.last["error"] is True and "'x' must be a finite number" in log.last["message"]
    seg.canvas.send_event({"type": "select", "obj": 7})
    assert "no object 7" in seg.errors.outputs[-1]["text"] and log.last["error"] is True
    seg.canvas.send_event({"type": "seek", "frame": 2})  # a video event
    assert "the image canvas takes no 'seek' event" in log.last["message"]
    seg.canvas.send_event({"type": "choose", "index": 9})  # a candidate the engine lacks
    assert "candidate" in seg.errors.outputs[-1]["text"]
    assert len(seg.errors.outputs) == 4
    seg.canvas.send_event({"type": "click", "x": 17, "y": 15})  # still works
    assert set(seg.masks) == {1} and set(log.masks) == {1} and "error" not in log.last
    seg.clear_errors()
    assert seg.errors.outputs == () and seg.last_error is None
    with pytest.raises(ValueError, match="no object 7"):
        seg.add_click(3, 3, obj_id=7)  # called from Python: raised as usual


def test_python_api_updates_the_canvas(seg: ImageSegmenter, canvas_log) -> None:
    log = canvas_log(seg)
    seg.add_click(17, 15)
    seg.add_click(40, 5, positive=False)
    seg.remove_click(1)
    assert [c.positive for c in seg.annotator.objects[1].clicks] == [True]
    seg.undo()
    assert len(seg.annotator.objects[1].clicks) == 2
    seg.redo()
    assert len(seg.annotator.objects[1].clicks) == 1
    np.testing.assert_array_equal(log.masks[1], seg.masks[1])
    other = np.zeros((30, 40, 3), np.uint8)
    seg.set_image(other)
    np.testing.assert_array_equal(log.picture, other)
    # Every object is forgotten; a new one (ids are never reused) is selected.
    assert log.masks == {} and list(seg.annotator.objects) == [2] and seg.selected == 2
    assert log.state["active"] == 2 and log.state["can_undo"] is False


def test_exports_match_the_masks(seg: ImageSegmenter, tmp_path: Path) -> None:
    seg.add_click(17, 15)
    seg.add_object("disc")
    seg.set_box(36, 22, 56, 42)
    masks = seg.masks
    with zipfile.ZipFile(seg.write_masks_zip(tmp_path / "masks.zip")) as zf:
        indexed = np.asarray(Image.open(io.BytesIO(zf.read("masks.png"))))
    assert set(np.unique(indexed)) == {0, 1, 2}
    # Overlaps go to one of the objects; every object pixel is in the file.
    np.testing.assert_array_equal(indexed > 0, masks[1] | masks[2])
    for obj_id in (1, 2):
        assert not np.any((indexed == obj_id) & ~masks[obj_id])
    coco = json.loads(json.dumps(seg.coco_json()))  # plain JSON
    areas = {a["id"]: a["area"] for a in coco["annotations"]}
    assert areas == {k: int(v.sum()) for k, v in masks.items()}
    assert seg.cutout(2).shape == (*masks[2].shape, 4)


def test_model_argument(model_cache: ModelCache, picture: np.ndarray, tmp_path: Path) -> None:
    predictor = image_predictor(MODEL, cache=model_cache, device="cpu")
    seg = ImageSegmenter(picture, predictor)
    assert seg.annotator.predictor is predictor and len(model_cache) == 1
    path = tmp_path / "picture.png"
    Image.fromarray(picture).save(path)
    from_file = ImageSegmenter(path, MODEL, cache=model_cache, device="cpu")
    np.testing.assert_array_equal(from_file.image, picture)
    with pytest.raises(TypeError, match="model must be a variant name"):
        ImageSegmenter(picture, 3)
    with pytest.raises(FileNotFoundError, match="no image file"):
        ImageSegmenter(tmp_path / "missing.png", MODEL, cache=model_cache, device="cpu")


def test_segment_everything_shows_progress_and_stops_on_request(
    seg: ImageSegmenter, canvas_log, monkeypatch
) -> None:
    from sam2ui.widgets import image_segmenter

    monkeypatch.setattr(image_segmenter, "PROGRESS_INTERVAL_S", 0.0)  # every batch
    log = canvas_log(seg)

    def stop_after_two_batches() -> bool:
        return sum("points" in u.get("message", "") for u in log.updates) >= 2

    ids = seg.segment_everything(
        should_stop=stop_after_two_batches,
        points_per_side=8,
        points_per_batch=16,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
    )
    messages = [u["message"] for u in log.updates if "message" in u]
    assert messages[-3:-1] == [f"Segment everything: {n}/64 points" for n in (16, 32)]
    kept_note = f"kept the {len(ids)} objects found so far."
    assert messages[-1] == f"Stopped after 32 of 64 points; {kept_note}"
    assert len(ids) > 0 and set(ids) <= set(seg.masks) and seg.selected == ids[0]
    done = len(seg.annotator.objects)
    ids = seg.segment_everything(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    assert seg.message == f"Found {len(ids)} objects."
    assert len(seg.annotator.objects) == done + len(ids)

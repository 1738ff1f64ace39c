"""ImageSegmenter driven as the front end drives it: canvas messages and button clicks."""

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


def shown(seg: ImageSegmenter) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(seg.canvas.image)).convert("RGB"))


def test_click_message_adds_a_point_and_shows_its_mask(
    seg: ImageSegmenter, model_cache: ModelCache, picture: np.ndarray
) -> None:
    assert seg.selected == 1 and seg.masks == {}
    np.testing.assert_array_equal(shown(seg), picture)  # nothing drawn yet
    seg.canvas.send_event({"type": "click", "x": 17.0, "y": 15.0, "modifier": False})
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
    # The overlay sent to the front end is the engine's rendering, updated after the click.
    np.testing.assert_array_equal(shown(seg), seg.annotator.render(1))
    assert not np.array_equal(shown(seg), picture)
    assert f"{int(expected.sum()):,} px" in seg.status.value
    # A single click gives three candidates; the buttons pick another one.
    assert len(seg.candidate_picker.options) == 3 and seg.candidate_picker.layout.display == ""
    other = (obj.chosen + 1) % 3
    seg.candidate_picker.value = other
    np.testing.assert_array_equal(seg.masks[1], obj.candidates[other].mask)
    assert seg.last_error is None


def test_modifier_and_toggle_make_background_points(seg: ImageSegmenter) -> None:
    seg.canvas.send_event({"type": "click", "x": 17, "y": 15})
    seg.canvas.send_event({"type": "click", "x": 40, "y": 5, "modifier": True})
    seg.label_toggle.value = False  # "Background (−)": plain clicks are background points
    seg.canvas.send_event({"type": "click", "x": 50, "y": 40})
    seg.canvas.send_event({"type": "click", "x": 12, "y": 20, "modifier": True})
    labels = [c.positive for c in seg.annotator.objects[1].clicks]
    assert labels == [True, False, False, True]
    # Several prompts: one mask, no candidates to choose from.
    assert seg.candidate_picker.layout.display == "none"
    assert "2 object point(s), 2 background point(s)" in seg.status.value


def test_drag_sets_a_box(seg: ImageSegmenter, model_cache: ModelCache, picture: np.ndarray) -> None:
    seg.canvas.send_event({"type": "box", "x0": 28.0, "y0": 26.0, "x1": 6.0, "y1": 4.0})
    assert seg.annotator.objects[1].box == (6.0, 4.0, 28.0, 26.0)
    expected = reference_masks(
        model_cache, picture, box=np.array([6.0, 4.0, 28.0, 26.0]), multimask_output=False
    )
    np.testing.assert_array_equal(seg.masks[1], expected)


def test_objects_selector_undo_clear_rename_remove(seg: ImageSegmenter) -> None:
    seg.canvas.send_event({"type": "click", "x": 17, "y": 15})
    seg.add_button.click()
    assert seg.selected == 2 and [v for _, v in seg.object_picker.options] == [1, 2]
    seg.canvas.send_event({"type": "click", "x": 46, "y": 32})
    seg.canvas.send_event({"type": "click", "x": 5, "y": 40, "modifier": True})
    assert set(seg.masks) == {1, 2} and len(seg.annotator.objects[1].clicks) == 1
    objs = seg.annotator.objects
    assert objs[1].color != objs[2].color
    # The selector routes clicks.
    seg.object_picker.value = 1
    seg.canvas.send_event({"type": "click", "x": 20, "y": 10})
    assert len(seg.annotator.objects[1].clicks) == 2
    # Undo removes the selected object's last click and predicts again.
    seg.undo_button.click()
    assert len(seg.annotator.objects[1].clicks) == 1
    seg.object_picker.value = 2
    two_clicks = seg.masks[2].copy()
    seg.undo_button.click()
    assert [c.positive for c in seg.annotator.objects[2].clicks] == [True]
    assert not np.array_equal(seg.masks[2], two_clicks)
    seg.clear_button.click()
    assert set(seg.masks) == {1} and seg.annotator.objects[2].clicks == []
    # Rename through the name box; remove through the button.
    seg.name_box.value = "disc"
    assert seg.annotator.objects[2].name == "disc"
    assert ("disc (#2)", 2) in seg.object_picker.options
    seg.remove_button.click()
    assert list(seg.annotator.objects) == [1] and seg.selected == 1
    assert seg.name_box.value == "object 1"
    assert seg.last_error is None


def test_errors_go_to_the_output_area_and_the_widget_stays_usable(seg: ImageSegmenter) -> None:
    seg.canvas.send_event({"type": "click", "x": float("nan"), "y": 3})
    assert isinstance(seg.last_error, ValueError)
    assert "'x' must be a finite number" in seg.errors.outputs[-1]["text"]
    seg.candidate_picker.options = (("9", 9),)  # a candidate the engine does not have
    seg.candidate_picker.value = 9
    assert "candidate" in seg.errors.outputs[-1]["text"]
    assert len(seg.errors.outputs) == 2
    seg.canvas.send_event({"type": "click", "x": 17, "y": 15})  # still works
    assert set(seg.masks) == {1}
    seg.clear_errors()
    assert seg.errors.outputs == () and seg.last_error is None
    with pytest.raises(ValueError, match="no object 7"):
        seg.add_click(3, 3, obj_id=7)  # called from Python: raised as usual


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

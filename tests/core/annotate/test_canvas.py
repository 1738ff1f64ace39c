"""The canvas's updates: run lengths, the picture once, only the masks that changed."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from sam2ui.core.annotate.canvas import (
    CanvasFeed,
    canvas_css,
    canvas_js,
    frame_ranges,
    mask_runs,
    pack_runs,
    picture_url,
    unpack_runs,
)


def _from_runs(runs: list[int], shape: tuple[int, int]) -> np.ndarray:
    flat = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
    return flat.reshape(shape)


@pytest.mark.parametrize("seed", range(4))
def test_mask_runs_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((7, 9)) < [0.0, 0.3, 0.9, 1.0][seed]
    runs = mask_runs(mask)
    assert sum(runs) == mask.size and all(r >= 0 for r in runs)
    assert np.array_equal(_from_runs(runs, mask.shape), mask)
    assert (runs[0] == 0) == bool(mask.flat[0])


def test_mask_runs_small_cases() -> None:
    assert mask_runs(np.array([[False, True], [True, True]])) == [1, 3]
    assert mask_runs(np.array([[True, False]])) == [0, 1, 1]
    assert mask_runs(np.zeros((2, 3), bool)) == [6]
    assert mask_runs(np.zeros((0, 3), bool)) == []


def test_pack_runs_round_trip() -> None:
    values = [0, 1, 127, 128, 255, 16383, 16384, 2_000_000, 2**31 + 5, 0, 3]
    packed = pack_runs(values)
    assert unpack_runs(packed) == values
    assert len(base64.b64decode(packed)) == 1 + 1 + 1 + 2 + 2 + 2 + 3 + 3 + 5 + 1 + 1
    assert pack_runs([]) == "" and unpack_runs("") == []
    with pytest.raises(ValueError, match="negative"):
        pack_runs([3, -1])


def test_frame_ranges() -> None:
    assert frame_ranges([5, 0, 1, 2, 7, 6, 9]) == [[0, 2], [5, 7], [9, 9]]
    assert frame_ranges([]) == []


def test_picture_url_png_small_jpeg_large() -> None:
    small = np.full((20, 30, 3), 77, np.uint8)
    head, data = picture_url(small).split(",", 1)
    assert head == "data:image/png;base64"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(data)))), small)
    assert picture_url(np.zeros((800, 1000, 3), np.uint8)).startswith("data:image/jpeg;base64,")


def test_module_and_style_ship_with_the_package() -> None:
    js = canvas_js()
    assert "export function mount" in js and "export default { render }" in js
    assert ".s2-stage" in canvas_css()


class FakeObject:
    def __init__(self, obj_id: int, mask: np.ndarray | None) -> None:
        self.obj_id, self.name, self.color = obj_id, f"object {obj_id}", (10, 20, 30)
        self.mask, self.clicks, self.box = mask, [], None
        self.candidates: list = []
        self.chosen: int | None = None


class FakeImageAnnotator:
    """What ``CanvasFeed.image_update`` reads of an ImageAnnotator."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.objects: dict[int, FakeObject] = {}
        self.can_undo = self.can_redo = False

    @property
    def masks(self) -> dict[int, np.ndarray]:
        return {i: o.mask for i, o in self.objects.items() if o.mask is not None}


def test_feed_sends_the_picture_once_and_only_changed_masks() -> None:
    ann = FakeImageAnnotator(np.zeros((4, 5, 3), np.uint8))
    feed = CanvasFeed()
    first = feed.image_update(ann, None, "hello")  # type: ignore[arg-type]
    assert first["picture"]["width"] == 5 and first["masks"] == {} and first["seq"] == 1
    one = np.zeros((4, 5), bool)
    one[1:3, 1:4] = True
    ann.objects[1] = FakeObject(1, one)
    ann.objects[2] = FakeObject(2, ~one)
    update = feed.image_update(ann, 1)  # type: ignore[arg-type]
    assert "picture" not in update and set(update["masks"]) == {"1", "2"}
    assert np.array_equal(_from_runs(unpack_runs(update["masks"]["1"]["rle"]), (4, 5)), one)
    ann.objects[2].mask = np.zeros((4, 5), bool)  # only object 2 changes
    update = feed.image_update(ann, 2)  # type: ignore[arg-type]
    assert list(update["masks"]) == ["2"] and update["active"] == 2
    assert [o["id"] for o in update["objects"]] == [1, 2]
    del ann.objects[1]
    assert feed.image_update(ann, 2)["masks"] == {"1": None}  # type: ignore[arg-type]
    assert feed.image_update(ann, 2)["masks"] == {}  # type: ignore[arg-type]

    # Candidates: sent when the active object's list or choice changes, else left out.
    class Cand:
        def __init__(self, mask: np.ndarray, score: float) -> None:
            self.mask, self.score = mask, score

    ann.objects[2].candidates = [Cand(one, 0.9), Cand(~one, 0.5)]
    ann.objects[2].chosen = 0
    update = feed.image_update(ann, 2)  # type: ignore[arg-type]
    assert [(c["index"], c["score"], c["shown"]) for c in update["candidates"]] == [
        (0, 0.9, True),
        (1, 0.5, False),
    ]
    assert "candidates" not in feed.image_update(ann, 2)  # type: ignore[arg-type]
    ann.objects[2].chosen = 1
    update = feed.image_update(ann, 2)  # type: ignore[arg-type]
    assert [c["shown"] for c in update["candidates"]] == [False, True]
    assert feed.image_update(ann, None)["candidates"] == []  # type: ignore[arg-type]
    feed.reset()  # the canvas lost track: everything again
    again = feed.image_update(ann, 2)  # type: ignore[arg-type]
    assert "picture" in again and list(again["masks"]) == ["2"] and again["masks_reset"]

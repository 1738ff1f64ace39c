"""Every action leaves a status line that says what happened, and says so honestly when
nothing did (nothing to undo, nothing running, nothing playing); downloads work past 255
objects."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2ui.app.context import AppContext
from sam2ui.app.image_handlers import ImageHandlers
from sam2ui.app.options import AppConfig
from sam2ui.app.video_canvas import VideoCanvasHandlers
from sam2ui.core import ModelCache
from tests.app.conftest import make_image


@pytest.fixture
def video_ctx(small_cache: ModelCache):
    config = AppConfig(model="sam2.1-hiera-tiny", device="cpu", max_video_seconds=5)
    context = AppContext(config, cache=small_cache)
    yield context
    context.close()


def test_image_actions_say_what_they_did(ctx: AppContext) -> None:
    h = ImageHandlers(ctx)
    sid, _ = h.upload(None, make_image())
    assert h.click(sid, None, 40, 48).message.startswith("Object 1 (1 point): ")
    assert h.undo(sid, 1).message == "Undid the last change of object 1."
    assert h.undo(sid, 1).message == "Nothing to undo for object 1."
    h.click(sid, None, 40, 48)
    assert h.choose_candidate(sid, 1, 2).message == "Object 1 shows candidate mask 2."
    assert h.rename_object(sid, 1, " cat ").message == "Renamed object 1 to 'cat'."
    assert h.undo_last(sid).message == "Undid the last change of object 1."
    assert h.redo(sid).message == "Redid a change of object 1."
    assert h.redo(sid).message == "Nothing to redo."
    assert h.clear_object(sid, 1).message == "Cleared object 1."
    assert h.remove_object(sid, 1).message == "Removed object 1."
    assert h.undo(sid).message == "Nothing to undo."


def test_video_actions_say_what_they_did(video_ctx: AppContext, video_file: Path) -> None:
    h = VideoCanvasHandlers(video_ctx)
    assert h.cancel(None) == "Nothing is running."
    sid, _ = h.upload(None, video_file)
    assert h.cancel(sid) == "Nothing is running."
    assert h.pause(sid).message == "Nothing is playing; frame 0 is shown."
    h.click(sid, 2, None, 40, 48)
    assert h.undo(sid, 2, 1).message == "Undid the last change of object 1 on frame 2."
    assert h.undo(sid, 2, 1).message == "Nothing to undo for object 1 on frame 2."
    h.box(sid, 3, 1, 20, 30, 60, 66)
    assert h.clear_frame(sid, 3, 1).message == "Cleared object 1 on frame 3."
    assert h.rename_object(sid, 1, "square").message == "Renamed object 1 to 'square'."
    assert h.cancel(sid) == "Nothing is running."


def test_an_image_with_more_than_255_objects_still_downloads(app_config, small_cache) -> None:
    # A server that allows more objects than an 8-bit export holds (the default is 255).
    ctx = AppContext(dataclasses.replace(app_config, max_objects=300), cache=small_cache)
    h = ImageHandlers(ctx)
    sid, _ = h.upload(None, make_image())
    for i in range(256):  # object ids 1..256: the last one does not fit 8 bits
        h.add_object(sid)
        h.click(sid, None, 4 + (i % 30) * 4, 4 + (i // 30) * 10)
    files = {p.name: p for p in h.export(sid)}
    assert sorted(files) == ["cutout_object_256.png", "masks.zip", "masks_coco.json"]
    coco = json.loads(files["masks_coco.json"].read_text())
    assert len(coco["annotations"]) == 256
    with zipfile.ZipFile(files["masks.zip"]) as zf:
        picture = Image.open(io.BytesIO(zf.read("masks.png")))
        assert picture.mode in ("I;16", "I")
        ids = np.array(picture)
        for n in range(1, 257):  # pixel value = the smallest id whose mask covers it
            mask = np.array(Image.open(io.BytesIO(zf.read(f"object_{n}.png")))) > 0
            assert mask[ids == n].all() and (ids[mask] <= n).all() and (ids[mask] > 0).all()

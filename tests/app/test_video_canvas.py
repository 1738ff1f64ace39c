"""The canvas's own actions: sessions opened for the canvas get updates, not overlays; undo
and redo of the last change anywhere; removing one point; playback; cancel's message."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sam2ui.app.context import AppContext
from sam2ui.app.image_handlers import ImageHandlers
from sam2ui.app.options import AppConfig
from sam2ui.app.video_canvas import VideoCanvasHandlers, video_action
from sam2ui.core import ModelCache
from tests.app.conftest import HEIGHT, WIDTH, make_image


@pytest.fixture
def video_ctx(small_cache: ModelCache):
    context = AppContext(AppConfig(device="cpu", max_video_seconds=5), cache=small_cache)
    yield context
    context.close()


def test_image_canvas_session(ctx: AppContext) -> None:
    h = ImageHandlers(ctx)
    sid, view = h.upload(None, make_image(), canvas=True)
    assert view.overlay is None and view.canvas is not None
    assert view.canvas["picture"]["width"] == WIDTH and "Click on an object" in view.message
    view = h.click(sid, None, 40, 48, True)
    assert list(view.canvas["masks"]) == ["1"] and "picture" not in view.canvas
    assert view.canvas["message"].startswith("Object 1 (1 point)")
    h.click(sid, None, 44, 60, True)
    view = h.remove_point(sid, 1, 0)
    assert view.canvas["prompts"] == [
        {"obj": 1, "index": 0, "x": 44.0, "y": 60.0, "positive": True}
    ]
    assert h.undo_last(sid).message == "Undid the last change of object 1."
    assert len(h.redo(sid).canvas["prompts"]) == 1
    assert h.redo(sid).message == "Nothing to redo."
    # An API session (no canvas) still gets rendered overlays.
    _, api_view = h.upload(None, make_image())
    assert api_view.overlay is not None and api_view.canvas is None


def test_video_canvas_actions(video_ctx: AppContext, video_file: Path) -> None:
    h = VideoCanvasHandlers(video_ctx)
    sid, view = h.upload(None, video_file, canvas=True)
    assert view.frame is None and view.canvas["num_frames"] == 6 and view.canvas["frame"] == 0
    view = video_action(h, sid, {"type": "click", "x": 38, "y": 48, "frame": 2})
    assert view.canvas["frame"] == 2 and view.canvas["objects"][0]["frames"] == [2]
    assert view.canvas["lanes"] == {"1": [[2, 2]]} and "picture" in view.canvas
    view = video_action(h, sid, {"type": "click", "x": 50, "y": 40, "frame": 2})
    view = video_action(h, sid, {"type": "seek", "frame": 4})
    assert view.canvas["frame"] == 4 and view.canvas["prompts"] == []
    view = video_action(h, sid, {"type": "undo"})  # goes back to the frame it changes
    assert view.canvas["frame"] == 2 and len(view.canvas["prompts"]) == 1
    assert video_action(h, sid, {"type": "redo"}).message.startswith("Redid a change")
    view = video_action(h, sid, {"type": "remove_point", "obj": 1, "index": 1, "frame": 2})
    assert [p["index"] for p in view.canvas["prompts"]] == [0]
    assert h.cancel(sid) == "Nothing is running."
    assert h.cancel(None) == "Nothing is running."
    views = list(h.propagate(sid, "both", overlay=False))
    done = [v.canvas["progress"]["done"] for v in views[:-1]]
    assert done == list(range(1, len(done) + 1))  # every frame's progress reaches the canvas
    assert views[-1].video is None and views[-1].canvas["lanes"]["1"] == [[0, 5]]
    assert views[-1].message.startswith("Tracked 6 frames")


def test_playback_steps_at_the_video_rate_and_pauses(
    video_ctx: AppContext, video_file: Path
) -> None:
    h = VideoCanvasHandlers(video_ctx)
    sid, _ = h.upload(None, video_file, canvas=True)  # 6 frames at 6 fps
    began = time.monotonic()
    frames = [v.canvas["frame"] for v in h.play(sid, 0)]
    took = time.monotonic() - began
    assert frames[0] == 0 and frames[-1] == 5 and frames == sorted(frames)
    assert 5 / 6 - 0.05 <= took < 5  # paced by the frame rate, not as fast as possible
    # Pause from another thread stops a playback between frames.
    seen: list[int] = []

    def watch() -> None:
        for view in h.play(sid, 0):
            seen.append(view.canvas["frame"])

    runner = threading.Thread(target=watch)
    runner.start()
    time.sleep(0.25)
    paused = h.pause(sid)
    runner.join(timeout=5)
    assert not runner.is_alive() and seen[-1] < 5
    assert paused.message.startswith("Paused on frame") and not paused.canvas["playing"]


def test_canvas_frames_match_the_source(video_ctx: AppContext, video_file: Path) -> None:
    import base64
    import io

    from PIL import Image

    h = VideoCanvasHandlers(video_ctx)
    sid, view = h.upload(None, video_file, canvas=True)
    with video_ctx.use(sid, "video") as work:
        expected = np.asarray(work.annotator.frame(3), np.int16)
    view = h.show_frame(sid, 3)
    data = view.canvas["picture"]["src"].split(",", 1)[1]
    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), np.int16)
    assert shown.shape == (HEIGHT, WIDTH, 3) and np.abs(shown - expected).max() == 0

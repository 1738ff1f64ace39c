"""The canvas widget and its message protocol, without a browser."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import sam2ui.widgets
from sam2ui.core import canvas_css, canvas_js
from sam2ui.widgets.canvas import (
    ACTIONS,
    CanvasAction,
    CanvasBox,
    CanvasClick,
    PromptCanvas,
    parse_message,
)


def test_import_sam2ui_does_not_need_the_notebook_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["anywidget"] = None  # as if the notebook extra were not installed
        import sam2ui
        assert "ipywidgets" not in sys.modules
        try:
            import sam2ui.widgets
        except ImportError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'sam2ui[notebook]'" in out.stdout


def test_parse_click_and_box_clamp_to_the_picture() -> None:
    click = parse_message({"type": "click", "x": 12.5, "y": -3, "positive": False}, 64, 48)
    assert click == CanvasClick(12.5, 0.0, False, None)
    on_frame = parse_message({"type": "click", "x": 99, "y": 47.0, "frame": 3.0}, 64, 48)
    assert on_frame == CanvasClick(63.0, 47.0, True, 3)
    box = parse_message({"type": "box", "x0": 50, "y0": 40, "x1": 70.0, "y1": 2}, 64, 48)
    assert box == CanvasBox(50.0, 40.0, 63.0, 2.0, None)


def test_parse_every_other_event() -> None:
    def parse(content: dict[str, Any]) -> object:
        return parse_message(content, 64, 48)

    assert parse({"type": "remove_point", "obj": 2, "index": 1, "frame": 4}) == CanvasAction(
        "remove_point", obj=2, index=1, frame=4
    )
    assert parse({"type": "select", "obj": 3}) == CanvasAction("select", obj=3)
    assert parse({"type": "rename", "obj": 1, "name": "  cat "}) == CanvasAction(
        "rename", obj=1, name="cat"
    )
    assert parse({"type": "undo", "frame": 0}) == CanvasAction("undo", frame=0)
    assert parse({"type": "seek", "frame": 7}) == CanvasAction("seek", frame=7)
    assert parse({"type": "play", "frame": 2}) == CanvasAction("play", frame=2)
    assert parse({"type": "propagate", "direction": "backward", "frame": 5}) == CanvasAction(
        "propagate", frame=5, direction="backward"
    )
    for kind in ("add", "redo", "pause", "cancel", "sync"):
        assert parse({"type": kind}) == CanvasAction(kind)
    # Fields an event does not take are ignored.
    assert parse({"type": "add", "obj": 4, "name": "x"}) == CanvasAction("add")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"type": "zoom"}, "unknown canvas message type 'zoom'"),
        ({"type": "load", "file": "a.png"}, "unknown canvas message type 'load'"),
        ({"type": "click", "x": "3", "y": 4}, "'x' must be a finite number"),
        ({"type": "click", "x": float("nan"), "y": 4}, "'x' must be a finite number"),
        ({"type": "click", "x": 1, "y": 4, "positive": 1}, "'positive' must be a bool"),
        ({"type": "click", "x": 1, "y": 4, "frame": 1.5}, "'frame' must be an integer"),
        ({"type": "box", "x0": 1, "y0": 2, "x1": 3}, "'y1' must be a finite number"),
        ({"type": "select"}, "'obj' must be an integer"),
        ({"type": "remove_point", "obj": 1, "index": True}, "'index' must be an integer"),
        ({"type": "rename", "obj": 1, "name": "  "}, "'name' must be a non-empty text"),
        ({"type": "seek"}, "'frame' must be an integer"),
        ({"type": "propagate", "direction": "up"}, "'direction' must be one of"),
        ([1, 2], "must be a dict"),
    ],
)
def test_parse_rejects_malformed_messages(content: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_message(content, 64, 48)


def test_clicks_need_a_picture_but_other_events_do_not() -> None:
    with pytest.raises(ValueError, match="no picture yet"):
        parse_message({"type": "click", "x": 1, "y": 1}, 0, 0)
    assert parse_message({"type": "sync"}, 0, 0) == CanvasAction("sync")


def test_send_update_is_a_custom_message_and_sets_the_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    canvas = PromptCanvas(kind="video")
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(canvas, "send", lambda content, buffers=None: sent.append(content))
    picture = {"src": "data:image/png;base64,", "width": 20, "height": 10, "key": "a"}
    canvas.send_update({"seq": 1, "picture": picture, "masks": {}})
    canvas.send_update({"seq": 2, "masks": {"1": None}, "message": "hi"})
    assert sent == [
        {"type": "update", "update": {"seq": 1, "picture": picture, "masks": {}}},
        {"type": "update", "update": {"seq": 2, "masks": {"1": None}, "message": "hi"}},
    ]
    json.dumps(sent)  # what the comm sends must be plain JSON
    assert (canvas.width, canvas.height) == (20, 10)
    assert canvas.last_update == sent[-1]["update"]
    # A click is clamped to the picture last sent.
    assert parse_message({"type": "click", "x": 30, "y": 3}, canvas.width, canvas.height) == (
        CanvasClick(19.0, 3.0)
    )


def test_traits_name_the_kind_and_a_unique_prefix() -> None:
    image, video = PromptCanvas(), PromptCanvas(kind="video")
    assert (image.kind, video.kind) == ("image", "video")
    assert image.prefix.startswith("sam2ui-image-") and video.prefix.startswith("sam2ui-video-")
    assert image.prefix != PromptCanvas().prefix
    assert PromptCanvas(prefix="mine").prefix == "mine"
    state = image.get_state()
    assert state["kind"] == "image" and state["prefix"] == image.prefix  # synced traits
    with pytest.raises(ValueError, match="kind must be one of"):
        PromptCanvas(kind="audio")


def test_events_reach_callbacks_and_errors_reach_error_handlers() -> None:
    canvas = PromptCanvas()
    canvas.width, canvas.height = 20, 10
    events: list[object] = []
    errors: list[BaseException] = []
    canvas.on_event(events.append)
    canvas.send_event({"type": "click", "x": 3, "y": 4})
    # The comm path: ipywidgets hands custom messages to the handlers registered with on_msg.
    canvas._handle_custom_msg({"type": "box", "x0": 1, "y0": 2, "x1": 8, "y1": 9}, [])
    canvas._handle_custom_msg({"type": "select", "obj": 2}, [])
    assert events == [
        CanvasClick(3.0, 4.0, True),
        CanvasBox(1.0, 2.0, 8.0, 9.0),
        CanvasAction("select", obj=2),
    ]
    with pytest.raises(ValueError, match="unknown"):
        canvas.send_event({"type": "wheel"})  # no error handler yet: raised
    canvas.on_error(errors.append)
    canvas.send_event({"type": "wheel"})
    assert len(errors) == 1 and "wheel" in str(errors[0]) and len(events) == 3


def test_front_end_is_the_engines_canvas_module() -> None:
    canvas = PromptCanvas()
    source = canvas_js()
    assert canvas._esm == source and canvas._css == canvas_css()
    assert "export default { render }" in source and 'model.on("msg:custom"' in source
    assert "http" not in source and not re.search(r"^import ", source, re.MULTILINE)
    assert ".s2-view" in canvas._css
    # Every event the module sends is one Python reads (but "load": files are not uploaded
    # through the widget).
    events = re.search(r"export const EVENTS = \[([^\]]*)\]", source)
    assert events is not None
    sent = set(re.findall(r'"(\w+)"', events.group(1)))
    assert sent - {"load"} == {"click", "box", *ACTIONS}
    # The widgets keep no front end of their own.
    assert not (Path(sam2ui.widgets.__file__).parent / "static").exists()

"""The canvas widget and its message protocol, without a browser."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from sam2ui.widgets.canvas import (
    STATIC,
    CanvasBox,
    CanvasClick,
    PromptCanvas,
    encode_picture,
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


def test_parse_click_and_box_clamp_to_the_image() -> None:
    click = parse_message({"type": "click", "x": 12.5, "y": -3, "modifier": True}, 64, 48)
    assert click == CanvasClick(12.5, 0.0, True)
    assert parse_message({"type": "click", "x": 99, "y": 47.0}, 64, 48) == CanvasClick(63, 47)
    box = parse_message({"type": "box", "x0": 50, "y0": 40, "x1": 70.0, "y1": 2}, 64, 48)
    assert box == CanvasBox(50.0, 40.0, 63.0, 2.0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"type": "zoom"}, "unknown canvas message type 'zoom'"),
        ({"type": "click", "x": "3", "y": 4}, "'x' must be a finite number"),
        ({"type": "click", "x": float("nan"), "y": 4}, "'x' must be a finite number"),
        ({"type": "box", "x0": 1, "y0": 2, "x1": 3}, "'y1' must be a finite number"),
        ([1, 2], "must be a dict"),
    ],
)
def test_parse_rejects_malformed_messages(content: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_message(content, 64, 48)


def test_show_sends_a_lossless_png_with_the_size() -> None:
    canvas = PromptCanvas()
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    canvas.show(picture)
    assert (canvas.width, canvas.height, canvas.image_format) == (50, 30, "png")
    decoded = np.asarray(Image.open(io.BytesIO(canvas.image)).convert("RGB"))
    np.testing.assert_array_equal(decoded, picture)


def test_large_pictures_travel_as_jpeg() -> None:
    data, fmt = encode_picture(np.zeros((1000, 1001, 3), np.uint8))
    assert fmt == "jpeg" and Image.open(io.BytesIO(data)).size == (1001, 1000)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        encode_picture(np.zeros((4, 4), np.uint8))


def test_events_reach_callbacks_and_errors_reach_error_handlers() -> None:
    canvas = PromptCanvas()
    canvas.show(np.zeros((10, 20, 3), np.uint8))
    events: list[object] = []
    errors: list[BaseException] = []
    canvas.on_event(events.append)
    canvas.send_event({"type": "click", "x": 3, "y": 4})
    # The comm path: ipywidgets hands custom messages to the handlers registered with on_msg.
    canvas._handle_custom_msg({"type": "box", "x0": 1, "y0": 2, "x1": 8, "y1": 9}, [])
    assert events == [CanvasClick(3.0, 4.0, False), CanvasBox(1.0, 2.0, 8.0, 9.0)]
    with pytest.raises(ValueError, match="unknown"):
        canvas.send_event({"type": "wheel"})  # no error handler yet: raised
    canvas.on_error(errors.append)
    canvas.send_event({"type": "wheel"})
    assert len(errors) == 1 and "wheel" in str(errors[0]) and len(events) == 2


def test_front_end_module_is_package_data_without_remote_imports() -> None:
    source = (STATIC / "canvas.js").read_text()
    assert str(PromptCanvas._esm) == source
    assert "export default" in source and "http" not in source
    assert "import " not in source  # no bundler and no CDN: the module stands alone
    assert ".sam2ui-canvas-frame" in str(PromptCanvas._css)

"""The app in a real browser (Debian chromium driven by Playwright): the annotation canvas.

Screenshots of failures go to test-artifacts/ (the ``browser_page`` fixture); the screenshots
README.md shows are written to docs/images/ by :func:`test_image_canvas_box_click_undo` and
:func:`test_video_timeline_play_propagate`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2ui.app.options import AppConfig
from sam2ui.app.ui import build_demo
from tests.app.conftest import HEIGHT, WIDTH, make_image

TIMEOUT_MS = 60_000
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


@pytest.fixture(scope="module")
def app_url(small_cache):
    config = AppConfig(model="sam2.1-hiera-tiny", device="cpu", max_image_mp=0.02)
    demo = build_demo(config, cache=small_cache)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()
        demo.sam2ui_context.close()


def _shot(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"), np.int16)


def _seq(page, prefix: str) -> int:
    value = page.evaluate(
        f"() => document.querySelector('#{prefix}-annotator .sam2ui-canvas-root')?.dataset.seq"
    )
    return int(value or 0)


def _wait_update(page, prefix: str, after: int) -> int:
    page.wait_for_function(
        f"() => Number(document.querySelector('#{prefix}-annotator .sam2ui-canvas-root')"
        f"?.dataset.seq || 0) > {after}",
        timeout=TIMEOUT_MS,
    )
    return _seq(page, prefix)


_WATCH_COVER = """(sel) => {
  window.__covered = [];
  const host = document.querySelector(sel);
  const look = () => host.querySelectorAll('.pending, .wrap:not(.hide):not(.hidden)')
    .forEach((e) => window.__covered.push(e.className));
  new MutationObserver(look).observe(host, { subtree: true, attributes: true, childList: true });
}"""


def _watch_cover(page, prefix: str) -> None:
    """Record from now on every time gradio's loading overlay (or its "pending" dimming)
    appears over the ``prefix`` tab's canvas; :func:`_covered` returns what was seen."""
    page.evaluate(_WATCH_COVER, f"#{prefix}-annotator")


def _covered(page) -> list[str]:
    return page.evaluate("() => window.__covered")


def _painted(page) -> None:
    """Wait until the browser has painted what the page drew so far."""
    page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")


def _at(view, x: float, y: float, width: int = WIDTH, height: int = HEIGHT) -> tuple[float, float]:
    """Screen coordinates of image pixel (x, y) on the canvas ``view``."""
    box = view.bounding_box()
    assert box is not None
    return box["x"] + box["width"] * (x + 0.5) / width, box["y"] + box["height"] * (
        y + 0.5
    ) / height


def _load_image(page, app_url: str, path: Path):
    page.goto(app_url)
    page.locator("#image-canvas input[type=file]").set_input_files(str(path))
    _wait_update(page, "image", 0)
    view = page.locator("#image-canvas canvas")
    view.wait_for(state="visible", timeout=TIMEOUT_MS)
    return view


def test_image_canvas_box_click_undo(browser_page, app_url: str, tmp_path: Path) -> None:
    page = browser_page
    path = tmp_path / "square.png"
    Image.fromarray(make_image()).save(path)
    view = _load_image(page, app_url, path)
    assert view.evaluate("c => [c.width, c.height]") == [WIDTH, HEIGHT]
    # The picture fills the width it is given and keeps its aspect ratio.
    box = view.bounding_box()
    assert box is not None and box["width"] > 400
    assert abs(box["width"] / box["height"] - WIDTH / HEIGHT) < 0.02
    assert "No objects yet" in page.locator("#image-legend").inner_text()
    plain = _shot(view)
    _watch_cover(page, "image")

    # A drag is a box (the yellow square spans x 32..64, y 24..72 of the 128x96 image).
    seq = _seq(page, "image")
    page.mouse.move(*_at(view, 28, 20))
    page.mouse.down()
    page.mouse.move(*_at(view, 50, 50), steps=4)
    page.mouse.move(*_at(view, 68, 76), steps=4)
    page.mouse.up()
    seq = _wait_update(page, "image", seq)
    page.locator("#image-legend", has_text="1: object 1").wait_for(timeout=TIMEOUT_MS)
    assert "a box" in page.locator("#image-status").inner_text()
    boxed = _shot(view)
    changed = (np.abs(boxed - plain).max(axis=-1) > 30).mean()
    assert changed > 0.05, f"only {changed:.1%} of the canvas changed after the box"

    # A click adds a point to the same object; Ctrl+Z takes it back, Ctrl+Shift+Z redoes it.
    page.mouse.click(*_at(view, 40, 48))
    seq = _wait_update(page, "image", seq)
    assert "1 point, a box" in page.locator("#image-status").inner_text()
    page.keyboard.press("Control+z")
    seq = _wait_update(page, "image", seq)
    assert "Undid" in page.locator("#image-status").inner_text()
    page.keyboard.press("Control+Shift+z")
    seq = _wait_update(page, "image", seq)
    assert "Redid" in page.locator("#image-status").inner_text()

    # A click on an existing point removes it.
    page.mouse.click(*_at(view, 40, 48))
    seq = _wait_update(page, "image", seq)
    assert "Removed a point" in page.locator("#image-status").inner_text()

    # A second object from the legend, then a background (right) click for it.
    page.locator("#image-add").click()
    page.locator("#image-legend", has_text="2: object 2").wait_for(timeout=TIMEOUT_MS)
    seq = _seq(page, "image")
    page.mouse.click(*_at(view, 100, 10), button="right")
    _wait_update(page, "image", seq)
    assert "Object 2 (1 point)" in page.locator("#image-status").inner_text()
    # One click: three candidate masks beside the canvas; picking another shows it.
    picks = page.locator("#image-candidates button")
    assert picks.count() == 3
    other = next(i for i in range(3) if "(shown)" not in picks.nth(i).inner_text())
    seq = _seq(page, "image")
    picks.nth(other).click()
    _wait_update(page, "image", seq)
    assert "(shown)" in page.locator("#image-candidates button").nth(other).inner_text()

    # Opacity 0 and outlines off: the picture is back to the plain image (objects hidden).
    page.locator("#image-annotator input[type=range]").fill("0")
    page.locator("#image-annotator input[type=checkbox]").uncheck()
    _painted(page)
    bare = _shot(view)
    marks = np.abs(bare - plain).max(axis=-1) > 30
    assert marks.mean() < 0.02  # only the point markers differ
    # No click, box, undo or pick put gradio's loading overlay over the canvas.
    assert _covered(page) == []
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    page.locator("#image-annotator input[type=range]").fill("55")
    page.locator("#image-annotator input[type=checkbox]").check()
    page.locator("#image-annotator").screenshot(path=str(DOCS_IMAGES / "image-tab.png"))


def test_image_bad_inputs_say_why(browser_page, app_url: str, tmp_path: Path) -> None:
    page = browser_page
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    page.goto(app_url)
    page.locator("#image-canvas input[type=file]").set_input_files(str(broken))
    page.locator("#image-status.s2-error", has_text="Cannot use this image").wait_for(
        timeout=TIMEOUT_MS
    )
    big = tmp_path / "big.png"  # 200 x 150 = 0.03 MP, over this app's 0.02 MP limit
    Image.fromarray(make_image(150, 200)).save(big)
    page.locator("#image-canvas input[type=file]").set_input_files(str(big))
    page.locator("#image-status.s2-error", has_text="--max-image-mp").wait_for(timeout=TIMEOUT_MS)
    # 16-bit PNGs are shown as they are, not all white.
    deep = tmp_path / "deep.png"
    gray = (np.linspace(0, 65535, WIDTH)[None, :].repeat(HEIGHT, 0)).astype(np.uint16)
    Image.fromarray(gray).save(deep)
    page.locator("#image-canvas input[type=file]").set_input_files(str(deep))
    _wait_update(page, "image", 0)
    view = page.locator("#image-canvas canvas")
    left = view.evaluate("c => Array.from(c.getContext('2d').getImageData(2, 40, 1, 1).data)")
    right = view.evaluate(
        f"c => Array.from(c.getContext('2d').getImageData({WIDTH - 3}, 40, 1, 1).data)"
    )
    assert left[0] < 20 and right[0] > 230


def _frame_shown(page) -> int:
    return int(page.locator("#video-annotator .sam2ui-canvas-root").get_attribute("data-frame"))


def test_video_timeline_play_propagate(browser_page, app_url: str, video_file: Path) -> None:
    page = browser_page
    page.goto(app_url)
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-canvas input[type=file]").set_input_files(str(video_file))
    _wait_update(page, "video", 0)
    view = page.locator("#video-canvas canvas")
    view.wait_for(state="visible", timeout=TIMEOUT_MS)
    number = page.locator("input#video-frame-number")
    assert number.input_value() == "0" and _frame_shown(page) == 0

    # A typed frame number, then a click: the prompt goes to that frame, which is shown.
    number.fill("3")
    seq = _seq(page, "video")
    page.mouse.click(*_at(view, 20 + 6 * 3 + 10, 48))
    page.wait_for_function(
        "() => document.querySelector('#video-legend')?.innerText.includes('frames 3')",
        timeout=TIMEOUT_MS,
    )
    _wait_update(page, "video", seq)
    assert _frame_shown(page) == 3 and number.input_value() == "3"
    assert "1: object 1" in page.locator("#video-legend").inner_text()

    # The timeline seeks: a click near its end shows the last frame, and the box follows.
    timeline = page.locator("#video-timeline canvas")
    box = timeline.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * 0.95, box["y"] + box["height"] / 2)
    page.wait_for_function(
        "() => document.querySelector('#video-annotator .sam2ui-canvas-root')"
        "?.dataset.frame === '5'",
        timeout=TIMEOUT_MS,
    )
    assert number.input_value() == "5"
    # A drag along it seeks as well: where the drag ends is the frame shown.
    mid = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.05, mid)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.3, mid, steps=3)
    page.mouse.move(box["x"] + box["width"] * 0.55, mid, steps=3)
    page.mouse.up()
    page.wait_for_function(
        "() => document.querySelector('#video-annotator .sam2ui-canvas-root')"
        "?.dataset.frame === '3'",
        timeout=TIMEOUT_MS,
    )
    assert number.input_value() == "3"
    number.fill("5")
    number.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('#video-annotator .sam2ui-canvas-root')"
        "?.dataset.frame === '5'",
        timeout=TIMEOUT_MS,
    )

    # J steps back one frame; play (space) advances frames to the end.
    page.locator("#video-annotator .s2-root").focus()
    page.keyboard.press("j")
    page.wait_for_function(
        "() => document.querySelector('#video-annotator .sam2ui-canvas-root')"
        "?.dataset.frame === '4'",
        timeout=TIMEOUT_MS,
    )
    number.fill("0")
    number.press("Enter")
    page.wait_for_function(
        "() => document.querySelector('#video-annotator .sam2ui-canvas-root')"
        "?.dataset.frame === '0'",
        timeout=TIMEOUT_MS,
    )
    page.locator("#video-annotator .s2-root").focus()
    page.keyboard.press(" ")
    page.locator("#video-status", has_text="Played to the last frame").wait_for(timeout=TIMEOUT_MS)
    assert _frame_shown(page) == 5

    # Propagate both ways: every frame gets a mask lane, and the status says so.
    page.get_by_role("button", name="Propagate").click()
    page.locator("#video-status", has_text="Tracked 6 frames").wait_for(timeout=TIMEOUT_MS)
    lanes = page.evaluate("() => document.querySelector('#video-timeline').dataset.lanes")
    assert lanes == "1:0-5"
    # Cancel with nothing running says so.
    page.get_by_role("button", name="Cancel").click()
    page.locator("#video-status", has_text="Nothing is running").wait_for(timeout=TIMEOUT_MS)
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    page.locator("#video-annotator").screenshot(path=str(DOCS_IMAGES / "video-tab.png"))


def test_video_bad_inputs_say_why(browser_page, app_url: str, tmp_path: Path) -> None:
    page = browser_page
    page.goto(app_url)
    page.get_by_role("tab", name="Video").click()
    upload = page.locator("#video-canvas input[type=file]")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    upload.set_input_files(str(junk))
    status = page.locator("#video-status.s2-error")
    status.wait_for(timeout=TIMEOUT_MS)
    text = status.inner_text()
    assert "junk.mp4" in text and "/tmp" not in text and "Errno" not in text
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    upload.set_input_files(str(empty))
    page.locator("#video-status.s2-error", has_text="empty.mp4").wait_for(timeout=TIMEOUT_MS)
    # The tab is still usable: the canvas still asks for a video.
    assert page.locator("#video-canvas .s2-hint").is_visible()


def test_offline_start_says_how_to_get_weights(browser_page, tmp_path: Path) -> None:
    from sam2ui.core import CheckpointUnavailableError, ModelCache

    def loader(key: object) -> None:
        raise CheckpointUnavailableError(
            "cannot get sam2.1_hiera_tiny.pt of facebook/sam2.1-hiera-tiny: offline. "
            "Download it with `hf download facebook/sam2.1-hiera-tiny sam2.1_hiera_tiny.pt`"
        )

    config = AppConfig(model="sam2.1-hiera-tiny", device="cpu", preload=True)
    demo = build_demo(config, cache=ModelCache(loader))
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        page = browser_page
        page.goto(demo.local_url)
        banner = page.locator("#model-error")
        banner.wait_for(timeout=TIMEOUT_MS)
        assert "--checkpoint PATH" in banner.inner_text()
        path = tmp_path / "square.png"
        Image.fromarray(make_image()).save(path)
        page.locator("#image-canvas input[type=file]").set_input_files(str(path))
        page.locator("#image-status.s2-error", has_text="hf download").wait_for(timeout=TIMEOUT_MS)
    finally:
        demo.close()
        demo.sam2ui_context.close()

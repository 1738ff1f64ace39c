"""The app in a real browser (Debian chromium driven by Playwright): click, see, download.

Screenshots of failures go to test-artifacts/ (the ``browser_page`` fixture).
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


@pytest.fixture(scope="module")
def app_url(small_cache):
    demo = build_demo(AppConfig(model="sam2.1-hiera-tiny", device="cpu"), cache=small_cache)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()
        demo.sam2ui_context.close()


def _shot(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"), np.int16)


def test_click_on_an_image(browser_page, app_url: str, tmp_path: Path) -> None:
    page = browser_page
    path = tmp_path / "square.png"
    Image.fromarray(make_image()).save(path)
    page.goto(app_url)
    page.locator("#image-upload input[type=file]").set_input_files(str(path))
    canvas = page.locator("#image-canvas img")
    canvas.wait_for(state="visible", timeout=TIMEOUT_MS)
    page.wait_for_function(
        "() => { const i = document.querySelector('#image-canvas img');"
        " return i && i.complete && i.naturalWidth > 0; }",
        timeout=TIMEOUT_MS,
    )
    assert canvas.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [WIDTH, HEIGHT]
    before = _shot(canvas)
    legend = page.locator("#image-legend")
    assert "No objects yet" in legend.inner_text()

    box = canvas.bounding_box()
    assert box is not None
    # The yellow square spans x 32..64, y 24..72 of the 128x96 image.
    page.mouse.click(box["x"] + box["width"] * 40 / WIDTH, box["y"] + box["height"] * 48 / HEIGHT)
    page.locator("#image-legend", has_text="1: object 1").wait_for(timeout=TIMEOUT_MS)
    page.locator("#image-objects", has_text="1: object 1").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function(
        "() => { const i = document.querySelector('#image-canvas img');"
        " return i && i.complete && i.naturalWidth > 0; }",
        timeout=TIMEOUT_MS,
    )
    after = _shot(canvas)
    assert after.shape == before.shape
    changed = (np.abs(after - before).max(axis=-1) > 30).mean()
    assert changed > 0.05, f"only {changed:.1%} of the overlay changed"

    # A second object from the list's button, then a click for it.
    page.locator("#image-add").click()
    page.locator("#image-legend", has_text="2: object 2").wait_for(timeout=TIMEOUT_MS)


def test_video_prompt_propagate_download(browser_page, app_url: str, video_file: Path) -> None:
    import av

    page = browser_page
    page.goto(app_url)
    page.get_by_role("tab", name="Video").click()
    page.locator("#video-upload input[type=file]").set_input_files(str(video_file))
    frame = page.locator("#video-frame img")
    frame.wait_for(state="visible", timeout=TIMEOUT_MS)
    page.locator("#video-status", has_text="6 frames").wait_for(timeout=TIMEOUT_MS)
    box = frame.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] * 38 / WIDTH, box["y"] + box["height"] * 48 / HEIGHT)
    page.locator("#video-legend", has_text="1: object 1").wait_for(timeout=TIMEOUT_MS)
    page.locator("#video-propagate").click()
    page.locator("#video-status", has_text="Tracked 6 frames").wait_for(timeout=TIMEOUT_MS)
    video = page.locator("#video-result video")
    video.wait_for(state="attached", timeout=TIMEOUT_MS)
    src = video.get_attribute("src")
    assert src
    response = page.request.get(src)
    assert response.ok
    out = Path(video_file).parent / "downloaded.mp4"
    out.write_bytes(response.body())
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (HEIGHT, WIDTH, 3)

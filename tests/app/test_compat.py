"""Reading gradio's event data (sam2ui.app.compat), the app's canvas listeners that read it,
and the gradio keywords the app uses."""

from __future__ import annotations

import ast
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from sam2ui.app.compat import event_data
from sam2ui.app.options import AppConfig
from sam2ui.core import ModelCache
from tests.app.conftest import HEIGHT, WIDTH, make_image


def test_event_data_reads_what_the_canvas_sent() -> None:
    import gradio as gr

    assert event_data(gr.EventData(None, {"type": "click", "x": 3})) == {"type": "click", "x": 3}
    assert event_data(gr.EventData(None, None)) == {}
    assert event_data(None) == {}


# ------------------------------------------------------------------ the app's listeners
def _listener(demo: Any, elem_id: str, event: str) -> Callable[..., Any]:
    """The function wired to ``event`` of the component ``elem_id``."""
    ids = {
        block._id for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id
    }
    for fn in demo.fns.values():
        if any(target in ids and name == event for target, name in fn.targets):
            return fn.fn
    raise LookupError(f"no {event} listener on #{elem_id}")


def _endpoint(demo: Any, api_name: str) -> Callable[..., Any]:
    return next(fn.fn for fn in demo.fns.values() if fn.api_name == api_name)


@pytest.fixture(scope="module")
def demo(small_cache: ModelCache) -> Any:
    pytest.importorskip("gradio")
    from sam2ui.app.ui import build_demo

    app = build_demo(AppConfig(model="sam2.1-hiera-tiny", device="cpu"), cache=small_cache)
    yield app
    app.sam2ui_context.close()


def _event(data: dict[str, Any]) -> Any:
    import gradio as gr

    return gr.EventData(None, data)


def test_image_canvas_listeners_read_event_data(demo: Any, tmp_path: Path) -> None:
    import gradio as gr

    load = _listener(demo, "image-annotator", "s2_load")
    act = _listener(demo, "image-annotator", "s2_act")
    folder = Path(gr.utils.get_upload_folder())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"sam2ui-test-{uuid.uuid4().hex}.png"
    Image.fromarray(make_image()).save(path)
    try:
        value, sid = load(None, _event({"type": "load", "file": str(path)}), None)
    finally:
        path.unlink()
    update = json.loads(value)
    assert (update["picture"]["width"], update["picture"]["height"]) == (WIDTH, HEIGHT)
    value = act(sid, _event({"type": "click", "x": 40, "y": 48, "positive": True, "ticket": 7}))
    update = json.loads(value)
    assert list(update["masks"]) == ["1"] and update["objects"][0]["id"] == 1
    assert "picture" not in update and update["ticket"] == 7  # the picture went once
    assert [c["index"] for c in update["candidates"]] == [0, 1, 2]
    update = json.loads(act(sid, _event({"type": "choose", "index": 2})))
    assert [c["shown"] for c in update["candidates"]] == [False, False, True]
    assert list(update["masks"]) == ["1"]  # the mask shown is the third candidate now
    update = json.loads(act(sid, _event({"type": "choose", "index": 7, "ticket": 8})))
    assert update["error"] and "3 candidate masks" in update["message"]
    assert update["ticket"] == 8  # an error answers its action too
    value = act(sid, _event({"type": "click", "x": 4000, "y": 48}))
    assert json.loads(value)["error"] and "outside" in json.loads(value)["message"]
    # Only files gradio received can be opened.
    outside = tmp_path / "elsewhere.png"
    Image.fromarray(make_image()).save(outside)
    value, _ = load(None, _event({"type": "load", "file": str(outside)}), None)
    assert "was not uploaded here" in json.loads(value)["message"]


def test_video_canvas_listener_without_a_video(demo: Any) -> None:
    act = _listener(demo, "video-annotator", "s2_act")
    value = act(None, _event({"type": "click", "x": 3, "y": 4, "frame": 0}))
    assert json.loads(value)["message"] == "Upload a video first."


# ------------------------------------------------------------------ gradio's signatures
APP = Path(__file__).resolve().parents[2] / "sam2ui" / "app"
# Keyword arguments that gradio 6.31 has and 6.19 (the lowest pyproject admits) has not,
# found by comparing the two wheels' signatures of what the app calls (every other keyword
# the app passes is the same in both): by call, or None for any call.
NEWER_THAN_6_19: dict[str | None, set[str]] = {
    None: {"inputs_kwargs", "run_history", "alt_text"},  # events, launch, Image
    "Accordion": {"height", "max_height"},
    "Tab": {"alignment", "height", "max_height"},
}
NEWER_VALUES = {"download_all", "runs"}  # Gallery buttons, launch footer_links


def test_the_app_uses_no_gradio_keyword_newer_than_its_lowest_version() -> None:
    found = []
    for path in sorted(APP.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                newer = NEWER_THAN_6_19[None] | NEWER_THAN_6_19.get(name, set())
                found += [(path.name, name, k.arg) for k in node.keywords if k.arg in newer]
            elif isinstance(node, ast.Constant) and node.value in NEWER_VALUES:
                found.append((path.name, "literal", str(node.value)))
    assert found == []

"""Two clients of one launched app: neither can read or change the other's session through any
endpoint, session ids show up nowhere (API inputs, outputs, messages, logs), and a handler
that fails answers its own user and leaves everyone else's work as it was."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import pytest
from PIL import Image

from sam2ui.app import errors
from sam2ui.app.canvas_host import to_value
from sam2ui.app.launcher import launch_options
from sam2ui.app.options import AppConfig
from sam2ui.app.ui import build_demo
from sam2ui.core import ImageAnnotator
from tests.app.conftest import make_image

gradio_client = pytest.importorskip("gradio_client")
AppError = pytest.importorskip("gradio_client.exceptions").AppError


@pytest.fixture(scope="module")
def demo(small_cache):
    config = AppConfig(model="sam2.1-hiera-tiny", device="cpu", port=None, max_video_mb=5)
    options = {**launch_options(config), "server_port": None}
    app = build_demo(config, cache=small_cache)
    app.launch(**options, prevent_thread_lock=True, quiet=True)
    try:
        yield app
    finally:
        app.close()
        app.sam2ui_context.close()


@pytest.fixture
def clients(demo):
    pair = [gradio_client.Client(demo.local_url, verbose=False) for _ in range(2)]
    yield pair
    for c in pair:
        c.close()


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "square.png"
    Image.fromarray(make_image()).save(path)
    return path


def session_ids(demo: Any) -> set[str]:
    ctx = demo.sam2ui_context
    with ctx._owners_lock:
        return {sid for ids in ctx._owners.values() for sid in ids}


def snapshot(client: Any) -> dict[str, Any]:
    """What a client's image session holds: its objects and masks (COCO JSON)."""
    files = client.predict(api_name="/image_export")
    coco = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    return coco


def attempt(client: Any, args: tuple[Any, ...], api_name: str) -> str:
    """The message a call ends with (its status output when it does not fail)."""
    try:
        result = client.predict(*args, api_name=api_name)
    except AppError as err:
        return str(err)
    return json.dumps(result, default=str)


# Every endpoint but the uploads, with client A's values where an argument can carry them
# (A's object id 1, the point A clicked, frame 0).
FOREIGN_CALLS = {
    "/image_cancel": (),
    "/image_click": (1, 40, 48, True),
    "/image_box": (1, 5, 5, 120, 30),
    "/image_choose": (1, 0),
    "/image_select_object": (1,),
    "/image_add_object": ("intruder",),
    "/image_rename_object": (1, "renamed"),
    "/image_remove_object": (1,),
    "/image_undo": (1,),
    "/image_clear_object": (1,),
    "/image_redo": (),
    "/image_segment_everything": (4,),
    "/image_export": (),
    "/video_click": (0, 1, 40, 48, True),
    "/video_box": (0, 1, 5, 5, 120, 30),
    "/video_frame": (0,),
    "/video_select_object": (1,),
    "/video_add_object": ("intruder",),
    "/video_rename_object": (1, "renamed"),
    "/video_remove_object": (1,),
    "/video_undo": (0, 1),
    "/video_redo": (),
    "/video_clear_frame": (0, 1),
    "/video_propagate": ("both",),
    "/video_export": (),
    "/video_cancel": (),
}


def test_one_client_cannot_reach_another_clients_session(
    demo, clients, image_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    a, b = clients
    endpoints = a.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(FOREIGN_CALLS) | {"/image_upload", "/video_upload"} == set(endpoints)
    for name, info in endpoints.items():  # no endpoint takes a session id
        params = [p["parameter_name"] for p in info["parameters"]]
        assert not any("session" in p or p == "sid" for p in params), (name, params)

    a_outputs = [a.predict(gradio_client.handle_file(str(image_file)), api_name="/image_upload")]
    a_outputs.append(a.predict(0, 40, 48, True, api_name="/image_click"))
    a_outputs.append(a.predict("tree", api_name="/image_add_object"))
    before = snapshot(a)
    assert [o["name"] for o in before["annotations"]] == ["object 1"]
    live = session_ids(demo)
    assert len(live) == 1

    told = {name: attempt(b, args, name) for name, args in FOREIGN_CALLS.items()}
    for name, message in told.items():
        what = "an image" if name.startswith("/image") else "a video"
        allowed = {f"Upload {what} first.", '"Nothing is running."'}
        if name == "/image_cancel":  # its status, and the canvas's note
            note = to_value({"note": True, "message": "Nothing is running."})
            allowed.add(json.dumps(["Nothing is running.", note]))
        assert message in allowed, (name, message)
    assert session_ids(demo) == live  # B made no session and reached none
    assert snapshot(a) == before

    # B's own session: A's object ids mean nothing there.
    b.predict(gradio_client.handle_file(str(image_file)), api_name="/image_upload")
    assert "There is no object 2" in attempt(b, (2, 60, 20, True), "/image_click")
    b.predict(0, 60, 20, False, api_name="/image_click")  # B's object 1
    b.predict(1, api_name="/image_remove_object")
    assert len(session_ids(demo)) == 2 and snapshot(a) == before

    # Session ids appear in no output, no downloaded file's path and no log record.
    texts = [json.dumps(o, default=str) for o in a_outputs] + list(told.values())
    texts += [str(f) for f in a.predict(api_name="/image_export")]
    texts += [r.getMessage() for r in caplog.records]
    texts += [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    for sid in session_ids(demo):
        assert not [t for t in texts if sid in t or sid[:8] in t]


def test_values_outside_a_radio_s_choices_get_the_app_s_own_message(clients, image_file) -> None:
    a, _ = clients
    a.predict(gradio_client.handle_file(str(image_file)), api_name="/image_upload")
    a.predict(0, 40, 48, True, api_name="/image_click")
    before = snapshot(a)
    for value in (7, "7"):  # an id the session does not have, as a number or as text
        for name in ("/image_select_object", "/image_remove_object", "/image_undo"):
            assert "There is no object 7" in attempt(a, (value,), name), (name, value)
    for value in ("tree", 1.5, True):
        told = attempt(a, (value,), "/image_select_object")
        assert told == f"{value!r} is not an object id: give a whole number."
    assert (
        attempt(a, ("2.5",), "/video_frame") == "'2.5' is not a frame index: give a whole number."
    )
    told = attempt(a, ("sideways",), "/video_propagate")
    assert told == "direction must be one of forward, backward, both, not 'sideways'"
    assert snapshot(a) == before
    # what gradio's radio says of such values names Python types: it must not reach a client
    assert "type:" not in attempt(a, (7,), "/image_undo")
    # the raw name of a rename may be a number: it is the name's text
    assert "Renamed object 1 to '42'." in attempt(a, (1, 42), "/image_rename_object")


def test_a_failing_handler_answers_its_user_and_spares_the_others(
    demo, clients, image_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = clients
    for c in (a, b):
        c.predict(gradio_client.handle_file(str(image_file)), api_name="/image_upload")
        c.predict(0, 40, 48, True, api_name="/image_click")
    before = snapshot(a)
    click = ImageAnnotator.add_click

    def flaky(self: ImageAnnotator, obj_id: int, x: float, y: float, *rest: Any) -> Any:
        if x == 13:  # only B clicks here
            raise RuntimeError("[Errno 5] Input/output error: '/srv/sam2ui/private/cache.bin'")
        return click(self, obj_id, x, y, *rest)

    monkeypatch.setattr(ImageAnnotator, "add_click", flaky)
    message = attempt(b, (0, 13, 20, True), "/image_click")
    assert message == errors.GENERIC
    assert "srv" not in message and "Errno" not in message and "flaky" not in message
    # A's session is as it was and goes on; B's too.
    assert snapshot(a) == before
    *_, legend, _, _, _ = a.predict(0, 60, 20, False, api_name="/image_click")
    assert "1: object 1" in legend
    *_, legend, _, _, _ = b.predict(0, 60, 20, False, api_name="/image_click")
    assert "1: object 1" in legend


def call_raw(url: str, endpoint: str, data: list[Any]) -> tuple[str, dict[str, Any]]:
    """(event, data) of one call through gradio's HTTP API, as any client can make it."""
    start = httpx.post(f"{url}gradio_api/call/{endpoint}", json={"data": data}, timeout=120)
    event_id = start.json()["event_id"]
    answer = httpx.get(f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=120).text
    lines = [line for line in answer.splitlines() if line]
    event = next(x for x in lines if x.startswith("event:")).split(":", 1)[1].strip()
    payload = next(x for x in lines if x.startswith("data:")).split(":", 1)[1]
    return event, json.loads(payload)


def test_a_folder_in_gradios_cache_is_not_an_upload(demo) -> None:
    """A client may name any entry of gradio's upload folder; a folder there is refused with
    our message (read as frames, it would be a video of whatever pictures it holds)."""
    cache = Path(gr.utils.get_upload_folder())
    folder = cache / "sam2ui-test-folder"
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_image()).save(folder / "00000.png")
    file_data = {"path": str(folder), "meta": {"_type": "gradio.FileData"}}
    try:
        for endpoint, what in (("video_upload", "a video"), ("image_upload", "an image")):
            event, payload = call_raw(demo.local_url, endpoint, [file_data])
            assert event == "error"
            assert payload["error"] == f"That upload is a folder; upload {what} as a single file."
    finally:
        shutil.rmtree(folder, ignore_errors=True)

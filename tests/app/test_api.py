"""Drive the launched app with gradio_client, through the coordinate-based endpoints only."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2ui.app.options import AppConfig
from sam2ui.app.ui import build_demo
from sam2ui.core import rle_to_mask
from tests.app.conftest import HEIGHT, WIDTH, make_image

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def app_url(small_cache):
    config = AppConfig(model="sam2.1-hiera-tiny", device="cpu", port=None, max_video_mb=5)
    demo = build_demo(config, cache=small_cache)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()
        demo.sam2ui_context.close()


@pytest.fixture
def client(app_url: str):
    c = gradio_client.Client(app_url, verbose=False)
    yield c
    c.close()


@pytest.fixture(scope="module")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "square.png"
    Image.fromarray(make_image()).save(path)
    return path


def _value(output: object) -> object:
    """A component's value from an output (updates arrive as {"__type__": "update", ...})."""
    return output.get("value") if isinstance(output, dict) else output


def _pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_every_action_has_an_endpoint(client) -> None:
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    for tab, actions in {
        "image": "upload click box choose select_object add_object rename_object "
        "remove_object undo clear_object segment_everything cancel export",
        "video": "upload click box frame select_object add_object rename_object remove_object "
        "undo clear_frame propagate cancel export",
    }.items():
        assert {f"/{tab}_{a}" for a in actions.split()} <= names


def test_image_session_over_the_api(client, image_file: Path) -> None:
    handle = gradio_client.handle_file(str(image_file))
    canvas, selected, _, _, _, masks = client.predict(handle, api_name="/image_upload")
    plain = _pixels(canvas)
    assert plain.shape == (HEIGHT, WIDTH, 3) and _value(selected) is None and masks == {}

    canvas, selected, legend, gallery, _status, masks = client.predict(
        0, 40, 48, True, api_name="/image_click"
    )
    assert _value(selected) == 1 and "1: object 1" in legend and len(gallery) == 3
    # The masks arrive as COCO RLE too, readable without decoding a picture.
    assert list(masks) == ["1"] and masks["1"]["size"] == [HEIGHT, WIDTH]
    first = rle_to_mask(masks["1"])
    assert first.shape == (HEIGHT, WIDTH) and 0 < first.sum() < HEIGHT * WIDTH
    tinted = _pixels(canvas)
    assert np.abs(tinted - plain).max(axis=-1).mean() > 10  # the mask is drawn

    canvas, selected, legend, *_ = client.predict("tree", api_name="/image_add_object")
    assert _value(selected) == 2 and "2: tree" in legend
    *_, legend, _, _, masks = client.predict(2, 5, 5, 120, 30, api_name="/image_box")
    assert "2: tree" in legend and "no mask yet" not in legend and sorted(masks) == ["1", "2"]
    assert (rle_to_mask(masks["1"]) == first).all()  # the other object is untouched
    *_, legend, gallery, _, masks = client.predict(1, 0, api_name="/image_choose")
    assert "0: " in gallery[0]["caption"] and "(shown)" in gallery[0]["caption"]
    *_, legend, _, _, _ = client.predict(1, "square", api_name="/image_rename_object")
    assert "1: square" in legend

    files = client.predict(api_name="/image_export")
    names = sorted(Path(f).name for f in files)
    assert names == ["cutout_object_1.png", "masks.zip", "masks_coco.json"]
    coco = json.loads(Path(next(f for f in files if f.endswith(".json"))).read_text())
    assert [a["name"] for a in coco["annotations"]] == ["square", "tree"]
    for ann, key in zip(coco["annotations"], ["1", "2"], strict=True):  # the same masks
        assert (rle_to_mask(ann["segmentation"]) == rle_to_mask(masks[key])).all()

    # A user error is a message, and the session goes on.
    with pytest.raises(Exception, match="outside the 128x96 image"):
        client.predict(0, 400, 48, True, api_name="/image_click")
    *_, legend, _, _, _ = client.predict(2, api_name="/image_remove_object")
    assert "tree" not in legend and "square" in legend


def test_clients_do_not_share_sessions(app_url: str, image_file: Path) -> None:
    a = gradio_client.Client(app_url, verbose=False)
    b = gradio_client.Client(app_url, verbose=False)
    try:
        a.predict(gradio_client.handle_file(str(image_file)), api_name="/image_upload")
        a.predict(0, 40, 48, True, api_name="/image_click")
        with pytest.raises(Exception, match="Upload an image first"):
            b.predict(0, 40, 48, True, api_name="/image_click")
    finally:
        a.close()
        b.close()


def test_video_session_over_the_api(client, video_file: Path) -> None:
    import av

    frame, _, _, _, status, _ = client.predict(
        gradio_client.handle_file(str(video_file)), api_name="/video_upload"
    )
    assert "6 frames" in status and _pixels(frame).shape == (HEIGHT, WIDTH, 3)
    *_, legend, status = client.predict(0, 0, 40, 48, True, api_name="/video_click")
    assert "1: object 1" in legend and "prompts on frames [0]" in legend
    frame, slider, _selected, legend, status, result = client.predict(
        "forward", api_name="/video_propagate"
    )
    assert status.startswith("Tracked 6 frames") and _value(slider) == 5
    video_path = result["video"] if isinstance(result, dict) else result
    with av.open(video_path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 6 and frames[0].shape == (HEIGHT, WIDTH, 3)
    files = client.predict(api_name="/video_export")
    assert sorted(Path(f).suffix for f in files) == [".json", ".mp4", ".zip"]
    with zipfile.ZipFile(next(f for f in files if f.endswith(".zip"))) as zf:
        assert sum(n.endswith(".png") for n in zf.namelist()) >= 6
    assert client.predict(api_name="/video_cancel") == "Nothing is running."


def test_app_on_a_random_weight_checkpoint(meta_checkpoint, image_file: Path) -> None:
    """The real loading path: a Meta-layout .pt file given as the model."""
    checkpoint = meta_checkpoint("sam2.1-hiera-tiny")
    demo = build_demo(AppConfig(model=str(checkpoint), device="cpu", port=None))
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        assert demo.sam2ui_context.model_error is None
        client = gradio_client.Client(demo.local_url, verbose=False)
        client.predict(gradio_client.handle_file(str(image_file)), api_name="/image_upload")
        _, selected, legend, gallery, _, _ = client.predict(
            0, 40, 48, True, api_name="/image_click"
        )
        assert _value(selected) == 1 and " px, IoU " in legend and len(gallery) == 3
        client.close()
    finally:
        demo.close()
        demo.sam2ui_context.close()


def test_the_queue_protocol_as_a_browser_speaks_it(app_url: str, image_file: Path) -> None:
    """benchmarks/gradio_wire.py (the load benchmark's client) gets what gradio_client gets."""
    from benchmarks.gradio_wire import WireClient, WireError

    wire = WireClient(app_url)
    ref = gradio_client.Client(app_url, verbose=False)
    try:
        wire.predict("/image_upload", wire.upload(image_file))
        ref.predict(gradio_client.handle_file(str(image_file)), api_name="/image_upload")
        got = wire.predict("/image_click", 0, 40, 48, True)
        want = ref.predict(0, 40, 48, True, api_name="/image_click")
        assert list(got[-1]) == ["1"] and got[-1] == want[-1]  # the same masks, as COCO RLE
        assert got[4] == want[4] and "1: object 1" in got[2]  # status line, legend
        assert got[0]["meta"] == {"_type": "gradio.FileData"}  # the overlay, not downloaded
        with pytest.raises(WireError, match="outside the 128x96 image"):
            wire.predict("/image_click", 0, 400, 48, True)
        assert wire.predict("/image_cancel") == list(ref.predict(api_name="/image_cancel"))
    finally:
        wire.close()
        ref.close()


def test_a_generator_over_the_queue_protocol(app_url: str, video_file: Path) -> None:
    from benchmarks.gradio_wire import WireClient

    wire = WireClient(app_url)
    try:
        wire.predict("/video_upload", wire.upload(video_file))
        wire.predict("/video_click", 0, 0, 40, 48, True)
        outputs, updates = wire.run("/video_propagate", "forward")
        assert outputs[4].startswith("Tracked 6 frames") and updates >= 2
    finally:
        wire.close()

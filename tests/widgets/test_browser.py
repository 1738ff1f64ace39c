"""The example notebook in a real JupyterLab and chromium: run it, click the widget, and ask
the kernel what it received.

JupyterLab is started on 127.0.0.1 with a temporary root, config and runtime folder; the kernel
gets a random-weight checkpoint through ``SAM2UI_EXAMPLE_MODEL``. After the clicks, a second
client connects to the notebook's kernel (its connection file is in our runtime folder) and
reads the ImageSegmenter's state.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "notebook_widgets.ipynb"
STARTUP_TIMEOUT_S = 90


@dataclass
class Lab:
    url: str
    token: str
    runtime_dir: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def jupyter_lab(tmp_path_factory: pytest.TempPathFactory, meta_checkpoint) -> Iterator[Lab]:
    checkpoint = meta_checkpoint("sam2.1-hiera-tiny")
    base = tmp_path_factory.mktemp("jupyter")
    root = base / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env.update(
        SAM2UI_EXAMPLE_MODEL=str(checkpoint),
        # The kernel imports sam2ui from this working tree.
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
        # Nothing read from or written to the user's Jupyter folders.
        JUPYTER_CONFIG_DIR=str(base / "config"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
    )
    # Start the notebook's kernel without asking, and no news pop-up over the page.
    settings = {
        "notebook-extension/tracker": {"autoStartDefaultKernel": True},
        "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }
    for name, values in settings.items():
        path = base / "settings" / "@jupyterlab" / f"{name}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    log = (base / "lab.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            f"--port={port}",
            "--ServerApp.ip=127.0.0.1",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.port_retries=0",
            "--ServerApp.terminals_enabled=False",
            "--allow-root",  # CI containers often run as root; the server is on 127.0.0.1
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            try:
                _get_json(f"{url}/api/status?token={token}")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{(base / 'lab.log').read_text()}")
                time.sleep(0.5)
        yield Lab(url, token, base / "runtime")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _kernel_state(lab: Lab, code: str) -> dict:
    """Run ``code`` (which prints one JSON line) in the notebook's kernel and parse it."""
    from jupyter_client import BlockingKernelClient

    sessions = _get_json(f"{lab.url}/api/sessions?token={lab.token}")
    assert isinstance(sessions, list) and len(sessions) == 1, sessions
    kernel_id = sessions[0]["kernel"]["id"]
    client = BlockingKernelClient(connection_file=str(lab.runtime_dir / f"kernel-{kernel_id}.json"))
    client.load_connection_file()
    client.start_channels()
    try:
        printed: list[str] = []

        def keep(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                printed.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                printed.append("\n".join(msg["content"]["traceback"]))

        reply = client.execute_interactive(code, timeout=60, output_hook=keep)
        assert reply["content"]["status"] == "ok", printed
    finally:
        client.stop_channels()
    return json.loads("".join(printed).strip().splitlines()[-1])


ALL_CELLS_RUN = """() => {
  const prompts = [...document.querySelectorAll(".jp-CodeCell .jp-InputArea-prompt")];
  return prompts.length > 0 && prompts.every((p) => /\\[\\d+\\]/.test(p.textContent));
}"""

FIRST_CELL_STARTED = """() => {
  const prompt = document.querySelector(".jp-CodeCell .jp-InputArea-prompt");
  return prompt !== null && /\\[(\\*|1)\\]/.test(prompt.textContent);
}"""


def _wait_for_connected_kernel(lab: Lab, timeout_s: float = 90) -> None:
    """Until the page is connected to an idle kernel. Cells run before that would open their
    widgets before the page's widget manager listens ("model not found")."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kernels = _get_json(f"{lab.url}/api/kernels?token={lab.token}")
        assert isinstance(kernels, list)
        if any(k["connections"] > 0 and k["execution_state"] == "idle" for k in kernels):
            time.sleep(2)  # the page registers its comm targets once connected
            return
        time.sleep(0.5)
    pytest.fail("the notebook's kernel did not start")


def _run_all_cells(page, attempts: int = 3) -> None:
    """Run > Run All Cells, again if the first cell does not start: a run asked for while the
    page is still connecting to the new kernel is dropped."""
    for attempt in range(attempts):
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
        try:
            page.wait_for_function(FIRST_CELL_STARTED, timeout=15_000)
            return
        except Exception:
            if attempt == attempts - 1:
                raise


STATE_CODE = """
import json as _json
_obj = seg.annotator.objects[seg.selected]
print(_json.dumps({
    "clicks": [[c.x, c.y, c.positive] for c in _obj.clicks],
    "box": _obj.box,
    "mask_px": {str(k): int(v.sum()) for k, v in seg.masks.items()},
    "size": list(seg.image.shape[:2]),
    "errors": [o.get("text", "") for o in seg.errors.outputs],
}))
"""


VIDEO_STATE_CODE = """
import json as _json
_wait_ok = vseg.wait(timeout=60)
print(_json.dumps({
    "running": vseg.running,
    "tracked": vseg.annotator.tracked_frames,
    "frame": vseg.frame,
    "mask_px": [int(m.sum()) for d in vseg.results().values() for m in d.values()],
    "errors": [o.get("text", "") for o in vseg.errors.outputs],
}))
"""


def test_click_in_jupyterlab_reaches_the_kernel(jupyter_lab: Lab, browser_page) -> None:
    page = browser_page
    page.set_default_timeout(120_000)
    page.goto(f"{jupyter_lab.url}/lab/tree/{NOTEBOOK.name}?token={jupyter_lab.token}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    _wait_for_connected_kernel(jupyter_lab)
    _run_all_cells(page)

    # The first canvas is the ImageSegmenter's (the VideoSegmenter's comes later).
    canvas = page.locator(".sam2ui-canvas").first
    picture = canvas.locator("img")
    picture.wait_for(state="visible")
    page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=picture.element_handle())
    # Every cell done (each prompt shows its execution count), so the kernel is free.
    page.wait_for_function(ALL_CELLS_RUN)
    box = picture.bounding_box()
    assert box is not None and box["width"] > 100
    shown_before = int(canvas.get_attribute("data-shown") or 0)

    # A click in the middle of the yellow square (image pixels 90, 100 of 320 × 240).
    x, y = 90.5 / 320 * box["width"], 100.5 / 240 * box["height"]
    picture.click(position={"x": x, "y": y})
    page.wait_for_function(
        f"el => Number(el.dataset.shown || 0) > {shown_before}", arg=canvas.element_handle()
    )
    status = canvas.locator("xpath=..").locator("text=/mask of [0-9,]+ px/")
    status.first.wait_for()

    state = _kernel_state(jupyter_lab, STATE_CODE)
    assert state["errors"] == []
    assert state["size"] == [240, 320]
    assert len(state["clicks"]) == 1
    cx, cy, positive = state["clicks"][0]
    assert positive is True
    assert abs(cx - 90) <= 1.5 and abs(cy - 100) <= 1.5
    assert state["mask_px"]["1"] > 0

    # A drag from (40, 50) to (140, 150) draws the object's box.
    shown_before = int(canvas.get_attribute("data-shown") or 0)
    box = picture.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 40.5 / 320 * box["width"], box["y"] + 50.5 / 240 * box["height"])
    page.mouse.down()
    for step in range(1, 6):
        f = step / 5
        page.mouse.move(
            box["x"] + (40.5 + 100 * f) / 320 * box["width"],
            box["y"] + (50.5 + 100 * f) / 240 * box["height"],
        )
    page.mouse.up()
    page.wait_for_function(
        f"el => Number(el.dataset.shown || 0) > {shown_before}", arg=canvas.element_handle()
    )
    state = _kernel_state(jupyter_lab, STATE_CODE)
    x0, y0, x1, y1 = state["box"]
    assert [round(v) for v in (x0, y0, x1, y1)] == [40, 50, 140, 150]
    assert len(state["clicks"]) == 1 and state["mask_px"]["1"] > 0

    # The video widget: a click on frame 0, then Track in the background; Cancel is handled
    # while frames are being tracked, and a second Track finishes the clip.
    video_canvas = page.locator(".sam2ui-canvas").nth(1)
    video_canvas.scroll_into_view_if_needed()
    frame_picture = video_canvas.locator("img")
    vbox = frame_picture.bounding_box()
    assert vbox is not None
    shown_before = int(video_canvas.get_attribute("data-shown") or 0)
    frame_picture.click(
        position={"x": 90.5 / 320 * vbox["width"], "y": 100.5 / 240 * vbox["height"]}
    )
    page.wait_for_function(
        f"el => Number(el.dataset.shown || 0) > {shown_before}", arg=video_canvas.element_handle()
    )
    page.get_by_role("button", name="Track").click()
    page.get_by_text(re.compile(r"^[1-3]/6 frames$")).wait_for()
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text(re.compile(r"frames \(cancelled\)$")).wait_for()
    state = _kernel_state(jupyter_lab, VIDEO_STATE_CODE)
    assert state["errors"] == [] and not state["running"]
    assert 1 <= len(state["tracked"]) < 6 and state["tracked"][0] == 0
    page.get_by_role("button", name="Track").click()
    page.get_by_text("6/6 frames", exact=True).wait_for()
    state = _kernel_state(jupyter_lab, VIDEO_STATE_CODE)
    assert state["tracked"] == [0, 1, 2, 3, 4, 5] and state["frame"] == 5
    assert all(px > 0 for px in state["mask_px"])

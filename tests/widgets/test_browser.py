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
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
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
        try:
            kernels = _get_json(f"{lab.url}/api/kernels?token={lab.token}")
        except urllib.error.HTTPError as err:  # the server can answer 500 while a kernel starts
            if err.code < 500:
                raise
            time.sleep(0.5)
            continue
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


PREFIX_CODE = """
import json as _json
print(_json.dumps({"image": seg.canvas.prefix, "video": vseg.canvas.prefix}))
"""

STATE_CODE = """
import json as _json
_obj = seg.annotator.objects[seg.selected]
print(_json.dumps({
    "clicks": [[c.x, c.y, c.positive] for c in _obj.clicks],
    "box": _obj.box,
    "mask_px": {str(k): int(v.sum()) for k, v in seg.masks.items()},
    "size": list(seg.image.shape[:2]),
    "objects": sorted(seg.annotator.objects),
    "selected": seg.selected,
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

ACTIVE_CELL = """() => [...document.querySelectorAll(".jp-Notebook .jp-Cell")].findIndex(
  (c) => c.classList.contains("jp-mod-active"))"""

# The number of the last update a canvas applied (canvas.js keeps it on its widget element).
SEQ = """prefix => {
  const stage = document.getElementById(prefix + "-canvas");
  return stage ? Number(stage.closest(".s2-root").parentElement.dataset.seq || 0) : 0;
}"""


def _seq(page, prefix: str) -> int:
    return int(page.evaluate(SEQ, prefix))


def _wait_for_update(page, prefix: str, after: int) -> None:
    """Until the canvas has applied an update after number ``after``."""
    page.wait_for_function(f"p => ({SEQ})(p) > {after}", arg=prefix)


def _point(view, x: float, y: float) -> dict[str, float]:
    """Where image pixel ``(x, y)`` of the 320 × 240 picture is on the canvas element."""
    box = view.bounding_box()
    assert box is not None and box["width"] > 100
    return {"x": (x + 0.5) / 320 * box["width"], "y": (y + 0.5) / 240 * box["height"]}


def test_click_in_jupyterlab_reaches_the_kernel(jupyter_lab: Lab, browser_page) -> None:
    page = browser_page
    page.set_default_timeout(120_000)
    page.goto(f"{jupyter_lab.url}/lab/tree/{NOTEBOOK.name}?token={jupyter_lab.token}")
    page.locator(".jp-Notebook .jp-Cell").first.wait_for()
    _wait_for_connected_kernel(jupyter_lab)
    _run_all_cells(page)
    # Every cell done (each prompt shows its execution count), so the kernel is free.
    page.wait_for_function(ALL_CELLS_RUN)
    prefixes = _kernel_state(jupyter_lab, PREFIX_CODE)
    image, video = prefixes["image"], prefixes["video"]

    # The ImageSegmenter's canvas: shown once its picture arrived (it asked with a sync).
    view = page.locator(f"#{image}-canvas canvas.s2-view")
    view.wait_for(state="visible")
    legend = page.locator(f"#{image}-legend")
    legend.locator('.s2-row.s2-active[data-obj-id="1"]').wait_for()
    status = page.locator(f"#{image}-status")

    # A click in the middle of the yellow square (image pixels 90, 100 of 320 × 240).
    before = _seq(page, image)
    view.click(position=_point(view, 90, 100))
    _wait_for_update(page, image, before)
    page.wait_for_function(
        "el => /mask of [0-9,]+ px/.test(el.textContent)", arg=status.element_handle()
    )

    state = _kernel_state(jupyter_lab, STATE_CODE)
    assert state["errors"] == []
    assert state["size"] == [240, 320]
    assert len(state["clicks"]) == 1
    cx, cy, positive = state["clicks"][0]
    assert positive is True
    assert abs(cx - 90) <= 1.5 and abs(cy - 100) <= 1.5
    assert state["mask_px"]["1"] > 0

    # A drag from (40, 50) to (140, 150) draws the object's box.
    before = _seq(page, image)
    box = view.bounding_box()
    assert box is not None
    start, end = _point(view, 40, 50), _point(view, 140, 150)
    page.mouse.move(box["x"] + start["x"], box["y"] + start["y"])
    page.mouse.down()
    for step in range(1, 6):
        f = step / 5
        page.mouse.move(
            box["x"] + start["x"] + (end["x"] - start["x"]) * f,
            box["y"] + start["y"] + (end["y"] - start["y"]) * f,
        )
    page.mouse.up()
    _wait_for_update(page, image, before)
    state = _kernel_state(jupyter_lab, STATE_CODE)
    x0, y0, x1, y1 = state["box"]
    assert [round(v) for v in (x0, y0, x1, y1)] == [40, 50, 140, 150]
    assert len(state["clicks"]) == 1 and state["mask_px"]["1"] > 0

    # The legend's "+ Add object" reaches the kernel, and the new object is the active one.
    before = _seq(page, image)
    page.locator(f"#{image}-add").click()
    _wait_for_update(page, image, before)
    legend.locator('.s2-row.s2-active[data-obj-id="2"]').wait_for()
    state = _kernel_state(jupyter_lab, STATE_CODE)
    assert state["objects"] == [1, 2] and state["selected"] == 2 and state["errors"] == []

    # The video widget: a click on frame 0, then Propagate in the background; Cancel is
    # handled while frames are being tracked, and a second Propagate finishes the clip.
    frame_view = page.locator(f"#{video}-canvas canvas.s2-view")
    frame_view.scroll_into_view_if_needed()
    frame_view.wait_for(state="visible")
    video_status = page.locator(f"#{video}-status")
    controls = page.locator(".s2-root").filter(has=page.locator(f"#{video}-canvas"))
    before = _seq(page, video)
    frame_view.click(position=_point(frame_view, 90, 100))
    _wait_for_update(page, video, before)
    controls.get_by_role("button", name="Propagate").click()
    page.wait_for_function(
        "el => /^Tracking: [1-3]\\/6 frames$/.test(el.textContent)",
        arg=video_status.element_handle(),
    )
    controls.get_by_role("button", name="Cancel").click()
    page.wait_for_function(
        "el => /^Tracking cancelled after/.test(el.textContent)",
        arg=video_status.element_handle(),
    )
    state = _kernel_state(jupyter_lab, VIDEO_STATE_CODE)
    assert state["errors"] == [] and not state["running"]
    assert 1 <= len(state["tracked"]) < 6 and state["tracked"][0] == 0
    controls.get_by_role("button", name="Propagate").click()
    page.wait_for_function(
        "el => el.textContent === 'Tracked 6/6 frames.'", arg=video_status.element_handle()
    )
    state = _kernel_state(jupyter_lab, VIDEO_STATE_CODE)
    assert state["tracked"] == [0, 1, 2, 3, 4, 5] and state["frame"] == 5
    assert all(px > 0 for px in state["mask_px"])
    # The canvas shows the frame the kernel is on.
    assert page.locator(f"#{video}-frame-number").input_value() == "5"

    # Keys typed on the canvas are the canvas's, not JupyterLab's: J steps a frame back
    # (in JupyterLab's command mode it would select the next cell).
    active_cell = page.evaluate(ACTIVE_CELL)
    before = _seq(page, video)
    controls.focus()
    page.keyboard.press("j")
    _wait_for_update(page, video, before)
    state = _kernel_state(jupyter_lab, VIDEO_STATE_CODE)
    assert state["frame"] == 4 and state["errors"] == []
    assert page.evaluate(ACTIVE_CELL) == active_cell

"""A small load test: three clients at once on a launched app (tiny random-weight model).

Each client uploads its own pictures and clicks on them with a growing number of points, all
at the same time. The test checks that no request fails, that every client gets exactly the
masks it gets alone (no cross-talk), that clicks went through the interactive lane and
uploads through the heavy one, and that the server's memory does not grow with the variety
of prompts once warm.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2ui.app.options import AppConfig
from sam2ui.app.ui import build_demo
from tests.app.conftest import HEIGHT, WIDTH

gradio_client = pytest.importorskip("gradio_client")

CLIENTS, IMAGES, CLICKS = 3, 2, 4


@pytest.fixture(scope="module")
def app(small_cache):
    config = AppConfig(model="sam2.1-hiera-tiny", device="cpu", port=None, threads=2)
    demo = build_demo(config, cache=small_cache)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield demo
    finally:
        demo.close()
        demo.sam2ui_context.close()


def _plan(client: int, folder: Path) -> list[tuple[Path, list[tuple[float, float, bool]]]]:
    """The client's pictures and its clicks on each (inside the picture, some background)."""
    rng = np.random.default_rng(client)
    plan = []
    for i in range(IMAGES):
        img = rng.integers(0, 60, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        y0, x0 = int(rng.integers(5, HEIGHT // 2)), int(rng.integers(5, WIDTH // 2))
        img[y0 : y0 + HEIGHT // 3, x0 : x0 + WIDTH // 3] = rng.integers(150, 255, 3)
        path = folder / f"client{client}_{i}.png"
        Image.fromarray(img).save(path)
        clicks = [
            (float(rng.uniform(1, WIDTH - 1)), float(rng.uniform(1, HEIGHT - 1)), k != 2)
            for k in range(CLICKS)
        ]
        plan.append((path, clicks))
    return plan


def _run(url: str, plan: list, out: list, errors: list) -> None:
    client = gradio_client.Client(url, verbose=False, download_files=False)
    try:
        for path, clicks in plan:
            client.predict(gradio_client.handle_file(str(path)), api_name="/image_upload")
            for x, y, positive in clicks:
                out.append(client.predict(0, x, y, positive, api_name="/image_click")[-1])
    except Exception as err:  # reported by the test, with the others
        errors.append(repr(err))
    finally:
        client.close()


def test_three_clients_at_once_get_what_they_get_alone(app, tmp_path: Path) -> None:
    url = app.local_url
    plans = [_plan(c, tmp_path) for c in range(CLIENTS)]
    alone: list[list[dict]] = []
    errors: list[str] = []
    for plan in plans:
        alone.append([])
        _run(url, plan, alone[-1], errors)
    stats = app.sam2ui_context.scheduler.stats
    granted_alone = list(stats.granted)

    together: list[list[dict]] = [[] for _ in plans]
    threads = [
        threading.Thread(target=_run, args=(url, plan, together[i], errors))
        for i, plan in enumerate(plans)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == []
    assert [len(r) for r in together] == [IMAGES * CLICKS] * CLIENTS
    for got, ref in zip(together, alone, strict=True):
        assert got == ref  # the same objects, the same RLE, click after click
    assert all(r and r[-1] for r in together)  # and the masks are not empty
    # Every upload was heavy work and every click interactive work, in both runs.
    uploads, clicks = CLIENTS * IMAGES, CLIENTS * IMAGES * CLICKS
    assert granted_alone == [clicks, uploads]
    assert stats.granted[0] == 2 * clicks
    assert stats.granted[1] == 2 * uploads + stats.passed  # resumed after passing, counted

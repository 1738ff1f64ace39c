"""Where one ``/image_click`` round trip spends its time, one user alone.

Launches the app in this process (sam2.1-hiera-tiny with random weights, no download), uploads
one picture with ``gradio_client`` and clicks ``--clicks`` times on it, adding a second object
half-way. The app's parts are timed by wrapping them: the annotator's click (prompt encoder,
mask decoder, masks at the picture's size), the handler's view (the overlay, the COCO RLE of
the masks), gradio's pre- and postprocessing (the overlay's JPEG) and its whole ``process_api``;
the rest of the round trip is gradio's queue, its event stream and the client.

    python benchmarks/profile_click.py --size 1080x1440 --clicks 20

Random weights give noise-like masks: many more runs to encode and contour edges to draw than
a trained model's, so the view's share is larger here than with real weights.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_app import synthetic_image  # noqa: E402
from benchmarks.bench_load import build_checkpoint  # noqa: E402

TIMES: dict[str, list[float]] = defaultdict(list)


def _timed(owner: Any, attribute: str, name: str) -> None:
    """Wrap ``owner.attribute`` (a function or coroutine function) to record its ms."""
    fn: Callable[..., Any] = getattr(owner, attribute)
    TIMES[name] = []  # printed in this order
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                TIMES[name].append((time.perf_counter() - start) * 1e3)

        setattr(owner, attribute, wrapper)
        return

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            TIMES[name].append((time.perf_counter() - start) * 1e3)

    setattr(owner, attribute, plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1080x1440", help="HEIGHTxWIDTH of the picture")
    parser.add_argument("--clicks", type=int, default=20)
    parser.add_argument("--checkpoint", help="weights (default: random sam2.1-hiera-tiny)")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))

    import gradio.blocks
    from gradio_client import Client, handle_file
    from PIL import Image

    import sam2ui.app.image_handlers as handlers
    from sam2ui.app.launcher import launch_options
    from sam2ui.app.options import AppConfig
    from sam2ui.app.ui import build_demo
    from sam2ui.core.annotate.image import ImageAnnotator

    _timed(ImageAnnotator, "add_click", "annotator click (model, masks at full size)")
    _timed(handlers.ImageHandlers, "_view", "handler view (overlay, RLE, status)")
    _timed(ImageAnnotator, "render", "- of which the overlay")
    _timed(handlers, "_coco_masks", "- of which the COCO RLE")
    _timed(gradio.blocks.Blocks, "preprocess_data", "gradio preprocess")
    _timed(gradio.blocks.Blocks, "postprocess_data", "gradio postprocess (JPEG)")
    _timed(gradio.blocks.Blocks, "process_api", "gradio process_api (all the above)")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        checkpoint = args.checkpoint or str(build_checkpoint(folder))
        config = AppConfig(model=checkpoint, device="cpu", port=None)
        demo = build_demo(config)
        demo.launch(
            **{**launch_options(config), "server_port": None}, prevent_thread_lock=True, quiet=True
        )
        picture = folder / "picture.png"
        Image.fromarray(synthetic_image(height, width)).save(picture)
        client = Client(demo.local_url, verbose=False, download_files=False)
        try:
            client.predict(handle_file(str(picture)), api_name="/image_upload")
            for ms in TIMES.values():  # the upload's calls are not clicks
                ms.clear()
            rng = np.random.default_rng(0)
            round_trips = []
            for k in range(args.clicks):
                x, y = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
                start = time.perf_counter()
                client.predict(0, float(x), float(y), k % 3 != 2, api_name="/image_click")
                round_trips.append((time.perf_counter() - start) * 1e3)
                if k == args.clicks // 2 - 1:
                    client.predict("second", api_name="/image_add_object")
        finally:
            client.close()
            demo.close()
    clicks = args.clicks
    print(f"{clicks} clicks on a {width}x{height} picture, one user; p50 in ms")
    print(f"round trip (gradio_client): {statistics.median(round_trips):.1f}")
    for name, ms in TIMES.items():
        # The object added half-way runs the view and gradio's steps once more: keep the clicks'.
        print(f"{name}: {statistics.median(ms[-clicks:]):.1f}")


if __name__ == "__main__":
    main()

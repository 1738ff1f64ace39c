"""The Gradio app: :func:`build_demo` lays out the image and video tabs and wires each action
to the handlers of :mod:`~sam2ui.app.image_handlers` and :mod:`~sam2ui.app.video_handlers`.

Every action has a named endpoint, and the ones the UI drives by clicking on a picture
(``gr.SelectData``, which ``gradio_client`` cannot send) have coordinate-based twins
(``/image_click``, ``/image_box``, ``/video_click``, ...) on a hidden trigger, so a client can
drive the whole app. Each tab keeps one ``gr.State``: its engine session id. Sessions end when
the browser tab closes (``demo.unload``), when the state is dropped (``delete_callback``) and
after the idle timeout. Errors reach the user as ``gr.Error`` messages, never tracebacks.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from sam2ui.core import ModelCache, SessionManager

from .context import AppContext
from .image_tab import image_tab
from .options import AppConfig
from .parts import DISPLAY_FORMAT, guard, owner_of
from .video_tab import video_tab
from .zerogpu import on_zero_gpu, prepare

__all__ = ["DISPLAY_FORMAT", "build_demo"]

INTRO = (
    "## sam2ui: Segment Anything 2\n"
    "Drop a picture or a video on the canvas. Click on an object to segment it "
    "(Shift+click or right click: background), drag for a box, click a point to remove it; "
    "Ctrl+Z / Ctrl+Shift+Z undo and redo. Add objects in the legend; download PNG masks, "
    "COCO-RLE JSON, a cut-out, or for videos an overlay MP4, DAVIS PNGs and SA-V JSON."
)


def banner_text(error: str | None) -> str:
    return f"⚠️ {error}" if error else ""


def build_demo(
    config: AppConfig | None = None,
    *,
    cache: ModelCache | None = None,
    sessions: SessionManager | None = None,
) -> gr.Blocks:
    """The app as a :class:`gradio.Blocks` (not launched).

    ``cache`` and ``sessions`` default to new ones (tests pass a cache with a small model).
    The model is loaded now when ``config.preload`` (always on ZeroGPU); if its weights cannot
    be had, the app still builds and shows which file it needs and how to get it.
    """
    config = config or AppConfig()
    ctx = AppContext(config, cache=cache, sessions=sessions)
    if config.preload or on_zero_gpu():
        ctx.load_model()
    prepare()
    ctx.start_reaper()
    with gr.Blocks(
        title="sam2ui", delete_cache=(3600, 3600), analytics_enabled=config.analytics
    ) as demo:
        gr.Markdown(INTRO)
        banner = gr.Markdown(
            banner_text(ctx.model_error),
            visible=ctx.model_error is not None,
            elem_id="model-error",
        )
        with gr.Tab("Image", id="image"):
            image_tab(ctx)
        with gr.Tab("Video", id="video"):
            video_tab(ctx)

        @guard
        def on_open() -> Any:
            error = ctx.model_banner()  # a failure the background retry has since cured goes
            return gr.Markdown(banner_text(error), visible=error is not None)

        demo.load(on_open, None, banner, api_visibility="private")

        @guard
        def on_unload(request: gr.Request) -> None:
            ctx.close_owner(owner_of(request))

        demo.unload(on_unload)
    demo.queue(default_concurrency_limit=max(4, 2 * config.model_workers))
    demo.sam2ui_context = ctx  # for tests and the launcher
    return demo

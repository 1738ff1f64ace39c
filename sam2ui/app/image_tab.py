"""The image tab of the Gradio app (see :mod:`sam2ui.app.ui`).

The browser works on the annotation canvas (:mod:`~sam2ui.app.canvas_host`); the named API
endpoints (``/image_upload``, ``/image_click``, ...) keep their inputs and outputs on hidden
components, for ``gradio_client`` users.
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from .canvas_host import canvas_component, shared_action, to_value, wire_canvas
from .context import AppContext
from .image_handlers import ImageHandlers, ImageView
from .parts import (
    DISPLAY_FORMAT,
    PROGRESS,
    RAW_INPUTS,
    api_inputs,
    guard,
    object_id,
    object_panel,
    owner_of,
    presenting,
    wire_export,
    wire_object_panel,
)
from .views import choices, legend_html


def image_outputs(view: ImageView) -> tuple[Any, ...]:
    """(overlay, object radio, legend, candidate gallery, status, masks as COCO RLE) for
    an API client."""
    return (
        view.overlay,
        gr.Radio(choices=choices(view.objects), value=view.selected),
        legend_html(view.objects, view.selected),
        view.candidates,
        view.message,
        view.masks or {},
    )


def shown(view: ImageView) -> str:
    """The canvas update of a view, as the canvas's value."""
    return to_value(view.canvas or {})


def image_action(h: ImageHandlers, session: str | None, data: dict[str, Any]) -> ImageView:
    """One canvas action (see ``canvas.js``) on the tab's session."""
    kind = data.get("type")
    num = lambda key: float(data.get(key, 0))  # noqa: E731
    obj = object_id(data.get("obj"))
    if kind == "click":
        return h.click(session, None, num("x"), num("y"), bool(data.get("positive", True)))
    if kind == "box":
        return h.box(session, None, num("x0"), num("y0"), num("x1"), num("y1"))
    if kind == "remove_point":
        return h.remove_point(session, obj or 0, int(num("index")))
    if kind == "choose":
        return h.choose_candidate(session, None, int(num("index")))
    return shared_action(h, session, data)


def image_tab(ctx: AppContext) -> None:
    h = ImageHandlers(ctx)
    sid = gr.State(None, delete_callback=ctx.close_session)
    limit = f"{ctx.config.max_image_mp:g} MP"
    with gr.Row():
        with gr.Column(scale=4):
            canvas = canvas_component(
                "image", f"Drop an image (up to {limit}) on the canvas, or click it to choose."
            )
        with gr.Column(scale=1, min_width=240):
            with gr.Accordion("Segment everything", open=False):
                pps = gr.Slider(4, 64, value=32, step=1, label="points per side")
                everything = gr.Button("Segment everything", elem_id="image-everything")
                stop = gr.Button("Cancel", elem_id="image-everything-cancel", size="sm")
            export = gr.Button("Prepare downloads", elem_id="image-export")
            files = gr.File(label="Downloads", file_count="multiple", interactive=False)
    with gr.Group(visible=False):  # what the API endpoints read and write
        # A file, not gr.Image: gradio would decode the picture before the handler could check
        # that it is a regular file under the pixel limit.
        upload = gr.File(label="image", type="filepath")
        candidates = gr.Gallery(label="candidates")
        overlay = gr.Image(type="numpy", format=DISPLAY_FORMAT, label="overlay")
        p = object_panel("image-api")
        status = gr.Markdown()
        masks = gr.JSON(label="masks (COCO RLE)")
    api = api_inputs()
    outs = [overlay, p["objects"], p["legend"], candidates, status, masks]

    # ------------------------------------------------------------------ the browser canvas
    wire_canvas(canvas, sid, h, image_action)
    wire_export(export, h, sid, files, "image")

    # ------------------------------------------------------------------ the API
    @guard
    def on_upload(session: str | None, image: Any, request: gr.Request) -> tuple[Any, ...]:
        new_id, view = h.upload(session, image, owner_of(request))
        return (new_id, *image_outputs(view))

    upload.upload(on_upload, [sid, upload], [sid, *outs], api_name="image_upload")

    @guard
    def on_click(session: str | None, obj: Any, x: float, y: float, positive: bool) -> Any:
        return image_outputs(h.click(session, object_id(obj), x, y, positive))

    @guard
    def on_box(session: str | None, obj: Any, x0: float, y0: float, x1: float, y1: float) -> Any:
        return image_outputs(h.box(session, object_id(obj), x0, y0, x1, y1))

    @guard
    def on_choose(session: str | None, obj: Any, index: float) -> Any:
        return image_outputs(h.choose_candidate(session, object_id(obj), int(index)))

    a = api
    a["trigger"].click(
        on_click, [sid, a["obj"], a["x0"], a["y0"], a["positive"]], outs, api_name="image_click"
    )
    a["trigger"].click(
        on_box, [sid, a["obj"], a["x0"], a["y0"], a["x1"], a["y1"]], outs, api_name="image_box"
    )
    a["trigger"].click(on_choose, [sid, a["obj"], a["index"]], outs, api_name="image_choose")

    simple = presenting(image_outputs)

    wire_object_panel(p, h, simple, sid, outs, "image")
    p["undo"].click(
        simple(lambda s, o: h.undo(s, object_id(o))),
        [sid, p["objects"]],
        outs,
        api_name="image_undo",
        **RAW_INPUTS,
    )
    p["clear"].click(
        simple(lambda s, o: h.clear_object(s, object_id(o))),
        [sid, p["objects"]],
        outs,
        api_name="image_clear_object",
        **RAW_INPUTS,
    )
    a["trigger"].click(simple(h.redo), [sid], outs, api_name="image_redo")

    @guard
    def on_everything(session: str | None, n: float, progress: gr.Progress = PROGRESS) -> Any:
        def report(done: int, total: int) -> None:
            progress((done, total), desc="Segment everything", unit="points")

        view = h.segment_everything(session, int(n), report)
        if view.canvas is not None:  # the browser's own session: the canvas shows it
            return (gr.skip(), *image_outputs(view)[1:], to_value(view.canvas))
        return (*image_outputs(view), gr.skip())

    everything.click(
        on_everything, [sid, pps], [*outs, canvas], api_name="image_segment_everything"
    )

    @guard
    def on_cancel(session: str | None) -> tuple[str, Any]:
        message = h.cancel(session)
        return message, to_value({"note": True, "message": message})

    # Not a gradio `cancels=`: the generator stops between batches and keeps what it found.
    stop.click(on_cancel, [sid], [status, canvas], api_name="image_cancel", concurrency_limit=None)

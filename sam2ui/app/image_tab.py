"""The image tab of the Gradio app (see :mod:`sam2ui.app.ui`)."""

from __future__ import annotations

from typing import Any

import gradio as gr

from .compat import click_xy, picked_index, was_deselected
from .context import AppContext
from .image_handlers import ImageHandlers, ImageView
from .parts import (
    DISPLAY_FORMAT,
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
    """(canvas, object radio, legend, candidate gallery, status) for an :class:`ImageView`."""
    return (
        view.overlay,
        gr.Radio(choices=choices(view.objects), value=view.selected),
        legend_html(view.objects, view.selected),
        view.candidates,
        view.message,
    )


def image_tab(ctx: AppContext) -> None:
    h = ImageHandlers(ctx)
    sid = gr.State(None, delete_callback=ctx.close_session)
    with gr.Row():
        with gr.Column(scale=3):
            upload = gr.Image(
                label="Upload an image",
                type="numpy",
                sources=["upload", "clipboard"],
                height=180,
                elem_id="image-upload",
            )
            canvas = gr.Image(
                label="Click to segment",
                type="numpy",
                interactive=False,
                format=DISPLAY_FORMAT,
                elem_id="image-canvas",
            )
        with gr.Column(scale=2):
            p = object_panel("image")
            candidates = gr.Gallery(
                label="Candidate masks: pick one",
                columns=3,
                height=180,
                allow_preview=False,
                elem_id="image-candidates",
            )
            with gr.Accordion("Segment everything", open=False):
                pps = gr.Slider(4, 64, value=32, step=1, label="points per side")
                everything = gr.Button("Segment everything", elem_id="image-everything")
            status = gr.Markdown(elem_id="image-status")
            export = gr.Button("Prepare downloads", elem_id="image-export")
            files = gr.File(label="Downloads", file_count="multiple", interactive=False)
    api = api_inputs()
    outs = [canvas, p["objects"], p["legend"], candidates, status]

    @guard
    def on_upload(session: str | None, image: Any, request: gr.Request) -> tuple[Any, ...]:
        new_id, view = h.upload(session, image, owner_of(request))
        return (new_id, *image_outputs(view))

    upload.upload(on_upload, [sid, upload], [sid, *outs], api_name="image_upload")

    @guard
    def on_select(session: str | None, obj: Any, mode: str, evt: gr.SelectData) -> Any:
        x, y = click_xy(evt)
        return image_outputs(h.point(session, object_id(obj), x, y, mode))

    canvas.select(on_select, [sid, p["objects"], p["mode"]], outs, api_visibility="private")

    @guard
    def on_click(session: str | None, obj: Any, x: float, y: float, positive: bool) -> Any:
        return image_outputs(h.click(session, object_id(obj), x, y, positive))

    @guard
    def on_box(session: str | None, obj: Any, x0: float, y0: float, x1: float, y1: float) -> Any:
        return image_outputs(h.box(session, object_id(obj), x0, y0, x1, y1))

    @guard
    def on_choose(session: str | None, obj: Any, index: float) -> Any:
        return image_outputs(h.choose_candidate(session, object_id(obj), int(index)))

    @guard
    def on_gallery(session: str | None, obj: Any, evt: gr.SelectData) -> Any:
        if was_deselected(evt):  # unpicking a thumbnail keeps the mask shown
            return image_outputs(h.show(session))
        return image_outputs(h.choose_candidate(session, object_id(obj), picked_index(evt)))

    a = api
    a["trigger"].click(
        on_click, [sid, a["obj"], a["x0"], a["y0"], a["positive"]], outs, api_name="image_click"
    )
    a["trigger"].click(
        on_box, [sid, a["obj"], a["x0"], a["y0"], a["x1"], a["y1"]], outs, api_name="image_box"
    )
    a["trigger"].click(on_choose, [sid, a["obj"], a["index"]], outs, api_name="image_choose")
    candidates.select(on_gallery, [sid, p["objects"]], outs, api_visibility="private")

    simple = presenting(image_outputs)

    wire_object_panel(p, h, simple, sid, outs, "image")
    p["undo"].click(
        simple(lambda s, o: h.undo(s, object_id(o))),
        [sid, p["objects"]],
        outs,
        api_name="image_undo",
    )
    p["clear"].click(
        simple(lambda s, o: h.clear_object(s, object_id(o))),
        [sid, p["objects"]],
        outs,
        api_name="image_clear_object",
    )
    everything.click(
        simple(lambda s, n: h.segment_everything(s, int(n))),
        [sid, pps],
        outs,
        api_name="image_segment_everything",
    )
    wire_export(export, h, sid, files, "image")

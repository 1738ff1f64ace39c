"""The video tab of the Gradio app (see :mod:`sam2ui.app.ui`).

The browser works on the annotation canvas (:mod:`~sam2ui.app.canvas_host`) with its
timeline, playback and propagation; the named API endpoints (``/video_upload``,
``/video_click``, ...) keep their inputs and outputs on hidden components.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from .canvas_host import CANVAS_EVENT, canvas_component, canvas_guard, to_value, wire_canvas
from .compat import event_data
from .context import AppContext
from .parts import (
    DISPLAY_FORMAT,
    PROGRESS,
    RAW_INPUTS,
    api_inputs,
    frame_index,
    guard,
    object_id,
    object_panel,
    owner_of,
    presenting,
    wire_export,
    wire_object_panel,
)
from .video_canvas import VideoCanvasHandlers, video_action
from .video_handlers import DIRECTIONS, VideoView
from .views import choices, legend_html


def video_outputs(view: VideoView) -> tuple[Any, ...]:
    """(frame, slider, object radio, legend, status) for an API client."""
    return (
        view.frame,
        gr.Slider(minimum=0, maximum=max(view.num_frames - 1, 1), value=view.frame_idx, step=1),
        gr.Radio(choices=choices(view.objects), value=view.selected),
        legend_html(view.objects, view.selected),
        view.message,
    )


def shown(view: VideoView) -> str:
    """The canvas update of a view, as the canvas's value."""
    return to_value(view.canvas or {})


def video_tab(ctx: AppContext) -> None:
    h = VideoCanvasHandlers(ctx)
    cfg = ctx.config
    sid = gr.State(None, delete_callback=ctx.close_session)
    limits = f"up to {cfg.max_video_mb:g} MB and {cfg.max_video_seconds:g} s"
    canvas = canvas_component("video", f"Drop a video ({limits}) on the canvas, or click it.")
    with gr.Row():
        export = gr.Button("Prepare downloads", elem_id="video-export", scale=0)
        files = gr.File(label="Downloads", file_count="multiple", interactive=False)
    with gr.Group(visible=False):  # what the API endpoints read and write
        video_in = gr.Video(label="video", sources=["upload"], include_audio=True)
        frame = gr.Image(type="numpy", format=DISPLAY_FORMAT, label="frame")
        slider = gr.Slider(0, 1, value=0, step=1, label="Frame")
        p = object_panel("video-api")
        direction = gr.Radio(list(DIRECTIONS), value="both", label="Propagate")
        propagate = gr.Button("Propagate")
        cancel = gr.Button("Cancel")
        status = gr.Markdown()
        result = gr.Video(label="Result (overlay)", interactive=False)
    api = api_inputs()
    outs = [frame, slider, p["objects"], p["legend"], status]

    # ------------------------------------------------------------------ the browser canvas
    wire_canvas(canvas, sid, h, video_action)

    @canvas_guard()
    def on_play(session: str | None, evt: gr.EventData) -> Iterator[Any]:
        for view in h.play(session, int(event_data(evt).get("frame", 0))):
            yield shown(view)

    canvas.s2_play(on_play, [sid], canvas, trigger_mode="multiple", **CANVAS_EVENT)

    @canvas_guard()
    def on_canvas_propagate(session: str | None, evt: gr.EventData) -> Iterator[Any]:
        how = str(event_data(evt).get("direction", "both"))
        for view in h.propagate(session, how, overlay=False):
            yield shown(view)

    canvas.s2_propagate(on_canvas_propagate, [sid], canvas, **CANVAS_EVENT)

    @canvas_guard()
    def on_stop(session: str | None, evt: gr.EventData) -> Any:
        if event_data(evt).get("type") == "pause":
            return shown(h.pause(session))
        return to_value({"note": True, "message": h.cancel(session)})

    canvas.s2_stop(
        on_stop,
        [sid],
        canvas,
        concurrency_limit=None,
        trigger_mode="multiple",
        **CANVAS_EVENT,
    )
    wire_export(export, h, sid, files, "video")

    # ------------------------------------------------------------------ the API
    @guard
    def on_upload(session: str | None, path: str | None, request: gr.Request) -> Any:
        new_id, view = h.upload(session, path, owner_of(request))
        return (new_id, *video_outputs(view), None)

    video_in.upload(on_upload, [sid, video_in], [sid, *outs, result], api_name="video_upload")

    @guard
    def on_click(session: str | None, idx: float, obj: Any, x: float, y: float, pos: bool) -> Any:
        return video_outputs(h.click(session, int(idx), object_id(obj), x, y, pos))

    @guard
    def on_box(
        session: str | None, idx: float, obj: Any, x0: float, y0: float, x1: float, y1: float
    ) -> Any:
        return video_outputs(h.box(session, int(idx), object_id(obj), x0, y0, x1, y1))

    a = api
    a["trigger"].click(
        on_click,
        [sid, a["frame"], a["obj"], a["x0"], a["y0"], a["positive"]],
        outs,
        api_name="video_click",
    )
    a["trigger"].click(
        on_box,
        [sid, a["frame"], a["obj"], a["x0"], a["y0"], a["x1"], a["y1"]],
        outs,
        api_name="video_box",
    )

    simple = presenting(video_outputs)

    slider.release(
        simple(lambda s, i: h.show_frame(s, frame_index(i))),
        [sid, slider],
        outs,
        api_name="video_frame",
        **RAW_INPUTS,
    )
    wire_object_panel(p, h, simple, sid, outs, "video")
    p["undo"].click(
        simple(lambda s, i, o: h.undo(s, frame_index(i), object_id(o))),
        [sid, slider, p["objects"]],
        outs,
        api_name="video_undo",
        **RAW_INPUTS,
    )
    a["trigger"].click(simple(h.redo), [sid], outs, api_name="video_redo")
    p["clear"].click(
        simple(lambda s, i, o: h.clear_frame(s, frame_index(i), object_id(o))),
        [sid, slider, p["objects"]],
        outs,
        api_name="video_clear_frame",
        **RAW_INPUTS,
    )

    @guard
    def on_propagate(
        session: str | None, how: str, progress: gr.Progress = PROGRESS
    ) -> Iterator[Any]:
        def report(done: int, total: int) -> None:
            progress((done, total), desc="Tracking", unit="frames")

        for view in h.propagate(session, how, report):
            video = str(view.video) if view.video is not None else gr.skip()
            yield (*video_outputs(view), video)

    propagate.click(
        on_propagate, [sid, direction], [*outs, result], api_name="video_propagate", **RAW_INPUTS
    )
    # Not a gradio `cancels=`: the handler stops between frames and keeps what it tracked.
    cancel.click(guard(h.cancel), [sid], status, api_name="video_cancel", concurrency_limit=None)

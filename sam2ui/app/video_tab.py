"""The video tab of the Gradio app (see :mod:`sam2ui.app.ui`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from .compat import click_xy
from .context import AppContext
from .parts import (
    DISPLAY_FORMAT,
    PROGRESS,
    api_inputs,
    guard,
    object_id,
    object_panel,
    owner_of,
    presenting,
    wire_export,
    wire_object_panel,
)
from .video_handlers import DIRECTIONS, VideoHandlers, VideoView
from .views import choices, legend_html


def video_outputs(view: VideoView) -> tuple[Any, ...]:
    """(frame, slider, object radio, legend, status) for a :class:`VideoView`."""
    return (
        view.frame,
        gr.Slider(minimum=0, maximum=max(view.num_frames - 1, 1), value=view.frame_idx, step=1),
        gr.Radio(choices=choices(view.objects), value=view.selected),
        legend_html(view.objects, view.selected),
        view.message,
    )


def video_tab(ctx: AppContext) -> None:
    h = VideoHandlers(ctx)
    cfg = ctx.config
    sid = gr.State(None, delete_callback=ctx.close_session)
    limits = f"up to {cfg.max_video_mb:g} MB and {cfg.max_video_seconds:g} s"
    with gr.Row():
        with gr.Column(scale=3):
            video_in = gr.Video(
                label=f"Upload a video ({limits})",
                sources=["upload"],
                include_audio=True,
                height=200,
                elem_id="video-upload",
            )
            frame = gr.Image(
                label="Frame: click to prompt",
                type="numpy",
                interactive=False,
                format=DISPLAY_FORMAT,
                elem_id="video-frame",
            )
            slider = gr.Slider(0, 1, value=0, step=1, label="Frame", elem_id="video-slider")
        with gr.Column(scale=2):
            p = object_panel("video")
            direction = gr.Radio(list(DIRECTIONS), value="both", label="Propagate")
            with gr.Row():
                propagate = gr.Button("Propagate", variant="primary", elem_id="video-propagate")
                cancel = gr.Button("Cancel", variant="stop", elem_id="video-cancel")
            status = gr.Markdown(elem_id="video-status")
            result = gr.Video(label="Result (overlay)", interactive=False, elem_id="video-result")
            export = gr.Button("Prepare downloads", elem_id="video-export")
            files = gr.File(label="Downloads", file_count="multiple", interactive=False)
    api = api_inputs()
    outs = [frame, slider, p["objects"], p["legend"], status]

    @guard
    def on_upload(session: str | None, path: str | None, request: gr.Request) -> Any:
        new_id, view = h.upload(session, path, owner_of(request))
        return (new_id, *video_outputs(view), None)

    video_in.upload(on_upload, [sid, video_in], [sid, *outs, result], api_name="video_upload")

    @guard
    def on_select(session: str | None, idx: float, obj: Any, mode: str, evt: gr.SelectData) -> Any:
        x, y = click_xy(evt)
        return video_outputs(h.point(session, int(idx), object_id(obj), x, y, mode))

    frame.select(on_select, [sid, slider, p["objects"], p["mode"]], outs, api_visibility="private")

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
        simple(lambda s, i: h.show_frame(s, int(i))), [sid, slider], outs, api_name="video_frame"
    )
    wire_object_panel(p, h, simple, sid, outs, "video")
    p["undo"].click(
        simple(lambda s, i, o: h.undo(s, int(i), object_id(o))),
        [sid, slider, p["objects"]],
        outs,
        api_name="video_undo",
    )
    p["clear"].click(
        simple(lambda s, i, o: h.clear_frame(s, int(i), object_id(o))),
        [sid, slider, p["objects"]],
        outs,
        api_name="video_clear_frame",
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

    propagate.click(on_propagate, [sid, direction], [*outs, result], api_name="video_propagate")
    # Not a gradio `cancels=`: the handler stops between frames and keeps what it tracked.
    cancel.click(guard(h.cancel), [sid], status, api_name="video_cancel", concurrency_limit=None)
    wire_export(export, h, sid, files, "video")

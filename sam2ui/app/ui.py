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

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from sam2ui.core import ModelCache, SessionManager

from .context import AppContext, UserError
from .image_handlers import ImageHandlers, ImageView
from .options import AppConfig
from .video_handlers import DIRECTIONS, VideoHandlers, VideoView
from .views import MODES, choices, legend_html
from .zerogpu import on_zero_gpu, prepare

__all__ = ["build_demo", "launch_options"]

log = logging.getLogger(__name__)

# JPEG keeps a 1080p overlay's encoding near 20 ms (PNG takes ~0.4 s); the downloads are exact.
DISPLAY_FORMAT = "jpeg"
# gradio finds a handler's progress tracker by this default value.
PROGRESS = gr.Progress()
INTRO = (
    "## sam2ui: Segment Anything 2\n"
    "Click on an object to segment it (pick *background* to remove a region, or *box* and "
    "click two corners). Add objects for more masks; download PNG masks, COCO-RLE JSON, a "
    "cut-out, or for videos an overlay MP4, DAVIS PNGs and SA-V JSON."
)


def _message(err: BaseException) -> str:
    if isinstance(err, (UserError, ValueError)):
        return str(err)
    if isinstance(err, RuntimeError):
        return f"The model could not do that: {err}"
    log.error("unexpected error in a handler", exc_info=err)
    return f"Something went wrong ({type(err).__name__}). The app is still usable: try again."


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with every exception turned into a ``gr.Error`` message (the session stays)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as err:
                raise gr.Error(_message(err)) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as err:
            raise gr.Error(_message(err)) from None

    return wrapper


def _owner(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def _obj(value: Any) -> int | None:
    """An object id from a Radio/Number value (``None``/0 mean "the selected object")."""
    if value in (None, ""):
        return None
    return int(value)


def image_outputs(view: ImageView) -> tuple[Any, ...]:
    """(canvas, object radio, legend, candidate gallery, status) for an :class:`ImageView`."""
    return (
        view.overlay,
        gr.Radio(choices=choices(view.objects), value=view.selected),
        legend_html(view.objects, view.selected),
        view.candidates,
        view.message,
    )


def video_outputs(view: VideoView) -> tuple[Any, ...]:
    """(frame, slider, object radio, legend, status) for a :class:`VideoView`."""
    return (
        view.frame,
        gr.Slider(minimum=0, maximum=max(view.num_frames - 1, 1), value=view.frame_idx, step=1),
        gr.Radio(choices=choices(view.objects), value=view.selected),
        legend_html(view.objects, view.selected),
        view.message,
    )


def _object_panel(prefix: str) -> dict[str, Any]:
    """Mode radio, object list, name box and the object buttons of one tab."""
    parts: dict[str, Any] = {}
    parts["mode"] = gr.Radio(list(MODES), value=MODES[0], label="A click adds")
    parts["objects"] = gr.Radio(
        choices=[], label="Objects (select to edit)", elem_id=f"{prefix}-objects"
    )
    parts["legend"] = gr.HTML(legend_html([], None), elem_id=f"{prefix}-legend")
    parts["name"] = gr.Textbox(label="Name", placeholder="name for a new or the selected object")
    with gr.Row():
        parts["add"] = gr.Button("Add object", size="sm", elem_id=f"{prefix}-add")
        parts["rename"] = gr.Button("Rename", size="sm")
        parts["remove"] = gr.Button("Remove", size="sm", variant="stop")
    with gr.Row():
        parts["undo"] = gr.Button("Undo last point", size="sm", elem_id=f"{prefix}-undo")
        parts["clear"] = gr.Button("Clear object", size="sm")
    return parts


def _api_inputs() -> dict[str, Any]:
    """Hidden inputs and a hidden trigger for the coordinate-based endpoints."""
    with gr.Group(visible=False):
        return {
            "trigger": gr.Button(visible=False),
            "obj": gr.Number(value=0, precision=0, visible=False, label="obj_id"),
            "frame": gr.Number(value=0, precision=0, visible=False, label="frame_idx"),
            "x0": gr.Number(value=0, visible=False, label="x"),
            "y0": gr.Number(value=0, visible=False, label="y"),
            "x1": gr.Number(value=0, visible=False, label="x1"),
            "y1": gr.Number(value=0, visible=False, label="y1"),
            "positive": gr.Checkbox(value=True, visible=False, label="positive"),
            "index": gr.Number(value=0, precision=0, visible=False, label="index"),
        }


def _image_tab(ctx: AppContext) -> None:
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
            p = _object_panel("image")
            candidates = gr.Gallery(
                label="Candidate masks: pick one", columns=3, height=180, allow_preview=False
            )
            with gr.Accordion("Segment everything", open=False):
                pps = gr.Slider(4, 64, value=32, step=1, label="points per side")
                everything = gr.Button("Segment everything", elem_id="image-everything")
            status = gr.Markdown(elem_id="image-status")
            export = gr.Button("Prepare downloads", elem_id="image-export")
            files = gr.File(label="Downloads", file_count="multiple", interactive=False)
    api = _api_inputs()
    outs = [canvas, p["objects"], p["legend"], candidates, status]

    @guard
    def on_upload(session: str | None, image: Any, request: gr.Request) -> tuple[Any, ...]:
        new_id, view = h.upload(session, image, _owner(request))
        return (new_id, *image_outputs(view))

    upload.upload(on_upload, [sid, upload], [sid, *outs], api_name="image_upload")

    @guard
    def on_select(session: str | None, obj: Any, mode: str, evt: gr.SelectData) -> Any:
        x, y = evt.index[:2]
        return image_outputs(h.point(session, _obj(obj), float(x), float(y), mode))

    canvas.select(on_select, [sid, p["objects"], p["mode"]], outs, api_visibility="private")

    @guard
    def on_click(session: str | None, obj: Any, x: float, y: float, positive: bool) -> Any:
        return image_outputs(h.click(session, _obj(obj), x, y, positive))

    @guard
    def on_box(session: str | None, obj: Any, x0: float, y0: float, x1: float, y1: float) -> Any:
        return image_outputs(h.box(session, _obj(obj), x0, y0, x1, y1))

    @guard
    def on_choose(session: str | None, obj: Any, index: float) -> Any:
        return image_outputs(h.choose_candidate(session, _obj(obj), int(index)))

    @guard
    def on_gallery(session: str | None, obj: Any, evt: gr.SelectData) -> Any:
        return image_outputs(h.choose_candidate(session, _obj(obj), int(evt.index)))

    a = api
    a["trigger"].click(
        on_click, [sid, a["obj"], a["x0"], a["y0"], a["positive"]], outs, api_name="image_click"
    )
    a["trigger"].click(
        on_box, [sid, a["obj"], a["x0"], a["y0"], a["x1"], a["y1"]], outs, api_name="image_box"
    )
    a["trigger"].click(on_choose, [sid, a["obj"], a["index"]], outs, api_name="image_choose")
    candidates.select(on_gallery, [sid, p["objects"]], outs, api_visibility="private")

    def simple(method: Callable[..., ImageView]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            return image_outputs(method(*args))

        return guard(run)

    p["objects"].input(
        simple(lambda s, o: h.select_object(s, _obj(o))),
        [sid, p["objects"]],
        outs,
        api_name="image_select_object",
    )
    p["add"].click(simple(h.add_object), [sid, p["name"]], outs, api_name="image_add_object")
    p["rename"].click(
        simple(lambda s, o, n: h.rename_object(s, _obj(o), n)),
        [sid, p["objects"], p["name"]],
        outs,
        api_name="image_rename_object",
    )
    p["remove"].click(
        simple(lambda s, o: h.remove_object(s, _obj(o))),
        [sid, p["objects"]],
        outs,
        api_name="image_remove_object",
    )
    p["undo"].click(
        simple(lambda s, o: h.undo(s, _obj(o))),
        [sid, p["objects"]],
        outs,
        api_name="image_undo",
    )
    p["clear"].click(
        simple(lambda s, o: h.clear_object(s, _obj(o))),
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
    export.click(
        guard(lambda s: [str(f) for f in h.export(s)]),
        [sid],
        files,
        api_name="image_export",
    )


def _video_tab(ctx: AppContext) -> None:
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
            p = _object_panel("video")
            direction = gr.Radio(list(DIRECTIONS), value="both", label="Propagate")
            with gr.Row():
                propagate = gr.Button("Propagate", variant="primary", elem_id="video-propagate")
                cancel = gr.Button("Cancel", variant="stop", elem_id="video-cancel")
            status = gr.Markdown(elem_id="video-status")
            result = gr.Video(label="Result (overlay)", interactive=False, elem_id="video-result")
            export = gr.Button("Prepare downloads", elem_id="video-export")
            files = gr.File(label="Downloads", file_count="multiple", interactive=False)
    api = _api_inputs()
    outs = [frame, slider, p["objects"], p["legend"], status]

    @guard
    def on_upload(session: str | None, path: str | None, request: gr.Request) -> Any:
        new_id, view = h.upload(session, path, _owner(request))
        return (new_id, *video_outputs(view), None)

    video_in.upload(on_upload, [sid, video_in], [sid, *outs, result], api_name="video_upload")

    @guard
    def on_select(session: str | None, idx: float, obj: Any, mode: str, evt: gr.SelectData) -> Any:
        x, y = evt.index[:2]
        return video_outputs(h.point(session, int(idx), _obj(obj), float(x), float(y), mode))

    frame.select(on_select, [sid, slider, p["objects"], p["mode"]], outs, api_visibility="private")

    @guard
    def on_click(session: str | None, idx: float, obj: Any, x: float, y: float, pos: bool) -> Any:
        return video_outputs(h.click(session, int(idx), _obj(obj), x, y, pos))

    @guard
    def on_box(
        session: str | None, idx: float, obj: Any, x0: float, y0: float, x1: float, y1: float
    ) -> Any:
        return video_outputs(h.box(session, int(idx), _obj(obj), x0, y0, x1, y1))

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

    def simple(method: Callable[..., VideoView]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            return video_outputs(method(*args))

        return guard(run)

    slider.release(
        simple(lambda s, i: h.show_frame(s, int(i))), [sid, slider], outs, api_name="video_frame"
    )
    p["objects"].input(
        simple(lambda s, o: h.select_object(s, _obj(o))),
        [sid, p["objects"]],
        outs,
        api_name="video_select_object",
    )
    p["add"].click(simple(h.add_object), [sid, p["name"]], outs, api_name="video_add_object")
    p["rename"].click(
        simple(lambda s, o, n: h.rename_object(s, _obj(o), n)),
        [sid, p["objects"], p["name"]],
        outs,
        api_name="video_rename_object",
    )
    p["remove"].click(
        simple(lambda s, o: h.remove_object(s, _obj(o))),
        [sid, p["objects"]],
        outs,
        api_name="video_remove_object",
    )
    p["undo"].click(
        simple(lambda s, i, o: h.undo(s, int(i), _obj(o))),
        [sid, slider, p["objects"]],
        outs,
        api_name="video_undo",
    )
    p["clear"].click(
        simple(lambda s, i, o: h.clear_frame(s, int(i), _obj(o))),
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
    export.click(
        guard(lambda s: [str(f) for f in h.export(s)]),
        [sid],
        files,
        api_name="video_export",
    )


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
    with gr.Blocks(title="sam2ui", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(
            f"⚠️ {ctx.model_error}" if ctx.model_error else "",
            visible=ctx.model_error is not None,
            elem_id="model-error",
        )
        with gr.Tab("Image", id="image"):
            _image_tab(ctx)
        with gr.Tab("Video", id="video"):
            _video_tab(ctx)

        def on_unload(request: gr.Request) -> None:
            ctx.close_owner(_owner(request))

        demo.unload(on_unload)
    demo.queue(default_concurrency_limit=max(4, 2 * config.model_workers))
    demo.sam2ui_context = ctx  # for tests and the launcher
    return demo


def launch_options(config: AppConfig) -> dict[str, Any]:
    """``Blocks.launch`` keyword arguments for ``config`` (server, share, upload limit)."""
    return {
        "server_name": config.host,
        "server_port": config.port or None,
        "share": config.share,
        # A little above the video limit, so oversize files reach the handler's clear message.
        "max_file_size": f"{int(config.max_video_mb * 2) + 16}mb",
        "show_error": True,
    }

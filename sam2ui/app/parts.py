"""What both tabs of the Gradio app use: error handling, the object panel, the hidden inputs
of the coordinate-based API endpoints, and small conversions."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from .errors import UserError, error_message
from .views import legend_html

# JPEG keeps a 1080p overlay's encoding near 20 ms (PNG takes ~0.4 s); the downloads are exact.
DISPLAY_FORMAT = "jpeg"
# gradio finds a handler's progress tracker by this default value.
PROGRESS = gr.Progress()


def guarded(wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """Mark ``wrapper`` as one that turns every exception into our own message (the app's
    tests check that every event handler is marked)."""
    wrapper.sam2ui_guarded = True  # type: ignore[attr-defined]
    return wrapper


def _gr_error(err: Exception, where: str) -> gr.Error:
    if isinstance(err, gr.Error):  # a message of ours already; keep it free of paths too
        return gr.Error(error_message(UserError(err.message)), print_exception=False)
    return gr.Error(error_message(err, where), print_exception=False)


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with every exception turned into a ``gr.Error`` message (the session stays):
    see :mod:`sam2ui.app.errors` for what the browser is told."""
    where = getattr(fn, "__qualname__", "a handler")
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:
                raise _gr_error(err, where) from None

        return guarded(gen_wrapper)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise _gr_error(err, where) from None

    return guarded(wrapper)


def presenting(to_outputs: Callable[[Any], tuple[Any, ...]]) -> Callable[..., Any]:
    """A decorator for handlers that return a view: the guarded handler returns
    ``to_outputs(view)``, the tab's output components."""

    def simple(method: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            return to_outputs(method(*args))

        return guard(run)

    return simple


def wire_export(button: Any, handlers: Any, session: Any, files: Any, prefix: str) -> None:
    """``button`` prepares the session's downloads into ``files`` (``{prefix}_export``)."""
    button.click(
        guard(lambda s: [str(f) for f in handlers.export(s)]),
        [session],
        files,
        api_name=f"{prefix}_export",
    )


def owner_of(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


# Events that take the object list (or another radio) as input set this: gradio's own check of
# a radio's value against its choices answers an API client in gradio's words, naming Python
# types, so the raw value reaches the handler, which checks it (:func:`object_id`) and says
# what is wrong in the app's words ("There is no object 7").
RAW_INPUTS: dict[str, Any] = {"preprocess": False}


def whole_number(value: Any, what: str) -> int:
    """``value`` (a number or its text, from an input) as an int; a :class:`UserError` naming
    ``what`` when it is not a whole number."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = float("nan")
    if isinstance(value, bool) or not number.is_integer():
        raise UserError(f"{value!r} is not {what}: give a whole number.")
    return int(number)


def object_id(value: Any) -> int | None:
    """An object id from a Radio/Number value (``None``/0 mean "the selected object")."""
    if value in (None, ""):
        return None
    return whole_number(value, "an object id")


def frame_index(value: Any) -> int:
    """A frame index from a Slider/Number value."""
    return whole_number(value, "a frame index")


def _text(value: Any) -> str:
    """A Textbox's raw value (an API client may send a number) as text."""
    return "" if value is None else str(value)


def object_panel(prefix: str) -> dict[str, Any]:
    """Object list, legend, name box and the object buttons of one tab (the API's inputs)."""
    parts: dict[str, Any] = {}
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


def wire_object_panel(
    parts: dict[str, Any],
    handlers: Any,
    simple: Callable[[Callable[..., Any]], Callable[..., Any]],
    session: Any,
    outputs: list[Any],
    prefix: str,
) -> None:
    """Connect the select, add, rename and remove controls of :func:`object_panel` to the
    same-named methods of a tab's handlers (``{prefix}_select_object`` etc. in the API);
    ``simple`` turns a handler's view into the tab's outputs."""
    h, objects = handlers, parts["objects"]
    objects.input(
        simple(lambda s, o: h.select_object(s, object_id(o))),
        [session, objects],
        outputs,
        api_name=f"{prefix}_select_object",
        **RAW_INPUTS,
    )
    parts["add"].click(
        simple(h.add_object), [session, parts["name"]], outputs, api_name=f"{prefix}_add_object"
    )
    parts["rename"].click(
        simple(lambda s, o, n: h.rename_object(s, object_id(o), _text(n))),
        [session, objects, parts["name"]],
        outputs,
        api_name=f"{prefix}_rename_object",
        **RAW_INPUTS,
    )
    parts["remove"].click(
        simple(lambda s, o: h.remove_object(s, object_id(o))),
        [session, objects],
        outputs,
        api_name=f"{prefix}_remove_object",
        **RAW_INPUTS,
    )


def api_inputs() -> dict[str, Any]:
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

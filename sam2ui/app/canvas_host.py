"""The annotation canvas inside the Gradio app.

The canvas is the engine's one ES module (:func:`sam2ui.core.canvas_js`), hosted by a
``gradio.HTML`` whose ``js_on_load`` imports it; no custom component and no build step, so
``pip install sam2ui[app]`` is the whole install. Python sends the canvas its updates
(:class:`sam2ui.core.CanvasFeed`) as the component's value, a JSON string; the canvas sends
actions back as events of that component, grouped so that each group gets the scheduling it
needs:

* ``s2_act``: quick actions (a click, a box, undo, select, seek, ...), one at a time per tab;
* ``s2_load``: a dropped or chosen file (uploaded by gradio's ``upload`` first);
* ``s2_play`` and ``s2_propagate``: long-running generators of updates;
* ``s2_stop``: pause and cancel, never queued behind anything.

None of them shows gradio's loading overlay (:data:`CANVAS_EVENT`).

Every handler answers with an update; a failure becomes an update carrying the message, shown
in the canvas's status line (the app stays up and nothing the user did is lost).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr

from sam2ui.core import canvas_css, canvas_js

from .compat import event_data
from .errors import UserError, error_message
from .parts import guarded, object_id, owner_of

__all__ = [
    "CANVAS_EVENT",
    "ROUTES",
    "canvas_component",
    "canvas_guard",
    "reply",
    "shared_action",
    "to_value",
    "upload_path",
    "wire_canvas",
]

ROUTES = {
    "load": "s2_load",
    "play": "s2_play",
    "propagate": "s2_propagate",
    "pause": "s2_stop",
    "cancel": "s2_stop",
}
DEFAULT_ROUTE = "s2_act"
# How every canvas event is registered: not part of the public API, and without gradio's
# loading overlay (it would cover and dim the canvas on every click; the canvas shows its own
# busy state and progress).
CANVAS_EVENT: dict[str, Any] = {"api_visibility": "private", "show_progress": "hidden"}
_errors = itertools.count(1)

_LOADER = """
const events = %(events)s;
const source = %(source)s;
const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
import(url)
  .then((m) => {
    URL.revokeObjectURL(url);
    if (!document.getElementById("sam2ui-canvas-css")) {
      const style = document.createElement("style");
      style.id = "sam2ui-canvas-css";
      style.textContent = %(css)s;
      document.head.append(style);
    }
    const send = (type, data) => trigger(%(routes)s[type] || %(default)s, { type, ...data });
    m.mountGradio(element, { trigger: send, props, watch, upload }, %(options)s);
  })
  .catch((err) => { element.textContent = "The canvas could not start: " + err; });
void events;
"""


def canvas_component(kind: str, greeting: str = "") -> gr.HTML:
    """The ``gradio.HTML`` holding the canvas of the ``kind`` ("image" or "video") tab; the
    canvas's own elements carry the ids ``<kind>-canvas``, ``<kind>-legend``, ... ."""
    events = sorted({*ROUTES.values(), DEFAULT_ROUTE})
    options = {"kind": kind, "prefix": kind, "greeting": greeting}
    script = _LOADER % {
        "events": json.dumps(events),
        "source": json.dumps(canvas_js()),
        "css": json.dumps(canvas_css()),
        "routes": json.dumps(ROUTES),
        "default": json.dumps(DEFAULT_ROUTE),
        "options": json.dumps(options),
    }
    return gr.HTML(
        value="",
        html_template='<div class="sam2ui-canvas-root"></div>',
        js_on_load=script,
        apply_default_css=False,
        elem_id=f"{kind}-annotator",
    )


def upload_path(handle: Any) -> Path:
    """The server path of a file the canvas uploaded: only a regular file inside gradio's
    upload folder is accepted (a client cannot name any other file of the server)."""
    if not isinstance(handle, str) or not handle:
        raise UserError("Choose a file first.")
    folder = Path(os.environ.get("GRADIO_TEMP_DIR") or gr.utils.get_upload_folder()).resolve()
    path = Path(handle).resolve()
    if not path.is_relative_to(folder) or not path.is_file():
        raise UserError("That file was not uploaded here; drop it on the canvas again.")
    return path


def to_value(update: dict[str, Any]) -> str:
    """An update as the canvas component's value."""
    return json.dumps(update, separators=(",", ":"))


def _failure(err: BaseException, args: tuple[Any, ...], where: str) -> str:
    evt = next((a for a in args if isinstance(a, gr.EventData)), None)
    if isinstance(err, gr.Error):
        err = UserError(err.message)
    update = {"seq": -next(_errors), "error": True, "message": error_message(err, where)}
    return to_value({**update, "ticket": event_data(evt).get("ticket")})


def reply(update: dict[str, Any] | None, evt: gr.EventData | None) -> str:
    """The canvas value answering the event ``evt``: ``update`` with the event's ticket (the
    canvas sends its next quick action when the reply to the last one has come)."""
    return to_value({**(update or {}), "ticket": event_data(evt).get("ticket")})


def canvas_guard(extra: int = 0) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator: the handler (returning or yielding the canvas value, or a tuple of it and
    ``extra`` more outputs) with every exception turned into an error update for the canvas,
    the other outputs left as they are."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        where = getattr(fn, "__qualname__", "a canvas handler")

        def failed(err: BaseException, args: tuple[Any, ...]) -> Any:
            value = _failure(err, args, where)
            return (value, *[gr.skip()] * extra) if extra else value

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
                try:
                    yield from fn(*args, **kwargs)
                except Exception as err:
                    yield failed(err, args)

            return guarded(gen_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as err:
                return failed(err, args)

        return guarded(wrapper)

    return decorate


def shared_action(h: Any, session: str | None, data: dict[str, Any]) -> Any:
    """A canvas action both tabs take alike (the legend's, undo, redo, sync) on handlers
    ``h`` of either tab; UserError for any other."""
    kind = data.get("type")
    obj = object_id(data.get("obj"))
    if kind == "select":
        return h.select_object(session, obj)
    if kind == "add":
        return h.add_object(session, data.get("name"))
    if kind == "remove":
        return h.remove_object(session, obj)
    if kind == "rename":
        return h.rename_object(session, obj, str(data.get("name", "")))
    if kind == "undo":
        return h.undo_last(session)
    if kind == "redo":
        return h.redo(session)
    if kind == "sync":
        return h.sync(session)
    raise UserError(f"Unknown action {kind!r}.")


def wire_canvas(
    canvas: gr.HTML,
    sid: gr.State,
    h: Any,
    action: Callable[[Any, str | None, dict[str, Any]], Any],
) -> None:
    """Connect a tab's canvas to its handlers ``h``: a dropped or chosen file opens a session
    shown on the canvas (``h.upload``), and each quick action goes to ``action``; both answer
    with the view's canvas update."""

    @canvas_guard(extra=1)
    def on_load(session: str | None, evt: gr.EventData, request: gr.Request) -> Any:
        path = upload_path(event_data(evt).get("file"))
        new_id, view = h.upload(session, path, owner_of(request), canvas=True)
        return to_value(view.canvas or {}), new_id

    canvas.s2_load(on_load, [sid], [canvas, sid], **CANVAS_EVENT)

    @canvas_guard()
    def on_act(session: str | None, evt: gr.EventData) -> Any:
        return reply(action(h, session, event_data(evt)).canvas, evt)

    canvas.s2_act(on_act, [sid], canvas, trigger_mode="multiple", **CANVAS_EVENT)

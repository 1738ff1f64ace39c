"""Serving the app: :func:`launch` builds it with :func:`~sam2ui.app.ui.build_demo` and starts
gradio's server.

This is the only module that imports the one that builds the app; the command line imports it
(after checking that gradio is installed) to start the app for the options it parsed.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from sam2ui.core import quick_thread_switches, sweep_stale

from .options import AppConfig
from .ui import build_demo

__all__ = ["exit_on_sigterm", "launch", "launch_options"]


def launch_options(config: AppConfig) -> dict[str, Any]:
    """``Blocks.launch`` keyword arguments for ``config`` (server, share, upload limit)."""
    return {
        "server_name": config.host,
        "server_port": config.port or None,
        "share": config.share,
        # A little above the video limit, so oversize files reach the handler's clear message.
        "max_file_size": f"{int(config.max_video_mb * 2) + 16}mb",
        # Gradio's own error text names handlers, server paths and errnos: the browser gets
        # only the handlers' messages (sam2ui.app.errors), which gradio always shows.
        "show_error": False,
    }


def exit_on_sigterm() -> bool:
    """Make SIGTERM (how hosts such as Spaces and containers stop a server) exit the way
    Ctrl-C does, so exit handlers run and sessions' folders (downloads, video memories moved
    to disk; see :mod:`sam2ui.core.scratch`) are deleted. Ctrl-C (SIGINT) raises
    KeyboardInterrupt, which gradio turns into a normal stop; where SIGINT was reset to the
    default action (which kills without cleaning up), it gets Python's handler back. Only
    from the main thread, and only for signals nobody else handles; returns whether the
    SIGTERM handler was installed."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGINT) is signal.SIG_DFL:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    return True


def launch(config: AppConfig, **launch_kwargs: Any) -> Any:
    """Build the app for ``config`` and serve it (blocks unless ``prevent_thread_lock=True``
    is passed, then returns the :class:`gradio.Blocks`)."""
    exit_on_sigterm()
    quick_thread_switches()  # a click's request changes threads often (see the function)
    sweep_stale()  # the folders of a server that was killed before it could clean up
    demo = build_demo(config)
    options = {**launch_options(config), **config.launch_kwargs, **launch_kwargs}
    demo.launch(**options)
    return demo

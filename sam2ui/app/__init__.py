"""The Gradio app: ``build_demo()`` returns the ``gr.Blocks``; only this package imports gradio.

``AppConfig`` and ``DEFAULT_MODEL`` come from :mod:`~sam2ui.app.options` (standard library
only); ``build_demo`` and ``launch`` import gradio, so they load on first use (PEP 562) and
``sam2ui.app.options`` stays importable where gradio is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .options import DEFAULT_MODEL, AppConfig

if TYPE_CHECKING:
    from .launcher import launch
    from .ui import build_demo

__all__ = ["DEFAULT_MODEL", "AppConfig", "build_demo", "launch"]


def __getattr__(name: str) -> Any:
    # Looked up on every use, not kept here: a test that replaces ``launcher.launch`` is
    # seen through ``sam2ui.app.launch`` too, and stops being seen when it is put back.
    if name == "build_demo":
        from .ui import build_demo

        return build_demo
    if name == "launch":
        from .launcher import launch

        return launch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The Gradio app: ``build_demo()`` returns the ``gr.Blocks``; only this package imports gradio."""

from .options import DEFAULT_MODEL, AppConfig, launch

__all__ = ["DEFAULT_MODEL", "AppConfig", "build_demo", "launch"]


def __getattr__(name: str) -> object:
    # build_demo imports gradio; resolving it lazily keeps `sam2ui.app.options` (the command
    # line's options) importable where gradio is not installed.
    if name == "build_demo":
        from .ui import build_demo

        return build_demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

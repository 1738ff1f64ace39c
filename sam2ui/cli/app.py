"""``sam2ui app`` (and ``sam2ui`` with no command): start the Gradio app.

Its options come from :mod:`sam2ui.app.options`, which imports only the standard library, so
the parser builds where gradio is not installed; gradio loads with
:mod:`sam2ui.app.launcher` when the app starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from .common import add_model_options, device_available, model_source

__all__ = ["APP_INSTALL_HINT", "add_app"]

APP_INSTALL_HINT = 'the app needs gradio: pip install "sam2ui[app]"'


def add_app(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``app`` subcommand's parser, with :func:`run_app` as its handler."""
    from sam2ui.app.options import add_app_arguments

    parser = subparsers.add_parser(
        "app",
        help="start the web app (the default when no command is given)",
        description=(
            "Start the Gradio app: click to segment images, track objects through videos, "
            "download masks. `sam2ui` with no command, or with only these options, does the "
            "same. It listens on 127.0.0.1 unless --host says otherwise."
        ),
        epilog=(
            "examples:\n"
            "  sam2ui\n"
            "  sam2ui --port 8000 --model sam2.1-hiera-large --device cuda\n"
            "  sam2ui app --checkpoint sam2.1_hiera_tiny.pt --host 0.0.0.0"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_options(parser)
    add_app_arguments(parser, model_options=False)
    parser.set_defaults(handler=run_app, command_parser=parser)


def run_app(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Check that gradio and the device are there, resolve the model, and launch."""
    if importlib.util.find_spec("gradio") is None:
        print(f"{parser.prog}: error: {APP_INSTALL_HINT}", file=sys.stderr)
        return 1
    from sam2ui.app.options import config_from_args

    if args.device != "auto" and not device_available(args.device):
        parser.error(f"device {args.device!r} is not available on this machine")
    args.model = model_source(args, parser)
    args.checkpoint = None  # resolved into args.model
    config = config_from_args(args)

    from sam2ui.app import launcher  # imports gradio and builds the app

    launcher.launch(config)
    return 0

"""The Hugging Face Space's entry point; locally `python spaces_app.py [options]`.

It starts the same app as the `sam2ui` command, with the same options and defaults
(sam2.1-hiera-tiny from the hub; on a Space, gradio's GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT variables say where to listen). On a ZeroGPU Space the model is loaded
before the server starts and every model call runs in a `spaces.GPU` worker, which gets the
session's state and hands it back changed (see sam2ui/app/zerogpu.py). ZeroGPU is Linux
only: elsewhere (macOS, Windows) `spaces` is not imported here and model calls run in the
app's process, even with SPACES_ZERO_GPU set.
"""

import importlib.util
import sys

from sam2ui.app.compat import zero_gpu_requested, zero_gpu_unsupported  # no torch, no gradio

if zero_gpu_requested() and zero_gpu_unsupported() is None and importlib.util.find_spec("spaces"):
    # First, as ZeroGPU asks: it patches torch before anything can touch CUDA.
    import spaces  # noqa: F401

from sam2ui.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))

"""The Hugging Face Space's entry point; locally `python spaces_app.py [options]`.

It starts the same app as the `sam2ui` command, with the same options and defaults
(sam2.1-hiera-tiny from the hub; on a Space, gradio's GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT variables say where to listen). On a ZeroGPU Space the model is loaded
before the server starts and every model call runs in a `spaces.GPU` worker, which gets the
session's state and hands it back changed (see sam2ui/app/zerogpu.py).
"""

import importlib.util
import os
import sys

if os.environ.get("SPACES_ZERO_GPU") and importlib.util.find_spec("spaces"):
    # First, as ZeroGPU asks: it patches torch before anything can touch CUDA.
    import spaces  # noqa: F401

from sam2ui.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))

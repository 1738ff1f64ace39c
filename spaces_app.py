"""The Hugging Face Space's entry point; locally `python spaces_app.py [options]`.

It starts the same app as the `sam2ui` command, with the same options and defaults
(sam2.1-hiera-tiny from the hub; on a Space, gradio's GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT variables say where to listen). On a ZeroGPU Space the model is loaded
before the server starts and the model work runs in `spaces.GPU` calls (see sam2ui/app/zerogpu.py).
"""

import sys

from sam2ui.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))

"""The one place where sam2ui meets the parts of its dependencies that changed between the
versions its ranges admit (see pyproject.toml).

Each module here wraps one dependency: the rest of sam2ui calls these wrappers instead of the
changed argument, attribute or private operator directly, so a new release that moves it again
is fixed here once. Nothing here imports another part of sam2ui: this is the engine's lowest
layer.
"""

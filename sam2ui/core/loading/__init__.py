"""Getting a model: checkpoints in Meta's and the transformers layout, the hub, building a
model from its config, and device and dtype names. Public names are re-exported by
:mod:`sam2ui.core`."""

"""Interactive annotation shared by every front end: the one prompt vocabulary, prompt files,
the object table, and the image and video annotators. Public names are re-exported by
:mod:`sam2ui.core`."""

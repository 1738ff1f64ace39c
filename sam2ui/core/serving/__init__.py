"""Serving many users from one process: the shared model cache (and the one lookup from a model
name, path or predictor to a predictor), the session manager, and the hand-off of session state
to a worker process. Public names are re-exported by :mod:`sam2ui.core`."""

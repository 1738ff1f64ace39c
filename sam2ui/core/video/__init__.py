"""Video: the tracking predictor, its typed session state, the bounded memory and result
store, prompt removal, live streams, and the frame sources in :mod:`~sam2ui.core.video.sources`.
Public names are re-exported by :mod:`sam2ui.core`."""

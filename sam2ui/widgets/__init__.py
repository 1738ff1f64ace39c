"""Notebook widgets: click-to-segment images and videos with the sam2ui engine.

``from sam2ui.widgets import ImageSegmenter, VideoSegmenter``. They need the ``notebook``
extra (ipywidgets 8 and anywidget); ``import sam2ui`` does not import this package. The
picture, the legend and the mouse input are the engine's annotation canvas, the web app's
canvas too: an anywidget ES module shipped as package data (``sam2ui.core.canvas_js()``), no
CDN and no build step, and it runs in JupyterLab 4, Notebook 7, VS Code and Colab.
"""

from .canvas import CanvasAction, CanvasBox, CanvasClick, PromptCanvas
from .image_segmenter import ImageSegmenter
from .video_segmenter import VideoSegmenter

__all__ = [
    "CanvasAction",
    "CanvasBox",
    "CanvasClick",
    "ImageSegmenter",
    "PromptCanvas",
    "VideoSegmenter",
]

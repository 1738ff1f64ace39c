"""transformers' SAM 2 API (``Sam2Model``, ``Sam2Processor``, ``Sam2VideoModel``, ...) on
sam2ui's engine: replace ``from transformers import ...`` with ``from sam2ui.hf import ...``.
See docs/transformers.md for the mapping, name by name."""

from .auto import AutoModel, AutoProcessor
from .config import (
    Sam2Config,
    Sam2HieraDetConfig,
    Sam2MaskDecoderConfig,
    Sam2PromptEncoderConfig,
    Sam2VideoConfig,
    Sam2VisionConfig,
)
from .modeling import Sam2Model, Sam2PreTrainedModel
from .outputs import BatchFeature, Sam2ImageSegmentationOutput, Sam2VideoSegmentationOutput
from .pipeline import MaskGenerationPipeline, pipeline
from .processing import Sam2ImageProcessor, Sam2Processor
from .video_model import Sam2VideoModel
from .video_processing import Sam2VideoProcessor, Sam2VideoVideoProcessor
from .video_session import Sam2VideoInferenceSession

__all__ = [
    "AutoModel",
    "AutoProcessor",
    "BatchFeature",
    "MaskGenerationPipeline",
    "Sam2Config",
    "Sam2HieraDetConfig",
    "Sam2ImageProcessor",
    "Sam2ImageSegmentationOutput",
    "Sam2MaskDecoderConfig",
    "Sam2Model",
    "Sam2PreTrainedModel",
    "Sam2Processor",
    "Sam2PromptEncoderConfig",
    "Sam2VideoConfig",
    "Sam2VideoInferenceSession",
    "Sam2VideoModel",
    "Sam2VideoProcessor",
    "Sam2VideoSegmentationOutput",
    "Sam2VideoVideoProcessor",
    "Sam2VisionConfig",
    "pipeline",
]

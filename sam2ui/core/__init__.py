"""The sam2ui engine: SAM 2 / SAM 2.1 in PyTorch, with no UI dependencies."""

from .annotation import AnnotatedObject, Candidate, Click, ImageAnnotator
from .automatic_mask_generator import SAM2AutomaticMaskGenerator
from .build import build_sam2
from .checkpoint import infer_variant, load_sam2, read_state_dict
from .config import VARIANTS, HieraConfig, SAM2Config, get_config, variant_names
from .hub import CheckpointUnavailableError, download_checkpoint
from .image_predictor import SAM2ImagePredictor
from .model_cache import ModelCache, default_model_cache
from .modeling import SAM2Model
from .modeling.common import set_onednn_linear
from .sessions import SessionManager, SessionNotFound
from .video_annotator import FramePrompts, PropagationStep, VideoAnnotator, VideoObject
from .video_predictor import SAM2VideoPredictor

__all__ = [
    "VARIANTS",
    "AnnotatedObject",
    "Candidate",
    "CheckpointUnavailableError",
    "Click",
    "FramePrompts",
    "HieraConfig",
    "ImageAnnotator",
    "ModelCache",
    "PropagationStep",
    "SAM2AutomaticMaskGenerator",
    "SAM2Config",
    "SAM2ImagePredictor",
    "SAM2Model",
    "SAM2VideoPredictor",
    "SessionManager",
    "SessionNotFound",
    "VideoAnnotator",
    "VideoObject",
    "build_sam2",
    "default_model_cache",
    "download_checkpoint",
    "get_config",
    "infer_variant",
    "load_sam2",
    "read_state_dict",
    "set_onednn_linear",
    "variant_names",
]

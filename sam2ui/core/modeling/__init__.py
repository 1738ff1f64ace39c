"""SAM 2 network modules; attribute names follow the official checkpoints."""

from .image_encoder import BackboneOutput
from .mask_decoder import DecoderOutput
from .sam2 import ImageFeatures, SAM2Model

__all__ = ["BackboneOutput", "DecoderOutput", "ImageFeatures", "SAM2Model"]

"""The sam2ui engine: SAM 2 / SAM 2.1 in PyTorch, with no UI dependencies.

This is the one door of the engine: the web app, the notebook widgets and the command line
import only the names listed here (``from sam2ui.core import ImageAnnotator``), never its
submodules. Names load on first use (PEP 562), so importing ``sam2ui.core`` for the prompt
types does not import torch; see ARCHITECTURE.md for what lives where.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sam2ui.core.compat.onednn import bound_kernel_caches

# As early as possible: oneDNN reads its cache sizes once, when it first runs.
bound_kernel_caches()

# Public name -> module that defines it.
_LAZY: dict[str, str] = {
    "VARIANTS": "sam2ui.core.modeling.config",
    "HieraConfig": "sam2ui.core.modeling.config",
    "SAM2Config": "sam2ui.core.modeling.config",
    "get_config": "sam2ui.core.modeling.config",
    "variant_names": "sam2ui.core.modeling.config",
    "SAM2Model": "sam2ui.core.modeling.sam2",
    "set_onednn_linear": "sam2ui.core.modeling.layers",
    "CompilerMissingError": "sam2ui.core.modeling.compiled",
    "compile_model": "sam2ui.core.modeling.compiled",
    "is_compiled": "sam2ui.core.modeling.compiled",
    "warm_up": "sam2ui.core.video.warm_up",
    "build_sam2": "sam2ui.core.loading.build",
    "build_sam2_hf": "sam2ui.core.loading.build",
    "config_from_hf": "sam2ui.core.loading.hf_layout",
    "infer_variant": "sam2ui.core.loading.checkpoint",
    "load_sam2": "sam2ui.core.loading.checkpoint",
    "read_state_dict": "sam2ui.core.loading.checkpoint",
    "CheckpointUnavailableError": "sam2ui.core.loading.hub",
    "download_checkpoint": "sam2ui.core.loading.hub",
    "resolve_device": "sam2ui.core.loading.devices",
    "resolve_dtype": "sam2ui.core.loading.devices",
    "SAM2ImagePredictor": "sam2ui.core.image.predictor",
    "DEFAULT_MAX_PIXELS": "sam2ui.core.image.load",
    "ImageReadError": "sam2ui.core.image.load",
    "ImageTooLargeError": "sam2ui.core.image.load",
    "load_image": "sam2ui.core.image.load",
    "SAM2AutomaticMaskGenerator": "sam2ui.core.image.mask_generator",
    "MaskGenerationCancelled": "sam2ui.core.image.mask_generator",
    "SAM2VideoPredictor": "sam2ui.core.video.predictor",
    "build_sam2_video_predictor": "sam2ui.core.video.builders",
    "build_sam2_video_predictor_hf": "sam2ui.core.video.builders",
    "VideoSession": "sam2ui.core.video.state",
    "UnknownObjectError": "sam2ui.core.video.state",
    "VideoStream": "sam2ui.core.video.stream",
    "FrameSource": "sam2ui.core.video.sources.base",
    "open_frames": "sam2ui.core.video.sources.open",
    "Box": "sam2ui.core.annotate.prompts",
    "Click": "sam2ui.core.annotate.prompts",
    "FramePrompts": "sam2ui.core.annotate.prompts",
    "MaskPrompt": "sam2ui.core.annotate.prompts",
    "ObjectPrompt": "sam2ui.core.annotate.prompts",
    "Prompt": "sam2ui.core.annotate.prompts",
    "PromptError": "sam2ui.core.annotate.prompt_file",
    "check_prompts_inside": "sam2ui.core.annotate.prompt_file",
    "load_prompt_file": "sam2ui.core.annotate.prompt_file",
    "masks_as_prompts": "sam2ui.core.annotate.prompt_file",
    "validate_prompts": "sam2ui.core.annotate.prompt_file",
    "AnnotatedObject": "sam2ui.core.annotate.image",
    "Candidate": "sam2ui.core.annotate.image",
    "ImageAnnotator": "sam2ui.core.annotate.image",
    "DIRECTIONS": "sam2ui.core.annotate.video",
    "Direction": "sam2ui.core.annotate.video",
    "PropagationStep": "sam2ui.core.annotate.video",
    "VideoAnnotator": "sam2ui.core.annotate.video",
    "VideoObject": "sam2ui.core.annotate.video",
    "CanvasFeed": "sam2ui.core.annotate.canvas",
    "canvas_css": "sam2ui.core.annotate.canvas",
    "canvas_js": "sam2ui.core.annotate.canvas",
    "mask_runs": "sam2ui.core.annotate.canvas",
    "Color": "sam2ui.core.render",
    "NEGATIVE_COLOR": "sam2ui.core.render",
    "POSITIVE_COLOR": "sam2ui.core.render",
    "davis_palette": "sam2ui.core.render",
    "draw_box": "sam2ui.core.render",
    "draw_click": "sam2ui.core.render",
    "marker_sizes": "sam2ui.core.render",
    "overlay_image": "sam2ui.core.render",
    "palette_color": "sam2ui.core.render",
    "tint": "sam2ui.core.render",
    "cutout_png": "sam2ui.core.exports",
    "iter_sav_json": "sam2ui.core.exports",
    "read_sav_json": "sam2ui.core.exports",
    "write_davis_png_zip": "sam2ui.core.exports",
    "write_overlay_mp4": "sam2ui.core.exports",
    "write_sav_json": "sam2ui.core.exports",
    "mask_to_coco_rle": "sam2ui.core.masks",
    "masks_to_rle": "sam2ui.core.masks",
    "rle_area": "sam2ui.core.masks",
    "rle_to_bbox": "sam2ui.core.masks",
    "rle_to_mask": "sam2ui.core.masks",
    "ModelCache": "sam2ui.core.serving.model_cache",
    "ModelKey": "sam2ui.core.serving.model_cache",
    "default_model_cache": "sam2ui.core.serving.model_cache",
    "image_predictor": "sam2ui.core.serving.model_cache",
    "video_predictor": "sam2ui.core.serving.model_cache",
    "Lane": "sam2ui.core.serving.lanes",
    "FreeCpus": "sam2ui.core.serving.threads",
    "SWITCH_INTERVAL_VARIABLE": "sam2ui.core.serving.threads",
    "THREADS_VARIABLE": "sam2ui.core.serving.threads",
    "configure_threads": "sam2ui.core.serving.threads",
    "quick_thread_switches": "sam2ui.core.serving.threads",
    "usable_cpus": "sam2ui.core.serving.threads",
    "ModelScheduler": "sam2ui.core.serving.lanes",
    "CancellableIterator": "sam2ui.core.serving.sessions",
    "SessionManager": "sam2ui.core.serving.sessions",
    "SessionNotFound": "sam2ui.core.serving.sessions",
    "ServerFull": "sam2ui.core.serving.sessions",
    "LimitReached": "sam2ui.core.annotate.objects",
    "image_from_array": "sam2ui.core.compat.pillow",
    "make_folder": "sam2ui.core.scratch",
    "sweep_stale": "sam2ui.core.scratch",
}
# Public submodules, reachable as attributes.
_MODULES: dict[str, str] = {
    "handoff": "sam2ui.core.serving.handoff",
    # One tracking step as pure functions, for sam2ui.hf's transformers-style sessions.
    "tracking": "sam2ui.core.modeling.tracking",
}

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DIRECTIONS",
    "NEGATIVE_COLOR",
    "POSITIVE_COLOR",
    "SWITCH_INTERVAL_VARIABLE",
    "THREADS_VARIABLE",
    "VARIANTS",
    "AnnotatedObject",
    "Box",
    "CancellableIterator",
    "Candidate",
    "CanvasFeed",
    "CheckpointUnavailableError",
    "Click",
    "Color",
    "CompilerMissingError",
    "Direction",
    "FramePrompts",
    "FrameSource",
    "FreeCpus",
    "HieraConfig",
    "ImageAnnotator",
    "ImageReadError",
    "ImageTooLargeError",
    "Lane",
    "LimitReached",
    "MaskGenerationCancelled",
    "MaskPrompt",
    "ModelCache",
    "ModelKey",
    "ModelScheduler",
    "ObjectPrompt",
    "Prompt",
    "PromptError",
    "PropagationStep",
    "SAM2AutomaticMaskGenerator",
    "SAM2Config",
    "SAM2ImagePredictor",
    "SAM2Model",
    "SAM2VideoPredictor",
    "ServerFull",
    "SessionManager",
    "SessionNotFound",
    "UnknownObjectError",
    "VideoAnnotator",
    "VideoObject",
    "VideoSession",
    "VideoStream",
    "build_sam2",
    "build_sam2_hf",
    "build_sam2_video_predictor",
    "build_sam2_video_predictor_hf",
    "canvas_css",
    "canvas_js",
    "check_prompts_inside",
    "compile_model",
    "config_from_hf",
    "configure_threads",
    "cutout_png",
    "davis_palette",
    "default_model_cache",
    "download_checkpoint",
    "draw_box",
    "draw_click",
    "get_config",
    "handoff",
    "image_from_array",
    "image_predictor",
    "infer_variant",
    "is_compiled",
    "iter_sav_json",
    "load_image",
    "load_prompt_file",
    "load_sam2",
    "make_folder",
    "marker_sizes",
    "mask_runs",
    "mask_to_coco_rle",
    "masks_as_prompts",
    "masks_to_rle",
    "open_frames",
    "overlay_image",
    "palette_color",
    "quick_thread_switches",
    "read_sav_json",
    "read_state_dict",
    "resolve_device",
    "resolve_dtype",
    "rle_area",
    "rle_to_bbox",
    "rle_to_mask",
    "set_onednn_linear",
    "sweep_stale",
    "tint",
    "tracking",
    "usable_cpus",
    "validate_prompts",
    "variant_names",
    "video_predictor",
    "warm_up",
    "write_davis_png_zip",
    "write_overlay_mp4",
    "write_sav_json",
]

if TYPE_CHECKING:
    from sam2ui.core.annotate.canvas import CanvasFeed, canvas_css, canvas_js, mask_runs
    from sam2ui.core.annotate.image import AnnotatedObject, Candidate, ImageAnnotator
    from sam2ui.core.annotate.objects import LimitReached
    from sam2ui.core.annotate.prompt_file import (
        PromptError,
        check_prompts_inside,
        load_prompt_file,
        masks_as_prompts,
        validate_prompts,
    )
    from sam2ui.core.annotate.prompts import (
        Box,
        Click,
        FramePrompts,
        MaskPrompt,
        ObjectPrompt,
        Prompt,
    )
    from sam2ui.core.annotate.video import (
        DIRECTIONS,
        Direction,
        PropagationStep,
        VideoAnnotator,
        VideoObject,
    )
    from sam2ui.core.compat.pillow import image_from_array
    from sam2ui.core.exports import (
        cutout_png,
        iter_sav_json,
        read_sav_json,
        write_davis_png_zip,
        write_overlay_mp4,
        write_sav_json,
    )
    from sam2ui.core.image.load import (
        DEFAULT_MAX_PIXELS,
        ImageReadError,
        ImageTooLargeError,
        load_image,
    )
    from sam2ui.core.image.mask_generator import (
        MaskGenerationCancelled,
        SAM2AutomaticMaskGenerator,
    )
    from sam2ui.core.image.predictor import SAM2ImagePredictor
    from sam2ui.core.loading.build import build_sam2, build_sam2_hf
    from sam2ui.core.loading.checkpoint import infer_variant, load_sam2, read_state_dict
    from sam2ui.core.loading.devices import resolve_device, resolve_dtype
    from sam2ui.core.loading.hf_layout import config_from_hf
    from sam2ui.core.loading.hub import CheckpointUnavailableError, download_checkpoint
    from sam2ui.core.masks import mask_to_coco_rle, masks_to_rle, rle_area, rle_to_bbox, rle_to_mask
    from sam2ui.core.modeling import tracking
    from sam2ui.core.modeling.compiled import CompilerMissingError, compile_model, is_compiled
    from sam2ui.core.modeling.config import (
        VARIANTS,
        HieraConfig,
        SAM2Config,
        get_config,
        variant_names,
    )
    from sam2ui.core.modeling.layers import set_onednn_linear
    from sam2ui.core.modeling.sam2 import SAM2Model
    from sam2ui.core.render import (
        NEGATIVE_COLOR,
        POSITIVE_COLOR,
        Color,
        davis_palette,
        draw_box,
        draw_click,
        marker_sizes,
        overlay_image,
        palette_color,
        tint,
    )
    from sam2ui.core.scratch import make_folder, sweep_stale
    from sam2ui.core.serving import handoff
    from sam2ui.core.serving.lanes import Lane, ModelScheduler
    from sam2ui.core.serving.model_cache import (
        ModelCache,
        ModelKey,
        default_model_cache,
        image_predictor,
        video_predictor,
    )
    from sam2ui.core.serving.sessions import (
        CancellableIterator,
        ServerFull,
        SessionManager,
        SessionNotFound,
    )
    from sam2ui.core.serving.threads import (
        SWITCH_INTERVAL_VARIABLE,
        THREADS_VARIABLE,
        FreeCpus,
        configure_threads,
        quick_thread_switches,
        usable_cpus,
    )
    from sam2ui.core.video.builders import (
        build_sam2_video_predictor,
        build_sam2_video_predictor_hf,
    )
    from sam2ui.core.video.predictor import SAM2VideoPredictor
    from sam2ui.core.video.sources.base import FrameSource
    from sam2ui.core.video.sources.open import open_frames
    from sam2ui.core.video.state import UnknownObjectError, VideoSession
    from sam2ui.core.video.stream import VideoStream
    from sam2ui.core.video.warm_up import warm_up


def __getattr__(name: str) -> Any:
    """Import a public name on first use, then keep it in the module's namespace."""
    if name in _MODULES:
        value: Any = importlib.import_module(_MODULES[name])
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_MODULES))

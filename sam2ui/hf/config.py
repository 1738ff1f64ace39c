"""transformers-style SAM 2 configs: attribute holders read from and written to ``config.json``.

They carry the fields transformers writes (defaults: sam2.1-hiera-tiny) so that code which reads
``model.config.vision_config.backbone_config.hidden_size`` keeps working, and
:func:`core_config` turns them into the engine's typed :class:`~sam2ui.core.SAM2Config`. Only
the eight official backbones exist in the engine; the input size may differ (any multiple of
32), which is what the tests use to stay fast.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from sam2ui.core import SAM2Config, config_from_hf, get_config

__all__ = [
    "Sam2Config",
    "Sam2HieraDetConfig",
    "Sam2MaskDecoderConfig",
    "Sam2PromptEncoderConfig",
    "Sam2VideoConfig",
    "Sam2VisionConfig",
    "config_for_variant",
    "core_config",
    "read_config_json",
]


def read_config_json(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``config.json`` of a local model folder as a dict, or None when there is none."""
    path = Path(folder).expanduser() / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


class _Config:
    """Fields with defaults, nested configs built from dicts, unknown keys kept as they are."""

    model_type: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    sub_configs: ClassVar[dict[str, type[_Config]]] = {}

    def __init__(self, **kwargs: Any) -> None:
        values = copy.deepcopy(self.defaults)
        values.update(kwargs)
        values.pop("model_type", None)
        for name, cls in self.sub_configs.items():
            value = values.get(name)
            if value is None:
                values[name] = cls()
            elif isinstance(value, dict):
                values[name] = cls(**value)
            elif not isinstance(value, cls):
                raise TypeError(
                    f"{name} must be a {cls.__name__} or a dict, got {type(value).__name__}"
                )
        for key, value in values.items():
            setattr(self, key, value)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not fields: fields are set as attributes.
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON-ready values, nested configs as dicts."""
        out: dict[str, Any] = {}
        for key, value in vars(self).items():
            out[key] = value.to_dict() if isinstance(value, _Config) else copy.deepcopy(value)
        out["model_type"] = self.model_type
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Config:
        return cls(**data)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], **kwargs: Any) -> Any:
        """Read ``config.json`` of a local folder; a hub id gives the defaults of its variant."""
        data = read_config_json(folder) if Path(folder).expanduser().is_dir() else None
        if data is None:
            return cls(**kwargs)
        return cls(**{**data, **kwargs})

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, _Config)
            and type(other) is type(self)
            and self.to_dict() == other.to_dict()
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__} {json.dumps(self.to_dict(), indent=2, default=str)}"


class Sam2HieraDetConfig(_Config):
    """The Hiera backbone (transformers' field names)."""

    model_type = "sam2_hiera_det_model"
    defaults: ClassVar[dict[str, Any]] = {
        "hidden_size": 96,
        "num_attention_heads": 1,
        "num_channels": 3,
        "image_size": [1024, 1024],
        "patch_kernel_size": [7, 7],
        "patch_stride": [4, 4],
        "patch_padding": [3, 3],
        "query_stride": [2, 2],
        "window_positional_embedding_background_size": [7, 7],
        "num_query_pool_stages": 3,
        "blocks_per_stage": [1, 2, 7, 2],
        "embed_dim_per_stage": [96, 192, 384, 768],
        "num_attention_heads_per_stage": [1, 2, 4, 8],
        "window_size_per_stage": [8, 4, 14, 7],
        "global_attention_blocks": [5, 7, 9],
        "mlp_ratio": 4.0,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
    }


class Sam2VisionConfig(_Config):
    """The image encoder: backbone and FPN neck."""

    model_type = "sam2_vision_model"
    sub_configs: ClassVar[dict[str, type[_Config]]] = {"backbone_config": Sam2HieraDetConfig}
    defaults: ClassVar[dict[str, Any]] = {
        "backbone_config": None,
        "backbone_channel_list": [768, 384, 192, 96],
        "backbone_feature_sizes": [[256, 256], [128, 128], [64, 64]],
        "fpn_hidden_size": 256,
        "fpn_kernel_size": 1,
        "fpn_stride": 1,
        "fpn_padding": 0,
        "fpn_top_down_levels": [2, 3],
        "num_feature_levels": 3,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
    }


class Sam2PromptEncoderConfig(_Config):
    model_type = "sam2_prompt_encoder"
    defaults: ClassVar[dict[str, Any]] = {
        "hidden_size": 256,
        "image_size": 1024,
        "patch_size": 16,
        "mask_input_channels": 16,
        "num_point_embeddings": 4,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-6,
        "scale": 1,
    }


class Sam2MaskDecoderConfig(_Config):
    model_type = "sam2_mask_decoder"
    defaults: ClassVar[dict[str, Any]] = {
        "hidden_size": 256,
        "hidden_act": "gelu",
        "mlp_dim": 2048,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "attention_downsample_rate": 2,
        "num_multimask_outputs": 3,
        "iou_head_depth": 3,
        "iou_head_hidden_dim": 256,
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
    }


_IMAGE_SUB_CONFIGS: dict[str, type[_Config]] = {
    "vision_config": Sam2VisionConfig,
    "prompt_encoder_config": Sam2PromptEncoderConfig,
    "mask_decoder_config": Sam2MaskDecoderConfig,
}


class Sam2Config(_Config):
    """An image model: ``Sam2Config(vision_config, prompt_encoder_config, mask_decoder_config)``,
    each a config object or a dict (missing ones take the sam2.1-hiera-tiny defaults)."""

    model_type = "sam2"
    sub_configs: ClassVar[dict[str, type[_Config]]] = _IMAGE_SUB_CONFIGS
    defaults: ClassVar[dict[str, Any]] = {
        "vision_config": None,
        "prompt_encoder_config": None,
        "mask_decoder_config": None,
        "initializer_range": 0.02,
    }

    def __init__(
        self,
        vision_config: Any = None,
        prompt_encoder_config: Any = None,
        mask_decoder_config: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            vision_config=vision_config,
            prompt_encoder_config=prompt_encoder_config,
            mask_decoder_config=mask_decoder_config,
            **kwargs,
        )


class Sam2VideoConfig(Sam2Config):
    """A video model: the image model's configs plus the memory settings (SAM 2.1 by default)."""

    model_type = "sam2_video"
    defaults: ClassVar[dict[str, Any]] = {
        **Sam2Config.defaults,
        "image_size": 1024,
        "num_maskmem": 7,
        "sigmoid_scale_for_mem_enc": 20.0,
        "sigmoid_bias_for_mem_enc": -10.0,
        "enable_occlusion_spatial_embedding": True,
        "multimask_output_in_sam": True,
        "multimask_min_pt_num": 0,
        "multimask_max_pt_num": 1,
        "multimask_output_for_tracking": True,
        "max_object_pointers_in_encoder": 16,
        "max_cond_frame_num": -1,
        "enable_temporal_pos_encoding_for_object_pointers": True,
        "memory_attention_hidden_size": 256,
        "memory_attention_num_layers": 4,
        "memory_attention_rope_feat_sizes": [64, 64],
        "memory_encoder_output_channels": 64,
    }


def core_config(config: Sam2Config, *, video: bool) -> SAM2Config:
    """The engine's config for a transformers-style one.

    The backbone must be one of the official ones (``ValueError`` otherwise); an image-only
    config says SAM 2 or 2.1 only through the model name it was saved from, if at all; the
    image path does not depend on it, and 2.1 is assumed. Video models binarise masks from
    clicks before encoding them into memory, as transformers does.
    """
    data = config.to_dict()
    is_video = data.get("model_type") == "sam2_video"
    try:
        cfg = config_from_hf(data)  # an image-only config may name its model (_name_or_path)
    except ValueError:
        if is_video:
            raise
        cfg = config_from_hf(data, version="2.1")  # the same error again, if it is another
    decoder = config.mask_decoder_config
    cfg = replace(
        cfg,
        dynamic_multimask_via_stability=bool(decoder.dynamic_multimask_via_stability),
        dynamic_multimask_stability_delta=float(decoder.dynamic_multimask_stability_delta),
        dynamic_multimask_stability_thresh=float(decoder.dynamic_multimask_stability_thresh),
    )
    if is_video:
        cfg = replace(
            cfg,
            sigmoid_scale_for_mem_enc=float(data["sigmoid_scale_for_mem_enc"]),
            sigmoid_bias_for_mem_enc=float(data["sigmoid_bias_for_mem_enc"]),
            multimask_output_in_sam=bool(data["multimask_output_in_sam"]),
            multimask_min_pt_num=int(data["multimask_min_pt_num"]),
            multimask_max_pt_num=int(data["multimask_max_pt_num"]),
            multimask_output_for_tracking=bool(data["multimask_output_for_tracking"]),
            max_obj_ptrs_in_encoder=int(data["max_object_pointers_in_encoder"]),
            max_cond_frames_in_attn=int(data["max_cond_frame_num"]),
        )
    if video:
        cfg = replace(cfg, binarize_mask_from_pts_for_mem_enc=True)
    return cfg


def config_for_variant(name: str, config_cls: type[Sam2Config] = Sam2Config) -> Sam2Config:
    """The transformers-style config of an official variant (name or hub id), as the hub's
    ``config.json`` of that model describes it."""
    cfg = get_config(name)
    trunk = cfg.trunk
    backbone = {
        "hidden_size": trunk.embed_dim,
        "blocks_per_stage": list(trunk.stages),
        "embed_dim_per_stage": list(trunk.stage_dims),
        "num_attention_heads_per_stage": [
            int(trunk.num_heads * trunk.head_mul**i) for i in range(len(trunk.stages))
        ],
        "window_size_per_stage": list(trunk.window_spec),
        "global_attention_blocks": list(trunk.global_att_blocks),
        "window_positional_embedding_background_size": list(
            trunk.window_pos_embed_bkg_spatial_size
        ),
    }
    vision = {
        "backbone_config": backbone,
        "backbone_channel_list": list(trunk.backbone_channel_list),
    }
    extra: dict[str, Any] = {}
    if config_cls is Sam2VideoConfig:
        is_21 = cfg.version == "2.1"
        extra = {
            "enable_occlusion_spatial_embedding": is_21,
            "enable_temporal_pos_encoding_for_object_pointers": is_21,
        }
    return config_cls(vision_config=vision, _name_or_path=cfg.hub_id, **extra)

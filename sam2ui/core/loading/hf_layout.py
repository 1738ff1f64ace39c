"""The transformers (Hugging Face) layout of SAM 2 weights, and its translation to Meta's keys.

The ``main`` branch of each ``facebook/sam2*-hiera-*`` hub repository holds a ``config.json``
and a ``model.safetensors`` written by transformers' ``Sam2VideoModel`` (``model_type``
``"sam2_video"``); transformers' image-only ``Sam2Model`` (``"sam2"``) uses a subset of those
keys. sam2ui's modules are named after Meta's checkpoints, so this module is the single place
where one layout is renamed into the other. Nothing else in sam2ui renames keys.

What differs between the layouts (all tensors keep their values and shapes, except where noted):

* module prefixes: ``image_encoder.trunk`` / ``image_encoder.neck`` become
  ``vision_encoder.backbone`` / ``vision_encoder.neck``; ``sam_prompt_encoder`` and
  ``sam_mask_decoder`` lose their ``sam_`` prefix;
* layer names: ``norm*`` -> ``layer_norm*``, attention ``out_proj`` -> ``o_proj``, Sequential
  indices become named layers (``mask_downscaling.0`` -> ``mask_embed.conv1``, ...), and 3-layer
  MLPs name their layers ``proj_in`` / ``layers.0`` / ``proj_out`` (2-layer ones
  ``proj_in`` / ``proj_out``);
* the four ``point_embeddings.{0..3}.weight`` tensors of shape (1, C) are one (4, C) tensor
  ``prompt_encoder.point_embed.weight`` in transformers (concatenated in index order);
* the random-Fourier matrix of the prompt encoder is stored twice in transformers
  (``prompt_encoder.shared_embedding`` and ``shared_image_embedding``); Meta stores it once,
  so the two copies must agree;
* nothing is transposed and the Hiera ``qkv`` projections stay fused in both layouts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import torch

from sam2ui.core.modeling.config import VARIANTS, SAM2Config

__all__ = [
    "AmbiguousVersionError",
    "config_from_hf",
    "hf_to_meta",
    "is_hf_layout",
    "meta_to_hf",
]

Tensor = torch.Tensor

# Keys handled outside the rename table because their tensors are split/fused or duplicated.
_META_PE = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_HF_PE_COPIES = (
    "prompt_encoder.shared_embedding.positional_embedding",
    "shared_image_embedding.positional_embedding",
)
_META_POINT_EMBED = "sam_prompt_encoder.point_embeddings.{}.weight"
_HF_POINT_EMBED = "prompt_encoder.point_embed.weight"
_NUM_POINT_EMBEDDINGS = 4  # positive, negative, box corner 1, box corner 2

# Top-level prefixes that only occur in the transformers layout.
_HF_ONLY_PREFIXES = (
    "vision_encoder.",
    "prompt_encoder.",
    "mask_decoder.",
    "shared_image_embedding.",
)


def _mlp3(meta: str, hf: str) -> list[tuple[str, str]]:
    """Renames for a 3-layer MLP: transformers names the middle layer ``layers.0``."""
    return [
        (f"{meta}.layers.0.", f"{hf}.proj_in."),
        (f"{meta}.layers.1.", f"{hf}.layers.0."),
        (f"{meta}.layers.2.", f"{hf}.proj_out."),
    ]


def _mlp2(meta: str, hf: str) -> list[tuple[str, str]]:
    """Renames for a 2-layer MLP."""
    return [(f"{meta}.layers.0.", f"{hf}.proj_in."), (f"{meta}.layers.1.", f"{hf}.proj_out.")]


def _attention(meta: str, hf: str) -> list[tuple[str, str]]:
    pairs = [(f"{meta}.{p}.", f"{hf}.{p}.") for p in ("q_proj", "k_proj", "v_proj")]
    return [*pairs, (f"{meta}.out_proj.", f"{hf}.o_proj.")]


def _build_renames() -> list[tuple[str, str]]:
    """Every (Meta, transformers) key pattern pair.

    A pattern ending in ``.`` is a prefix (the parameter name after it is kept); otherwise it is
    a whole key. ``{i}`` stands for a layer index and is carried across unchanged.
    """
    t, dec, mem = "image_encoder.trunk", "sam_mask_decoder", "memory_encoder"
    r: list[tuple[str, str]] = [
        ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
        ("no_mem_embed", "no_memory_embedding"),
        ("no_mem_pos_enc", "no_memory_positional_encoding"),
        ("no_obj_ptr", "no_object_pointer"),
        ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
        ("mask_downsample.", "mask_downsample."),
        ("obj_ptr_tpos_proj.", "temporal_positional_encoding_projection_layer."),
        *_mlp3("obj_ptr_proj", "object_pointer_proj"),
        # image encoder
        (f"{t}.pos_embed", "vision_encoder.backbone.pos_embed"),
        (f"{t}.pos_embed_window", "vision_encoder.backbone.pos_embed_window"),
        (f"{t}.patch_embed.proj.", "vision_encoder.backbone.patch_embed.projection."),
        (f"{t}.blocks.{{i}}.norm1.", "vision_encoder.backbone.blocks.{i}.layer_norm1."),
        (f"{t}.blocks.{{i}}.norm2.", "vision_encoder.backbone.blocks.{i}.layer_norm2."),
        (f"{t}.blocks.{{i}}.attn.", "vision_encoder.backbone.blocks.{i}.attn."),
        (f"{t}.blocks.{{i}}.proj.", "vision_encoder.backbone.blocks.{i}.proj."),
        *_mlp2(f"{t}.blocks.{{i}}.mlp", "vision_encoder.backbone.blocks.{i}.mlp"),
        ("image_encoder.neck.convs.{i}.conv.", "vision_encoder.neck.convs.{i}."),
        # prompt encoder
        ("sam_prompt_encoder.not_a_point_embed.", "prompt_encoder.not_a_point_embed."),
        ("sam_prompt_encoder.no_mask_embed.", "prompt_encoder.no_mask_embed."),
    ]
    for index, name in (
        (0, "conv1"),
        (1, "layer_norm1"),
        (3, "conv2"),
        (4, "layer_norm2"),
        (6, "conv3"),
    ):
        r.append(
            (f"sam_prompt_encoder.mask_downscaling.{index}.", f"prompt_encoder.mask_embed.{name}.")
        )
    # mask decoder
    block, hf_block = f"{dec}.transformer.layers.{{i}}", "mask_decoder.transformer.layers.{i}"
    for attn in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token"):
        r += _attention(f"{block}.{attn}", f"{hf_block}.{attn}")
    r += [(f"{block}.norm{n}.", f"{hf_block}.layer_norm{n}.") for n in range(1, 5)]
    r += _mlp2(f"{block}.mlp", f"{hf_block}.mlp")
    r += _attention(
        f"{dec}.transformer.final_attn_token_to_image",
        "mask_decoder.transformer.final_attn_token_to_image",
    )
    r.append(
        (f"{dec}.transformer.norm_final_attn.", "mask_decoder.transformer.layer_norm_final_attn.")
    )
    for name in ("iou_token", "mask_tokens", "obj_score_token", "conv_s0", "conv_s1"):
        r.append((f"{dec}.{name}.", f"mask_decoder.{name}."))
    for index, name in ((0, "upscale_conv1"), (1, "upscale_layer_norm"), (3, "upscale_conv2")):
        r.append((f"{dec}.output_upscaling.{index}.", f"mask_decoder.{name}."))
    r += _mlp3(
        f"{dec}.output_hypernetworks_mlps.{{i}}", "mask_decoder.output_hypernetworks_mlps.{i}"
    )
    r += _mlp3(f"{dec}.iou_prediction_head", "mask_decoder.iou_prediction_head")
    r += _mlp3(f"{dec}.pred_obj_score_head", "mask_decoder.pred_obj_score_head")
    # memory attention
    layer = "memory_attention.layers.{i}"
    for attn in ("self_attn", "cross_attn_image"):
        r += _attention(f"{layer}.{attn}", f"{layer}.{attn}")
    r += [(f"{layer}.linear{n}.", f"{layer}.linear{n}.") for n in (1, 2)]
    r += [(f"{layer}.norm{n}.", f"{layer}.layer_norm{n}.") for n in (1, 2, 3)]
    r.append(("memory_attention.norm.", "memory_attention.layer_norm."))
    # memory encoder: Meta's mask downsampler is one Sequential of (conv, norm, act) triples
    # followed by a 1x1 conv; transformers groups each triple into a layer.
    for k in range(4):
        r.append(
            (f"{mem}.mask_downsampler.encoder.{3 * k}.", f"{mem}.mask_downsampler.layers.{k}.conv.")
        )
        r.append(
            (
                f"{mem}.mask_downsampler.encoder.{3 * k + 1}.",
                f"{mem}.mask_downsampler.layers.{k}.layer_norm.",
            )
        )
    r.append((f"{mem}.mask_downsampler.encoder.12.", f"{mem}.mask_downsampler.final_conv."))
    r.append((f"{mem}.pix_feat_proj.", f"{mem}.feature_projection."))
    fuser, hf_fuser = f"{mem}.fuser.layers.{{i}}", f"{mem}.memory_fuser.layers.{{i}}"
    r.append((f"{fuser}.gamma", f"{hf_fuser}.scale"))
    for meta_name, hf_name in (
        ("dwconv", "depthwise_conv"),
        ("norm", "layer_norm"),
        ("pwconv1", "pointwise_conv1"),
        ("pwconv2", "pointwise_conv2"),
    ):
        r.append((f"{fuser}.{meta_name}.", f"{hf_fuser}.{hf_name}."))
    r.append((f"{mem}.out_proj.", f"{mem}.projection."))
    return r


_RENAMES: list[tuple[str, str]] = _build_renames()


def _compile(pattern: str) -> re.Pattern[str]:
    body = re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)")
    # A prefix keeps whatever follows it; a whole-key pattern must match the entire key.
    return re.compile(body + ("(?P<rest>.+)$" if pattern.endswith(".") else "$"))


_META_TO_HF = [(_compile(meta), hf) for meta, hf in _RENAMES]
_HF_TO_META = [(_compile(hf), meta) for meta, hf in _RENAMES]


def _rename(key: str, table: list[tuple[re.Pattern[str], str]]) -> str:
    for pattern, template in table:
        match = pattern.match(key)
        if match:
            groups = match.groupdict()
            new = template.replace("{i}", groups["i"]) if groups.get("i") is not None else template
            return new + (groups.get("rest") or "")
    return key  # unknown keys pass through so strict loading can name them


def is_hf_layout(state_dict: Mapping[str, Any]) -> bool:
    """Whether ``state_dict`` uses transformers' key names rather than Meta's."""
    return any(key.startswith(_HF_ONLY_PREFIXES) for key in state_dict)


def hf_to_meta(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Translate a transformers ``Sam2VideoModel``/``Sam2Model`` state dict to Meta's keys.

    Keys the table does not know are kept unchanged (so a strict load reports them). Raises
    ``ValueError`` if the two stored copies of the prompt encoder's Fourier matrix differ, or if
    the fused point embedding does not have four rows.
    """
    out: dict[str, Tensor] = {}
    copies = [state_dict[k] for k in _HF_PE_COPIES if k in state_dict]
    if copies:
        a, b = copies[0], copies[-1]
        # Shape-only (meta-device) dicts carry no values to compare.
        if a.shape != b.shape or (not (a.is_meta or b.is_meta) and not torch.equal(a, b)):
            raise ValueError(
                f"{_HF_PE_COPIES[0]} and {_HF_PE_COPIES[1]} differ; SAM 2 uses one Fourier "
                "matrix for both, so this checkpoint cannot be expressed in Meta's layout"
            )
        out[_META_PE] = copies[0]
    for key, value in state_dict.items():
        if key in _HF_PE_COPIES:
            continue
        if key == _HF_POINT_EMBED:
            if value.dim() != 2 or value.shape[0] != _NUM_POINT_EMBEDDINGS:
                raise ValueError(
                    f"{key} has shape {tuple(value.shape)}; expected ({_NUM_POINT_EMBEDDINGS}, C)"
                )
            for row in range(_NUM_POINT_EMBEDDINGS):
                out[_META_POINT_EMBED.format(row)] = value[row : row + 1].clone()
            continue
        out[_rename(key, _HF_TO_META)] = value
    return out


def meta_to_hf(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`hf_to_meta`: Meta's keys to transformers' ``Sam2VideoModel`` keys."""
    out: dict[str, Tensor] = {}
    rows: dict[int, Tensor] = {}
    for key, value in state_dict.items():
        if key == _META_PE:
            for copy in _HF_PE_COPIES:
                out[copy] = value
            continue
        match = re.fullmatch(r"sam_prompt_encoder\.point_embeddings\.(\d+)\.weight", key)
        if match:
            rows[int(match.group(1))] = value
            continue
        out[_rename(key, _META_TO_HF)] = value
    if rows:
        if sorted(rows) != list(range(_NUM_POINT_EMBEDDINGS)):
            raise ValueError(f"expected point embeddings 0..3, found indices {sorted(rows)}")
        out[_HF_POINT_EMBED] = torch.cat([rows[i] for i in range(_NUM_POINT_EMBEDDINGS)], dim=0)
    return out


# ----------------------------------------------------------------------------- config.json


class AmbiguousVersionError(ValueError):
    """An image-only transformers config names a model size but not SAM 2 vs SAM 2.1."""


# transformers' defaults for the fields we read; config files written with only the values
# that differ from the defaults omit them.
_BACKBONE_DEFAULTS: dict[str, Any] = {
    "hidden_size": 96,
    "blocks_per_stage": [1, 2, 7, 2],
    "embed_dim_per_stage": [96, 192, 384, 768],
    "num_attention_heads_per_stage": [1, 2, 4, 8],
    "window_size_per_stage": [8, 4, 14, 7],
    "global_attention_blocks": [5, 7, 9],
    "window_positional_embedding_background_size": [7, 7],
}
# Top-level sam2_video fields whose official value is fixed for all eight variants.
_VIDEO_FIXED: dict[str, Any] = {
    "num_maskmem": 7,
    "memory_attention_num_layers": 4,
    "memory_attention_hidden_size": 256,
    "memory_encoder_output_channels": 64,
}
_KNOWN_MODEL_TYPES = ("sam2_video", "sam2")


def _trunk_signature(backbone: Mapping[str, Any]) -> tuple[Any, ...]:
    get = {k: backbone.get(k, v) for k, v in _BACKBONE_DEFAULTS.items()}
    return (
        int(get["hidden_size"]),
        tuple(get["blocks_per_stage"]),
        tuple(get["embed_dim_per_stage"]),
        tuple(get["num_attention_heads_per_stage"]),
        tuple(get["window_size_per_stage"]),
        tuple(get["global_attention_blocks"]),
        tuple(get["window_positional_embedding_background_size"]),
    )


def _official_signature(cfg: SAM2Config) -> tuple[Any, ...]:
    t = cfg.trunk
    heads = tuple(int(t.num_heads * t.head_mul**i) for i in range(len(t.stages)))
    return (
        t.embed_dim,
        t.stages,
        t.stage_dims,
        heads,
        t.window_spec,
        t.global_att_blocks,
        tuple(t.window_pos_embed_bkg_spatial_size),
    )


def _iter_sizes() -> Iterator[tuple[str, tuple[Any, ...]]]:
    for name, cfg in VARIANTS.items():
        if cfg.version == "2.1":
            yield name.split("-", 2)[2], _official_signature(cfg)


def _version_from_name(name_or_path: object) -> str | None:
    if isinstance(name_or_path, str):
        base = name_or_path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1].lower()
        if base.startswith("sam2.1"):
            return "2.1"
        if base.startswith(("sam2-", "sam2_")):
            return "2.0"
    return None


def _image_size(config_json: Mapping[str, Any]) -> int:
    """The model's square input side: ``image_size`` of a ``sam2_video`` config, that of the
    prompt encoder's config in an image-only one; 1024 (every official variant) when absent."""
    if config_json.get("model_type") == "sam2_video" and "image_size" in config_json:
        size = config_json["image_size"]
    else:
        size = (config_json.get("prompt_encoder_config") or {}).get("image_size", 1024)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % 32:
        raise ValueError(f"config sets image_size={size!r}; it must be a positive multiple of 32")
    return size


def config_from_hf(config_json: Mapping[str, Any], *, version: str | None = None) -> SAM2Config:
    """The official variant described by a transformers ``config.json`` (as a dict).

    The model size comes from the Hiera backbone settings, SAM 2 vs 2.1 from the
    ``enable_occlusion_spatial_embedding`` and ``enable_temporal_pos_encoding_for_object_pointers``
    flags of a ``sam2_video`` config. Image-only ``sam2`` configs do not record the version;
    pass ``version="2.0"`` or ``"2.1"`` (a ``_name_or_path`` naming the model also works),
    otherwise :class:`AmbiguousVersionError` is raised. Anything that is not one of the eight
    official variants raises ``ValueError`` saying which setting differs, except the input
    size: a config with another ``image_size`` (a multiple of 32) gives its variant at that
    size (the weights do not depend on it).
    """
    model_type = config_json.get("model_type")
    if model_type not in _KNOWN_MODEL_TYPES:
        raise ValueError(
            f"not a SAM 2 transformers config: model_type is {model_type!r}, "
            f"expected one of {', '.join(_KNOWN_MODEL_TYPES)}"
        )
    image_size = _image_size(config_json)
    vision = config_json.get("vision_config") or {}
    signature = _trunk_signature(vision.get("backbone_config") or {})
    size = next((s for s, sig in _iter_sizes() if sig == signature), None)
    if size is None:
        fields = ", ".join(_BACKBONE_DEFAULTS)
        raise ValueError(
            "the config's Hiera backbone matches none of the official SAM 2 sizes "
            f"(tiny, small, base-plus, large); compared ({fields}) = {signature}"
        )
    if model_type == "sam2_video":
        for key, expected in _VIDEO_FIXED.items():
            if config_json.get(key, expected) != expected:
                raise ValueError(
                    f"config sets {key}={config_json[key]!r}; every official SAM 2 variant "
                    f"uses {expected!r}"
                )
        occlusion = bool(config_json.get("enable_occlusion_spatial_embedding", True))
        tpos = bool(config_json.get("enable_temporal_pos_encoding_for_object_pointers", True))
        if occlusion != tpos:
            raise ValueError(
                "enable_occlusion_spatial_embedding and "
                "enable_temporal_pos_encoding_for_object_pointers must both be true (SAM 2.1) "
                f"or both false (SAM 2); got {occlusion} and {tpos}"
            )
        detected = "2.1" if occlusion else "2.0"
        if version is not None and version != detected:
            raise ValueError(f"config describes SAM {detected}, but version={version!r} was given")
        version = detected
    elif version is None:
        version = _version_from_name(config_json.get("_name_or_path"))
        if version is None:
            raise AmbiguousVersionError(
                f"this image-only transformers config (model_type 'sam2') describes a hiera-{size} "
                "model but not whether it is SAM 2 or SAM 2.1; pass the variant explicitly, "
                f"e.g. variant='sam2.1-hiera-{size}' or variant='sam2-hiera-{size}'"
            )
    if version not in ("2.0", "2.1"):
        raise ValueError(f"version must be '2.0' or '2.1', got {version!r}")
    prefix = "sam2.1" if version == "2.1" else "sam2"
    config = VARIANTS[f"{prefix}-hiera-{size}"]
    return config if image_size == config.image_size else replace(config, image_size=image_size)

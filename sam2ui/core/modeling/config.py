"""Typed configuration for the eight official SAM 2 / SAM 2.1 variants.

Every variant is the same architecture with a different Hiera trunk; SAM 2.1 adds four flags
about object pointers and the occlusion embedding. Variants are small overrides in one table
(:data:`VARIANTS`), not configuration files.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

__all__ = [
    "VARIANTS",
    "HieraConfig",
    "SAM2Config",
    "get_config",
    "variant_names",
]


@dataclass(frozen=True)
class HieraConfig:
    """The Hiera trunk of the image encoder."""

    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (1, 2, 7, 2)
    global_att_blocks: tuple[int, ...] = (5, 7, 9)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0

    @property
    def depth(self) -> int:
        return sum(self.stages)

    @property
    def stage_dims(self) -> tuple[int, ...]:
        """Channel width of each stage, finest first (e.g. 96, 192, 384, 768)."""
        return tuple(int(self.embed_dim * self.dim_mul**i) for i in range(len(self.stages)))

    @property
    def backbone_channel_list(self) -> tuple[int, ...]:
        """Channel widths as the FPN neck lists them, coarsest first."""
        return tuple(reversed(self.stage_dims))


@dataclass(frozen=True)
class SAM2Config:
    """Everything needed to build one SAM 2 model.

    Field names follow the reference's constructor arguments where one exists, so the official
    YAML files can be read against this class line by line.
    """

    name: str = "sam2.1-hiera-tiny"
    hub_id: str = "facebook/sam2.1-hiera-tiny"
    checkpoint_filename: str = "sam2.1_hiera_tiny.pt"
    trunk: HieraConfig = field(default_factory=HieraConfig)

    image_size: int = 1024
    d_model: int = 256  # width of the FPN neck, prompt encoder, decoder and memory attention
    mem_dim: int = 64  # width of the memory features
    backbone_stride: int = 16
    scalp: int = 1  # the coarsest FPN level is dropped
    fpn_top_down_levels: tuple[int, ...] = (2, 3)

    # memory
    num_maskmem: int = 7
    memory_attention_layers: int = 4
    memory_attention_ffn_dim: int = 2048
    rope_theta: float = 10000.0
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    directly_add_no_mem_embed: bool = True
    use_mask_input_as_output_without_sam: bool = True
    max_cond_frames_in_attn: int = -1
    non_overlap_masks_for_mem_enc: bool = False
    memory_temporal_stride_for_eval: int = 1
    # The reference's video builder turns this on (its "post-processing" defaults): masks made
    # from clicks are binarised before they are encoded into memory.
    binarize_mask_from_pts_for_mem_enc: bool = False

    # SAM heads
    use_high_res_features_in_sam: bool = True
    multimask_output_in_sam: bool = True
    iou_prediction_use_sigmoid: bool = True
    pred_obj_scores: bool = True
    pred_obj_scores_mlp: bool = True
    fixed_no_obj_ptr: bool = True
    soft_no_obj_ptr: bool = False
    use_multimask_token_for_obj_ptr: bool = True
    multimask_output_for_tracking: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    use_mlp_for_obj_ptr_proj: bool = True

    # dynamic multimask fallback: the reference's builders always turn it on
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98

    # object pointers in memory attention
    use_obj_ptrs_in_encoder: bool = True
    max_obj_ptrs_in_encoder: int = 16
    only_obj_ptrs_in_the_past_for_eval: bool = True

    # the four flags by which SAM 2.1 differs from SAM 2
    no_obj_embed_spatial: bool = True
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True

    @property
    def version(self) -> str:
        return "2.1" if self.name.startswith("sam2.1") else "2.0"

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-resolution mask logits (256 for 1024 inputs)."""
        return self.image_size // 4

    @property
    def embedding_size(self) -> int:
        """Side of the image embedding grid (64 for 1024 inputs)."""
        return self.image_size // self.backbone_stride


_TRUNKS: dict[str, HieraConfig] = {
    "tiny": HieraConfig(
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 7, 2),
        global_att_blocks=(5, 7, 9),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "small": HieraConfig(
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 11, 2),
        global_att_blocks=(7, 10, 13),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "base-plus": HieraConfig(
        embed_dim=112,
        num_heads=2,
        stages=(2, 3, 16, 3),
        global_att_blocks=(12, 16, 20),
        window_pos_embed_bkg_spatial_size=(14, 14),
    ),
    "large": HieraConfig(
        embed_dim=144,
        num_heads=2,
        stages=(2, 6, 36, 4),
        global_att_blocks=(23, 33, 43),
        window_spec=(8, 4, 16, 8),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
}

_SAM2_0_FLAGS = dict(
    no_obj_embed_spatial=False,
    add_tpos_enc_to_obj_ptrs=False,
    proj_tpos_enc_in_obj_ptrs=False,
    use_signed_tpos_enc_to_obj_ptrs=False,
)


def _make_variants() -> dict[str, SAM2Config]:
    table: dict[str, SAM2Config] = {}
    for size, trunk in _TRUNKS.items():
        file_size = size.replace("-", "_")
        for version in ("sam2", "sam2.1"):
            name = f"{version}-hiera-{size}"
            cfg = SAM2Config(
                name=name,
                hub_id=f"facebook/{name}",
                checkpoint_filename=f"{version}_hiera_{file_size}.pt",
                trunk=trunk,
            )
            if version == "sam2":
                cfg = replace(cfg, **_SAM2_0_FLAGS)  # type: ignore[arg-type]
            table[name] = cfg
    return table


VARIANTS: dict[str, SAM2Config] = _make_variants()

# Short names people type, and the names of the reference's config files.
_ALIASES: dict[str, str] = {}
for _name in VARIANTS:
    _version, _, _size = _name.split("-", 2)
    _short = {"tiny": "t", "small": "s", "base-plus": "b+", "large": "l"}[_size]
    _ALIASES[f"{_version}_hiera_{_short}"] = _name
    _ALIASES[f"{_version}_hiera_{_size.replace('-', '_')}"] = _name
    _ALIASES[f"facebook/{_name}"] = _name


def variant_names() -> list[str]:
    """The canonical names of the eight official variants."""
    return list(VARIANTS)


def _strip_config_folders(key: str) -> str:
    """``sam2.1_hiera_t`` from the reference's config paths (``configs/sam2.1/sam2.1_hiera_t``,
    ``sam2.1/sam2.1_hiera_t``); a version folder must match the file's version."""
    parts = key.split("/")
    if parts[0] == "configs" and len(parts) > 1:
        parts = parts[1:]
    if len(parts) == 2 and parts[0] in ("sam2", "sam2.1") and parts[1].startswith(parts[0] + "_"):
        parts = parts[1:]
    return "/".join(parts)


def get_config(name: str) -> SAM2Config:
    """Config of an official variant by name, hub id, or reference config name.

    Accepts ``"sam2.1-hiera-tiny"``, ``"facebook/sam2.1-hiera-tiny"``, ``"sam2.1_hiera_t"``,
    ``"sam2.1_hiera_t.yaml"`` or the reference's config paths (``"sam2.1/sam2.1_hiera_t.yaml"``,
    ``"configs/sam2/sam2_hiera_b+.yaml"``). Raises ``ValueError`` naming the known variants
    otherwise.
    """
    if not isinstance(name, str):
        raise TypeError(f"variant name must be a string, got {type(name).__name__}")
    key = name.strip()
    for suffix in (".yaml", ".pt"):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
    key = _strip_config_folders(key)
    canonical = key if key in VARIANTS else _ALIASES.get(key)
    if canonical is None:
        raise ValueError(f"unknown SAM 2 variant {name!r}; known variants: {', '.join(VARIANTS)}")
    return VARIANTS[canonical]

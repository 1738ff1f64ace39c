"""The SAM 2 model: image encoder, prompt encoder, mask decoder and the memory modules.

Attribute names match the official checkpoints' keys, so Meta's state dicts load without any
renaming. This class holds the weights and the per-image computations; video bookkeeping lives
in the video predictor.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .config import SAM2Config
from .hiera import Hiera
from .image_encoder import BackboneOutput, FpnNeck, ImageEncoder
from .layers import MLP, Linear, pointwise_conv
from .mask_decoder import DecoderOutput, MaskDecoder
from .memory import MemoryAttention, MemoryEncoder
from .prompt_encoder import PromptEncoder
from .transformer import ImageKeys, TwoWayTransformer
from .yielding import yield_point


class ImageFeatures(NamedTuple):
    """What the image predictor keeps per image.

    ``image_embed``: (B, C, S/16, S/16) with the "no memory" embedding added;
    ``high_res_feats``: [(B, C/8, S/4, S/4), (B, C/4, S/8, S/8)] already projected for the decoder.
    All float32.
    """

    image_embed: torch.Tensor
    high_res_feats: list[torch.Tensor]


def _conv1x1(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Apply ``conv`` in x's dtype (the cast of its small weights is a no-op in float32)."""
    bias = conv.bias.to(x.dtype) if conv.bias is not None else None
    return pointwise_conv(x, conv.weight.to(x.dtype), bias)


class SAM2Model(nn.Module):
    """SAM 2 / SAM 2.1. Build it with :func:`sam2ui.core.loading.build.build_sam2`."""

    def __init__(self, config: SAM2Config) -> None:
        super().__init__()
        self.config = config
        c = config
        d, mem = c.d_model, c.mem_dim
        self.image_encoder = ImageEncoder(
            Hiera(c.trunk),
            FpnNeck(d, c.trunk.backbone_channel_list, c.fpn_top_down_levels),
            scalp=c.scalp,
        )
        self.memory_attention = MemoryAttention(
            d, mem, c.memory_attention_layers, c.memory_attention_ffn_dim, c.rope_theta
        )
        self.memory_encoder = MemoryEncoder(d, mem)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(c.num_maskmem, 1, 1, mem))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, d))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, d))
        if c.use_obj_ptrs_in_encoder:
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        if c.pred_obj_scores and c.use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, d))
        if c.no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem))

        grid = c.embedding_size
        self.sam_prompt_encoder = PromptEncoder(d, (grid, grid), (c.image_size, c.image_size), 16)
        self.sam_mask_decoder = MaskDecoder(
            d,
            TwoWayTransformer(depth=2, embedding_dim=d, num_heads=8, mlp_dim=2048),
            use_high_res_features=c.use_high_res_features_in_sam,
            iou_prediction_use_sigmoid=c.iou_prediction_use_sigmoid,
            pred_obj_scores=c.pred_obj_scores,
            pred_obj_scores_mlp=c.pred_obj_scores_mlp,
            use_multimask_token_for_obj_ptr=c.use_multimask_token_for_obj_ptr,
            dynamic_multimask_via_stability=c.dynamic_multimask_via_stability,
            dynamic_multimask_stability_delta=c.dynamic_multimask_stability_delta,
            dynamic_multimask_stability_thresh=c.dynamic_multimask_stability_thresh,
        )
        self.obj_ptr_proj: nn.Module = nn.Identity()
        if c.use_obj_ptrs_in_encoder:
            self.obj_ptr_proj = MLP(d, d, d, 3) if c.use_mlp_for_obj_ptr_proj else Linear(d, d)
        self.obj_ptr_tpos_proj: nn.Module = (
            Linear(d, mem) if c.proj_tpos_enc_in_obj_ptrs else nn.Identity()
        )
        self._compute_dtype = torch.float32

    # ------------------------------------------------------------------ precision and device
    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype of the heavy parts (image encoder, memory attention and encoder)."""
        return self._compute_dtype

    def set_compute_dtype(self, dtype: torch.dtype) -> SAM2Model:
        """The one precision switch: float32 (exact) or bfloat16 (fast).

        bfloat16 casts the image encoder and the memory modules, where nearly all the arithmetic
        is; the prompt encoder, the mask decoder and all mask logits stay float32, so thresholds
        and small prompt-dependent computations keep full precision.
        """
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"unsupported dtype {dtype}; use torch.float32 or torch.bfloat16")
        for module in (self.image_encoder, self.memory_attention, self.memory_encoder):
            module.to(dtype)
        self._compute_dtype = dtype
        return self

    # ------------------------------------------------------------------ image path
    def forward_image(self, images: torch.Tensor) -> BackboneOutput:
        """(B, 3, S, S) normalised images -> backbone output, high-res levels projected for
        the decoder (conv_s0 / conv_s1), everything float32."""
        out = self.image_encoder(images.to(self._compute_dtype))
        yield_point()
        fpn = list(out.backbone_fpn)
        if self.config.use_high_res_features_in_sam:
            # The 1x1 projections run in the encoder's dtype, before the cast to float32: the
            # projected maps are 8x and 4x narrower than their inputs, so the cast is cheaper.
            fpn[0] = _conv1x1(self.sam_mask_decoder.conv_s0, fpn[0])
            fpn[1] = _conv1x1(self.sam_mask_decoder.conv_s1, fpn[1])
        fpn = [f.float() for f in fpn]
        return BackboneOutput(
            vision_features=fpn[-1], vision_pos_enc=out.vision_pos_enc, backbone_fpn=fpn
        )

    def image_features(self, images: torch.Tensor) -> ImageFeatures:
        """Features for prompting a still image (no memory): see :class:`ImageFeatures`."""
        out = self.forward_image(images)
        embed = out.backbone_fpn[-1]
        if self.config.directly_add_no_mem_embed:
            embed = embed + self.no_mem_embed.view(1, -1, 1, 1)
        # Channels-last, like the decoder's upsampled maps they are added to (see MaskDecoder).
        high_res = [f.contiguous(memory_format=torch.channels_last) for f in out.backbone_fpn[:-1]]
        return ImageFeatures(image_embed=embed, high_res_feats=high_res)

    def decode_masks(
        self,
        features: ImageFeatures,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
        image_keys: ImageKeys | None = None,
    ) -> DecoderOutput:
        """Prompt the decoder on one image's features (batch 1, shared by every prompt).

        points: ((B, N, 2) float coordinates in the S x S input frame, (B, N) int labels), box
        corners included as labels 2 and 3; mask_input: (B, 1, S/4, S/4) logits or None.
        ``image_keys`` (from :meth:`decoder_image_keys` on the same features) saves the
        prompt-independent part of the work; it is ignored when there is a mask prompt.
        """
        sparse, dense = self.sam_prompt_encoder(points, mask_input)
        return self.sam_mask_decoder(
            features.image_embed,
            self.sam_prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output=multimask_output,
            high_res_features=features.high_res_feats,
            image_keys=image_keys if mask_input is None else None,
        )

    def decoder_image_keys(self, features: ImageFeatures) -> ImageKeys:
        """Work of the mask decoder that depends on the image only (batch-1 features): compute
        it once per image and pass it to every :meth:`decode_masks` call without a mask."""
        _, no_mask_dense = self.sam_prompt_encoder(None, None)
        return self.sam_mask_decoder.image_keys(
            features.image_embed, self.sam_prompt_encoder.get_dense_pe(), no_mask_dense
        )

    def forward(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "SAM2Model has no single forward pass; use SAM2ImagePredictor or SAM2VideoPredictor"
        )

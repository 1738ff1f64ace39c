"""Mask decoder: output tokens + prompt tokens run through the two-way transformer; the mask
tokens become per-mask hypernetwork weights over an upsampled image embedding."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from sam2ui.core.compat import torch_ops

from .layers import MLP, LayerNorm2d, PointwiseConv2d, fast_cpu_kernels, linear
from .transformer import ImageKeys, TwoWayTransformer


class DecoderOutput(NamedTuple):
    """``masks``: (B, M, 4h, 4w) logits; ``iou_pred``: (B, M); ``sam_tokens``: (B, M or 1, C)
    mask tokens for the object pointer; ``object_score_logits``: (B, 1)."""

    masks: torch.Tensor
    iou_pred: torch.Tensor
    sam_tokens: torch.Tensor
    object_score_logits: torch.Tensor


class MaskDecoder(nn.Module):
    def __init__(
        self,
        transformer_dim: int,
        transformer: TwoWayTransformer,
        *,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = True,
        iou_prediction_use_sigmoid: bool = True,
        pred_obj_scores: bool = True,
        pred_obj_scores_mlp: bool = True,
        use_multimask_token_for_obj_ptr: bool = True,
        dynamic_multimask_via_stability: bool = True,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
    ) -> None:
        super().__init__()
        dim = transformer_dim
        self.transformer = transformer
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            # Applied once per image in SAM2Model.forward_image, not per prompt.
            self.conv_s0 = PointwiseConv2d(dim, dim // 8)
            self.conv_s1 = PointwiseConv2d(dim, dim // 4)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid,
        )  # fmt: skip
        if pred_obj_scores:
            self.pred_obj_score_head: nn.Module = (
                MLP(dim, dim, 1, 3) if pred_obj_scores_mlp else nn.Linear(dim, 1)
            )
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.stability_delta = dynamic_multimask_stability_delta
        self.stability_thresh = dynamic_multimask_stability_thresh

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        high_res_features: list[torch.Tensor] | None = None,
        image_keys: ImageKeys | None = None,
    ) -> DecoderOutput:
        """image_embeddings (B or 1, C, h, w), image_pe (1, C, h, w), sparse (B, N, C), dense
        (B, C, h, w), high_res_features [(B or 1, C/8, 4h, 4w), (B or 1, C/4, 2h, 2w)].

        An image batch of 1 is shared by every prompt in the batch. ``image_keys``, from
        :meth:`image_keys` for this image, skips prompt-independent work; it is only valid when
        the dense prompt is the "no mask" embedding.
        """
        masks, iou_pred, mask_tokens, obj_logits = self._predict(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
            high_res_features, image_keys,
        )  # fmt: skip
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._stable_single_mask(masks, iou_pred)
        else:
            masks, iou_pred = masks[:, :1], iou_pred[:, :1]
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens = mask_tokens[:, 1:]
        else:
            sam_tokens = mask_tokens[:, :1]
        return DecoderOutput(masks, iou_pred, sam_tokens, obj_logits)

    def _predict(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        high_res_features: list[torch.Tensor] | None,
        image_keys: ImageKeys | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out_tokens = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            out_tokens.insert(0, self.obj_score_token.weight)
        first = 1 if self.pred_obj_scores else 0  # index of the IoU token
        n = sparse.shape[0]
        tokens = torch.cat((torch.cat(out_tokens).unsqueeze(0).expand(n, -1, -1), sparse), dim=1)

        _, c, h, w = image_embeddings.shape
        b = n
        if image_keys is None:
            hs, src_tokens = self.transformer(image_embeddings + dense, image_pe, tokens)
        else:
            hs, src_tokens = self.transformer(image_keys, image_pe, tokens)
        iou_token_out = hs[:, first]
        mask_tokens_out = hs[:, first + 1 : first + 1 + self.num_mask_tokens]

        # A channels-last view of the tokens (no copy): the transposed convolutions below run
        # several times faster on channels-last input.
        src = src_tokens.view(b, h, w, c).permute(0, 3, 1, 2)
        if self.use_high_res_features and high_res_features is not None:
            deconv1, norm1, act1, deconv2, act2 = self.output_upscaling
            feat_s0, feat_s1 = high_res_features
            assert isinstance(act1, nn.GELU) and isinstance(act2, nn.GELU)
            in_place = not torch.is_grad_enabled() and feat_s0.shape[0] in (1, b)
            if not (in_place and feat_s0.dtype == feat_s1.dtype == src.dtype):
                up = act1(norm1(deconv1(src) + feat_s1))
                up = act2(deconv2(up) + feat_s0)
            else:
                # The same arithmetic in place: each step rewrites the fresh output of the
                # previous one while it is still in cache (about 0.5 ms of a click).
                gelu_ = torch_ops.gelu_
                up = gelu_(norm1(deconv1(src).add_(feat_s1)), approximate=act1.approximate)
                up = gelu_(deconv2(up).add_(feat_s0), approximate=act2.approximate)
        else:
            up = self.output_upscaling(src)

        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # (B, M, C/8)
        masks = self._hypernetwork_product(hyper_in, up)
        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            obj_logits = self.pred_obj_score_head(hs[:, 0])
        else:
            obj_logits = iou_pred.new_full((iou_pred.shape[0], 1), 10.0)
        return masks, iou_pred, mask_tokens_out, obj_logits

    @staticmethod
    def _hypernetwork_product(hyper_in: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """Mask logits (B, M, H, W): per-mask weights hyper_in (B, M, C) over the channels of
        the upscaled embedding ``up`` (B, C, H, W)."""
        b, c, h, w = up.shape
        if b == 1 and fast_cpu_kernels(up) and up.is_contiguous(memory_format=torch.channels_last):
            # Channels-last pixels are rows of C: one oneDNN product, no 8 MB copy of ``up``.
            pixels = up.permute(0, 2, 3, 1).reshape(h * w, c)
            return linear(pixels, hyper_in[0], None).t().reshape(1, -1, h, w)
        return (hyper_in @ up.reshape(b, c, h * w)).view(b, -1, h, w)

    def image_keys(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, no_mask_dense: torch.Tensor
    ) -> ImageKeys:
        """Prompt-independent decoder work for one image (1, C, h, w) without a mask prompt."""
        return self.transformer.image_keys(image_embeddings + no_mask_dense, image_pe)

    def stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """IoU between the masks thresholded at +delta and -delta: (B, M, H, W) -> (B, M)."""
        flat = mask_logits.flatten(-2)
        inner = (flat > self.stability_delta).sum(-1).float()
        outer = (flat > -self.stability_delta).sum(-1).float()
        return torch.where(outer > 0, inner / outer, 1.0)

    def _stable_single_mask(
        self, masks: torch.Tensor, iou_pred: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep the single-mask output where it is stable; else fall back to the best of the
        three multimask outputs by predicted IoU."""
        multi_masks, multi_iou = masks[:, 1:], iou_pred[:, 1:]
        best = multi_iou.argmax(dim=-1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        best_masks = multi_masks[rows, best].unsqueeze(1)
        best_iou = multi_iou[rows, best].unsqueeze(1)
        single_masks, single_iou = masks[:, :1], iou_pred[:, :1]
        stable = self.stability_scores(single_masks) >= self.stability_thresh  # (B, 1)
        out_masks = torch.where(stable[..., None, None], single_masks, best_masks)
        out_iou = torch.where(stable, single_iou, best_iou)
        return out_masks, out_iou

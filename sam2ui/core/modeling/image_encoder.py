"""Image encoder: Hiera trunk plus a feature-pyramid neck."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .hiera import Hiera
from .layers import PointwiseConv2d
from .position_encoding import PositionEmbeddingSine
from .yielding import yield_point


class BackboneOutput(NamedTuple):
    """Neck outputs, finest level first.

    ``backbone_fpn``: feature maps (B, d_model, S/4, S/4), (B, d_model, S/8, S/8), (B, d_model,
    S/16, S/16); ``vision_pos_enc``: their sine position encodings (same shapes);
    ``vision_features``: the coarsest kept map (the image embedding before prompting).
    """

    vision_features: torch.Tensor
    vision_pos_enc: list[torch.Tensor]
    backbone_fpn: list[torch.Tensor]


class FpnNeck(nn.Module):
    """Projects each trunk stage to d_model with a 1x1 conv; top-down fusion on chosen levels."""

    def __init__(
        self,
        d_model: int,
        backbone_channel_list: tuple[int, ...],
        fpn_top_down_levels: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.position_encoding = PositionEmbeddingSine(d_model)
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:  # coarsest stage first, as the checkpoints order them
            lateral = nn.Sequential()
            lateral.add_module("conv", PointwiseConv2d(dim, d_model))
            self.convs.append(lateral)
        self.fpn_top_down_levels = tuple(fpn_top_down_levels)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        """``xs``: trunk stages, finest first -> d_model feature maps, finest first."""
        n = len(xs) - 1
        out: list[torch.Tensor] = [xs[0]] * len(xs)
        prev: torch.Tensor | None = None
        for level in range(n, -1, -1):
            lateral = self.convs[n - level](xs[level])
            if prev is not None and level in self.fpn_top_down_levels:
                # Upsampling runs in float32, as in the reference, whatever the model dtype.
                top_down = F.interpolate(prev.float(), scale_factor=2.0, mode="nearest")
                prev = lateral + top_down
            else:
                prev = lateral
            out[level] = prev
        return out


class ImageEncoder(nn.Module):
    """(B, 3, S, S) normalised image -> :class:`BackboneOutput` minus the ``scalp`` coarsest."""

    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int = 1) -> None:
        super().__init__()
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        trunk = self.trunk(images)
        yield_point()
        features = self.neck(trunk)
        if self.scalp > 0:
            features = features[: -self.scalp]
        pos = [self.neck.position_encoding(f) for f in features]  # float32 views of a cache
        return BackboneOutput(
            vision_features=features[-1], vision_pos_enc=pos, backbone_fpn=features
        )

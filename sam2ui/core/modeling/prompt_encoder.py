"""Prompt encoder: points and box corners to sparse tokens, a mask to a dense embedding."""

from __future__ import annotations

import torch
from torch import nn

from .layers import LayerNorm2d, PointwiseConv2d
from .position_encoding import PositionEmbeddingRandom

# Point labels the model knows: -1 padding ("not a point"), 0 negative click, 1 positive click,
# 2 top-left box corner, 3 bottom-right box corner.
POINT_LABELS = (-1, 0, 1, 2, 3)
# transformers' processor pads ragged point lists with this label: such a point adds a token of
# zeros (not the "not a point" embedding), so batched prompts decode as transformers does.
PADDING_LABEL = -10


class PromptEncoder(nn.Module):
    """Encodes prompts for the mask decoder.

    Coordinates are pixels (x, y) in the model's input frame (``input_image_size``, 1024x1024).
    """

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = input_image_size
        self.image_embedding_size = image_embedding_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            PointwiseConv2d(mask_in_chans, embed_dim),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self._dense_pe: tuple[tuple[object, ...], torch.Tensor] | None = None

    def get_dense_pe(self) -> torch.Tensor:
        """Position encoding of the image embedding grid: (1, C, h, w).

        Every prompt needs it and it depends only on a buffer, so inference reuses it until
        the buffer changes (loading weights bumps its version counter).
        """
        matrix = self.pe_layer.positional_encoding_gaussian_matrix
        if matrix.is_inference():  # built or loaded under inference_mode: no version counter
            return self.pe_layer.grid(*self.image_embedding_size)[None]
        key = (matrix.data_ptr(), matrix._version, matrix.device, matrix.dtype)
        if self._dense_pe is not None and self._dense_pe[0] == key:
            return self._dense_pe[1]
        pe = self.pe_layer.grid(*self.image_embedding_size)[None]
        if not torch.is_grad_enabled():
            self._dense_pe = (key, pe)
        return pe

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """(B, N, 2) coordinates and (B, N) labels -> (B, N (+1 if pad), C) tokens.

        Labels: -1 "not a point", 0 negative, 1 positive, 2 and 3 box corners, and
        ``PADDING_LABEL`` (-10) for the padding of ragged transformers-style batches (a zero
        token)."""
        coords = coords + 0.5  # the embedding is taken at the pixel centre
        if pad:
            # A padding token stands in for the missing box; its coordinates are unused.
            b = coords.shape[0]
            coords = torch.cat((coords, coords.new_zeros(b, 1, 2)), dim=1)
            labels = torch.cat((labels, labels.new_full((b, 1), -1)), dim=1)
        pe = self.pe_layer.encode_points(coords, self.input_image_size)
        rows = [self.not_a_point_embed.weight]
        rows += [emb.weight for emb in self.point_embeddings if isinstance(emb, nn.Embedding)]
        table = torch.cat(rows, dim=0)  # (5, C), row = label + 1
        labels = labels.long()
        padding = (labels == PADDING_LABEL).unsqueeze(-1)
        labels = labels.clamp(min=-1)
        pe = torch.where((labels == -1).unsqueeze(-1), torch.zeros_like(pe), pe)
        tokens = pe + table[labels + 1]
        return tokens.masked_fill(padding, 0.0)

    def embed_mask(self, masks: torch.Tensor) -> torch.Tensor:
        """(B, 1, 4h, 4w) mask logits -> (B, C, h, w)."""
        return self.mask_downscaling(masks)

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        masks: torch.Tensor | None,
        *,
        batch_size: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns sparse (B, N, C) and dense (B, C, h, w) embeddings.

        Box corners are given as points with labels 2 and 3, so the padding token is always
        appended, as the SAM 2 predictors do.
        """
        if points is not None:
            sparse = self.embed_points(points[0], points[1], pad=True)
            batch_size = sparse.shape[0]
        elif masks is not None:
            batch_size = masks.shape[0]
        weight = self.no_mask_embed.weight
        if points is None:
            sparse = weight.new_empty((batch_size, 0, self.embed_dim))
        if masks is not None:
            dense = self.embed_mask(masks)
        else:
            h, w = self.image_embedding_size
            dense = weight.reshape(1, -1, 1, 1).expand(batch_size, -1, h, w)
        return sparse, dense

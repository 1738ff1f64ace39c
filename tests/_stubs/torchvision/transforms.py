"""Tensor versions of torchvision's ToTensor, Resize and Normalize (TorchScript-compatible)."""

from typing import List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class ToTensor:
    """HWC uint8 array or PIL image -> CHW float tensor in [0, 1]."""

    def __call__(self, pic) -> torch.Tensor:
        arr = np.asarray(pic)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        tensor = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
        if tensor.dtype == torch.uint8:
            return tensor.float().div(255)
        return tensor.float()


class Resize(nn.Module):
    """Bilinear resize of a float CHW/BCHW tensor with antialiasing, as torchvision does."""

    def __init__(self, size: List[int]) -> None:
        super().__init__()
        self.size: List[int] = [int(s) for s in size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeeze = x.dim() == 3
        if squeeze:
            x = x.unsqueeze(0)
        out = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        if squeeze:
            out = out.squeeze(0)
        return out


class Normalize(nn.Module):
    def __init__(self, mean: List[float], std: List[float]) -> None:
        super().__init__()
        self.mean: List[float] = [float(m) for m in mean]
        self.std: List[float] = [float(s) for s in std]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x - mean) / std

"""Axial RoPE as memory attention applies it: in place, repeated over memory frames."""

from __future__ import annotations

import math

import pytest
import torch

from sam2ui.core.modeling.position_encoding import apply_rope_, axial_rope_angles


def _rotated(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Reference rotation: pairs times the rotations copied once per grid, in float32."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    repeats = x.shape[-2] // rotations.shape[0]
    return torch.view_as_real(pairs * rotations.repeat(repeats, 1)).flatten(-2)


def test_rope_rotates_each_grid_in_place() -> None:
    gen = torch.Generator().manual_seed(0)
    rotations = axial_rope_angles(8, 4, 4)  # a 4 x 4 grid, 8 channels
    keys = torch.randn(2, 1, 3 * 16 + 5, 8, generator=gen)  # three grids and 5 pointer tokens
    original = keys.clone()
    grids = keys[:, :, :48]
    assert apply_rope_(grids, rotations) is grids
    assert torch.equal(keys[:, :, :48], _rotated(original[:, :, :48], rotations))
    assert torch.equal(keys[:, :, 48:], original[:, :, 48:])  # pointers are left alone
    # A rotation: each channel pair keeps its length; token 0 (angle 0) is unchanged, and
    # token 1 (x = 1) turns its first pair by 1 radian.
    norms = keys[:, :, :48].unflatten(-1, (-1, 2)).norm(dim=-1)
    torch.testing.assert_close(norms, original[:, :, :48].unflatten(-1, (-1, 2)).norm(dim=-1))
    assert torch.equal(keys[:, :, 0::16], original[:, :, 0::16])
    a, b = original[0, 0, 1, 0:2]
    c, s = math.cos(1.0), math.sin(1.0)
    torch.testing.assert_close(keys[0, 0, 1, 0:2], torch.stack((a * c - b * s, a * s + b * c)))


def test_rope_on_bfloat16_rounds_the_float32_rotation_once() -> None:
    gen = torch.Generator().manual_seed(1)
    rotations = axial_rope_angles(16, 8, 8)
    x = torch.randn(1, 2, 128, 16, generator=gen).bfloat16()
    expected = _rotated(x, rotations).bfloat16()
    assert torch.equal(apply_rope_(x, rotations), expected)


def test_rope_needs_whole_grids() -> None:
    with pytest.raises(ValueError, match="whole number"):
        apply_rope_(torch.zeros(1, 1, 20, 8), axial_rope_angles(8, 4, 4))

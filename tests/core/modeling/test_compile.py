"""The compile switch: the engine under ``torch.compile`` on the CPU gives eager's results.

One small configuration (tiny at 256 px, random weights) is compiled once for the module;
compiling takes tens of seconds on two cores, the runs after it a fraction of a second.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sam2ui.core import SAM2ImagePredictor, SAM2VideoPredictor
from sam2ui.core.compat import torch_ops
from sam2ui.core.loading.build import build_sam2
from sam2ui.core.modeling import compiled
from sam2ui.core.modeling.compiled import (
    COMPILED_PARTS,
    CompilerMissingError,
    compile_model,
    compiled_parts,
    is_compiled,
)
from sam2ui.core.modeling.config import get_config
from sam2ui.core.video.warm_up import warm_up

VARIANT = "sam2.1-hiera-tiny"


def _model(meta_checkpoint) -> torch.nn.Module:
    config = replace(get_config(VARIANT), image_size=256, binarize_mask_from_pts_for_mem_enc=True)
    net = build_sam2(config)
    net.load_state_dict(torch.load(meta_checkpoint(VARIANT), weights_only=True)["model"])
    return net.eval()


@pytest.fixture(scope="module")
def models(meta_checkpoint):
    """(eager, compiled): two models with the same weights; the second compiled and warmed up."""
    eager = _model(meta_checkpoint)
    fast = compile_model(_model(meta_checkpoint))
    assert warm_up(SAM2VideoPredictor(fast)) > 0
    return eager, fast


def _image() -> np.ndarray:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:180, :240]
    img = rng.integers(0, 60, (180, 240, 3)).astype(np.uint8)
    img[(yy - 90) ** 2 + (xx - 120) ** 2 < 50**2] = (220, 180, 40)
    return img


def test_compile_marks_the_heavy_parts_only(models) -> None:
    eager, fast = models
    assert compiled_parts(fast) == set(COMPILED_PARTS)
    assert is_compiled(fast) and not is_compiled(eager)
    # In place: the same parameters and checkpoint keys as before.
    assert list(fast.state_dict()) == list(eager.state_dict())
    assert compile_model(fast) is fast  # a second call changes nothing


def test_compiled_image_predictor_matches_eager(models) -> None:
    eager, fast = models
    warmed = SAM2ImagePredictor(fast)
    assert warm_up(warmed) > 0 and not warmed.is_image_set  # it leaves no image behind
    results = []
    for model in (eager, fast):
        predictor = SAM2ImagePredictor(model)
        predictor.set_image(_image())
        masks, scores, logits = predictor.predict(
            point_coords=np.array([[120.0, 90.0], [30.0, 20.0]]),
            point_labels=np.array([1, 0]),
            multimask_output=True,
        )
        results.append((masks, scores, logits))
    (m0, s0, l0), (m1, s1, l1) = results
    assert np.abs(l0 - l1).max() <= 1e-3
    assert np.abs(s0 - s1).max() <= 1e-4
    # A pixel whose logit is within rounding of the threshold may flip; no more than that.
    assert (m0 != m1).mean() <= 1e-3


def test_compiled_video_tracking_matches_eager(models) -> None:
    eager, fast = models
    frames = np.stack([np.roll(_image(), 6 * t, axis=1) for t in range(4)])
    runs = []
    for model in (eager, fast):
        predictor = SAM2VideoPredictor(model, fill_hole_area=0)
        state = predictor.init_state(frames)
        predictor.add_new_points_or_box(state, 0, 1, points=[[120, 90]], labels=[1])
        predictor.add_new_points_or_box(state, 0, 2, box=[5, 5, 60, 50])
        runs.append({t: logits for t, _, logits in predictor.propagate_in_video(state)})
    assert sorted(runs[0]) == sorted(runs[1]) == [0, 1, 2, 3]
    for t in runs[0]:
        a, b = runs[0][t], runs[1][t]
        assert a.shape == b.shape == (2, 1, 180, 240)
        assert (a - b).abs().max().item() <= 1e-3, t
        assert ((a > 0) != (b > 0)).float().mean().item() <= 1e-3, t


def test_warm_up_errors(models) -> None:
    with pytest.raises(TypeError, match="SAM2ImagePredictor or SAM2VideoPredictor"):
        warm_up(models[0])
    with pytest.raises(ValueError, match="frames"):
        warm_up(SAM2VideoPredictor(models[0]), frames=1)


def test_compile_parts_and_errors(meta_checkpoint, monkeypatch) -> None:
    with torch.device("meta"):
        model = build_sam2(VARIANT)
    compile_model(model, parts=["image_encoder"])
    assert compiled_parts(model) == {"image_encoder"}
    with pytest.raises(ValueError, match="mask_decoder"):
        compile_model(model, parts=["mask_decoder"])
    with pytest.raises(TypeError):
        compile_model(torch.nn.Linear(2, 2))  # type: ignore[arg-type]
    # Without a C++ compiler the CPU cannot build kernels: said before anything is compiled.
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    monkeypatch.delenv("CXX", raising=False)
    cpu_model = build_sam2(replace(get_config(VARIANT), image_size=256))
    with pytest.raises(CompilerMissingError, match="C\\+\\+ compiler"):
        compile_model(cpu_model)
    assert not is_compiled(cpu_model)


def test_private_operators_step_aside_while_traced(monkeypatch) -> None:
    """Under the tracer the wrappers take the public path (the tracer cannot follow the
    private operators); outside it, the private path where the probe passed."""
    calls: list[str] = []

    def private(x, weight, bias, activation):
        calls.append("private")
        return torch.nn.functional.linear(x, weight, bias)

    monkeypatch.setattr(torch_ops, "_private_linear", private)
    x, w = torch.randn(64, 16), torch.randn(8, 16)
    expected = torch.nn.functional.linear(x, w)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert torch.allclose(torch_ops.fused_linear(x, w, None), expected, atol=1e-5)
    assert calls == []
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
    torch_ops.fused_linear(x, w, None)
    assert calls == (["private"] if torch_ops.available(torch_ops.LINEAR_POINTWISE) else [])

"""sam2ui.hf's ``Sam2Model`` against transformers' own, on the same folder and pixel values.

transformers' image processor needs torchvision, which does not install here, so both models
get the same ``pixel_values``; the prompt tensors come from transformers' own processor code
(its prompt half needs no torchvision) and from ours, which must agree exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import transformers

from sam2ui.hf import Sam2Config, Sam2ImageSegmentationOutput, Sam2Model, Sam2Processor
from tests.hf.checkpoints import SIZE

TOL = 1e-4
SIZES = [[150, 225], [90, 120]]  # (H, W) of the two "pictures" the prompts are for


def _theirs_processor() -> Any:
    """transformers' Sam2Processor without its image half (which needs torchvision)."""
    processor = object.__new__(transformers.Sam2Processor)
    processor.point_pad_value = -10
    processor.target_size = SIZE
    return processor


@pytest.fixture(scope="module")
def models(image_folder) -> tuple[Sam2Model, Any]:
    ours = Sam2Model.from_pretrained(image_folder)
    theirs = transformers.Sam2Model.from_pretrained(image_folder).eval()
    return ours, theirs


@pytest.fixture(scope="module")
def pixel_values() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    smooth = torch.stack([torch.sin(6 * xx + c) * torch.cos(5 * yy - c) for c in range(3)])
    return torch.stack([smooth, smooth.flip(-1)]) + 0.3 * torch.randn(2, 3, SIZE, SIZE, generator=g)


@pytest.fixture(scope="module")
def embeddings(models, pixel_values) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    ours, theirs = models
    with torch.no_grad():
        return ours.get_image_embeddings(pixel_values), theirs.get_image_embeddings(pixel_values)


def _compare(a: Any, b: Any, masks: int) -> dict[str, float]:
    diffs = {}
    for name in ("pred_masks", "iou_scores", "object_score_logits"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape, name
        diffs[name] = (x - y).abs().max().item()
        assert diffs[name] <= TOL, (name, diffs[name])
    assert a.pred_masks.shape[2] == masks
    assert a.pred_masks.std() > 1e-2  # not a comparison of near-constant maps
    print("max |diff|:", {k: f"{v:.1e}" for k, v in diffs.items()})  # shown by pytest -s
    return diffs


def test_embeddings_match(embeddings) -> None:
    ours, theirs = embeddings
    assert (
        [tuple(e.shape) for e in ours]
        == [tuple(e.shape) for e in theirs]
        == [
            (2, 32, SIZE // 4, SIZE // 4),
            (2, 64, SIZE // 8, SIZE // 8),
            (2, 256, SIZE // 16, SIZE // 16),
        ]
    )
    diffs = [(a - b).abs().max().item() for a, b in zip(ours, theirs)]
    print("max |diff| of the embeddings:", [f"{d:.1e}" for d in diffs])  # pytest -s
    assert max(diffs) <= TOL


def test_one_click_from_pixel_values(models, pixel_values) -> None:
    ours, theirs = models
    inputs = Sam2Processor(target_size=SIZE).encode_prompts(
        [[[[100, 75]]]], [[[1]]], None, SIZES[:1]
    )
    with torch.no_grad():
        a = ours(pixel_values=pixel_values[:1], **inputs)
        b = theirs(pixel_values=pixel_values[:1], **inputs)
    assert isinstance(a, Sam2ImageSegmentationOutput)
    assert a.pred_masks.shape == (1, 1, 3, SIZE // 4, SIZE // 4)
    assert a["iou_scores"] is a.iou_scores and a.object_score_logits.shape == (1, 1, 1)
    _compare(a, b, masks=3)


def test_batch_of_images_with_two_objects_each(models, embeddings) -> None:
    """Ragged prompts (1 and 2 points per object) padded the same by both processors."""
    points = [[[[100, 75]], [[20, 140], [200, 10]]], [[[40, 30]], [[100, 60], [10, 80]]]]
    labels = [[[1], [1, 0]], [[1], [1, 1]]]
    ours_inputs = Sam2Processor(target_size=SIZE).encode_prompts(points, labels, None, SIZES)
    theirs_inputs = _theirs_processor()(
        input_points=points, input_labels=labels, original_sizes=SIZES, return_tensors="pt"
    )
    for key in ("input_points", "input_labels"):
        assert torch.equal(ours_inputs[key], theirs_inputs[key]), key
    assert (ours_inputs["input_labels"] == -10).sum() == 2  # the single clicks are padded
    for multimask, masks in ((True, 3), (False, 1)):
        with torch.no_grad():
            a = models[0](image_embeddings=embeddings[0], multimask_output=multimask, **ours_inputs)
            b = models[1](image_embeddings=embeddings[1], multimask_output=multimask, **ours_inputs)
        assert a.pred_masks.shape == (2, 2, masks, SIZE // 4, SIZE // 4)
        _compare(a, b, masks=masks)


def test_boxes_with_and_without_points(models, embeddings) -> None:
    boxes = [[[10, 20, 200, 140], [50, 5, 90, 60]], [[5, 5, 100, 80], [30, 40, 60, 70]]]
    processor = Sam2Processor(target_size=SIZE)
    ours_inputs = processor.encode_prompts(None, None, boxes, SIZES)
    theirs_inputs = _theirs_processor()(
        input_boxes=boxes, original_sizes=SIZES, return_tensors="pt"
    )
    assert torch.equal(ours_inputs["input_boxes"], theirs_inputs["input_boxes"])
    with torch.no_grad():
        a = models[0](image_embeddings=embeddings[0], **ours_inputs)
        b = models[1](image_embeddings=embeddings[1], **ours_inputs)
    _compare(a, b, masks=3)
    points = [[[[100, 75]], [[60, 30]]], [[[40, 30]], [[50, 50]]]]
    both = processor.encode_prompts(points, [[[1], [0]], [[1], [1]]], boxes, SIZES)
    with torch.no_grad():
        a = models[0](image_embeddings=embeddings[0], multimask_output=False, **both)
        b = models[1](image_embeddings=embeddings[1], multimask_output=False, **both)
    _compare(a, b, masks=1)


def test_reused_embeddings_and_a_mask_prompt(models, pixel_values, embeddings) -> None:
    """The seeds' refinement: the best mask of a first click goes back in with more points,
    on the embeddings of the first output."""
    ours, theirs = models
    processor = Sam2Processor(target_size=SIZE)
    first = processor.encode_prompts([[[[100, 75]]]], [[[1]]], None, SIZES[:1])
    with torch.no_grad():
        out = ours(pixel_values=pixel_values[:1], **first)
    assert all(torch.equal(a, b[:1]) for a, b in zip(out.image_embeddings, embeddings[0])), (
        "embeddings of one image differ from those of its batch"
    )
    best = out.pred_masks[:, :, torch.argmax(out.iou_scores.squeeze())]
    second = processor.encode_prompts([[[[100, 75], [60, 40]]]], [[[1, 1]]], None, SIZES[:1])
    theirs_embeddings = [e[:1] for e in embeddings[1]]
    with torch.no_grad():
        a = ours(**second, input_masks=best, image_embeddings=out.image_embeddings,
                 multimask_output=False)  # fmt: skip
        b = theirs(**second, input_masks=best, image_embeddings=theirs_embeddings,
                   multimask_output=False)  # fmt: skip
    _compare(a, b, masks=1)
    # A mask alone (no point, no box): both models add one "not a point" prompt.
    with torch.no_grad():
        a = ours(input_masks=best, image_embeddings=out.image_embeddings)
        b = theirs(input_masks=best, image_embeddings=theirs_embeddings)
    _compare(a, b, masks=3)


def test_random_init_and_config_access() -> None:
    """``Sam2Model(Sam2Config())``, as in the docs: random weights, the tiny architecture."""
    model = Sam2Model(Sam2Config())
    assert model.config.vision_config.backbone_config.hidden_size == 96
    assert model.core.config.image_size == 1024
    assert model.dtype == torch.float32 and model.device == torch.device("cpu")
    core = model.core
    assert model.to(torch.bfloat16) is model and model.core is core  # its own: changed in place
    assert model.dtype == torch.bfloat16


def test_dtype_and_device_arguments(image_folder, video_folder) -> None:
    model = Sam2Model.from_pretrained(video_folder, torch_dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16
    shared = model.core
    assert model.to("cpu", dtype=torch.float32).dtype == torch.float32
    assert shared.compute_dtype == torch.bfloat16  # the cached model is swapped, not changed
    again = Sam2Model.from_pretrained(image_folder, dtype="bfloat16")
    assert again.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="exactly one of pixel_values or image_embeddings"):
        model()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_points": torch.zeros(1, 1, 2)}, r"input_points must have shape \(images"),
        (
            {"input_points": torch.zeros(1, 1, 1, 2), "input_labels": torch.ones(1, 1, 2)},
            "one label per point",
        ),
        (
            {"input_points": torch.zeros(2, 1, 1, 2)},
            "input_points is for 2 images, but there are 1",
        ),
        (
            {"input_points": torch.zeros(1, 2, 1, 2), "input_boxes": torch.zeros(1, 1, 4)},
            "2 point sets but 1 boxes per image",
        ),
    ],
)
def test_bad_prompt_tensors(models, embeddings, kwargs: dict[str, Any], message: str) -> None:
    one = [e[:1] for e in embeddings[0]]
    with pytest.raises(ValueError, match=message):
        models[0](image_embeddings=one, **kwargs)


def test_numpy_prompts_equal_lists() -> None:
    processor = Sam2Processor(target_size=SIZE)
    points = np.array([[[[10.0, 20.0], [30.0, 40.0]]]])
    a = processor.encode_prompts(points, np.array([[[1, 0]]]), None, SIZES[:1])
    b = processor.encode_prompts(points.tolist(), [[[1, 0]]], None, SIZES[:1])
    assert all(torch.equal(a[k], b[k]) for k in a)

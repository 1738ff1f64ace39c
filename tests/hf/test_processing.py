"""``Sam2Processor`` / ``Sam2ImageProcessor``: resizing, padding, errors and post-processing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from sam2ui.hf import Sam2ImageProcessor, Sam2Processor

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def _picture(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = np.stack([(xx * 3 + yy) % 256, (yy * 2) % 256, (xx + 40) % 256], axis=-1)
    return np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)


def test_pixel_values_of_a_picture_at_the_input_size_are_exact() -> None:
    picture = _picture(64, 64)
    out = Sam2ImageProcessor(size=64)(picture, return_tensors="pt")
    expected = (torch.from_numpy(picture).permute(2, 0, 1).float() / 255 - MEAN) / STD
    assert out.pixel_values.shape == (1, 3, 64, 64) and out.pixel_values.dtype == torch.float32
    assert (out.pixel_values[0] - expected).abs().max().item() < 1e-5
    assert torch.equal(out.original_sizes, torch.tensor([[64, 64]]))


def test_resizing_is_antialiased_bilinear_on_8_bit_values() -> None:
    """Downscaled 8-bit values within one level of PIL's antialiased bilinear resize (the
    filter torchvision's uint8 path implements), the aspect ratio not kept."""
    picture = _picture(150, 225)
    processor = Sam2ImageProcessor(size=64)
    out = processor(Image.fromarray(picture), return_tensors="pt")
    levels = out.pixel_values[0] * STD * 255 + MEAN * 255
    assert (levels - levels.round()).abs().max().item() < 1e-3  # rounded to 8 bits
    pil = np.asarray(Image.fromarray(picture).resize((64, 64), Image.Resampling.BILINEAR))
    pil_levels = torch.from_numpy(pil.copy()).permute(2, 0, 1).float()
    assert (levels.round() - pil_levels).abs().max().item() <= 1.0
    assert torch.equal(out.original_sizes, torch.tensor([[150, 225]]))


def test_images_of_different_sizes_in_one_batch() -> None:
    processor = Sam2Processor(Sam2ImageProcessor(size=64))
    pictures = [Image.fromarray(_picture(150, 225)), _picture(90, 120, seed=1)]
    out = processor(images=pictures, input_points=[[[[10, 20]]], [[[30, 40]]]],
                    input_labels=[[[1]], [[1]]], return_tensors="pt")  # fmt: skip
    assert out.pixel_values.shape == (2, 3, 64, 64)
    assert torch.equal(out["original_sizes"], torch.tensor([[150, 225], [90, 120]]))
    expected = torch.tensor([[[[10 * 64 / 225, 20 * 64 / 150]]], [[[30 * 64 / 120, 40 * 64 / 90]]]])
    assert torch.allclose(out.input_points, expected)
    moved = out.to("cpu")
    assert set(moved) == {"pixel_values", "original_sizes", "input_points", "input_labels"}
    assert moved.input_labels.dtype == torch.int64


def _theirs(**kwargs: Any) -> Any:
    processor = object.__new__(transformers.Sam2Processor)
    processor.point_pad_value = -10
    processor.target_size = 1024
    return processor(**kwargs, return_tensors="pt")


@pytest.mark.parametrize(
    "prompts",
    [
        {"input_points": [[[[500, 375]]]], "input_labels": [[[1]]]},
        {
            "input_points": [[[[500, 375]], [[650, 750]]], [[[770, 200]]]],
            "input_labels": [[[1], [1]], [[1]]],
        },
        {
            "input_points": [[[[200, 300], [230, 250], [275, 175]], [[400, 150]]]],
            "input_labels": [[[1, 1, 0], [1]]],
        },
        {
            "input_boxes": [
                [[75, 275, 1725, 850], [425, 600, 700, 875]],
                [[1, 2, 3, 4], [5, 6, 7, 8]],
            ]
        },
    ],
)
def test_padding_and_scaling_match_transformers(prompts: dict[str, Any]) -> None:
    n_images = len(next(iter(prompts.values())))
    sizes = [[1500, 2250], [480, 854]][:n_images]
    ours = Sam2Processor()(original_sizes=sizes, return_tensors="pt", **prompts)
    theirs = _theirs(original_sizes=sizes, **prompts)
    assert set(ours) == set(theirs)
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype, key
        assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        (
            {"input_points": [[[500, 375]]], "input_labels": [[[1]]]},
            r"input_points must be nested 4 levels deep \[image level, object level, point level, "
            r"point coordinates\]; got 3 levels \(input_points\[0\]\[0\]\[0\] must be a list",
        ),
        (
            {"input_points": [[[[500, 375, 1]]]]},
            r"input_points\[0\]\[0\]\[0\] has 3 numbers; the point coordinates of input_points "
            "holds 2",
        ),
        (
            {"input_points": [[[[1, 2]]], [[[3, 4]]]], "input_labels": [[[1]], [[1]]]},
            r"input_points has prompts for 2 image\(s\) at its image level, but 1 image\(s\)",
        ),
        (
            {"input_points": [[[[1, 2], [3, 4]]]], "input_labels": [[[1]]]},
            "input_points and input_labels disagree",
        ),
        (
            {"input_boxes": [[[1, 2, 3, 4]], [[1, 2, 3, 4], [5, 6, 7, 8]]]},
            r"input_boxes\[1\] has 2 entries but input_boxes\[0\] has 1",
        ),
        ({"input_labels": [[1]]}, "input_labels must be nested 3 levels deep"),
        (
            {"input_points": [[[[1, 2]], [[[3, 4]]]]]},
            r"input_points\[0\]\[1\]\[0\]\[0\] is a list where a number was expected",
        ),
    ],
)
def test_bad_nesting_names_the_level(prompts: dict[str, Any], message: str) -> None:
    sizes = [[100, 100]] if "input_boxes" not in prompts else [[100, 100], [100, 100]]
    if "input_points" in prompts and len(prompts["input_points"]) == 2:
        sizes = [[100, 100]]
    with pytest.raises(ValueError, match=message):
        Sam2Processor()(original_sizes=sizes, **prompts)


def test_post_process_masks() -> None:
    logits = torch.tensor([[[[-1.0, 3.0], [1.0, -3.0]]]])  # (1 object, 1 mask, 2, 2)
    processor = Sam2Processor()
    soft = processor.post_process_masks([logits], [[4, 6]], binarize=False)[0]
    assert soft.shape == (1, 1, 4, 6) and soft.dtype == torch.float32
    # Bilinear, corners not aligned: the top-left output pixel is the top-left logit, and
    # pixel (1, 1) of a 2x upscale in height lies 1/4 of the way to the next row.
    assert soft[0, 0, 0, 0].item() == -1.0
    x = (1 + 0.5) * 2 / 6 - 0.5  # source column of output column 1
    top = -1.0 + x * (3.0 - -1.0)
    bottom = 1.0 + x * (-3.0 - 1.0)
    assert soft[0, 0, 1, 1].item() == pytest.approx(top + 0.25 * (bottom - top), abs=1e-6)
    hard = processor.post_process_masks([logits], torch.tensor([[4, 6]]))[0]
    assert hard.dtype == torch.bool and torch.equal(hard, soft > 0)
    assert torch.equal(
        processor.post_process_masks([logits.numpy()], [[4, 6]], mask_threshold=0.5)[0],
        soft > 0.5,
    )
    two = torch.cat([logits, -logits + 0.5])
    separate = processor.post_process_masks(
        [two], [[4, 6]], binarize=False, apply_non_overlapping_constraints=True
    )[0]
    assert not ((separate[0] > 0) & (separate[1] > 0)).any()
    assert separate.max(dim=0).values.equal(
        processor.post_process_masks([two], [[4, 6]], binarize=False)[0].max(dim=0).values
    )

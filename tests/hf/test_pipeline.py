"""``pipeline("mask-generation")``: transformers' call and result on the engine's generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sam2ui.core import SAM2AutomaticMaskGenerator, SAM2ImagePredictor
from sam2ui.hf import MaskGenerationPipeline, Sam2Model, pipeline

LOW = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    yy, xx = np.mgrid[0:96, 0:128]
    disc = ((xx - 40) ** 2 + (yy - 50) ** 2 < 400)[..., None]
    return np.where(disc, [220, 40, 40], [30, 90, 160]).astype(np.uint8)


def test_masks_and_scores_are_the_generators(image_folder, picture) -> None:
    generator = pipeline("mask-generation", model=image_folder, device=-1)
    assert isinstance(generator, MaskGenerationPipeline)
    out = generator(Image.fromarray(picture), points_per_batch=7, points_per_crop=4,
                    output_bboxes_mask=True, output_rle_mask=True, **LOW)  # fmt: skip
    expected = SAM2AutomaticMaskGenerator(
        SAM2ImagePredictor(Sam2Model.from_pretrained(image_folder).core),
        points_per_side=4, points_per_batch=7, **LOW,
    ).generate(picture)  # fmt: skip
    assert len(out["masks"]) == len(expected) > 0
    for mask, record in zip(out["masks"], expected):
        assert mask.dtype == torch.bool and mask.shape == (96, 128)
        assert np.array_equal(mask.numpy(), record["segmentation"])
    assert out["scores"].dtype == torch.float32
    assert torch.allclose(out["scores"], torch.tensor([r["predicted_iou"] for r in expected]))
    x, y, w, h = expected[0]["bbox"]
    assert out["bounding_boxes"][0].tolist() == pytest.approx([x, y, x + w, y + h])
    assert out["rle_mask"][0]["size"] == [96, 128]


def test_bad_arguments(image_folder, picture) -> None:
    with pytest.raises(ValueError, match="only does 'mask-generation'"):
        pipeline("image-classification", model=image_folder)
    generator = pipeline("mask-generation", model=Sam2Model.from_pretrained(image_folder))
    with pytest.raises(ValueError, match="points_per_batch must be >= 1"):
        generator(picture, points_per_batch=0)

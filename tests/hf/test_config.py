"""transformers-style configs, what they build in the engine, and the loading front door."""

from __future__ import annotations

from pathlib import Path

import pytest

from sam2ui.core import VARIANTS
from sam2ui.hf import (
    AutoModel,
    AutoProcessor,
    Sam2Config,
    Sam2MaskDecoderConfig,
    Sam2Model,
    Sam2Processor,
    Sam2PromptEncoderConfig,
    Sam2VideoConfig,
    Sam2VideoModel,
    Sam2VideoProcessor,
    Sam2VisionConfig,
)
from sam2ui.hf.config import config_for_variant, core_config
from tests.core.loading.test_hf_layout import hf_video_config
from tests.hf.checkpoints import SIZE

BACKBONE_FIELDS = (
    "hidden_size",
    "blocks_per_stage",
    "embed_dim_per_stage",
    "num_attention_heads_per_stage",
    "window_size_per_stage",
    "global_attention_blocks",
    "window_positional_embedding_background_size",
)


def test_configs_as_the_docs_build_them() -> None:
    config = Sam2Config(Sam2VisionConfig(), Sam2PromptEncoderConfig(), Sam2MaskDecoderConfig())
    assert config == Sam2Config()
    assert config.vision_config.backbone_config.blocks_per_stage == [1, 2, 7, 2]
    assert config.prompt_encoder_config.image_size == 1024
    again = Sam2Config(**config.to_dict())
    assert again == config and again.to_dict()["model_type"] == "sam2"
    custom = Sam2Config(prompt_encoder_config={"image_size": 512})
    assert core_config(custom, video=False).image_size == 512
    with pytest.raises(TypeError, match="vision_config must be a Sam2VisionConfig or a dict"):
        Sam2Config(vision_config=3)
    with pytest.raises(AttributeError, match="has no field 'nope'"):
        _ = config.nope


def test_folder_configs(image_folder: Path, video_folder: Path) -> None:
    image = Sam2Config.from_pretrained(image_folder)
    assert image.prompt_encoder_config.image_size == SIZE
    video = Sam2VideoConfig.from_pretrained(video_folder)
    assert video.image_size == SIZE and video.num_maskmem == 7
    engine = core_config(video, video=True)
    assert engine.name == "sam2.1-hiera-tiny" and engine.image_size == SIZE
    assert engine.binarize_mask_from_pts_for_mem_enc
    deeper = Sam2Config(vision_config={"backbone_config": {"blocks_per_stage": [1, 2, 8, 2]}})
    with pytest.raises(ValueError, match="matches none of the official SAM 2 sizes"):
        core_config(deeper, video=False)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_hub_configs_are_transformers(variant: str) -> None:
    """The config a hub id stands for has the backbone of transformers' config of it."""
    ours = config_for_variant(f"facebook/{variant}", Sam2VideoConfig).to_dict()
    theirs = hf_video_config(variant).to_dict()
    for field in BACKBONE_FIELDS:
        assert (
            ours["vision_config"]["backbone_config"][field]
            == theirs["vision_config"]["backbone_config"][field]
        ), field
    assert (
        ours["enable_occlusion_spatial_embedding"] == theirs["enable_occlusion_spatial_embedding"]
    )
    assert core_config(Sam2VideoConfig(**ours), video=True).name == variant
    image = config_for_variant(f"facebook/{variant}")
    assert core_config(image, video=False).name == variant  # the version from the name


def test_auto_classes_and_loading_errors(image_folder: Path, video_folder: Path) -> None:
    assert type(AutoModel.from_pretrained(image_folder)) is Sam2Model
    assert type(AutoModel.from_pretrained(video_folder)) is Sam2VideoModel
    assert type(AutoProcessor.from_pretrained(image_folder)) is Sam2Processor
    processor = AutoProcessor.from_pretrained(video_folder)
    assert type(processor) is Sam2VideoProcessor and processor.target_size == SIZE
    with pytest.raises(ValueError, match="Sam2VideoModel needs a 'sam2_video' checkpoint"):
        Sam2VideoModel.from_pretrained(image_folder)
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        Sam2Model.from_pretrained(image_folder / "missing")
    # One engine model per checkpoint, device and dtype: the image and video classes share it.
    assert Sam2Model.from_pretrained(video_folder).core.sam_mask_decoder is (
        Sam2VideoModel.from_pretrained(video_folder).core.sam_mask_decoder
    )

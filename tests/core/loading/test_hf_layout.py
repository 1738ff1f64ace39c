"""transformers-format SAM 2 checkpoints: key mapping, config.json, and numerical equivalence.

The real proof that the mapping is right: transformers' own ``Sam2Model`` and sam2ui, given
the same transformers-format weights, produce the same masks and IoU predictions.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers

from sam2ui.core.loading.checkpoint import infer_variant, is_memory_key, load_sam2, read_state_dict
from sam2ui.core.loading.hf_layout import (
    AmbiguousVersionError,
    config_from_hf,
    hf_to_meta,
    is_hf_layout,
    meta_to_hf,
)
from sam2ui.core.modeling.config import VARIANTS, get_config
from tests.core.loading.test_checkpoint import reference_shapes
from tests.reference_models import OBJECT_SCORE_BIAS, perturbed_state_dict

TINY = "sam2.1-hiera-tiny"
PE_KEYS = (
    "prompt_encoder.shared_embedding.positional_embedding",
    "shared_image_embedding.positional_embedding",
)


def hf_video_config(variant: str) -> Any:
    """A transformers ``Sam2VideoConfig`` describing one official variant."""
    cfg = get_config(variant)
    t = cfg.trunk
    backbone = transformers.Sam2HieraDetConfig(
        hidden_size=t.embed_dim,
        embed_dim_per_stage=list(t.stage_dims),
        num_attention_heads_per_stage=[int(t.num_heads * t.head_mul**i) for i in range(4)],
        blocks_per_stage=list(t.stages),
        global_attention_blocks=list(t.global_att_blocks),
        window_size_per_stage=list(t.window_spec),
        window_positional_embedding_background_size=list(t.window_pos_embed_bkg_spatial_size),
    )
    vision = transformers.Sam2VisionConfig(
        backbone_config=backbone, backbone_channel_list=list(t.backbone_channel_list)
    )
    is_21 = cfg.version == "2.1"
    return transformers.Sam2VideoConfig(
        vision_config=vision,
        enable_occlusion_spatial_embedding=is_21,
        enable_temporal_pos_encoding_for_object_pointers=is_21,
    )


def hf_shapes(variant: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return dict(transformers.Sam2VideoModel(hf_video_config(variant)).state_dict())


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """Factory: ``hf_checkpoint(variant) -> (directory, state_dict)`` of a random-weight
    ``Sam2VideoModel`` saved with ``save_pretrained``, as on the hub's ``main`` branch."""
    cache: dict[str, tuple[Path, dict[str, torch.Tensor]]] = {}

    def factory(variant: str) -> tuple[Path, dict[str, torch.Tensor]]:
        if variant not in cache:
            torch.manual_seed(0)
            model = transformers.Sam2VideoModel(hf_video_config(variant)).eval()
            state = perturbed_state_dict(model, seed=1)
            # Converted official weights hold one Fourier matrix in both places.
            state[PE_KEYS[1]] = state[PE_KEYS[0]].clone()
            state["mask_decoder.pred_obj_score_head.proj_out.bias"] += OBJECT_SCORE_BIAS
            model.load_state_dict(state, strict=True)
            directory = tmp_path_factory.mktemp(f"hf-{variant}")
            model.save_pretrained(directory)
            cache[variant] = (directory, state)
        return cache[variant]

    return factory


# ----------------------------------------------------------------------------- key mapping


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_mapping_is_a_bijection_on_official_keys(variant: str) -> None:
    meta, hf = reference_shapes(variant), hf_shapes(variant)
    assert is_hf_layout(hf) and not is_hf_layout(meta)
    converted = hf_to_meta(hf)
    assert {k: tuple(v.shape) for k, v in converted.items()} == {
        k: tuple(v.shape) for k, v in meta.items()
    }
    back = meta_to_hf(meta)
    assert {k: tuple(v.shape) for k, v in back.items()} == {
        k: tuple(v.shape) for k, v in hf.items()
    }
    assert infer_variant(hf) == variant


def test_known_renames() -> None:
    hf = {
        "vision_encoder.backbone.blocks.3.mlp.proj_out.weight": torch.zeros(1),
        "mask_decoder.iou_prediction_head.layers.0.bias": torch.zeros(1),
        "memory_encoder.memory_fuser.layers.1.scale": torch.zeros(1),
        "memory_encoder.mask_downsampler.layers.2.layer_norm.weight": torch.zeros(1),
        "vision_encoder.neck.convs.1.bias": torch.zeros(1),
        "memory_attention.layers.2.cross_attn_image.o_proj.weight": torch.zeros(1),
        "something.unknown": torch.zeros(1),
    }
    assert set(hf_to_meta(hf)) == {
        "image_encoder.trunk.blocks.3.mlp.layers.1.weight",
        "sam_mask_decoder.iou_prediction_head.layers.1.bias",
        "memory_encoder.fuser.layers.1.gamma",
        "memory_encoder.mask_downsampler.encoder.7.weight",
        "image_encoder.neck.convs.1.conv.bias",
        "memory_attention.layers.2.cross_attn_image.out_proj.weight",
        "something.unknown",  # passed through for strict loading to report
    }


def test_round_trip_keeps_values(hf_checkpoint) -> None:
    _, hf_state = hf_checkpoint(TINY)
    meta = hf_to_meta(hf_state)
    rows = [meta[f"sam_prompt_encoder.point_embeddings.{i}.weight"] for i in range(4)]
    assert torch.equal(torch.cat(rows), hf_state["prompt_encoder.point_embed.weight"])
    assert torch.equal(
        meta["image_encoder.trunk.blocks.0.attn.qkv.weight"],
        hf_state["vision_encoder.backbone.blocks.0.attn.qkv.weight"],
    )
    back = meta_to_hf(meta)
    assert set(back) == set(hf_state)
    assert all(torch.equal(back[k], hf_state[k]) for k in hf_state)


def test_diverging_fourier_copies_are_refused(hf_checkpoint) -> None:
    _, hf_state = hf_checkpoint(TINY)
    bad = dict(hf_state, **{PE_KEYS[1]: hf_state[PE_KEYS[0]] + 1})
    with pytest.raises(ValueError, match="differ"):
        hf_to_meta(bad)


# ----------------------------------------------------------------------------- config.json


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_config_from_hf_picks_the_variant(variant: str) -> None:
    data = hf_video_config(variant).to_dict()
    assert config_from_hf(data).name == variant


def test_config_from_hf_with_defaults_omitted() -> None:
    # Older transformers wrote only non-default values; the defaults are sam2.1-hiera-tiny.
    assert config_from_hf({"model_type": "sam2_video"}).name == TINY
    small_20 = {
        "model_type": "sam2_video",
        "enable_occlusion_spatial_embedding": False,
        "enable_temporal_pos_encoding_for_object_pointers": False,
        "vision_config": {
            "backbone_config": {
                "blocks_per_stage": [1, 2, 11, 2],
                "global_attention_blocks": [7, 10, 13],
            }
        },
    }
    assert config_from_hf(small_20).name == "sam2-hiera-small"


def test_config_from_hf_rejects_unofficial() -> None:
    base = hf_video_config(TINY).to_dict()
    deeper = copy.deepcopy(base)
    deeper["vision_config"]["backbone_config"]["blocks_per_stage"] = [1, 2, 8, 2]
    with pytest.raises(ValueError, match="matches none of the official SAM 2 sizes"):
        config_from_hf(deeper)
    with pytest.raises(ValueError, match="num_maskmem=9"):
        config_from_hf(dict(base, num_maskmem=9))
    with pytest.raises(ValueError, match="must both be true"):
        config_from_hf(dict(base, enable_occlusion_spatial_embedding=False))
    with pytest.raises(ValueError, match="model_type is 'sam'"):
        config_from_hf(dict(base, model_type="sam"))


def test_config_from_hf_reads_the_input_size() -> None:
    """A transformers config may set another input size; the weights are the variant's."""
    data = hf_video_config(TINY).to_dict()
    assert config_from_hf(data).image_size == 1024
    assert config_from_hf(dict(data, image_size=512)) == replace(get_config(TINY), image_size=512)
    image_only = transformers.Sam2Config(vision_config=hf_video_config(TINY).vision_config)
    image_data = image_only.to_dict()
    image_data["prompt_encoder_config"]["image_size"] = 256
    assert config_from_hf(image_data, version="2.1").image_size == 256
    with pytest.raises(ValueError, match="image_size=500; it must be a positive multiple of 32"):
        config_from_hf(dict(data, image_size=500))


def test_load_sam2_keeps_the_declared_input_size(hf_checkpoint, tmp_path: Path) -> None:
    directory, _ = hf_checkpoint(TINY)
    data = json.loads((directory / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(data, image_size=512)))
    (tmp_path / "model.safetensors").symlink_to(directory / "model.safetensors")
    assert load_sam2(tmp_path).config.image_size == 512
    assert load_sam2(tmp_path, variant=TINY).config.image_size == 512


def test_image_only_config_needs_the_version() -> None:
    data = transformers.Sam2Config(
        vision_config=hf_video_config("sam2-hiera-large").vision_config
    ).to_dict()
    data.pop("_name_or_path", None)
    with pytest.raises(AmbiguousVersionError, match="variant='sam2.1-hiera-large'"):
        config_from_hf(data)
    assert config_from_hf(data, version="2.0").name == "sam2-hiera-large"
    named = dict(data, _name_or_path="facebook/sam2.1-hiera-large")
    assert config_from_hf(named).name == "sam2.1-hiera-large"


# ----------------------------------------------------------------------------- loading


@pytest.mark.parametrize("variant", [TINY, "sam2-hiera-tiny"])
def test_read_transformers_directory(hf_checkpoint, variant: str) -> None:
    directory, hf_state = hf_checkpoint(variant)
    state, config = read_state_dict(directory)
    assert config is not None and config.name == variant
    assert infer_variant(state) == variant
    assert torch.equal(
        state["sam_prompt_encoder.point_embeddings.1.weight"],
        hf_state["prompt_encoder.point_embed.weight"][1:2],
    )
    assert {k: tuple(v.shape) for k, v in state.items()} == {
        k: tuple(v.shape) for k, v in reference_shapes(variant).items()
    }
    # The bare safetensors file reads the same, its sibling config.json included.
    state2, config2 = read_state_dict(directory / "model.safetensors")
    assert config2 == config and set(state2) == set(state)


def test_load_sam2_from_transformers_directory(hf_checkpoint) -> None:
    directory, hf_state = hf_checkpoint("sam2-hiera-tiny")
    model = load_sam2(directory)
    assert model.config.name == "sam2-hiera-tiny" and model.image_only is False
    loaded = meta_to_hf(model.state_dict())
    assert all(torch.equal(loaded[k], hf_state[k]) for k in hf_state)
    with pytest.raises(RuntimeError, match="looks like sam2-hiera-tiny, but sam2.1-hiera-tiny"):
        load_sam2(directory, variant=TINY)


def test_load_image_only_transformers_directory(hf_checkpoint, tmp_path: Path) -> None:
    _, hf_state = hf_checkpoint(TINY)
    image_model = transformers.Sam2Model(
        transformers.Sam2Config(vision_config=hf_video_config(TINY).vision_config)
    )
    image_keys = set(image_model.state_dict())
    image_model.load_state_dict({k: hf_state[k] for k in image_keys}, strict=True)
    image_model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "sam2"

    with pytest.raises(RuntimeError, match="pass it, e.g. variant='sam2.1-hiera-tiny'"):
        load_sam2(tmp_path)
    model = load_sam2(tmp_path, variant=TINY)
    assert model.image_only is True
    state = model.state_dict()
    expected = hf_to_meta({k: hf_state[k] for k in image_keys})
    assert set(state) - set(expected) == {k for k in state if is_memory_key(k)}
    assert all(torch.equal(state[k], v) for k, v in expected.items())


# ----------------------------------------------------------------------------- numerics


def _image(seed: int = 0) -> np.ndarray:
    """A 1024x1024 RGB image with smooth structure (so masks are not pure noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:1024, 0:1024] / 1024.0
    blobs = np.stack([np.sin(6 * xx + c) * np.cos(5 * yy - c) for c in range(3)], axis=-1)
    return np.clip(127 + 100 * blobs + rng.normal(0, 20, blobs.shape), 0, 255).astype(np.uint8)


def _pixel_values(image: np.ndarray) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return ((torch.from_numpy(image).permute(2, 0, 1).float() / 255 - mean) / std)[None]


def test_sam2ui_matches_transformers_sam2model(hf_checkpoint) -> None:
    predictor_module = pytest.importorskip("sam2ui.core.image.predictor")
    directory, hf_state = hf_checkpoint(TINY)
    hf_model = transformers.Sam2Model(
        transformers.Sam2Config(vision_config=hf_video_config(TINY).vision_config)
    )
    hf_model.load_state_dict({k: hf_state[k] for k in hf_model.state_dict()}, strict=True)
    hf_model.eval()

    predictor = predictor_module.SAM2ImagePredictor(load_sam2(directory))
    image = _image()
    predictor.set_image(image)
    with torch.inference_mode():
        hf_embeddings = hf_model.get_image_embeddings(_pixel_values(image))
    embed_diff = (predictor.get_image_embedding() - hf_embeddings[-1]).abs().max().item()
    assert embed_diff < 1e-4

    prompts: list[dict[str, Any]] = [
        {"points": [[400.0, 300.0]], "labels": [1], "box": None, "multimask": True},
        {
            "points": [[512.0, 600.0], [700.0, 200.0]],
            "labels": [1, 0],
            "box": [100.0, 150.0, 800.0, 900.0],
            "multimask": False,
        },
    ]
    for prompt in prompts:
        points = torch.tensor([prompt["points"]])
        labels = torch.tensor([prompt["labels"]])
        box = None if prompt["box"] is None else torch.tensor([prompt["box"]])
        with torch.inference_mode():
            _, iou, low_res = predictor.predict_torch(
                points, labels, boxes=box, multimask_output=prompt["multimask"], return_logits=True
            )
            hf_out = hf_model(
                image_embeddings=hf_embeddings,
                input_points=points[:, None],
                input_labels=labels[:, None],
                input_boxes=None if box is None else box[:, None],
                multimask_output=prompt["multimask"],
            )
        n_masks = 3 if prompt["multimask"] else 1
        assert low_res.shape == (1, n_masks, 256, 256)
        assert hf_out.pred_masks.shape == (1, 1, n_masks, 256, 256)
        assert low_res.std() > 1e-2  # the comparison below is not between near-constant maps
        assert (low_res - hf_out.pred_masks[:, 0]).abs().max().item() < 1e-4
        assert (iou - hf_out.iou_scores[:, 0]).abs().max().item() < 1e-4


def test_memory_modules_match_transformers(hf_checkpoint) -> None:
    """The video-only weights: Meta's reference memory modules, loaded through the mapping,
    agree with transformers' own modules on the same inputs.

    A 16x16 feature grid keeps this fast; transformers precomputes its RoPE positions for a
    fixed grid, so its config is told the grid (no weight depends on it).
    """
    from tests.reference_models import build_reference_model

    _, hf_state = hf_checkpoint(TINY)
    config = hf_video_config(TINY)
    config.memory_attention_rope_feat_sizes = [16, 16]
    hf_model = transformers.Sam2VideoModel(config).eval()
    hf_model.load_state_dict(hf_state, strict=True)
    ref: Any = build_reference_model(TINY, state_dict=hf_to_meta(hf_state))

    gen = torch.Generator().manual_seed(0)
    pix = torch.randn(1, 256, 16, 16, generator=gen)
    mask = torch.randn(1, 1, 256, 256, generator=gen)
    with torch.inference_mode():
        ours = ref.memory_encoder(pix, mask, skip_mask_sigmoid=True)["vision_features"]
        theirs, _ = hf_model.memory_encoder(pix, mask)
    assert ours.shape == theirs.shape == (1, 64, 16, 16)
    assert ours.std() > 1e-2 and (ours - theirs).abs().max().item() < 1e-4

    n_ptr = 4  # object-pointer tokens at the end of the memory are excluded from RoPE
    curr = torch.randn(256, 1, 256, generator=gen)
    curr_pos = torch.randn(256, 1, 256, generator=gen)
    memory = torch.randn(2 * 256 + n_ptr, 1, 64, generator=gen)
    memory_pos = torch.randn(2 * 256 + n_ptr, 1, 64, generator=gen)
    with torch.inference_mode():
        ours = ref.memory_attention(
            curr=[curr],
            curr_pos=[curr_pos],
            memory=memory,
            memory_pos=memory_pos,
            num_obj_ptr_tokens=n_ptr,
        )
        theirs = hf_model.memory_attention(
            curr, memory, curr_pos, memory_pos, num_object_pointer_tokens=n_ptr
        )
        theirs = theirs.squeeze(0).transpose(0, 1)  # (1, B, HW, C) -> (HW, B, C) like Meta's
        tokens = torch.randn(3, 256, generator=gen)
        ptr_ours, ptr_theirs = ref.obj_ptr_proj(tokens), hf_model.object_pointer_proj(tokens)
    assert ours.shape == theirs.shape == (256, 1, 256)
    assert ours.std() > 1e-2 and (ours - theirs).abs().max().item() < 1e-4
    assert ptr_ours.std() > 1e-2 and (ptr_ours - ptr_theirs).abs().max().item() < 1e-5

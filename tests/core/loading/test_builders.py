"""Meta's builder API (``build_sam2``, ``build_sam2_video_predictor`` and their hub forms) on
sam2ui, with random-weight checkpoints and a fake offline hub cache (no network)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

import sam2ui
from sam2ui.core import SAM2ImagePredictor, SAM2VideoPredictor, resolve_device
from sam2ui.core.loading.build import (
    META_BUILDER_ARGS,
    build_sam2,
    build_sam2_hf,
    build_video_model,
    load_for_predictor,
)
from sam2ui.core.loading.checkpoint import is_memory_key, read_state_dict
from sam2ui.core.loading.hub import CheckpointUnavailableError
from sam2ui.core.modeling.compiled import COMPILED_PARTS, compiled_parts, is_compiled
from sam2ui.core.modeling.config import VARIANTS, get_config
from sam2ui.core.video.builders import build_sam2_video_predictor, build_sam2_video_predictor_hf
from tests.core.loading.test_hub import make_cache
from tests.reference_models import build_reference_model, reference_config_file

TINY = "sam2.1-hiera-tiny"
TINY_ID = "facebook/sam2.1-hiera-tiny"
TINY_YAML = "configs/sam2.1/sam2.1_hiera_t.yaml"


@pytest.fixture(scope="session")
def tiny_ckpt(meta_checkpoint) -> Path:
    return meta_checkpoint(TINY)


@pytest.fixture(scope="session")
def tiny_weights(tiny_ckpt: Path) -> dict[str, torch.Tensor]:
    return read_state_dict(tiny_ckpt)[0]


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_ckpt: Path) -> Path:
    """A Hugging Face cache holding only Meta's sam2.1-hiera-tiny file; the hub is off."""
    cache = tmp_path / "hub"
    make_cache(cache, TINY_ID, {"sam2.1_hiera_tiny.pt": tiny_ckpt})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def assert_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    assert set(loaded) == set(weights)
    different = [k for k, v in weights.items() if not torch.equal(loaded[k].cpu(), v)]
    assert different == []


# ----------------------------------------------------------------------------- config names


def test_single_argument_form_is_unchanged() -> None:
    with torch.device("meta"):  # built where torch builds, as internal callers rely on
        on_meta = build_sam2(TINY)
    assert on_meta.device.type == "meta"
    model = build_sam2(TINY)
    assert model.device == torch.device("cpu") and not model.training
    assert model.config == get_config(TINY)
    assert model.sam_mask_decoder.dynamic_multimask_via_stability is True


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_meta_config_file_names_its_variant(variant: str) -> None:
    import sam2

    package = Path(sam2.__file__).parent
    config_file = reference_config_file(variant)  # e.g. configs/sam2.1/sam2.1_hiera_t.yaml
    assert (package / config_file).is_file()  # the reference ships this very file
    folder, file_name = config_file.split("/")[1:]
    assert get_config(config_file).name == variant
    assert get_config(f"{folder}/{file_name}").name == variant
    assert get_config(file_name).name == variant
    if folder == "sam2":  # the reference also keeps SAM 2's files at its package root
        assert (package / file_name).is_file()


def test_meta_config_names_build_their_variant() -> None:
    with torch.device("meta"):
        assert build_sam2("configs/sam2/sam2_hiera_b+.yaml").config.name == "sam2-hiera-base-plus"
        assert build_sam2("sam2_hiera_l.yaml").config.name == "sam2-hiera-large"
        assert build_sam2("sam2.1/sam2.1_hiera_t.yaml").config.name == TINY


@pytest.mark.parametrize(
    "name",
    [
        "configs/sam2.1/sam2.1_hiera_xl.yaml",
        "configs/sam2/sam2.1_hiera_t.yaml",  # version folder and file disagree
        "configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml",
    ],
)
def test_unknown_config_lists_the_valid_ones(name: str) -> None:
    with pytest.raises(ValueError, match="unknown SAM 2 config") as info:
        build_sam2(name)
    message = str(info.value)
    assert repr(name) in message
    assert "sam2.1-hiera-tiny" in message and "sam2-hiera-large" in message
    assert "configs/sam2.1/sam2.1_hiera_t.yaml" in message
    assert "configs/sam2/sam2_hiera_b+.yaml" in message


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_loads_on_the_device_in_eval_mode(tiny_ckpt: Path, tiny_weights) -> None:
    model = build_sam2(TINY_YAML, tiny_ckpt, "cpu")  # Meta's positional form
    assert_weights(model, tiny_weights)
    assert model.config.name == TINY
    assert model.device == torch.device("cpu")
    assert not any(m.training for m in model.modules())
    assert model.image_only is False


def test_train_mode_and_default_device(tiny_ckpt: Path) -> None:
    model = build_sam2(TINY_YAML, ckpt_path=tiny_ckpt, mode="train")
    assert all(m.training for m in model.modules())
    assert model.device == resolve_device(None)  # the engine's choice: cuda, mps, cpu


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tiny_ckpt: Path) -> None:
    with pytest.raises(RuntimeError, match="'cuda' was requested but CUDA is not available"):
        build_sam2(TINY_YAML, tiny_ckpt, device="cuda")


def test_missing_checkpoint_file(tmp_path: Path) -> None:
    missing = tmp_path / "sam2.1_hiera_tiny.pt"
    with pytest.raises(FileNotFoundError, match="checkpoint not found") as info:
        build_sam2(TINY_YAML, missing, "cpu")
    assert str(missing) in str(info.value)


def test_checkpoint_of_another_variant(tiny_ckpt: Path) -> None:
    with pytest.raises(RuntimeError, match="looks like sam2.1-hiera-tiny, but sam2-hiera-tiny"):
        build_sam2("configs/sam2/sam2_hiera_t.yaml", tiny_ckpt, "cpu")


def test_image_only_checkpoint_builds_images_not_video(tmp_path: Path, tiny_weights) -> None:
    path = tmp_path / "image_only.pt"
    torch.save({"model": {k: v for k, v in tiny_weights.items() if not is_memory_key(k)}}, path)
    model = build_sam2(TINY_YAML, path, torch.device("cpu"))
    assert model.image_only is True and model.device == torch.device("cpu")
    assert torch.equal(
        model.state_dict()["sam_mask_decoder.iou_token.weight"],
        tiny_weights["sam_mask_decoder.iou_token.weight"],
    )
    with pytest.raises(RuntimeError, match="no memory weights"):
        build_sam2_video_predictor(TINY_YAML, path, "cpu")


# ----------------------------------------------------------------------------- overrides


def test_overrides_change_config_fields() -> None:
    overrides = [
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.9",
        "model.max_obj_ptrs_in_encoder=8",
        "+model.non_overlap_masks_for_mem_enc=True",
        "++model.fpn_top_down_levels=[3]",
        "++model.compile_image_encoder=false",
    ]
    with torch.device("meta"):
        model = build_sam2(TINY_YAML, hydra_overrides_extra=overrides)
    cfg = model.config
    assert cfg.dynamic_multimask_stability_thresh == 0.9
    assert model.sam_mask_decoder.stability_thresh == 0.9
    assert cfg.max_obj_ptrs_in_encoder == 8
    assert cfg.non_overlap_masks_for_mem_enc is True
    assert cfg.fpn_top_down_levels == (3,)
    assert not is_compiled(model)
    untouched = get_config(TINY)
    assert cfg.dynamic_multimask_stability_delta == untouched.dynamic_multimask_stability_delta
    assert cfg.num_maskmem == untouched.num_maskmem


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("++model.no_such_key=1", "no config key 'model.no_such_key'; accepted keys: model."),
        ("++model.image_encoder.trunk.embed_dim=64", "no config key"),
        ("++model.fill_hole_area=8", "option of the video predictor"),
        ("++model.num_maskmem=seven", "'seven' is not a valid value (expected int)"),
        ("++model.pred_obj_scores=maybe", "expected bool"),
        ("~model.num_maskmem", "deleting config keys is not supported"),
        ("++trainer.max_epochs=1", "expected '++model.<key>=<value>'"),
        ("++model.name=sam2-hiera-large", "belongs to the variant"),
    ],
)
def test_bad_override_is_named(override: str, message: str) -> None:
    with pytest.raises(ValueError, match="hydra override") as info:
        build_sam2(TINY_YAML, hydra_overrides_extra=[override])
    assert repr(override) in str(info.value)
    assert message in str(info.value)


def test_overrides_must_be_a_list() -> None:
    with pytest.raises(TypeError, match="must be a list of strings"):
        build_sam2(TINY_YAML, hydra_overrides_extra="++model.num_maskmem=7")


# ----------------------------------------------------------------------------- post-processing


def test_apply_postprocessing_matches_the_reference() -> None:
    """Meta's video builder without post-processing: no dynamic multimask, no binarised click
    masks, no hole filling; with it (sam2ui's defaults): all three on."""
    reference = build_reference_model(TINY, video=True, apply_postprocessing=False)
    with torch.device("meta"):
        off = build_sam2_video_predictor(TINY_YAML, apply_postprocessing=False)
        on = build_sam2_video_predictor(TINY_YAML)
        image_off = build_sam2(TINY_YAML, apply_postprocessing=False)
    decoder = reference.sam_mask_decoder
    assert off.fill_hole_area == reference.fill_hole_area == 0
    assert (
        off.model.config.binarize_mask_from_pts_for_mem_enc
        is reference.binarize_mask_from_pts_for_mem_enc
        is False
    )
    assert (
        off.model.sam_mask_decoder.dynamic_multimask_via_stability
        is decoder.dynamic_multimask_via_stability
        is False
    )
    assert image_off.sam_mask_decoder.dynamic_multimask_via_stability is False
    assert on.fill_hole_area == 8
    assert on.model.config.binarize_mask_from_pts_for_mem_enc is True
    assert on.model.sam_mask_decoder.dynamic_multimask_via_stability is True
    assert on.model.config.dynamic_multimask_stability_delta == 0.05
    assert on.model.config.dynamic_multimask_stability_thresh == 0.98


def test_compile_image_encoder_override() -> None:
    with torch.device("meta"):
        model = build_sam2(TINY_YAML, hydra_overrides_extra=["++model.compile_image_encoder=true"])
    # Compiled lazily: the first call would trace it. Only the image encoder, as in Meta's.
    assert compiled_parts(model) == {"image_encoder"}


# ----------------------------------------------------------------------------- video builder


def test_video_predictor_builder(tiny_ckpt: Path, tiny_weights) -> None:
    overrides = ["++model.fill_hole_area=3", "++model.non_overlap_masks=true"]
    predictor = build_sam2_video_predictor(
        TINY_YAML,
        tiny_ckpt,
        device="cpu",
        hydra_overrides_extra=overrides,
        vos_optimized=True,
        keep_all_memories=True,  # an option of sam2ui's predictor: passed on
        mask_threshold=0.5,  # not an option here: ignored, as Meta's builder does
    )
    assert isinstance(predictor, SAM2VideoPredictor)
    assert_weights(predictor.model, tiny_weights)
    assert predictor.device == torch.device("cpu") and not predictor.model.training
    assert predictor.fill_hole_area == 3
    assert predictor.non_overlap_masks is True
    assert predictor.keep_all_memories is True
    assert predictor.model.config.binarize_mask_from_pts_for_mem_enc is True
    # Meta's compiled predictor: the heavy parts are compiled (lazily: nothing runs here).
    assert compiled_parts(predictor.model) == set(COMPILED_PARTS)


def test_video_builder_kwargs_win_over_overrides() -> None:
    with torch.device("meta"):
        predictor = build_sam2_video_predictor(
            TINY_YAML, hydra_overrides_extra=["++model.fill_hole_area=3"], fill_hole_area=5
        )
    assert predictor.fill_hole_area == 5


# ----------------------------------------------------------------------------- hub builders


def test_hub_builders_use_the_cached_checkpoint(offline_hub: Path, tiny_weights) -> None:
    model = build_sam2_hf(TINY_ID, device="cpu", mode="eval")
    assert model.config.name == TINY
    assert_weights(model, tiny_weights)
    predictor = build_sam2_video_predictor_hf(TINY_ID, device="cpu")
    assert isinstance(predictor, SAM2VideoPredictor)
    assert predictor.fill_hole_area == 8
    assert_weights(predictor.model, tiny_weights)


def test_hub_builders_report_missing_and_unknown_ids(offline_hub: Path) -> None:
    with pytest.raises(CheckpointUnavailableError, match="sam2_hiera_small.pt") as info:
        build_sam2_hf("facebook/sam2-hiera-small", device="cpu")
    assert "HF_HUB_OFFLINE" in str(info.value)
    with pytest.raises(ValueError, match="not one of the official SAM 2 hub repositories"):
        build_sam2_video_predictor_hf("someone/sam2-finetuned")


def test_predictors_from_pretrained_with_hub_ids(offline_hub: Path, tiny_weights) -> None:
    image = SAM2ImagePredictor.from_pretrained(TINY_ID, device="cpu", mode="eval")
    assert_weights(image.model, tiny_weights)
    video = SAM2VideoPredictor.from_pretrained(TINY_ID, device="cpu")
    assert_weights(video.model, tiny_weights)
    assert video.model.config.binarize_mask_from_pts_for_mem_enc is True


def test_load_for_predictor_takes_meta_builder_keywords(offline_hub: Path, tiny_weights) -> None:
    """The helper a predictor's from_pretrained can hand Meta's builder keywords to."""
    assert set(META_BUILDER_ARGS) < set(inspect.signature(build_video_model).parameters)
    built = load_for_predictor(
        TINY_ID,
        video=True,
        device="cpu",
        mode="train",
        hydra_overrides_extra=["++model.fill_hole_area=2"],
        apply_postprocessing=False,
    )
    assert_weights(built.model, tiny_weights)
    assert built.model.training
    assert built.predictor_options == {"fill_hole_area": 2}
    assert built.model.config.binarize_mask_from_pts_for_mem_enc is False
    assert built.model.sam_mask_decoder.dynamic_multimask_via_stability is False
    image = load_for_predictor(TINY_ID, video=False, device="cpu")
    assert image.predictor_options == {} and not image.model.training
    assert image.model.config == get_config(TINY)
    with pytest.raises(ValueError, match="option of the video predictor"):
        load_for_predictor(TINY_ID, video=False, hydra_overrides_extra=["++model.fill_hole_area=1"])


# ----------------------------------------------------------------------------- imports


def test_meta_style_imports() -> None:
    from sam2ui.build_sam import build_sam2 as meta_style_build
    from sam2ui.build_sam import build_sam2_hf as meta_style_hf
    from sam2ui.build_sam import build_sam2_video_predictor as meta_style_video
    from sam2ui.build_sam import build_sam2_video_predictor_hf as meta_style_video_hf

    assert meta_style_build is build_sam2 is sam2ui.build_sam2
    assert meta_style_hf is build_sam2_hf is sam2ui.build_sam2_hf
    assert meta_style_video is build_sam2_video_predictor is sam2ui.build_sam2_video_predictor
    assert meta_style_video_hf is build_sam2_video_predictor_hf
    assert sam2ui.build_sam2_video_predictor_hf is build_sam2_video_predictor_hf

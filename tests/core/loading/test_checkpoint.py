"""Reading checkpoints, recognising variants and strict loading (sam2ui.core.loading.checkpoint)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch

from sam2ui.core.loading.build import build_sam2
from sam2ui.core.loading.checkpoint import (
    infer_variant,
    is_memory_key,
    load_sam2,
    load_state_dict_strict,
    read_state_dict,
)
from sam2ui.core.modeling.config import VARIANTS

TINY = "sam2.1-hiera-tiny"


@functools.cache
def reference_shapes(variant: str) -> dict[str, torch.Tensor]:
    """Meta's state dict for ``variant`` as shape-only tensors (the ``meta`` device).

    Built by the reference package itself, so the keys are Meta's ground truth. Its Hiera
    constructor calls ``.item()`` on a ``linspace`` (drop-path rates), which meta tensors cannot
    do, so that one call is made on the CPU.
    """
    from sam2.build_sam import build_sam2 as build_reference

    from tests.reference_models import built_as_on_a_cpu_machine, reference_config_file

    linspace = torch.linspace

    def cpu_linspace(*args: Any, **kwargs: Any) -> torch.Tensor:
        return linspace(*args, **{**kwargs, "device": "cpu"})

    with (
        built_as_on_a_cpu_machine(),
        torch.device("meta"),
        mock.patch("torch.linspace", cpu_linspace),
    ):
        model = build_reference(reference_config_file(variant), None, device="meta")
    return dict(model.state_dict())


@pytest.fixture(scope="session")
def tiny_state(meta_checkpoint) -> dict[str, torch.Tensor]:
    state, config = read_state_dict(meta_checkpoint(TINY))
    assert config is None  # a Meta .pt declares no config
    return state


@pytest.fixture(scope="session")
def tiny_model() -> torch.nn.Module:
    return build_sam2(TINY)


def _without(state: dict[str, torch.Tensor], *keys: str) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k not in keys}


# ----------------------------------------------------------------------------- variants


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_infer_variant_all_official(variant: str) -> None:
    shapes = reference_shapes(variant)
    assert infer_variant(shapes) == variant
    # sam2ui's builder has exactly Meta's keys and shapes (what strict loading relies on).
    with torch.device("meta"):
        ours = build_sam2(variant).state_dict()
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in shapes.items()
    }


def test_infer_variant_undecidable_cases() -> None:
    shapes = reference_shapes(TINY)
    # Without memory modules the 2.0/2.1 difference is invisible.
    image_only = {k: v for k, v in shapes.items() if not is_memory_key(k)}
    assert infer_variant(image_only) is None
    # Only one of the two SAM 2.1 additions: not an official layout.
    assert infer_variant(_without(shapes, "no_obj_embed_spatial")) is None
    assert infer_variant(_without(shapes, "image_encoder.trunk.patch_embed.proj.weight")) is None
    wide = dict(
        shapes, **{"image_encoder.trunk.patch_embed.proj.weight": torch.empty(128, 3, 7, 7)}
    )
    assert infer_variant(wide) is None
    # A SAM 2.1 checkpoint stripped of its two additions is exactly a SAM 2 one.
    stripped = {
        k: v
        for k, v in shapes.items()
        if k != "no_obj_embed_spatial" and not k.startswith("obj_ptr_tpos_proj.")
    }
    assert set(stripped) == set(reference_shapes("sam2-hiera-tiny"))
    assert infer_variant(stripped) == "sam2-hiera-tiny"


# ----------------------------------------------------------------------------- strict loading


def test_round_trip_loads_strictly(tiny_state, tiny_model) -> None:
    load_state_dict_strict(tiny_model, tiny_state)
    loaded = tiny_model.state_dict()
    assert set(loaded) == set(tiny_state)
    assert all(torch.equal(loaded[k], tiny_state[k]) for k in tiny_state)
    assert tiny_model.image_only is False


def test_missing_key_is_named(tiny_state, tiny_model) -> None:
    with pytest.raises(
        RuntimeError, match=r"1 missing key \(sam_mask_decoder\.iou_token\.weight\)"
    ):
        load_state_dict_strict(
            tiny_model, _without(tiny_state, "sam_mask_decoder.iou_token.weight")
        )


def test_many_missing_keys_are_counted(tiny_state, tiny_model) -> None:
    gone = sorted(
        k for k in tiny_state if k.startswith("sam_mask_decoder.conv_s") or "iou_token" in k
    )
    assert len(gone) == 5
    gone += ["sam_mask_decoder.mask_tokens.weight", "sam_mask_decoder.obj_score_token.weight"]
    with pytest.raises(RuntimeError) as info:
        load_state_dict_strict(tiny_model, _without(tiny_state, *gone))
    message = str(info.value)
    assert "7 missing keys" in message and "(2 more)" in message
    assert sorted(gone)[0] in message and sorted(gone)[-1] not in message
    assert TINY in message


def test_unexpected_key_is_named(tiny_state, tiny_model) -> None:
    extra = dict(tiny_state, **{"sam_mask_decoder.extra_head.weight": torch.zeros(3)})
    with pytest.raises(
        RuntimeError, match=r"1 unexpected key \(sam_mask_decoder\.extra_head\.weight\)"
    ):
        load_state_dict_strict(tiny_model, extra)


def test_shape_mismatch_names_key_and_shapes(tiny_state, tiny_model) -> None:
    bad = dict(tiny_state, **{"sam_mask_decoder.iou_token.weight": torch.zeros(1, 255)})
    with pytest.raises(RuntimeError) as info:
        load_state_dict_strict(tiny_model, bad)
    assert "sam_mask_decoder.iou_token.weight: checkpoint (1, 255) vs model (1, 256)" in str(
        info.value
    )


def test_failed_load_leaves_weights_untouched(tiny_state, tiny_model) -> None:
    load_state_dict_strict(tiny_model, tiny_state)
    zeros = {k: torch.zeros_like(v) for k, v in tiny_state.items()}
    zeros["foo"] = torch.zeros(1)
    with pytest.raises(RuntimeError):
        load_state_dict_strict(tiny_model, zeros)
    weight = tiny_model.state_dict()["sam_mask_decoder.iou_token.weight"]
    assert torch.equal(weight, tiny_state["sam_mask_decoder.iou_token.weight"])


def test_sam2_checkpoint_into_sam21_model(tiny_model) -> None:
    with pytest.raises(
        RuntimeError,
        match="checkpoint looks like sam2-hiera-tiny, but sam2.1-hiera-tiny was requested",
    ):
        load_state_dict_strict(tiny_model, reference_shapes("sam2-hiera-tiny"))


def test_tiny_checkpoint_into_small_model(tiny_state) -> None:
    with torch.device("meta"):  # the check happens before any weight is copied
        small = build_sam2("sam2.1-hiera-small")
    with pytest.raises(
        RuntimeError,
        match="checkpoint looks like sam2.1-hiera-tiny, but sam2.1-hiera-small was requested",
    ):
        load_state_dict_strict(small, tiny_state)
    image_only = {k: v for k, v in tiny_state.items() if not is_memory_key(k)}
    with pytest.raises(
        RuntimeError, match="looks like a hiera-tiny model, but sam2.1-hiera-small was requested"
    ):
        load_state_dict_strict(small, image_only, allow_missing_memory=True)


def test_image_only_checkpoint(tiny_state) -> None:
    image_only = {k: v for k, v in tiny_state.items() if not is_memory_key(k)}
    assert 0 < len(image_only) < len(tiny_state)
    model = build_sam2(TINY)
    with pytest.raises(RuntimeError, match="allow_missing_memory=True"):
        load_state_dict_strict(model, image_only)
    load_state_dict_strict(model, image_only, allow_missing_memory=True)
    assert model.image_only is True
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in image_only.items())
    # The flag covers the memory modules only.
    with pytest.raises(
        RuntimeError, match=r"1 missing key \(sam_mask_decoder\.iou_token\.weight\)"
    ):
        load_state_dict_strict(
            model,
            _without(image_only, "sam_mask_decoder.iou_token.weight"),
            allow_missing_memory=True,
        )


# ----------------------------------------------------------------------------- files


def test_load_sam2_from_meta_file(meta_checkpoint, tiny_state) -> None:
    model = load_sam2(meta_checkpoint(TINY))
    assert model.config.name == TINY
    assert not model.training and model.image_only is False
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in tiny_state.items())


def test_load_sam2_refuses_wrong_variant(meta_checkpoint) -> None:
    with pytest.raises(
        RuntimeError, match="looks like sam2.1-hiera-tiny, but sam2-hiera-tiny was requested"
    ):
        load_sam2(meta_checkpoint(TINY), variant="sam2-hiera-tiny")


def test_load_sam2_bfloat16(meta_checkpoint, tiny_state) -> None:
    model = load_sam2(str(meta_checkpoint(TINY)), dtype=torch.bfloat16)
    assert model.compute_dtype == torch.bfloat16
    assert model.image_encoder.trunk.patch_embed.proj.weight.dtype == torch.bfloat16
    assert model.sam_mask_decoder.iou_token.weight.dtype == torch.float32


def test_image_only_file_needs_a_variant(tmp_path: Path, tiny_state) -> None:
    path = tmp_path / "image_only.pt"
    torch.save({"model": {k: v for k, v in tiny_state.items() if not is_memory_key(k)}}, path)
    with pytest.raises(
        RuntimeError, match="variant='sam2.1-hiera-tiny' or variant='sam2-hiera-tiny'"
    ):
        load_sam2(path)
    model = load_sam2(path, variant=TINY)
    assert model.image_only is True


def test_safetensors_file(tmp_path: Path, tiny_state) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_state.items()}, str(path))
    state, config = read_state_dict(path)
    assert config is None and set(state) == set(tiny_state)
    assert torch.equal(state["no_obj_embed_spatial"], tiny_state["no_obj_embed_spatial"])


def test_plain_state_dict_file(tmp_path: Path, tiny_state) -> None:
    path = tmp_path / "plain.pth"
    torch.save(tiny_state, path)
    state, _ = read_state_dict(path)
    assert infer_variant(state) == TINY


@pytest.mark.parametrize("name", ["random.pt", "random.safetensors"])
def test_random_bytes_give_clear_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(RuntimeError, match=f"{name} is not a readable"):
        read_state_dict(path)


def test_truncated_checkpoint_gives_clear_error(tmp_path: Path, meta_checkpoint) -> None:
    data = meta_checkpoint(TINY).read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        RuntimeError, match="truncated.pt is not a readable PyTorch checkpoint"
    ) as info:
        load_sam2(path)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_non_checkpoint_contents(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(RuntimeError, match="list.pt holds no SAM 2 state dict"):
        read_state_dict(path)
    path = tmp_path / "mixed.pt"
    torch.save({"model": {"a": torch.zeros(1), "b": 3}}, path)
    with pytest.raises(RuntimeError, match="mixed.pt is not a state dict"):
        read_state_dict(path)


def test_missing_paths(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_sam2(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*missing.pt"):
        load_sam2("./missing.pt")
    with pytest.raises(FileNotFoundError, match="without model.safetensors"):
        read_state_dict(tmp_path)
    with pytest.raises(ValueError, match="neither an existing file or directory nor an official"):
        load_sam2("not-a-model")

"""Reading SAM 2 checkpoints, recognising their variant, and loading them strictly.

Three on-disk forms are read: Meta's ``.pt`` (``{"model": state_dict}``), a bare
``.safetensors`` file, and a transformers directory (``config.json`` + ``model.safetensors``),
whose keys are translated by :mod:`sam2ui.core.loading.hf_layout`. Every state dict handed to a
model uses Meta's key names, which are also sam2ui's module names.

Image-only checkpoints (e.g. saved from transformers' ``Sam2Model``) lack the memory modules
used for video. They load when ``allow_missing_memory`` permits it; the model is then marked
``model.image_only = True`` so that video code can refuse it, and its memory weights stay at
their untrained initial values.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sam2ui.core.modeling.config import VARIANTS, SAM2Config, get_config

from .hf_layout import AmbiguousVersionError, config_from_hf, hf_to_meta, is_hf_layout

if TYPE_CHECKING:
    from sam2ui.core.modeling import SAM2Model

__all__ = [
    "MEMORY_KEY_PREFIXES",
    "infer_variant",
    "is_memory_key",
    "load_sam2",
    "load_state_dict_strict",
    "read_state_dict",
]

StateDict = dict[str, torch.Tensor]

# Meta keys that only the video path (memory attention, memory encoder, object pointers) uses.
MEMORY_KEY_PREFIXES = (
    "memory_attention.",
    "memory_encoder.",
    "mask_downsample.",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
)
_MEMORY_KEYS = frozenset(
    {"maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial"}
)
_PATCH_EMBED = "image_encoder.trunk.patch_embed.proj.weight"
_BLOCK_KEY = re.compile(r"image_encoder\.trunk\.blocks\.(\d+)\.")
_LIST_LIMIT = 5  # how many keys an error message names before summarising


def is_memory_key(key: str) -> bool:
    """Whether a Meta key belongs to the video-only memory modules."""
    return key in _MEMORY_KEYS or key.startswith(MEMORY_KEY_PREFIXES)


# ----------------------------------------------------------------------------- reading


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _load_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise RuntimeError(
            f"{path} is not a readable safetensors file ({_first_line(exc)})"
        ) from None


def _load_torch(path: Path) -> StateDict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling corrupt bytes can raise almost any error type
        raise RuntimeError(
            f"{path} is not a readable PyTorch checkpoint: it may be truncated, corrupt or not a "
            f"checkpoint at all ({_first_line(exc)})"
        ) from None
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj:
        raise RuntimeError(
            f"{path} holds no SAM 2 state dict: expected {{'model': state_dict}} or a "
            f"state dict, found {type(obj).__name__}"
        )
    return dict(obj)


def _read_directory(path: Path) -> tuple[StateDict, Path | None]:
    """Weights of a transformers directory, single-file or sharded."""
    single = path / "model.safetensors"
    index = path / "model.safetensors.index.json"
    config = path / "config.json"
    if single.is_file():
        state = _load_safetensors(single)
    elif index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"{index} is not a valid shard index ({_first_line(exc)})") from None
        state = {}
        for shard in shards:
            state.update(_load_safetensors(path / shard))
    else:
        raise FileNotFoundError(
            f"{path} is a directory without model.safetensors; expected a transformers "
            "checkpoint directory (config.json + model.safetensors)"
        )
    return state, config if config.is_file() else None


def _read_config(path: Path) -> SAM2Config | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"{path} is not valid JSON ({_first_line(exc)})") from None
    try:
        return config_from_hf(data)
    except AmbiguousVersionError:
        return None  # the weights (or the caller's variant) decide
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def read_state_dict(path: str | os.PathLike[str]) -> tuple[StateDict, SAM2Config | None]:
    """Read a checkpoint into a state dict with Meta's keys, and the config it declares.

    ``path`` is a Meta ``.pt``/``.pth`` file, a ``.safetensors`` file (either key layout), or a
    transformers directory with ``config.json`` and ``model.safetensors``. The config is
    returned only when a transformers ``config.json`` names the variant; otherwise ``None``.
    Raises ``FileNotFoundError`` for a missing path and ``RuntimeError`` naming the path for a
    file that cannot be read as a checkpoint.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"checkpoint not found: {p}")
    config_path: Path | None = None
    if p.is_dir():
        state, config_path = _read_directory(p)
    elif p.suffix == ".safetensors":
        state = _load_safetensors(p)
        sibling = p.parent / "config.json"
        config_path = sibling if sibling.is_file() else None
    else:
        state = _load_torch(p)
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise RuntimeError(f"{p} is not a state dict: entries such as {bad[0]!r} are not tensors")
    config = None
    if is_hf_layout(state):
        state = hf_to_meta(state)
        config = _read_config(config_path) if config_path is not None else None
    return state, config


# ----------------------------------------------------------------------------- variants


def _infer_size(state_dict: Mapping[str, Any]) -> str | None:
    """'tiny', 'small', 'base-plus' or 'large' from the trunk's width and depth."""
    weight = state_dict.get(_PATCH_EMBED)
    if weight is None or not hasattr(weight, "shape") or len(weight.shape) != 4:
        return None
    width = int(weight.shape[0])
    depth = len({int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))})
    for name, cfg in VARIANTS.items():
        if cfg.trunk.embed_dim == width and cfg.trunk.depth == depth:
            return name.split("-", 2)[2]
    return None


def infer_variant(state_dict: Mapping[str, Any]) -> str | None:
    """The official variant whose weights ``state_dict`` holds (Meta or transformers keys).

    The size comes from the Hiera patch-embedding width and the number of trunk blocks; SAM 2.1
    is told from SAM 2 by the two parameters it adds (``no_obj_embed_spatial`` and the
    ``obj_ptr_tpos_proj`` linear layer). Returns ``None`` when the size is not an official one,
    when only one of the two 2.1 parameters is present, or when the memory modules are absent
    altogether (an image-only checkpoint, where the version cannot be seen). Only shapes are
    read, so tensors on the ``meta`` device work.
    """
    if is_hf_layout(state_dict):
        state_dict = hf_to_meta(state_dict)
    size = _infer_size(state_dict)
    if size is None or not any(is_memory_key(k) for k in state_dict):
        return None
    spatial = "no_obj_embed_spatial" in state_dict
    tpos = any(k.startswith("obj_ptr_tpos_proj.") for k in state_dict)
    if spatial != tpos:
        return None
    return f"{'sam2.1' if spatial else 'sam2'}-hiera-{size}"


def _model_variant(model: torch.nn.Module) -> str | None:
    config = getattr(model, "config", None)
    name = getattr(config, "name", None)
    return name if isinstance(name, str) else infer_variant(model.state_dict())


def _some(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... ({len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def load_state_dict_strict(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    allow_missing_memory: bool = False,
) -> None:
    """Copy ``state_dict`` (Meta keys) into ``model``, refusing anything that does not fit.

    Raises ``RuntimeError`` when the checkpoint is of another variant than the model
    ("checkpoint looks like X, but Y was requested"), when keys are missing or unexpected
    (naming a few and counting all), or when shapes differ (naming the key and both shapes).
    With ``allow_missing_memory=True`` the video-only memory keys (:func:`is_memory_key`) may be
    missing; any other gap is still an error. Sets ``model.image_only`` to whether memory
    weights were missing, so video code can refuse such a model.
    """
    expected = model.state_dict()
    chosen = _model_variant(model)
    looks = infer_variant(state_dict)
    if chosen is not None and looks is not None and looks != chosen:
        raise RuntimeError(f"checkpoint looks like {looks}, but {chosen} was requested")
    size = _infer_size(state_dict)
    if chosen is not None and looks is None and size not in (None, chosen.split("-", 2)[2]):
        raise RuntimeError(
            f"checkpoint looks like a hiera-{size} model, but {chosen} was requested"
        )

    missing = set(expected) - set(state_dict)
    unexpected = set(state_dict) - set(expected)
    skipped = {k for k in missing if is_memory_key(k)} if allow_missing_memory else set()
    missing -= skipped
    problems = []
    if missing:
        problems.append(f"{_plural(len(missing), 'missing key')} ({_some(missing)})")
    if unexpected:
        problems.append(f"{_plural(len(unexpected), 'unexpected key')} ({_some(unexpected)})")
    if problems:
        hint = ""
        has_memory = any(is_memory_key(k) for k in state_dict)
        if missing and not has_memory and all(is_memory_key(k) for k in missing):
            hint = "; for image-only use, load with allow_missing_memory=True"
        target = chosen or type(model).__name__
        raise RuntimeError(f"checkpoint does not fit {target}: {'; '.join(problems)}{hint}")

    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        shown = "; ".join(mismatched[:_LIST_LIMIT])
        more = (
            f" (and {len(mismatched) - _LIST_LIMIT} more)" if len(mismatched) > _LIST_LIMIT else ""
        )
        raise RuntimeError(f"{_plural(len(mismatched), 'shape mismatch')}: {shown}{more}")

    result = model.load_state_dict(dict(state_dict), strict=False)
    # Everything was checked above; this guards against a model whose state_dict() and
    # load_state_dict() disagree.
    if set(result.missing_keys) != skipped or result.unexpected_keys:
        raise RuntimeError(
            f"loading left keys unset ({_some(result.missing_keys)}) or unused "
            f"({_some(result.unexpected_keys)})"
        )
    # A plain attribute (not a buffer) so it never enters the state dict; setattr because
    # nn.Module's attribute typing only admits tensors and modules.
    setattr(model, "image_only", bool(skipped))  # noqa: B010


# ----------------------------------------------------------------------------- load_sam2


def _looks_like_path(text: str) -> bool:
    """Whether a string that names nothing on disk was meant as a path (not a hub id)."""
    return (
        text.startswith((".", "~", "/", "\\"))
        or "\\" in text
        or re.match(r"[A-Za-z]:", text) is not None  # a Windows drive
        or text.endswith((".pt", ".pth", ".safetensors", ".json"))
        or text.count("/") > 1
    )


def _resolve(
    source: str | os.PathLike[str], revision: str | None
) -> tuple[Path, SAM2Config | None]:
    """A local path for ``source``, and the variant its hub id names (for hub sources)."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists():
        return path, None
    if isinstance(source, os.PathLike) or _looks_like_path(text):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    from .hub import download_checkpoint

    try:
        hub_config = get_config(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an existing file or directory nor an official SAM 2 variant "
            f"or hub id (known variants: {', '.join(VARIANTS)}; hub ids are facebook/<variant>)"
        ) from None
    return download_checkpoint(hub_config.hub_id, revision=revision), hub_config


def load_sam2(
    id_or_path: str | os.PathLike[str],
    *,
    variant: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    revision: str | None = None,
    allow_missing_memory: bool | None = None,
    adjust: Callable[[SAM2Config], SAM2Config] | None = None,
) -> SAM2Model:
    """Build a SAM 2 model and load its weights, ready for inference (eval mode).

    ``id_or_path`` is a local checkpoint (see :func:`read_state_dict`), an official hub id such
    as ``"facebook/sam2.1-hiera-tiny"``, or a variant name such as ``"sam2.1-hiera-tiny"`` (which
    means its hub id; Meta's ``.pt`` is fetched, see :mod:`sam2ui.core.loading.hub`). The variant is
    ``variant`` when given, else what the hub id or ``config.json`` names, else what the weights
    look like. ``dtype`` is the compute dtype (``model.set_compute_dtype``). ``revision`` picks
    a hub revision. ``allow_missing_memory`` (default: only when the checkpoint has no memory
    weights at all) permits an image-only checkpoint; see :func:`load_state_dict_strict`.
    ``adjust``, when given, turns the chosen config into the one built (Meta-style overrides,
    see :func:`sam2ui.core.loading.build.load_for_predictor`).
    """
    from sam2ui.core.modeling import SAM2Model

    path, hub_config = _resolve(id_or_path, revision)
    state_dict, file_config = read_state_dict(path)
    declared = hub_config or file_config
    if variant is not None:
        config = get_config(variant)
        if declared is not None and declared.name != config.name:
            raise RuntimeError(
                f"checkpoint looks like {declared.name}, but {config.name} was requested"
            )
    else:
        guess = declared.name if declared is not None else infer_variant(state_dict)
        if guess is None:
            size = _infer_size(state_dict)
            hint = (
                f"variant='sam2.1-hiera-{size}' or variant='sam2-hiera-{size}'"
                if size
                else "variant='sam2.1-hiera-tiny'"
            )
            raise RuntimeError(
                f"cannot tell which SAM 2 variant {path} holds; pass it, e.g. {hint}"
            )
        config = get_config(guess)
    if declared is not None and declared.name == config.name:
        config = declared  # a transformers config.json may set another input size
    if adjust is not None:
        config = adjust(config)
    if allow_missing_memory is None:
        allow_missing_memory = not any(is_memory_key(k) for k in state_dict)

    with torch.device(device):
        model = SAM2Model(config)
    load_state_dict_strict(model, state_dict, allow_missing_memory=allow_missing_memory)
    if dtype != torch.float32:
        model.set_compute_dtype(dtype)
    return model.eval()

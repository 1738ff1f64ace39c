"""Meta's Hydra override strings, read onto sam2ui's typed config.

Meta's builders take ``hydra_overrides_extra``, a list such as
``["++model.fill_hole_area=8", "++model.non_overlap_masks=true"]``, aimed at the keys of its
YAML model configs. sam2ui has no YAML; this module reads the overrides that have a
counterpart here and refuses the others with a ``ValueError`` that names the override:

- ``model.<field>`` for a field of :class:`~sam2ui.core.modeling.config.SAM2Config` (the
  fields carry the reference's constructor names), except the variant's identity (``name``,
  ``hub_id``, ``checkpoint_filename``, ``trunk``);
- ``model.sam_mask_decoder_extra_args.dynamic_multimask_*``, the decoder's stability fallback;
- for the video predictor only, its options ``fill_hole_area``, ``non_overlap_masks``,
  ``clear_non_cond_mem_around_input`` and ``add_all_frames_to_correct_as_cond``;
- ``model.compile_image_encoder``: the image encoder is compiled with ``torch.compile``
  (:func:`~sam2ui.core.modeling.compiled.compile_model`) once the model is built.

``key=value``, ``+key=value`` and ``++key=value`` are read alike; deleting a key (``~key``) is
refused. Values are Hydra's literals for the field's type: ``true``/``false``, numbers, and
``[2,3]`` for tuples.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields, replace
from typing import Any, NamedTuple

from sam2ui.core.modeling.config import SAM2Config

__all__ = ["VIDEO_PREDICTOR_OPTIONS", "Overridden", "apply_overrides"]


# The video predictor's options that Meta sets through the model config, with their types.
VIDEO_PREDICTOR_OPTIONS: dict[str, type] = {
    "fill_hole_area": int,
    "non_overlap_masks": bool,
    "clear_non_cond_mem_around_input": bool,
    "add_all_frames_to_correct_as_cond": bool,
}
_IDENTITY = frozenset({"name", "hub_id", "checkpoint_filename", "trunk"})
_DECODER_PREFIX = "sam_mask_decoder_extra_args."
_DECODER_FIELDS = frozenset(
    {
        "dynamic_multimask_via_stability",
        "dynamic_multimask_stability_delta",
        "dynamic_multimask_stability_thresh",
    }
)
_COMPILE = "compile_image_encoder"


class Overridden(NamedTuple):
    """A config with overrides applied, the video predictor options they set, and whether
    they ask for the image encoder to be compiled."""

    config: SAM2Config
    predictor_options: dict[str, Any]
    compile_image_encoder: bool = False


def _config_fields() -> list[str]:
    return [f.name for f in fields(SAM2Config) if f.name not in _IDENTITY]


def _accepted(video: bool) -> str:
    names = [f"model.{name}" for name in _config_fields()]
    names.append("model.sam_mask_decoder_extra_args.dynamic_multimask_*")
    names.append(f"model.{_COMPILE}")
    if video:
        names += [f"model.{name}" for name in VIDEO_PREDICTOR_OPTIONS]
    return ", ".join(names)


def _parse_value(text: str, like: object, override: str) -> object:
    """``text`` as a value of the type of ``like`` (the field's current value)."""
    lowered = text.strip().lower()
    try:
        if isinstance(like, bool):
            if lowered not in ("true", "false"):
                raise ValueError
            return lowered == "true"
        if isinstance(like, int):
            return int(text)
        if isinstance(like, float):
            return float(text)
        if isinstance(like, tuple):
            inner = text.strip()
            if not (inner.startswith("[") and inner.endswith("]")):
                raise ValueError
            items = [item.strip() for item in inner[1:-1].split(",") if item.strip()]
            return tuple(int(item) for item in items)
    except ValueError:
        kind = "a list such as [2,3]" if isinstance(like, tuple) else type(like).__name__
        raise ValueError(
            f"hydra override {override!r}: {text!r} is not a valid value (expected {kind})"
        ) from None
    raise ValueError(f"hydra override {override!r}: this field cannot be overridden")


def apply_overrides(config: SAM2Config, overrides: Iterable[str], *, video: bool) -> Overridden:
    """``config`` with Meta-style ``overrides`` applied (later ones win), and the video
    predictor options they name (only when ``video``). Raises ``ValueError`` naming the first
    override that sam2ui cannot honour, and ``TypeError`` for a bare string."""
    if isinstance(overrides, str):
        raise TypeError(
            "hydra_overrides_extra must be a list of strings, e.g. ['++model.fill_hole_area=8']"
        )
    changes: dict[str, Any] = {}
    options: dict[str, Any] = {}
    compile_encoder = False
    for override in overrides:
        if not isinstance(override, str):
            raise TypeError(f"hydra overrides must be strings, got {override!r}")
        text = override.strip()
        if text.startswith("~"):
            raise ValueError(f"hydra override {override!r}: deleting config keys is not supported")
        key, sep, value = text.lstrip("+").partition("=")
        key = key.strip()
        if not sep or not key.startswith("model."):
            raise ValueError(
                f"hydra override {override!r}: expected '++model.<key>=<value>' (sam2ui "
                "reads only the model's keys)"
            )
        name = key.removeprefix("model.")
        if name.startswith(_DECODER_PREFIX) and name[len(_DECODER_PREFIX) :] in _DECODER_FIELDS:
            name = name[len(_DECODER_PREFIX) :]
        if name in VIDEO_PREDICTOR_OPTIONS:
            if not video:
                raise ValueError(
                    f"hydra override {override!r}: {name} is an option of the video predictor; "
                    "use build_sam2_video_predictor"
                )
            like = VIDEO_PREDICTOR_OPTIONS[name]()
            options[name] = _parse_value(value, like, override)
        elif name == _COMPILE:
            compile_encoder = bool(_parse_value(value, False, override))
        elif name in _IDENTITY:
            raise ValueError(
                f"hydra override {override!r}: {name} belongs to the variant; choose another "
                "config instead"
            )
        elif name in {f.name for f in fields(SAM2Config)}:
            changes[name] = _parse_value(value, getattr(config, name), override)
        else:
            raise ValueError(
                f"hydra override {override!r}: sam2ui has no config key {key!r}; "
                f"accepted keys: {_accepted(video)}"
            )
    return Overridden(replace(config, **changes) if changes else config, options, compile_encoder)

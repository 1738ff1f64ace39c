"""``torch.compile`` for the heavy parts of a SAM 2 model: the compile switch.

:func:`compile_model` compiles, in place, the three modules where nearly all the arithmetic
is, each as Meta's VOS-optimised predictor treats it:

- the image encoder, with static shapes (one image of the model's input size at a time; a
  batch of another size makes one more, general graph);
- the memory encoder, static as well until a second number of objects tracked together
  makes it general;
- the memory attention, with dynamic shapes from the start, as its memory grows by a frame's
  tokens and object pointers from one frame to the next.

The prompt encoder and mask decoder stay eager: a click's work is a few milliseconds, and
every new number of points would be a new graph. Compiling is lazy: the first call of each
module traces and builds its kernels (tens of seconds on a CPU, where it needs a C++
compiler), later calls run the compiled code. :func:`sam2ui.core.video.warm_up.warm_up`
makes those first calls at once on a predictor and says how long they took, so that the first
user's image or frame does not pay for them.

While traced, the engine's hand-written CPU kernels (private oneDNN operators, see
:mod:`sam2ui.core.compat.torch_ops`) step aside for the public operators, whose kernels the
compiler chooses; and the yield points inside the encoder are skipped, so a compiled encoding
lets other work through only before and after it.
"""

from __future__ import annotations

import os
import shutil
import weakref
from collections.abc import Iterable

import torch

from .sam2 import SAM2Model

__all__ = [
    "COMPILED_PARTS",
    "CompilerMissingError",
    "compile_model",
    "compiled_parts",
    "is_compiled",
]

# module attribute of SAM2Model -> torch.compile's ``dynamic``: True where shapes change from
# call to call by design, None (static until a second shape is met, then general) elsewhere.
COMPILED_PARTS: dict[str, bool | None] = {
    "image_encoder": None,
    "memory_encoder": None,
    "memory_attention": True,
}


# The modules compile_model has compiled. Kept by module, not by model, so that a model view
# sharing its modules with another (the video configuration of a cached model) sees them too.
_COMPILED: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()


class CompilerMissingError(RuntimeError):
    """``torch.compile`` cannot build CPU kernels here: no C++ compiler is installed."""


def _cxx_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def compiled_parts(model: SAM2Model) -> frozenset[str]:
    """The parts of ``model`` that :func:`compile_model` has compiled (empty: none)."""
    return frozenset(name for name in COMPILED_PARTS if getattr(model, name) in _COMPILED)


def is_compiled(model: SAM2Model) -> bool:
    """Whether :func:`compile_model` has compiled any part of ``model``."""
    return bool(compiled_parts(model))


def compile_model(
    model: SAM2Model, *, mode: str | None = None, parts: Iterable[str] | None = None
) -> SAM2Model:
    """Compile ``model``'s image encoder, memory encoder and memory attention in place
    (see the module docstring) and return it. ``parts`` names fewer of them (the attribute
    names, e.g. ``["image_encoder"]``); a part already compiled is left as it is.

    ``mode`` is ``torch.compile``'s (``None``: its default; ``"max-autotune"`` searches
    longer for faster kernels). Parameters and checkpoint keys do not change. Raises
    :class:`CompilerMissingError` on a CPU model when no C++ compiler is on the PATH.
    """
    if not isinstance(model, SAM2Model):
        raise TypeError(f"model must be a SAM2Model, got {type(model).__name__}")
    wanted = list(COMPILED_PARTS) if parts is None else list(parts)
    unknown = sorted(set(wanted) - set(COMPILED_PARTS))
    if unknown:
        raise ValueError(f"cannot compile {unknown}; the parts are {list(COMPILED_PARTS)}")
    done = compiled_parts(model)
    todo = [name for name in wanted if name not in done]
    if not todo:
        return model
    if model.device.type == "cpu" and _cxx_compiler() is None:
        raise CompilerMissingError(
            "compiling the model on the CPU needs a C++ compiler (g++ or clang++) on the PATH; "
            "install one (Debian and Ubuntu: apt install g++) or run without compiling"
        )
    for name in todo:
        module = getattr(model, name)
        module.compile(dynamic=COMPILED_PARTS[name], mode=mode)
        _COMPILED.add(module)
    return model

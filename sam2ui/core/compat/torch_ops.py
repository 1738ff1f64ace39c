"""PyTorch's private CPU operators, each behind a wrapper with a public fallback.

The engine's fast CPU path calls oneDNN (mkldnn) operators that PyTorch registers for its own
compiler but does not document, and a few in-place ``aten`` variants without a public name.
Any release may rename them, drop them or change their arguments. So each is probed once, at
import, on tiny tensors, and its result compared with the public computation it stands for;
a probe that raises (any exception) or disagrees leaves the operator unused, and its wrapper
runs the public computation instead. :func:`private_ops` reports what the probes found.

Operators and their public equivalents (``x @ w.T`` is ``F.linear(x, w)``):

- ``linear_pointwise``: ``mkldnn._linear_pointwise``, ``act(x @ w.T + b)`` for act none, relu,
  gelu, fused by oneDNN; public ``F.linear`` then ``F.relu`` / ``F.gelu``.
- ``linear_add``: ``mkldnn._linear_pointwise.binary(..., "add")``, ``x @ w.T + b + other``
  with the sum fused; public ``F.linear`` then an add.
- ``mkldnn_attention``: ``torch._C._nn.mkldnn_linear`` on oneDNN tensors (``to_mkldnn``,
  ``to_dense``), ``softmax(q k^T) v`` with oneDNN's softmax between the products; public the
  same products (through ``linear_pointwise``) and ``torch.softmax``.
- ``softmax_out``: ``aten._softmax.out`` normalising in place; public ``torch.softmax``.
- ``gelu_``: ``aten.gelu_``, GELU in place; public ``F.gelu``.

Probes are per dtype (float32, bfloat16): oneDNN's bfloat16 kernels need CPU features that
float32 ones do not. Tests can force the public path with :func:`forced_fallback`. While
``torch.compile`` traces the engine, every wrapper takes the public path: the compiler cannot
trace the private operators, and it chooses its own kernels for the public ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from sam2ui.core.compat.onednn import bound_kernel_caches

# Before the probes below run oneDNN for the first time (see sam2ui.core.compat.onednn).
bound_kernel_caches()

LINEAR_POINTWISE = "linear_pointwise"
LINEAR_ADD = "linear_add"
MKLDNN_ATTENTION = "mkldnn_attention"
SOFTMAX_OUT = "softmax_out"
GELU_ = "gelu_"
OPS = (LINEAR_POINTWISE, LINEAR_ADD, MKLDNN_ATTENTION, SOFTMAX_OUT, GELU_)

_ACTIVATIONS = ("none", "relu", "gelu")
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
# The dtypes each operator is called with.
_PROBED_DTYPES: dict[str, tuple[torch.dtype, ...]] = {
    LINEAR_POINTWISE: (torch.float32, torch.bfloat16),
    LINEAR_ADD: (torch.float32, torch.bfloat16),
    MKLDNN_ATTENTION: (torch.bfloat16,),
    SOFTMAX_OUT: (torch.float32, torch.bfloat16),
    GELU_: (torch.float32, torch.bfloat16),
}
# Loose on purpose: a probe catches a changed meaning (a different activation, a transposed
# weight, a missing bias: errors of O(0.1) or more here), not rounding. bfloat16 has 8 bits of
# mantissa, so its outputs of size ~1 move by up to ~1e-2.
_TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 6e-2}


# --------------------------------------------------------------------------- private calls
# Each names the private operator exactly as the fast path calls it; the probes call these
# same functions, so a probe that passes has run the fast path's own code.


def _private_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str
) -> torch.Tensor:
    algorithm = "none" if activation == "gelu" else ""  # exact (erf) GELU
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], algorithm)


def _private_linear_add(
    x: torch.Tensor, other: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise.binary(x, other, weight, bias, "add")


def _private_attention(q: torch.Tensor, k: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
    scores = torch._C._nn.mkldnn_linear(q.to_mkldnn(), k, None)
    return torch._C._nn.mkldnn_linear(torch.softmax(scores, dim=-1), v_t, None).to_dense()


def _private_softmax_(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.ops.aten._softmax.out(x, dim, False, out=x)


def _private_gelu_(x: torch.Tensor, approximate: str) -> torch.Tensor:
    return torch.ops.aten.gelu_(x, approximate=approximate)


# --------------------------------------------------------------------------- public equivalents


def _public_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str
) -> torch.Tensor:
    y = F.linear(x, weight, bias)
    if activation == "relu":
        return F.relu(y)
    if activation == "gelu":
        return F.gelu(y)
    if activation != "none":
        raise ValueError(f"unknown activation {activation!r}")
    return y


def _public_linear_add(
    x: torch.Tensor, other: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    y = F.linear(x, weight, bias)
    return y.add_(other) if torch.broadcast_shapes(y.shape, other.shape) == y.shape else y + other


# --------------------------------------------------------------------------- probes


def _inputs(dtype: torch.dtype, *shape: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)  # never the global generator
    return torch.randn(*shape, generator=gen).to(dtype)


def _probe_linear(dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, w, b = _inputs(dtype, 5, 8, seed=1), _inputs(dtype, 6, 8, seed=2), _inputs(dtype, 6, seed=3)
    pairs = [(_private_linear(x, w, b, a), _public_linear(x, w, b, a)) for a in _ACTIVATIONS]
    pairs.append((_private_linear(x, w, None, "none"), F.linear(x, w)))
    return pairs


def _probe_linear_add(dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, w, b = _inputs(dtype, 5, 8, seed=4), _inputs(dtype, 6, 8, seed=5), _inputs(dtype, 6, seed=6)
    other = _inputs(dtype, 5, 6, seed=7)
    return [(_private_linear_add(x, other, w, b), _public_linear_add(x, other, w, b))]


def _probe_attention(dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    q, k, v = (_inputs(dtype, n, 8, seed=s) for n, s in ((3, 8), (7, 9), (7, 10)))
    expected = torch.softmax(q.float() @ k.float().t(), dim=-1) @ v.float()
    return [(_private_attention(q, k, v.t().contiguous()), expected)]


def _probe_softmax(dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = _inputs(dtype, 4, 9, seed=11)
    expected = torch.softmax(x, dim=-1)
    return [(_private_softmax_(x, -1), expected), (x, expected)]  # the result, and in place


def _probe_gelu(dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    pairs = []
    for approximate in ("none", "tanh"):
        x = _inputs(dtype, 4, 9, seed=12)
        expected = F.gelu(x, approximate=approximate)
        pairs += [(_private_gelu_(x, approximate), expected), (x, expected)]
    return pairs


_PROBES: dict[str, Callable[[torch.dtype], list[tuple[torch.Tensor, torch.Tensor]]]] = {
    LINEAR_POINTWISE: _probe_linear,
    LINEAR_ADD: _probe_linear_add,
    MKLDNN_ATTENTION: _probe_attention,
    SOFTMAX_OUT: _probe_softmax,
    GELU_: _probe_gelu,
}


def probe(op: str, dtype: torch.dtype) -> tuple[bool, str]:
    """Run ``op``'s private operator on tiny ``dtype`` tensors against its public equivalent:
    (usable, why not). Never raises for a failing operator."""
    if op not in _PROBES or dtype not in _PROBED_DTYPES[op]:
        raise ValueError(f"no probe for {op!r} in {dtype}")
    try:
        with torch.no_grad():
            pairs = _PROBES[op](dtype)
            for got, expected in pairs:
                if not isinstance(got, torch.Tensor) or got.is_mkldnn:
                    return False, f"returned {type(got).__name__}, not a dense tensor"
                if got.shape != expected.shape or got.dtype != dtype:
                    return False, f"returned {got.dtype} {tuple(got.shape)}"
                tol = _TOLERANCE[dtype]
                if not torch.allclose(got.float(), expected.float(), rtol=tol, atol=tol):
                    error = (got.float() - expected.float()).abs().max().item()
                    return False, f"differs from the public computation by {error:.3g}"
    except Exception as exc:  # a removed operator, a changed signature, a missing CPU feature
        return False, f"{type(exc).__name__}: {exc}"[:300]
    return True, ""


def _probe_all() -> dict[tuple[str, torch.dtype], tuple[bool, str]]:
    return {(op, dt): probe(op, dt) for op in OPS for dt in _PROBED_DTYPES[op]}


_PROBED = _probe_all()
_AVAILABLE = {key: ok for key, (ok, _) in _PROBED.items()}
_DISABLED: frozenset[str] = frozenset()
_ACTIVE = dict(_AVAILABLE)  # available and not forced off: what the wrappers read


def _key_name(op: str, dtype: torch.dtype) -> str:
    return f"{op}[{_DTYPE_NAMES[dtype]}]"


def private_ops() -> dict[str, bool]:
    """Which private operators the wrappers use, ``"op[dtype]"`` -> bool, e.g.
    ``{"linear_pointwise[float32]": True, ...}``. False where the import's probe failed or
    :func:`forced_fallback` is in force."""
    return {_key_name(op, dt): ok for (op, dt), ok in _ACTIVE.items()}


def probe_failures() -> dict[str, str]:
    """Why each failed probe failed, ``"op[dtype]"`` -> message; empty when all passed."""
    return {_key_name(op, dt): why for (op, dt), (ok, why) in _PROBED.items() if not ok}


def probe_passed(op: str, dtype: torch.dtype = torch.float32) -> bool:
    """Whether ``op`` passed its import probe in ``dtype``, :func:`forced_fallback` or not."""
    return _AVAILABLE.get((op, dtype), False)


def available(op: str, dtype: torch.dtype = torch.float32) -> bool:
    """Whether ``op`` passed its import probe in ``dtype`` and is not forced off."""
    return _ACTIVE.get((op, dtype), False)


def _set_disabled(ops: Iterable[str]) -> None:
    global _DISABLED, _ACTIVE
    _DISABLED = frozenset(ops)
    _ACTIVE = {key: ok and key[0] not in _DISABLED for key, ok in _AVAILABLE.items()}


@contextmanager
def forced_fallback(*ops: str) -> Iterator[None]:
    """Within the block, the given operators (all of them if none is named) take the public
    path, as on a PyTorch without them. For tests; not thread-safe."""
    unknown = set(ops) - set(OPS)
    if unknown:
        raise ValueError(f"unknown operators {sorted(unknown)}; known: {OPS}")
    previous = _DISABLED
    _set_disabled(previous | set(ops or OPS))
    try:
        yield
    finally:
        _set_disabled(previous)


# --------------------------------------------------------------------------- wrappers


def _use(op: str, dtype: torch.dtype) -> bool:
    # torch.compile cannot trace these operators: under it, the public path (constant-folded
    # by the tracer, so it costs nothing in eager mode either).
    return _ACTIVE.get((op, dtype), False) and not torch.compiler.is_compiling()


def fused_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none"
) -> torch.Tensor:
    """``activation(x @ weight.T + bias)``, activation "none", "relu" or "gelu" (exact erf),
    through oneDNN with bias and activation fused; else ``F.linear`` and the activation."""
    if _use(LINEAR_POINTWISE, x.dtype):
        return _private_linear(x, weight, bias, activation)
    return _public_linear(x, weight, bias, activation)


def fused_linear_add(
    x: torch.Tensor, other: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """``x @ weight.T + bias + other`` (2-D x, other of the output's shape), the sum fused
    into oneDNN's product; else ``F.linear`` and an add."""
    if _use(LINEAR_ADD, x.dtype):
        return _private_linear_add(x, other, weight, bias)
    return _public_linear_add(x, other, weight, bias)


def softmax_(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax of ``x`` along ``dim``, written over ``x`` where the in-place operator is there;
    else a new tensor. Use the result."""
    if _use(SOFTMAX_OUT, x.dtype):
        return _private_softmax_(x, dim)
    return torch.softmax(x, dim=dim)


def gelu_(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """GELU of ``x``, in place where the operator is there; else a new tensor. Use the result."""
    if _use(GELU_, x.dtype):
        return _private_gelu_(x, approximate)
    return F.gelu(x, approximate=approximate)


def mkldnn_attention(q: torch.Tensor, k: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
    """``softmax(q @ k.T) @ v_t.T`` for 2-D q (rows, D), k (Lk, D), v_t (Dv, Lk): the scores
    as oneDNN tensors, so that oneDNN computes the softmax too; else :func:`fused_linear`
    products around :func:`softmax_`. The softmax is computed in float32 either way."""
    if _use(MKLDNN_ATTENTION, q.dtype):
        return _private_attention(q, k, v_t)
    return fused_linear(softmax_(fused_linear(q, k, None), -1), v_t, None)

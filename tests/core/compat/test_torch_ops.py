"""The private operators' probes, their public fallbacks, and the modeling code on both paths."""

from __future__ import annotations

import importlib.util
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sam2ui.core.compat import torch_ops
from sam2ui.core.compat.torch_ops import (
    GELU_,
    LINEAR_ADD,
    LINEAR_POINTWISE,
    MKLDNN_ATTENTION,
    SOFTMAX_OUT,
    forced_fallback,
    private_ops,
)
from sam2ui.core.modeling import layers
from sam2ui.core.modeling.attention import (
    attention,
    image_to_tokens_attention,
    tokens_to_image_attention,
)
from sam2ui.core.modeling.layers import MLP, fast_cpu_kernels, set_onednn_linear
from sam2ui.core.modeling.mask_decoder import MaskDecoder
from sam2ui.core.modeling.transformer import TwoWayTransformer

PACKAGE = Path(__file__).resolve().parents[3] / "sam2ui"
PRIVATE = ("_private_linear", "_private_linear_add", "_private_attention")
PRIVATE += ("_private_softmax_", "_private_gelu_")
BF16_EPS = 2.0**-7  # spacing of bfloat16 numbers relative to their size (at most)


def _bf16_supported() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


def _randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the calls of each private operator (through the module's own functions)."""
    counts = dict.fromkeys(PRIVATE, 0)
    for name in PRIVATE:
        real = getattr(torch_ops, name)

        def spy(*args: Any, _name: str = name, _real: Callable[..., Any] = real, **kw: Any) -> Any:
            counts[_name] += 1
            return _real(*args, **kw)

        monkeypatch.setattr(torch_ops, name, spy)
    return counts


# --------------------------------------------------------------------------- probes


def test_the_probes_pass_on_this_torch() -> None:
    flags = private_ops()
    assert set(flags) == {
        "linear_pointwise[float32]",
        "linear_pointwise[bfloat16]",
        "linear_add[float32]",
        "linear_add[bfloat16]",
        "mkldnn_attention[bfloat16]",
        "softmax_out[float32]",
        "softmax_out[bfloat16]",
        "gelu_[float32]",
        "gelu_[bfloat16]",
    }
    # In-place softmax and GELU are plain aten operators: every build has them.
    for key in ("softmax_out", "gelu_"):
        assert flags[f"{key}[float32]"] is True and flags[f"{key}[bfloat16]"] is True
    if torch.backends.mkldnn.is_available():  # this machine's CPU build of torch 2.13
        assert flags["linear_pointwise[float32]"] is True and flags["linear_add[float32]"] is True
        assert layers._onednn_linear_available() is True
        if _bf16_supported():  # this machine's CPU (AVX-512 with bfloat16)
            assert all(flags.values())
            assert torch_ops.probe_failures() == {}
    assert set(torch_ops.probe_failures()) == {k for k, ok in flags.items() if not ok}


def test_forced_fallback_turns_flags_off_and_back() -> None:
    before = private_ops()
    with forced_fallback(LINEAR_ADD):
        inside = private_ops()
        assert inside["linear_add[float32]"] is False and inside["linear_add[bfloat16]"] is False
        assert inside["linear_pointwise[float32]"] == before["linear_pointwise[float32]"]
        with forced_fallback():
            assert not any(private_ops().values())
        assert private_ops() == inside  # the outer block's choice comes back
    assert private_ops() == before
    assert torch_ops.probe_passed(LINEAR_ADD) == before["linear_add[float32]"]
    with pytest.raises(ValueError, match="unknown operators"), forced_fallback("no_such_op"):
        pass


def test_the_switch_in_layers_survives_forced_fallback() -> None:
    x = torch.ones(2, 3)
    previous = set_onednn_linear(False)
    try:
        assert fast_cpu_kernels(x) is False
        with forced_fallback():  # forcing does not touch the switch, nor the switch forcing
            assert set_onednn_linear(True) is False
            assert fast_cpu_kernels(x) is layers._onednn_linear_available()
            assert not any(private_ops().values())
    finally:
        set_onednn_linear(previous)
    assert fast_cpu_kernels(x) is previous


def test_the_switch_stays_off_when_the_linear_probe_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    previous = set_onednn_linear(True)
    try:
        monkeypatch.setitem(torch_ops._AVAILABLE, (LINEAR_POINTWISE, torch.float32), False)
        set_onednn_linear(True)
        assert fast_cpu_kernels(torch.ones(2)) is False  # the reference path is kept
    finally:
        monkeypatch.undo()
        set_onednn_linear(previous)


def _fresh_copy() -> types.ModuleType:
    """torch_ops imported again, so that its probes run against the torch as patched now."""
    spec = importlib.util.spec_from_file_location("_torch_ops_copy", torch_ops.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_torch_without_the_operators_imports_with_the_flags_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def new_signature(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)  # a release that dropped the fused arguments (and .binary)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", new_signature)
    monkeypatch.setattr(torch._C._nn, "mkldnn_linear", None)  # not callable: TypeError
    monkeypatch.setattr(torch.ops, "aten", types.SimpleNamespace())  # nothing: AttributeError
    copy = _fresh_copy()  # no exception
    assert not any(copy.private_ops().values())
    why = copy.probe_failures()
    assert why["linear_pointwise[float32]"].startswith("TypeError")
    assert why["linear_add[bfloat16]"].startswith("AttributeError")
    assert why["mkldnn_attention[bfloat16]"].startswith("TypeError")
    assert why["softmax_out[float32]"].startswith("AttributeError")
    assert why["gelu_[float32]"].startswith("AttributeError")
    # Its wrappers compute the same as the public operators.
    x, w, b = _randn(5, 8, seed=1), _randn(6, 8, seed=2), _randn(6, seed=3)
    assert torch.equal(copy.fused_linear(x, w, b, "gelu"), F.gelu(F.linear(x, w, b)))
    assert torch.equal(copy.softmax_(x.clone(), -1), torch.softmax(x, -1))


def test_an_operator_that_changed_meaning_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.ops.aten, "gelu_", lambda x, approximate="none": x.relu_())
    copy = _fresh_copy()
    assert copy.private_ops()["gelu_[float32]"] is False
    why = copy.probe_failures()["gelu_[float32]"]
    assert re.fullmatch(r"differs from the public computation by [0-9.e+-]+", why)
    assert copy.private_ops()["softmax_out[float32]"] is True
    x = _randn(4, 9, seed=4)
    assert torch.equal(copy.gelu_(x.clone()), F.gelu(x))


def test_probe_of_an_unknown_operator_is_an_error() -> None:
    assert torch_ops.probe(SOFTMAX_OUT, torch.float32) == (True, "")
    with pytest.raises(ValueError, match="no probe"):
        torch_ops.probe("softmax", torch.float32)
    with pytest.raises(ValueError, match="no probe"):
        torch_ops.probe(MKLDNN_ATTENTION, torch.float16)


def test_no_private_operator_outside_compat() -> None:
    pattern = re.compile(r"torch\.ops\.|torch\._C\b|\.to_mkldnn\(|\.to_dense\(")
    found = [
        f"{path.relative_to(PACKAGE)}:{n}"
        for path in PACKAGE.rglob("*.py")
        if "compat" not in path.parts
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert found == []


# --------------------------------------------------------------------------- wrappers


def _assert_same(fast: torch.Tensor, public: torch.Tensor, dtype: torch.dtype) -> None:
    """float32: rounding of sums in another order; bfloat16: one rounding of the output more
    or less (the fused kernels round once, the public ones after each step)."""
    assert fast.dtype == public.dtype == dtype and fast.shape == public.shape
    scale = float(public.abs().max())
    assert scale > 0.1  # not a trivially empty output
    if dtype == torch.float32:
        torch.testing.assert_close(fast, public, rtol=1e-5, atol=1e-5 * scale)
    else:
        torch.testing.assert_close(fast.float(), public.float(), rtol=0, atol=BF16_EPS * scale)


def _wrapper_cases(dtype: torch.dtype) -> dict[str, tuple[str, Callable[[], torch.Tensor]]]:
    x, w, b = _randn(300, 256, seed=1), _randn(512, 256, seed=2, scale=0.06), _randn(512, seed=3)
    x, w, b, other = x.to(dtype), w.to(dtype), b.to(dtype), _randn(300, 512, seed=4).to(dtype)
    scores, image = _randn(64, 3000, seed=5, scale=3).to(dtype), _randn(2, 8, 64, 64, seed=6)
    image = image.to(dtype)
    cases: dict[str, tuple[str, Callable[[], torch.Tensor]]] = {
        f"linear_{a}": (LINEAR_POINTWISE, lambda a=a: torch_ops.fused_linear(x, w, b, a))
        for a in ("none", "relu", "gelu")
    }
    cases["linear_no_bias"] = (LINEAR_POINTWISE, lambda: torch_ops.fused_linear(x, w, None))
    cases["linear_add"] = (LINEAR_ADD, lambda: torch_ops.fused_linear_add(x, other, w, b))
    cases["softmax"] = (SOFTMAX_OUT, lambda: torch_ops.softmax_(scores.clone(), -1))
    for a in ("none", "tanh"):
        cases[f"gelu_{a}"] = (GELU_, lambda a=a: torch_ops.gelu_(image.clone(), a))
    if dtype == torch.bfloat16:
        q, k, v_t = x[:64, :64] * 0.125, x[:, :64], x[:, 64:128].t().contiguous()
        cases["attention"] = (MKLDNN_ATTENTION, lambda: torch_ops.mkldnn_attention(q, k, v_t))
    return cases


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_wrappers_give_the_same_results_on_the_public_path(
    dtype: torch.dtype, calls: dict[str, int]
) -> None:
    for name, (op, run) in _wrapper_cases(dtype).items():
        if not torch_ops.available(op, dtype):
            pytest.skip(f"{op} in {dtype} is not available on this torch")
        for key in calls:
            calls[key] = 0
        fast = run()
        assert sum(calls.values()) >= 1, name  # the private operator ran
        with forced_fallback():
            public = run()
        assert sum(calls.values()) == 1, name  # and on the public path none did
        if op in (SOFTMAX_OUT, GELU_):  # the same aten kernel behind both: bit for bit
            assert torch.equal(fast, public), name
        else:
            _assert_same(fast, public, dtype)


def test_the_fast_path_is_the_private_operator_bit_for_bit() -> None:
    x, w, b = _randn(100, 64, seed=7), _randn(32, 64, seed=8), _randn(32, seed=9)
    other = _randn(100, 32, seed=10)
    if not (torch_ops.available(LINEAR_POINTWISE) and torch_ops.available(LINEAR_ADD)):
        pytest.skip("no oneDNN linear on this torch")
    direct = torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "none")
    assert torch.equal(torch_ops.fused_linear(x, w, b, "gelu"), direct)
    direct = torch.ops.mkldnn._linear_pointwise.binary(x, other, w, b, "add")
    assert torch.equal(torch_ops.fused_linear_add(x, other, w, b), direct)
    scores = _randn(8, 50, seed=11)
    out = torch_ops.softmax_(scores, -1)
    assert out.data_ptr() == scores.data_ptr()  # in place where the operator is there
    assert torch.equal(out, torch.softmax(_randn(8, 50, seed=11), -1))
    with forced_fallback(SOFTMAX_OUT):
        fresh = _randn(8, 50, seed=11)
        assert torch.equal(torch_ops.softmax_(fresh, -1), out)
        assert torch.equal(fresh, _randn(8, 50, seed=11))  # the public path leaves x alone


# --------------------------------------------------------------------------- modeling, end to end


def _both_paths(
    run: Callable[[], torch.Tensor], calls: dict[str, int], expected_ops: tuple[str, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    for key in calls:
        calls[key] = 0
    with torch.inference_mode():
        fast = run()
        for name in expected_ops:
            assert calls[name] > 0, f"{name} was not on the fast path"
        before = dict(calls)
        with forced_fallback():
            public = run()
    assert calls == before  # no private operator on the public path
    return fast, public


def _needs(*ops: tuple[str, torch.dtype]) -> None:
    if not layers._ONEDNN_LINEAR or not all(torch_ops.available(*o) for o in ops):
        pytest.skip("the fast CPU kernels are off on this torch")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_mlp_on_both_paths(dtype: torch.dtype, calls: dict[str, int]) -> None:
    _needs((LINEAR_POINTWISE, dtype))
    torch.manual_seed(0)
    mlp = MLP(64, 256, 32, 3, activation=nn.GELU).to(dtype)
    x = _randn(2, 100, 64, seed=12).to(dtype)
    fast, public = _both_paths(lambda: mlp(x), calls, ("_private_linear",))
    _assert_same(fast, public, dtype)
    with torch.no_grad():
        reference = _reference_mlp(mlp, x)
        # The public path is the reference's arithmetic, as with the fast kernels switched off.
        assert torch.equal(public, reference)
        previous = set_onednn_linear(False)
        try:
            assert torch.equal(mlp(x), reference)
        finally:
            set_onednn_linear(previous)


def _reference_mlp(mlp: MLP, x: torch.Tensor) -> torch.Tensor:
    for i, layer in enumerate(mlp.layers):
        assert isinstance(layer, nn.Linear)
        x = F.linear(x, layer.weight, layer.bias)
        x = F.gelu(x) if i < len(mlp.layers) - 1 else x
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_blocked_attention_on_both_paths(dtype: torch.dtype, calls: dict[str, int]) -> None:
    # bfloat16 blocks are one oneDNN attention; float32 ones products around a softmax.
    op, private = (
        (MKLDNN_ATTENTION, "_private_attention")
        if dtype == torch.bfloat16
        else (SOFTMAX_OUT, "_private_softmax_")
    )
    _needs((LINEAR_POINTWISE, dtype), (op, dtype))
    q = _randn(1, 2, 600, 64, seed=13).to(dtype)  # 3000 keys: the blocked kernel
    k, v = _randn(1, 2, 3000, 64, seed=14).to(dtype), _randn(1, 2, 3000, 64, seed=15).to(dtype)
    fast, public = _both_paths(lambda: attention(q, k, v), calls, (private,))
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    if dtype == torch.float32:
        torch.testing.assert_close(fast, public, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(public, expected, rtol=1e-5, atol=1e-6)
    else:  # outputs ~0.02-0.15: bfloat16 weights and outputs put errors near 1e-3
        torch.testing.assert_close(fast.float(), public.float(), rtol=0, atol=2e-3)
        torch.testing.assert_close(public.float(), expected, rtol=0, atol=2e-3)


@pytest.fixture(scope="module")
def decoder() -> MaskDecoder:
    torch.manual_seed(0)
    dec = MaskDecoder(64, TwoWayTransformer(depth=2, embedding_dim=64, num_heads=4, mlp_dim=128))
    with torch.no_grad():
        for p in dec.parameters():  # LayerNorms start at 1 and 0: give them real values
            p.add_(torch.randn_like(p) * 0.2)
    return dec.eval().requires_grad_(False)


@pytest.mark.parametrize("prompts", [1, 3])
def test_mask_decoder_on_both_paths(
    decoder: MaskDecoder, prompts: int, calls: dict[str, int]
) -> None:
    _needs((LINEAR_POINTWISE, torch.float32), (LINEAR_ADD, torch.float32), (GELU_, torch.float32))
    embed, pe = _randn(1, 64, 16, 16, seed=16), _randn(1, 64, 16, 16, seed=17)
    sparse, dense = _randn(prompts, 3, 64, seed=18), _randn(prompts, 64, 16, 16, seed=19)
    s0, s1 = _randn(1, 8, 64, 64, seed=20), _randn(1, 16, 32, 32, seed=21)

    def run() -> torch.Tensor:
        out = decoder(embed, pe, sparse, dense, True, [s0, s1])
        return torch.cat([out.masks.flatten(1), out.iou_pred, out.object_score_logits], dim=1)

    used = ("_private_linear", "_private_linear_add", "_private_gelu_")
    fast, public = _both_paths(run, calls, used)
    assert fast.shape == (prompts, 3 * 64 * 64 + 3 + 1)
    scale = float(public.abs().max())
    assert scale > 0.1
    # Products summed in another order through two transformer layers and the upscaling.
    torch.testing.assert_close(fast, public, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("projected", [False, True])
def test_folded_token_attention_on_both_paths(projected: bool, calls: dict[str, int]) -> None:
    _needs((LINEAR_POINTWISE, torch.float32), (LINEAR_ADD, torch.float32))
    # The mask decoder's two attentions between 7 tokens (3 prompts) and 300 image tokens.
    torch.manual_seed(1)
    q_proj, k_proj, v_proj = (nn.Linear(64, 32) for _ in range(3))
    out_proj = nn.Linear(32, 64)
    x, tokens = _randn(1, 300, 64, seed=22), _randn(3, 7, 64, seed=23)
    image = {"q": q_proj(x).detach()} if projected else {"x_q": x, "q_proj": q_proj}

    def run() -> torch.Tensor:
        to_image = tokens_to_image_attention(q_proj(tokens), x, x, k_proj, v_proj, heads=4)
        k, v = k_proj(tokens), v_proj(tokens * 0.5)
        to_tokens = image_to_tokens_attention(k, v, out_proj, 4, x, **image)
        return torch.cat([to_image.flatten(1), to_tokens.flatten(1)], dim=1)

    fast, public = _both_paths(run, calls, ("_private_linear", "_private_linear_add"))
    scale = float(public.abs().max())
    assert scale > 0.1
    torch.testing.assert_close(fast, public, rtol=0, atol=1e-5 * scale)

"""upsample_masks: the same boolean masks as F.interpolate (of each channel on its own, as
upsample_logits resizes on the CPU, the same at any thread count) + threshold, bit for bit."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam2ui.core.image import upsample as U
from sam2ui.core.image.predictor import SAM2ImagePredictor
from sam2ui.core.loading.build import build_sam2


def reference(low_res: torch.Tensor, size: tuple[int, int], threshold: float) -> torch.Tensor:
    b, c, h, w = low_res.shape
    one_each = low_res.reshape(b * c, 1, h, w)
    up = F.interpolate(one_each, size, mode="bilinear", align_corners=False)
    return up.view(b, c, *size) > threshold


def blobs(b: int, c: int, seed: int, h: int = 256, w: int = 256) -> torch.Tensor:
    """Smooth logits like a trained decoder's: an ellipse per mask (about +-20 inside/out),
    with a little noise, so that masks have long boundaries and large flat regions."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    out = torch.empty(b * c, h, w)
    for k in range(b * c):
        cy, cx, ry, rx = torch.rand(4, generator=gen).tolist()
        dist = ((yy - cy) / (0.1 + 0.4 * ry)) ** 2 + ((xx - cx) / (0.1 + 0.4 * rx)) ** 2
        out[k] = 20 * (1 - dist.sqrt()) + 0.3 * torch.randn(h, w, generator=gen)
    return out.view(b, c, h, w)


def logits(kind: str, b: int, c: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "blobs":
        return blobs(b, c, seed)
    if kind == "noise":
        return torch.randn(b, c, 256, 256, generator=gen)
    if kind == "steps":  # few distinct values: many pixels land exactly on the threshold
        return torch.randint(-2, 3, (b, c, 256, 256), generator=gen).float() * 0.25
    if kind == "tiny":  # near the float32 underflow range, around threshold 0
        return blobs(b, c, seed) * 1e-36
    if kind == "huge":
        return blobs(b, c, seed) * 1e5
    raise AssertionError(kind)


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts fast-path runs."""
    calls: list[int] = []
    expand = U._expand

    def spy(*args, **kwargs):
        calls.append(1)
        return expand(*args, **kwargs)

    monkeypatch.setattr(U, "_expand", spy)
    return calls


def has_formula(threads: int | None = None) -> bool:
    """Whether this torch build's F.interpolate has arithmetic the fast path reproduces (torch
    2.13's has; 2.3's has not, and there every mask comes from F.interpolate itself). Channels
    are resized one at a time, so the formula is the one of a single channel."""
    threads = torch.get_num_threads() if threads is None else threads
    return U._formula(1, False, threads) is not None


@pytest.fixture
def forced(monkeypatch: pytest.MonkeyPatch, fast_calls: list[int]) -> list[int]:
    """Counts fast-path runs, and takes the fast path even where most cells are mixed."""
    monkeypatch.setattr(U, "BOUNDARY_COST_RATIO", 0.0)
    return fast_calls


# Output sizes: a full-HD image, odd sizes, tall and wide, equal to the input on one axis
# or both, prime widths (blocks that do not tile a row).
FAST_SIZES = [(1080, 1920), (257, 300), (1081, 1443), (4000, 301), (300, 3001), (256, 999)]
FAST_SIZES += [(613, 256), (256, 256), (1031, 263)]
SLOW_SIZES = [(200, 150), (1, 1000), (1000, 1), (1, 1), (40, 3000), (255, 4000)]


@pytest.mark.parametrize("size", FAST_SIZES)
def test_masks_equal_interpolate_then_threshold(forced, size):
    x = blobs(2, 3, seed=sum(size))
    for threshold in (0.0, 7.5, -3.1, 0.1):
        got = U.upsample_masks(x, size, threshold)
        assert got.dtype == torch.bool and got.shape == (2, 3, *size)
        assert torch.equal(got, reference(x, size, threshold)), threshold
    assert len(forced) == (4 if has_formula() else 0)


@pytest.mark.parametrize("size", [(257, 300), (333, 517), (256, 256), (1031, 263)])
@pytest.mark.parametrize("kind", ["noise", "steps"])
def test_masks_equal_without_clear_boundaries(forced, size, kind):
    """Every cell mixed (noise), or many pixels exactly on the threshold (few values)."""
    x = logits(kind, 1, 2, seed=sum(size))
    for threshold in (0.0, 0.25, -1.3, 0.1):
        assert torch.equal(U.upsample_masks(x, size, threshold), reference(x, size, threshold))
    assert len(forced) == (4 if has_formula() else 0)


@pytest.mark.parametrize("kind", ["blobs", "tiny", "huge", "steps"])
@pytest.mark.parametrize("channels", [1, 3])
def test_same_masks_at_one_and_two_threads(forced, kind, channels):
    """torch's own kernel sums 3 channels differently on one thread (its channels-last
    kernel); resized one channel at a time, the masks are the same at any thread count."""
    before = torch.get_num_threads()
    x = logits(kind, 2, channels, seed=channels)
    found = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for threshold in (0.0, 0.25) if kind != "tiny" else (0.0, 1e-37, -1e-37):
                got = U.upsample_masks(x, (541, 963), threshold)
                assert torch.equal(got, reference(x, (541, 963), threshold))
                found[threads, threshold] = got
            if has_formula(threads):  # not on every torch build
                assert U._formula(1, False, threads) == ("separable", True)
            assert bool(forced) == has_formula(threads)
            logits_up = U.upsample_logits(x, (541, 963))
            found[threads, "logits"] = logits_up
    finally:
        torch.set_num_threads(before)
    for key, value in found.items():
        if key[0] == 1:
            assert torch.equal(value, found[(2, *key[1:])]), key


def test_channels_last_input(forced):
    x = blobs(2, 5, seed=3).contiguous(memory_format=torch.channels_last)
    assert torch.equal(U.upsample_masks(x, (700, 900), 0.5), reference(x, (700, 900), 0.5))
    assert bool(forced) == has_formula()


def test_a_torch_build_without_a_formula_takes_interpolate(forced, monkeypatch):
    """Where no formula reproduces this torch's F.interpolate, masks come from it directly."""
    monkeypatch.setattr(U, "_formula", lambda *args: None)
    x = blobs(2, 3, seed=11)
    assert torch.equal(U.upsample_masks(x, (1080, 1920), 0.0), reference(x, (1080, 1920), 0.0))
    assert forced == []


@pytest.mark.parametrize("size", SLOW_SIZES)
def test_small_or_downscaled_outputs_use_interpolate(forced, size):
    x = blobs(1, 3, seed=5)
    assert torch.equal(U.upsample_masks(x, size, 0.0), reference(x, size, 0.0))
    assert not forced


def test_smooth_logits_take_the_fast_path_and_noise_does_not(fast_calls):
    smooth, noise = blobs(1, 3, seed=7), torch.randn(1, 3, 256, 256)
    assert torch.equal(
        U.upsample_masks(smooth, (1080, 1920), 0), reference(smooth, (1080, 1920), 0)
    )
    taken = 1 if has_formula() else 0
    assert len(fast_calls) == taken
    assert torch.equal(U.upsample_masks(noise, (1080, 1920), 0), reference(noise, (1080, 1920), 0))
    assert len(fast_calls) == taken


@pytest.mark.parametrize(
    "x",
    [
        torch.full((1, 1, 256, 256), float("nan")),
        blobs(1, 1, seed=1).index_fill_(3, torch.tensor([9]), float("inf")),
        blobs(1, 2, seed=2).double(),
        torch.zeros(1, 3, 256, 256),
    ],
)
def test_unusual_inputs_match(x):
    for threshold in (0.0, float("nan"), 1e38):
        assert torch.equal(
            U.upsample_masks(x, (600, 800), threshold), reference(x, (600, 800), threshold)
        )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.zeros(3, 8, 8), (16, 16)), "B, C, h, w"),
        (([[0.0]], (16, 16)), "tensor"),
        ((torch.zeros(1, 1, 8, 8), (16,)), "size"),
        ((torch.zeros(1, 1, 8, 8), (0, 16)), "positive"),
        ((torch.zeros(1, 1, 8, 8), (2.5, 16)), "integers"),
    ],
)
def test_bad_arguments_are_clear_errors(args, match):
    with pytest.raises(ValueError, match=match):
        U.upsample_masks(*args)


# ---------------------------------------------------------------------------- exactness pieces
@pytest.mark.parametrize(("h", "w", "size"), [(256, 256, (1080, 1920)), (7, 5, (64, 129))])
def test_reproduced_values_are_bit_equal(h, w, size):
    """Every interpolated value, degenerate edges included, equals F.interpolate's."""
    for channels in (1, 3):
        formula = U._formula(channels, False, torch.get_num_threads())
        if formula is None:
            pytest.skip("this torch build computes differently: the fast path is off")
        kind, fused = formula
        x = torch.randn(2, channels, h, w) * 10
        got = U._interpolate_all(
            x.view(-1, h, w).numpy(), U._axis(h, size[0], fused), U._axis(w, size[1], fused), kind
        )
        assert torch.equal(torch.from_numpy(got), upsample_values(x, size).view(-1, *size))


def upsample_values(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size, mode="bilinear", align_corners=False)


def test_axis_weights_equal_one_hot_interpolation():
    """Weights as F.interpolate applies them: interpolate the identity (one-hot columns)."""
    for n_in, n_out in [(256, 1080), (256, 1920), (256, 4001), (7, 64), (256, 257)]:
        _, fused = U._formula(1, False, torch.get_num_threads()) or pytest.skip("no formula")
        axis = U._axis(n_in, n_out, fused)
        eye = torch.eye(n_in).view(1, n_in, n_in, 1)
        probe = upsample_values(eye, (n_out, 1))[0, :, :, 0].numpy()  # (n_in, n_out)
        d = np.arange(n_out)
        i1 = np.minimum(axis.i0 + 1, n_in - 1)
        two = i1 != axis.i0
        assert np.array_equal(probe[axis.i0, d][two], axis.w0[two])
        assert np.array_equal(probe[i1, d][two], axis.w1[two])
        assert ((probe != 0).sum(0) <= 2).all()


def exact_float32(value: Fraction) -> float:
    """A rational rounded to the nearest float32, ties to even: the reference rounding."""
    near = np.float32(float(value))  # within one float32 step of the answer
    candidates = [
        np.nextafter(near, np.float32(-np.inf)),
        near,
        np.nextafter(near, np.float32(np.inf)),
    ]
    best = min(
        candidates, key=lambda f: (abs(Fraction(float(f)) - value), int(f.view(np.int32)) % 2)
    )
    return float(best)


def test_fused_multiply_add_rounds_once():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(2000, generator=gen) * 10
    b = torch.rand(2000, generator=gen)
    c = torch.randn(2000, generator=gen) * torch.logspace(-12, 12, 2000)
    # Traps for double rounding: (1 + 2**-12)**2 lies exactly halfway between two float32;
    # a tiny c tips the exact sum, but a float64 sum would drop it and land on the tie.
    trap = torch.tensor([1 + 2.0**-12, -(1 + 2.0**-12), 2.0**10 * (1 + 2.0**-12)])
    tips = torch.tensor([2.0**-70, -(2.0**-70), 2.0**-50])
    a, b, c = torch.cat((a, trap, trap)), torch.cat((b, trap, trap)), torch.cat((c, tips, -tips))
    a, b, c = a.numpy(), b.numpy(), c.numpy()
    got = U._fma(a, b, c)
    naive = (a.astype(np.float64) * b + c).astype(np.float32)
    exact = [
        exact_float32(Fraction(ai) * Fraction(bi) + Fraction(ci))
        for ai, bi, ci in zip(a.tolist(), b.tolist(), c.tolist())
    ]
    assert got.tolist() == exact
    assert naive.tolist() != exact  # the traps are real


@pytest.mark.parametrize("threshold", [0.3, -2.5, 0.0])
def test_sum_above_decides_like_rounding_then_comparing(threshold):
    t32 = np.float32(threshold)
    up = np.nextafter(t32, np.float32(np.inf))
    half = (float(up) - float(t32)) / 2
    gen = torch.Generator().manual_seed(1)
    # Random sums, and sums on the rounding boundary above the threshold or a hair off it,
    # some of which float64 cannot hold (the hair is lost, the error term keeps it).
    hairs = [0.0, half * 2.0**-52, -half * 2.0**-52, half * 2.0**-20, -half * 2.0**-20]
    p = torch.cat(
        (
            torch.randn(3000, generator=gen, dtype=torch.float64),
            torch.tensor([half + e for e in hairs], dtype=torch.float64),
        )
    )
    c = torch.cat(
        (float(t32) + torch.randn(3000, generator=gen) * 1e-6, torch.full((5,), float(t32)))
    ).float()
    got = U._sum_above(p.numpy(), c.numpy(), float(t32))
    exact = [
        exact_float32(Fraction(pi) + Fraction(ci)) > t32 for pi, ci in zip(p.tolist(), c.tolist())
    ]
    assert got.tolist() == exact
    assert got[-5:].tolist() == [int(up.view(np.int32)) % 2 == 0, True, False, True, False]


# ---------------------------------------------------------------------------- tests that bite
def test_an_off_by_one_cell_map_is_caught(monkeypatch):
    """The comparisons above catch a row index mapping shifted by one."""
    x, size = blobs(1, 3, seed=11), (1080, 1920)
    axis = U._axis

    def shifted(n_in: int, n_out: int, fused: bool) -> U._Axis:
        good = axis(n_in, n_out, fused)
        return good._replace(i0=np.minimum(good.i0 + 1, n_in - 1)) if n_out == 1080 else good

    monkeypatch.setattr(U, "_axis", shifted)
    monkeypatch.setattr(U, "_formula", lambda *key: ("separable", True))
    assert not torch.equal(U.upsample_masks(x, size, 0.0), reference(x, size, 0.0))


def test_an_off_by_one_segment_is_caught(monkeypatch):
    x, size = blobs(1, 3, seed=12), (1080, 1920)
    axis = U._axis

    def shifted(n_in: int, n_out: int, fused: bool) -> U._Axis:
        good = axis(n_in, n_out, fused)
        if n_out != 1920:
            return good
        return good._replace(pos=np.minimum(good.pos + 1, n_out - 1))

    monkeypatch.setattr(U, "_axis", shifted)
    monkeypatch.setattr(U, "_formula", lambda *key: ("separable", True))
    monkeypatch.setattr(U, "BOUNDARY_COST_RATIO", 0.0)
    assert not torch.equal(U.upsample_masks(x, size, 0.0), reference(x, size, 0.0))


def test_a_weight_one_ulp_off_is_caught_and_the_check_refuses_it(monkeypatch):
    formula = U._formula(1, False, torch.get_num_threads())
    if formula is None:
        pytest.skip("this torch build computes differently: the fast path is off")
    kind, fused = formula
    x = torch.randn(1, 1, 5, 7) * 10
    good = U._axis(5, 67, fused)
    off = np.nextafter(good.w1[10], np.float32(1))
    bad = good._replace(seg_w1=np.where(good.pos == 10, off, good.seg_w1))
    got = U._interpolate_all(x[0].numpy(), bad, U._axis(7, 71, fused), kind)
    assert not np.array_equal(got, upsample_values(x, (67, 71))[0].numpy())
    # The run-time check rejects a formula that is off anywhere on its probes.
    axis = U._axis
    monkeypatch.setattr(
        U, "_axis", lambda n, m, f: bad if (n, m, f) == (5, 67, fused) else axis(n, m, f)
    )
    assert U._formula.__wrapped__(1, False, torch.get_num_threads()) is None


def test_an_unfused_source_index_would_be_caught():
    """Source indices rounded twice (a naive float32 re-derivation) are off by an ulp."""
    formula = U._formula(1, False, torch.get_num_threads())
    if formula != ("separable", True):
        pytest.skip("this torch build does not fuse")
    x = torch.randn(1, 1, 256, 256) * 10
    rows, cols = U._axis(256, 1080, False), U._axis(256, 1920, False)
    got = U._interpolate_all(x[0].numpy(), rows, cols, "separable")
    assert not np.array_equal(got, upsample_values(x, (1080, 1920))[0].numpy())
    assert not np.array_equal(rows.w1, U._axis(256, 1080, True).w1)


# ---------------------------------------------------------------------------- the predictor
@pytest.fixture(scope="module")
def predictor() -> SAM2ImagePredictor:
    torch.manual_seed(0)
    model = build_sam2("sam2.1-hiera-tiny")
    with torch.no_grad():  # random init leaves many zeros: spread every weight a little
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    pred = SAM2ImagePredictor(model, mask_threshold=0.05)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (270, 411, 3), dtype=np.uint8) for _ in range(2)]
    images[1] = images[1][:263, :300]
    pred.set_image_batch(images)
    return pred


PROMPTS = {
    "point_coords_batch": [np.array([[100, 120]]), np.array([[50, 60], [200, 90]])],
    "point_labels_batch": [np.array([1]), np.array([1, 0])],
}


@pytest.mark.parametrize("force", [True, False])
def test_predictor_masks_equal_thresholded_logits(predictor, monkeypatch, force):
    if force:
        monkeypatch.setattr(U, "BOUNDARY_COST_RATIO", 0.0)
    thr = np.float32(predictor.mask_threshold)
    for multimask in (True, False):
        masks, _, _ = predictor.predict_batch(**PROMPTS, multimask_output=multimask)
        logits_, _, _ = predictor.predict_batch(
            **PROMPTS, multimask_output=multimask, return_logits=True
        )
        for m, lg in zip(masks, logits_):
            assert m.dtype == np.bool_ and np.array_equal(m, lg > thr)
            assert 0 < m.mean() < 1  # not trivially empty or full
    boxes = np.array([[10, 10, 200, 150], [40, 30, 290, 250]])
    masks, _, _ = predictor.predict(box=boxes, multimask_output=True)
    logits_, _, _ = predictor.predict(box=boxes, multimask_output=True, return_logits=True)
    assert masks.shape == (2, 3, 263, 300)
    assert np.array_equal(masks, logits_ > thr)


def test_predictor_cleans_up_at_low_res_before_upsampling(predictor, monkeypatch):
    monkeypatch.setattr(U, "BOUNDARY_COST_RATIO", 0.0)
    click = {"point_coords": np.array([[50, 60], [200, 90]]), "point_labels": np.array([1, 0])}
    plain, _, _ = predictor.predict(**click)
    monkeypatch.setattr(predictor, "max_hole_area", 30.0)
    monkeypatch.setattr(predictor, "max_sprinkle_area", 30.0)
    masks, _, _ = predictor.predict(**click)
    logits_, _, _ = predictor.predict(**click, return_logits=True)
    assert np.array_equal(masks, logits_ > np.float32(predictor.mask_threshold))
    assert not np.array_equal(masks, plain)  # the clean-up changed something


def test_predictor_uses_the_fast_path(predictor, forced):
    masks, _, _ = predictor.predict(point_coords=np.array([[30, 40]]), point_labels=np.array([1]))
    assert masks.shape == (3, 263, 300)
    assert bool(forced) == has_formula()

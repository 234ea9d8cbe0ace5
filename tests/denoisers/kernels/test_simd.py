import math

import numpy as np
import pytest
from numba import njit

from lightning_pspc.denoisers.kernels import simd
from lightning_pspc.denoisers.kernels.simd import LANES


@njit
def _exp_all(t, cut, out):
    for o in range(0, t.shape[0], LANES):
        simd.store(out, o, simd.exp_weights(simd.load(t, o), cut))


@njit
def _reductions(a, bound):
    v = simd.load(a, 0)
    return simd.hsum(v), simd.hmin(v), simd.any_gt(v, bound), simd.any_ge(v, bound)


@njit
def _any(a, bound):
    v = simd.load(a, 0)
    return simd.any_gt(v, bound), simd.any_ge(v, bound), simd.any_gt(simd.narrow(v), bound)


@njit
def _arith(a, b, out32, out64):
    x, y = simd.load(a, 0), simd.load(b, 0)
    simd.store(out64, 0, (x - y) * (x + y) + simd.splat64(2.0))
    simd.store(out64, LANES, simd.vmin(x, y))
    simd.store(out32, 0, simd.narrow(x) * simd.splat32(3))
    simd.store(out64, 2 * LANES, simd.widen(simd.narrow(y)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exp_weights_relative_error_and_cut(dtype):
    """exp(t) to 4e-7 relative from the cut up to 40, 0 below the cut, never subnormal: float64
    t (range reduction in float64, accurate for large |t|) and float32 t (reduction in float32,
    ln 2 in two parts)."""
    t = np.concatenate([np.linspace(-64.0, 40.0, 100 * LANES - 3), [-64.5, -1e5, -np.inf]])
    t = t.astype(dtype)
    out = np.empty(t.shape, np.float32)
    _exp_all(t, -64.0, out)
    live = t >= -64.0
    ref = np.exp(t[live].astype(np.float64))
    assert (np.abs(out[live] - ref) / ref).max() < 4e-7
    assert (out[~live] == 0).all()
    assert (out[live] >= np.float32(np.finfo(np.float32).tiny)).all()


def test_reductions_and_comparisons():
    a = np.arange(LANES, dtype=np.float64)[::-1].copy() + 0.5
    total, low, gt, ge = _reductions(a, a.max())
    assert total == pytest.approx(a.sum()) and low == 0.5 and not gt and ge
    total, low, gt, ge = _reductions(a, a.max() - 1)
    assert gt and ge


@pytest.mark.parametrize("bound", [8.0, -64.0])
def test_any_lane_at_every_position(bound):
    """any_gt / any_ge compare the maximum of the register halves: a single lane above (or at)
    the bound is found wherever it sits, in float64 and in narrowed float32 vectors."""
    for lane in range(LANES):
        a = np.full(LANES, bound - 3.0)
        a[lane] = bound + 0.5
        assert _any(a, bound) == (True, True, True)
        a[lane] = bound
        assert _any(a, bound) == (False, True, False)
    assert _any(np.full(LANES, bound - 1e-3), bound) == (False, False, False)


def test_arithmetic_and_conversions():
    g = np.random.default_rng(0)
    a, b = g.standard_normal(LANES), g.standard_normal(LANES)
    out32, out64 = np.empty(LANES, np.float32), np.empty(3 * LANES)
    _arith(a, b, out32, out64)
    np.testing.assert_allclose(out64[:LANES], (a - b) * (a + b) + 2, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(out64[LANES : 2 * LANES], np.minimum(a, b))
    np.testing.assert_allclose(out32, a.astype(np.float32) * 3, rtol=1e-7)
    np.testing.assert_array_equal(out64[2 * LANES :], b.astype(np.float32).astype(np.float64))
    assert math.isfinite(float(out32.sum()))

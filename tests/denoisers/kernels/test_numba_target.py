"""The numba kernels' vector width choice (lightning_pspc.denoisers.numba_target)."""

from __future__ import annotations

import numba.core.codegen
import pytest
from numba.core import config

from lightning_pspc.denoisers.kernels import numba_target


@pytest.fixture
def fresh(monkeypatch):
    """No user choice of numba's target and the opt-out unset (restored afterwards)."""
    monkeypatch.setattr(config, "CPU_NAME", None)
    monkeypatch.setattr(config, "CPU_FEATURES", None)
    monkeypatch.setattr(numba_target, "WIDE_VECTORS", False)
    monkeypatch.delenv("LIGHTNING_PSPC_NUMBA_WIDE", raising=False)
    return monkeypatch


def test_avx512_host_gets_512_bit_vectors(fresh):
    fresh.setattr(numba.core.codegen, "get_host_cpu_features", lambda: "+avx2,+avx512f,+fma")
    assert numba_target.prefer_wide_vectors()
    assert config.CPU_FEATURES == "+avx2,+avx512f,+fma,-prefer-256-bit"
    assert numba_target.WIDE_VECTORS


@pytest.mark.parametrize("features", ["+avx2,+fma", "+avx2,-avx512f", ""])
def test_host_without_avx512_keeps_numba_default(fresh, features):
    fresh.setattr(numba.core.codegen, "get_host_cpu_features", lambda: features)
    assert not numba_target.prefer_wide_vectors()
    assert config.CPU_FEATURES is None


@pytest.mark.parametrize("setting", ["CPU_NAME", "CPU_FEATURES", "opt-out"])
def test_user_choice_wins(fresh, setting):
    fresh.setattr(numba.core.codegen, "get_host_cpu_features", lambda: "+avx512f")
    if setting == "opt-out":
        fresh.setenv("LIGHTNING_PSPC_NUMBA_WIDE", "0")
    else:
        fresh.setattr(config, setting, "generic" if setting == "CPU_NAME" else "+avx2")
    assert not numba_target.prefer_wide_vectors()
    assert config.CPU_FEATURES in (None, "+avx2")


def _cached_index(py_func) -> dict:
    """The overloads numba's on-disk cache holds for ``py_func`` under the current stamps."""
    return numba.core.caching.FunctionCache(py_func)._cache_file._load_index()


def test_editing_a_kernel_dependency_invalidates_the_package_cache(tmp_path, monkeypatch):
    from lightning_pspc.denoisers.kernels import pspc_rows

    assert pspc_rows._band(10, 3, 1) == (4, 3)  # compiled (or loaded) and cached on disk
    assert _cached_index(pspc_rows._band.py_func), "kernel not cached under the current stamp"
    # simd.py (the intrinsics pspc_rows compiles in) edited: the cached kernel is stale
    dep = tmp_path / "simd.py"
    dep.write_text("# edited\n")
    monkeypatch.setattr(numba_target, "CACHE_DEPENDENCIES", (str(dep),))
    assert _cached_index(pspc_rows._band.py_func) == {}
    assert pspc_rows._band.py_func(10, 3, 1) == (4, 3)


def test_cache_locators_cover_only_package_kernels():
    from lightning_pspc.denoisers.kernels import pspc_rows

    def outside(x):
        return x

    ours = numba.core.caching.FunctionCache(pspc_rows._band.py_func)._impl.locator
    theirs = numba.core.caching.FunctionCache(outside)._impl.locator
    assert type(ours).__module__ == numba_target.__name__
    assert type(theirs).__module__ == "numba.core.caching"

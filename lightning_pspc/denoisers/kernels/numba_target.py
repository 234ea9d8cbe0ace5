"""Compile the CPU kernels (:mod:`.pspc_cpu`, :mod:`.pspc_rows`, :mod:`.pspc_values`,
:mod:`.fpmc_cpu`) for 512-bit vectors where the CPU has AVX-512, and run them with torch's
thread count (:func:`torch_threads`).

LLVM's tuning for Intel server CPUs (Skylake-X, Cascade Lake, Ice Lake) prefers 256-bit vectors
even where 512-bit ones exist, so numba's loops use half the width the kernels could. Removing the
``prefer-256-bit`` tuning from numba's target features lets them use the full width
(``benchmarks/denoisers.py`` records :data:`WIDE_VECTORS` with its figures). Results are
unchanged: the same operations, wider registers (the exactness tests run with whichever width the
machine gets).

The choice is made once, before numba compiles or loads anything, and only when the user has not
chosen: ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` (numba's own settings) win, and
``LIGHTNING_PSPC_NUMBA_WIDE=0`` keeps numba's default. If another library has already made numba
compile for the CPU in this process, numba keeps its target and this has no effect. numba's cache
keys include the features, so kernels cached with either width are never mixed.

numba's on-disk cache (``cache=True``) is stamped with the content of the kernel's own source file
only. The kernels of :mod:`.pspc_rows` are built from :mod:`.simd`'s intrinsics, so an edit of
``simd.py`` alone would leave them cached as they were, silently. :func:`track_cache_dependencies`
makes the stamp of every kernel in this package also cover the files in :data:`CACHE_DEPENDENCIES`:
editing one recompiles the package's kernels once.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator

_HERE = os.path.dirname(os.path.abspath(__file__))
#: Source files whose code the package's kernels compile in (numba intrinsics): part of every
#: package kernel's cache stamp (:func:`track_cache_dependencies`).
CACHE_DEPENDENCIES: tuple[str, ...] = (os.path.join(_HERE, "simd.py"),)

#: Set by :func:`prefer_wide_vectors` when it changed numba's target features (for benchmarks).
WIDE_VECTORS = False


def prefer_wide_vectors() -> bool:
    """Drops LLVM's ``prefer-256-bit`` tuning from numba's CPU target if the CPU has AVX-512 and
    nobody chose the target (see the module docstring). Returns whether it did."""
    global WIDE_VECTORS
    if os.environ.get("LIGHTNING_PSPC_NUMBA_WIDE", "1") == "0":
        return False
    from numba.core import config
    from numba.core.codegen import get_host_cpu_features

    if config.CPU_NAME is not None or config.CPU_FEATURES is not None:
        return False
    features = get_host_cpu_features()
    if "+avx512f" not in features.split(","):
        return False
    config.CPU_FEATURES = features + ",-prefer-256-bit"
    WIDE_VECTORS = True
    return True


prefer_wide_vectors()


@contextlib.contextmanager
def torch_threads() -> Iterator[int]:
    """Runs numba's parallel kernels with ``torch.get_num_threads()`` threads (at most numba's
    own ``NUMBA_NUM_THREADS``), restored afterwards; yields that count."""
    import numba
    import torch

    previous = numba.get_num_threads()
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    try:
        yield threads
    finally:
        numba.set_num_threads(previous)


def _dependency_stamp() -> str:
    digest = hashlib.sha256()
    for path in CACHE_DEPENDENCIES:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _with_dependencies(locator: type) -> type:
    """``locator`` (a numba cache locator class) for this package's kernels only, its source stamp
    extended with :data:`CACHE_DEPENDENCIES`."""

    class PackageLocator(locator):
        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.dirname(os.path.abspath(py_file)) != _HERE:
                return None  # not a kernel of this package: numba's own locators
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            return (super().get_source_stamp(), _dependency_stamp())

    PackageLocator.__name__ = PackageLocator.__qualname__ = "Package" + locator.__name__
    return PackageLocator


def track_cache_dependencies() -> bool:
    """Puts locators for this package's kernels ahead of numba's own (see the module docstring);
    returns whether it did (not if numba's cache internals differ from what this expects, or
    the user chose locators with ``NUMBA_CACHE_LOCATOR_CLASSES``)."""
    try:
        from numba.core import caching, config

        def public_or_private(name: str) -> type:  # older numba names these with a leading "_"
            return getattr(caching, name, None) or getattr(caching, "_" + name)

        impl = public_or_private("CacheImpl")
        bases = tuple(
            public_or_private(name + "CacheLocator")
            for name in ("UserProvided", "InTree", "UserWide")
        )
    except (ImportError, AttributeError):
        return False
    if getattr(config, "CACHE_LOCATOR_CLASSES", None):
        return False
    classes = impl._locator_classes
    if any(getattr(c, "__module__", None) == __name__ for c in classes):
        return True
    classes[:0] = [_with_dependencies(base) for base in bases]
    return True


track_cache_dependencies()

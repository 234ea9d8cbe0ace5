"""Compile the CPU kernels (:mod:`.pspc_cpu`, :mod:`.pspc_rows`, :mod:`.pspc_values`,
:mod:`.fpmc_cpu`) for 512-bit vectors where the CPU has AVX-512, and run them with torch's
thread count (:func:`torch_threads`).

LLVM's tuning for Intel server CPUs (Skylake-X, Cascade Lake, Ice Lake) prefers 256-bit vectors
even where 512-bit ones exist, so numba's loops use half the width the kernels could. Removing the
``prefer-256-bit`` tuning from numba's target features makes them 20-25 % faster on this
project's development machine, a Cascade Lake (CPU time on one core, Fashion-MNIST, N = 2,000,
B = 64: PSPC-Square P = 3 from 6.4 to 5.1 ns per (noisy image, training image, pixel), P = 5 from
5.3 to 4.0, P = 7 from 4.9 to 4.1;
``benchmarks/denoisers.py`` prints the current figures). Results are unchanged: the same
operations, wider registers (the exactness tests run with whichever width the machine gets).

The choice is made once, before numba compiles or loads anything, and only when the user has not
chosen: ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` (numba's own settings) win, and
``LIGHTNING_PSPC_NUMBA_WIDE=0`` keeps numba's default. If another library has already made numba
compile for the CPU in this process, numba keeps its target and this has no effect. numba's cache
keys include the features, so kernels cached with either width are never mixed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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

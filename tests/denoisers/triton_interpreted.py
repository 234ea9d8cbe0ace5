"""Checks of the Triton ELS kernel (:mod:`lightning_pspc.denoisers.els_triton`) under Triton's CPU
interpreter; run as ``TRITON_INTERPRET=1 python -m tests.denoisers.triton_interpreted`` (the
interpreter is chosen when ``triton`` is first imported, so not inside the pytest process)."""

from __future__ import annotations

import os

import torch

from lightning_pspc.denoisers import EquivariantLocalDenoiser
from lightning_pspc.denoisers.kernels.els_triton import (
    TritonPatchSet,
    els_centres_triton,
    triton_patch_set,
)
from lightning_pspc.denoisers.loops.local_loops import els_loop

from .conftest import reduced_precision
from .local_data import els_source_and_queries, mixed_probes, smooth_images


def main() -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    # 2 channels (centres padded to a power of 2), all 18 EDM sigmas in one batch
    x = smooth_images(8, 2, 6, seed=7)
    z, s = mixed_probes(x)
    for padding in ("circular", "zeros"):
        d = EquivariantLocalDenoiser(x, patch_size=3, padding=padding)
        d.engine = "triton"
        with reduced_precision():
            out = d(z, s)
        err = (out.double() - els_loop(z, s, x, 3, padding)).abs().max().item()
        assert err < 1e-5, f"{padding}: max abs difference {err:.2e} to the definition loop"
        # the kernel's layout of each patch set is made once and cached, not rebuilt per call
        held = dict(d._patch_sets)
        assert held and all(isinstance(v, TritonPatchSet) for v in held.values())
        with reduced_precision():
            again = d(z, s)
        assert torch.equal(again, out) and all(d._patch_sets[key] is v for key, v in held.items())
    # windows wider than one feature tile (2 x 7 x 7 = 98 features: two tiles of 64)
    x = smooth_images(6, 2, 8, seed=8)
    z, s = mixed_probes(x)
    d = EquivariantLocalDenoiser(x, patch_size=7)
    d.engine = "triton"
    err = (d(z, s).double() - els_loop(z, s, x, 7, "circular")).abs().max().item()
    assert err < 1e-5, f"98 features: max abs difference {err:.2e} to the definition loop"
    # block sizes and splits of the patch set (several blocks per split, a short last one)
    rhs, centres, q, inv = els_source_and_queries(smooth_images(12, 1, 6, seed=6))
    patch_set = triton_patch_set(rhs, centres)
    one = els_centres_triton(q[:2], patch_set, inv[:2], 16, 32, splits=1)
    for bq, bm, splits in [(16, 16, 7), (64, 64, None)]:
        out = els_centres_triton(q[:2], patch_set, inv[:2], bq, bm, splits)
        torch.testing.assert_close(out, one, rtol=0, atol=2e-7)  # float32 weights
    print("checked: circular, zeros, wide windows, splits")


if __name__ == "__main__":
    main()

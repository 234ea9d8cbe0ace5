"""Locality member and the local-family references (tiny 1x8x8 data, a two-convolution network)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_pspc.denoisers import LocalDenoiser, PSPCSquareDenoiser
from lightning_pspc.diffusion import EDMPrecond
from lightning_pspc.evaluation import (
    Comparison,
    EvalData,
    Evaluation,
    check_reference_names,
    forward_probes,
)
from lightning_pspc.evaluation.local_references import (
    FMNIST_LOCAL_SIZES,
    NetworkFlexReference,
    default_local_schedule,
    nearest_taus,
)
from lightning_pspc.evaluation.locality import Locality
from lightning_pspc.locality import (
    heatmaps_at_sigmas,
    sensitivity_heatmaps,
    sensitivity_patch_size,
    strided_pixels,
)
from tests.helpers import TinyNet

SIGMAS = [2.0, 0.5]


@pytest.fixture(scope="module")
def data() -> EvalData:
    x = torch.rand(28, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return EvalData(x[:20], x[20:], x[:20])


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return EDMPrecond(TinyNet(1, 4)).eval()


def test_logged_patch_sizes_equal_a_direct_computation(data):
    net = _net(0)
    member = Locality(SIGMAS, num_probes=2, stride=3, candidates=(1, 3))
    ev = Evaluation(data, [member], seed=5)
    result = ev.evaluate(net)["locality"]
    probes = forward_probes(
        data.heldout, torch.tensor(SIGMAS, dtype=torch.float64), 2, ev.seeds.heldout_probes
    )
    pixels = strided_pixels(8, 8, 3)
    for i, s in enumerate(SIGMAS):
        hm = sensitivity_heatmaps(net, probes.z[probes.sigma == s], s, pixels)
        for f in (0.5, 0.75, 0.95):
            assert result.patch_size[f][i] == pytest.approx(sensitivity_patch_size(hm, f, pixels))
    scalars = result.scalars("locality")
    assert scalars["locality/patch_size_f50/sigma_2"] == result.patch_size[0.5][0]
    assert set(result.to_json()["sensitivity_patch_size"]) == {"f50", "f75", "f95"}


@pytest.mark.parametrize("kind,p", [("pspc", 3), ("ls", 5)])
def test_best_fit_of_a_closed_form_network_is_its_own_patch_size(data, kind, p):
    images = data.reference
    denoiser = (
        PSPCSquareDenoiser(images, patch_size=p)
        if kind == "pspc"
        else LocalDenoiser(images, patch_size=p)
    )
    member = Locality(SIGMAS, num_probes=2, stride=4, candidates=(1, 3, 5, 7), fit_kinds=[kind])
    ev = Evaluation(data, [member])
    outputs = denoiser(member.probes.z, member.probes.sigma)
    best, mse = member.best_fit(outputs)
    assert best[kind] == [p, p]
    assert min(mse[kind][0]) == pytest.approx(0.0, abs=1e-10)
    assert ev.calibration[kind] == (SIGMAS, [p, p])


def test_flex_reference_uses_the_current_networks_heatmaps(data):
    grid = [1.0, 0.3]  # taus 0.4, 0.4 (nearest CIFAR-10 EDM sigmas)
    ev = Evaluation(data, [Comparison(0, 2, 0)], ["empirical", "pspc_flex"], grid)
    flex = ev.references["pspc_flex"]
    assert isinstance(flex, NetworkFlexReference) and nearest_taus(ev.sigmas) == (0.4, 0.4)
    a, b = _net(0), _net(1)
    first = ev.evaluate(a)["compare"].mse["heldout"]
    probes = forward_probes(data.heldout, ev.sigmas, 2, ev.seeds.heldout_probes)
    torch.testing.assert_close(flex.heatmaps, heatmaps_at_sigmas(a, probes, ev.sigmas).double())
    empirical_out = ev.members["compare"].comparer._cache["heldout"]["empirical"]
    second = ev.evaluate(b)["compare"].mse["heldout"]
    torch.testing.assert_close(flex.heatmaps, heatmaps_at_sigmas(b, probes, ev.sigmas).double())
    assert ev.members["compare"].comparer._cache["heldout"]["empirical"] is empirical_out
    assert not torch.allclose(first["pspc_flex"], second["pspc_flex"])


def test_ls_els_use_the_calibrated_best_fit_else_the_default(data):
    ev = Evaluation(
        data,
        [
            Locality(SIGMAS, num_probes=1, stride=4, candidates=(1, 3), fit_kinds=["ls"]),
            Comparison(0, 1, 0),
        ],
        ["ls", "els", "wiener_locality"],
        SIGMAS,
    )
    ls = ev.references["ls"]
    assert ls.schedule == default_local_schedule(8, 8) and not ls.calibrated
    assert default_local_schedule(28, 28)[1] == FMNIST_LOCAL_SIZES
    results = ev.evaluate(_net(0))
    best = tuple(results["locality"].best_fit["ls"])
    for name in ("ls", "els"):
        assert ev.references[name].calibrated and ev.references[name].schedule[1] == best
    assert set(results["compare"].mse["heldout"]) == {"ls", "els", "wiener_locality"}


def test_bad_reference_names_and_settings_give_one_clear_error():
    with pytest.raises(
        ValueError, match=r"unknown reference\(s\) \['pspc_flexx'\].*pspc_flex_soft"
    ):
        check_reference_names(["empirical", "pspc_flexx"])
    with pytest.raises(ValueError, match="stride=0 must be >= 1"):
        Locality(stride=0)
    with pytest.raises(ValueError, match=r"candidates=\[4\] must be positive odd"):
        Locality(candidates=[4])
    with pytest.raises(ValueError, match="fit_kinds"):
        Locality(fit_kinds=["els"])

"""Locality member and the local-family references (tiny 1x8x8 data, a two-convolution network)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_pspc.denoisers import EquivariantLocalDenoiser, LocalDenoiser, PSPCSquareDenoiser
from lightning_pspc.denoisers.network_fitted import (
    FMNIST_LOCAL_SIZES,
    NetworkFlexReference,
    default_local_schedule,
    nearest_taus,
)
from lightning_pspc.diffusion import EDMPrecond
from lightning_pspc.evaluation import (
    Agreement,
    CalibrationSettings,
    Comparison,
    EvalData,
    Evaluation,
    check_reference_names,
    fixed_noise,
    forward_probes,
    reverse_probes,
)
from lightning_pspc.evaluation.members.patch_sizes import Locality
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


@pytest.mark.parametrize("kind,p", [("pspc", 3), ("ls", 5), ("els", 3)])
def test_best_fit_of_a_closed_form_network_is_its_own_patch_size(data, kind, p):
    images = data.reference
    denoiser = {
        "pspc": lambda: PSPCSquareDenoiser(images, patch_size=p),
        "ls": lambda: LocalDenoiser(images, patch_size=p),
        "els": lambda: EquivariantLocalDenoiser(images, patch_size=p, padding="zeros"),
    }[kind]()
    member = Locality(SIGMAS, num_probes=2, stride=4, candidates=(1, 3, 5, 7), fit_kinds=[kind])
    calibration = CalibrationSettings(2, 1, candidates=(1, 3, 5, 7), fit_kinds=(kind,))
    ev = Evaluation(data, [member], sigmas=SIGMAS, calibration=calibration)
    outputs = denoiser(member.probes.z, member.probes.sigma)
    best, mse = member.fit.fit(denoiser, outputs)["forward"]
    assert best[kind] == [p, p]
    assert min(mse[kind][0]) == pytest.approx(0.0, abs=1e-10)
    # the evaluation's own calibration (its probes, forward and reverse) finds it too
    assert ev.calibration.schedule(kind, denoiser) == (SIGMAS, [p, p])


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


def test_reverse_probes_are_pooled_into_the_best_fit(data):
    """The fit MSE is the mean over the held-out forward probes and the states of the network's
    own Heun trajectories at each sigma (a direct computation), and the same in a second run."""
    net = _net(0)

    def run() -> tuple[Locality, Evaluation, object]:
        member = Locality(
            SIGMAS,
            num_probes=1,
            stride=4,
            candidates=(1, 3),
            fit_kinds=["ls"],
            num_reverse_probes=2,
        )
        ev = Evaluation(data, [member], seed=3)
        return member, ev, ev.evaluate(net)["locality"]

    member, ev, result = run()
    grid = member.fit.trajectory_sigmas
    assert grid[0] == 80.0 and all(bool((grid == s).any()) for s in SIGMAS)
    noise = fixed_noise(2, (1, 8, 8), ev.seeds.reverse_noise)
    states, net_out, _ = reverse_probes(net, noise, grid)
    fwd = member.probes
    with torch.no_grad():
        fwd_out = net(fwd.z, fwd.sigma.float())
    expected = []
    for s in SIGMAS:
        on_rev = (states.sigma == s).nonzero().squeeze(1)
        on_fwd = (fwd.sigma == s).nonzero().squeeze(1)
        z = torch.cat([fwd.z[on_fwd], states.z[on_rev]])  # 1 forward + 2 reverse probes
        target = torch.cat([fwd_out[on_fwd], net_out[on_rev]])
        sig = torch.full((3,), s, dtype=torch.float64)
        expected.append(
            [
                float((LocalDenoiser(data.reference, patch_size=k)(z, sig) - target).pow(2).mean())
                for k in (1, 3)
            ]
        )
    torch.testing.assert_close(
        torch.tensor(result.fit_mse["ls"], dtype=torch.float64),
        torch.tensor(expected, dtype=torch.float64),
    )
    rec = result.to_json()
    assert rec["best_fit_probes"] == {"used": "forward+reverse", "forward": 1, "reverse": 2}
    forward_only = Locality(SIGMAS, num_probes=1, stride=4, candidates=(1, 3), fit_kinds=["ls"])
    Evaluation(data, [forward_only], seed=3)
    alone = forward_only.fit.fit(net, fwd_out)["forward"][1]["ls"]
    torch.testing.assert_close(
        torch.tensor(rec["best_fit_by_probes"]["forward"]["mse"]["ls"]), torch.tensor(alone)
    )
    assert not torch.allclose(torch.tensor(alone), torch.tensor(expected))
    assert "locality/best_fit_ls_reverse/sigma_2" in result.scalars()
    assert run()[2].to_json() == rec  # deterministic


def test_els_fit_kind_gives_the_els_reference_its_own_calibration(data):
    calibration = CalibrationSettings(1, 1, candidates=(1, 5), fit_kinds=("ls", "els"))
    ev = Evaluation(data, [Comparison(0, 1, 0)], ["ls", "els"], SIGMAS, calibration=calibration)
    net = _net(0)
    ev.evaluate(net)
    els, ls = ev.references["els"], ev.references["ls"]
    found_els, found_ls = ev.calibration.schedule("els", net), ev.calibration.schedule("ls", net)
    assert els.calibrated_by == "els" and els.schedule == (tuple(SIGMAS), tuple(found_els[1]))
    assert els.denoiser.patch_sizes == tuple(found_els[1]) and els.denoiser.padding == "zeros"
    assert ls.calibrated_by == "ls" and ls.schedule[1] == tuple(found_ls[1])
    assert ev.reference_schedules()["els"]["calibrated_by"] == "els"
    # the ELS calibration of an ELS network is its own window (the LS one need not be)
    els_net = EquivariantLocalDenoiser(data.reference, patch_size=5, padding="zeros")
    ev.refresh_references(els_net)
    assert els.schedule == (tuple(SIGMAS), (5, 5)) and els.calibrated_by == "els"


def test_ls_els_use_the_calibrated_best_fit_else_the_default(data):
    uncalibrated = Evaluation(
        data, [Comparison(0, 1, 0)], ["ls"], SIGMAS, calibration=CalibrationSettings(0, 0)
    )
    uncalibrated.evaluate(_net(0))
    ls = uncalibrated.references["ls"]
    assert ls.schedule == default_local_schedule(8, 8) and not ls.calibrated
    assert default_local_schedule(28, 28)[1] == FMNIST_LOCAL_SIZES
    calibration = CalibrationSettings(1, 0, candidates=(1, 3), fit_kinds=("ls",))
    ev = Evaluation(
        data,
        [Comparison(0, 1, 0)],
        ["ls", "els", "wiener_locality"],
        SIGMAS,
        calibration=calibration,
    )
    net = _net(0)
    results = ev.evaluate(net)
    best = tuple(ev.calibration.schedule("ls", net)[1])
    for name in ("ls", "els"):  # without an ELS fit, ELS takes the LS calibration
        assert ev.references[name].calibrated_by == "ls"
        assert ev.references[name].schedule[1] == best
    assert set(results["compare"].mse["heldout"]) == {"ls", "els", "wiener_locality"}


def test_calibration_probes_are_disjoint_from_the_scored_probes(data):
    """Held-out images and noise of the calibration differ from the scored held-out probes, and
    its trajectories start from other noise than the scored reverse probes."""
    calibration = CalibrationSettings(4, 2, candidates=(1, 3), fit_kinds=("ls",))
    ev = Evaluation(data, [Comparison(2, 4, 2)], ["ls"], SIGMAS, calibration=calibration)
    fit = ev.calibration.best_fit()
    scored = ev.members["compare"].comparer.forward["heldout"]
    assert not set(fit.forward.source.tolist()) & set(scored.source.tolist())
    for z in fit.forward.z:
        assert not (scored.z - z).flatten(1).abs().amax(1).eq(0).any()
    reverse = ev.members["compare"].comparer.reverse_noise
    assert not torch.allclose(fit.reverse_noise, reverse[: fit.reverse_noise.shape[0]])
    assert ev.seeds.calibration_noise != ev.seeds.reverse_noise


def test_an_agreement_only_reference_is_built_refreshed_and_calibrated(data):
    """``ls`` only in the agreement (not in the compared references) takes the calibration too."""
    calibration = CalibrationSettings(1, 0, candidates=(1, 3), fit_kinds=("ls",))
    agreement = Agreement(["ls"], num_samples=2, num_steps=2)
    ev = Evaluation(data, [agreement], ["empirical"], SIGMAS, calibration=calibration)
    assert "ls" not in ev.references and "ls" in ev.all_references()
    net = _net(0)
    ev.evaluate(net)
    ls = ev.all_references()["ls"]
    assert ls.calibrated_by == "ls" and ls.schedule[1] == tuple(
        ev.calibration.schedule("ls", net)[1]
    )
    assert agreement.references["ls"] is ls


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
        Locality(fit_kinds=["elss"])
    with pytest.raises(ValueError, match="num_reverse_probes=-1 must be >= 0"):
        Locality(num_reverse_probes=-1)


def test_a_diverged_network_reports_nan_patch_sizes_instead_of_stopping(data):
    net = _net(0)
    with torch.no_grad():
        net.net.out.weight.fill_(float("nan"))  # NaN heatmaps: no patch size can be read
    member = Locality(SIGMAS, num_probes=2, stride=3, candidates=(1, 3))
    result = Evaluation(data, [member], seed=5).evaluate(net)["locality"]
    sizes = member.report(result)["locality"]["sensitivity_patch_size"]
    assert sizes.keys() == {"f50", "f75", "f95"}
    assert all(math.isnan(v) for values in sizes.values() for v in values)

"""An evaluation of a network with a limited noise-level range: the grid and every sampler are
clipped to it, and nothing calls the network outside it."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_pspc.denoisers import EmpiricalDenoiser
from lightning_pspc.diffusion import edm_sigmas, heun_sample
from lightning_pspc.evaluation import EvalData, fixed_noise, probe_sigmas
from lightning_pspc.evaluation.probes import clip_sigmas, sampler_sigmas
from lightning_pspc.evaluation.settings import EvalSettings

RANGE = (0.01, 4.45)


class StrictDenoiser(torch.nn.Module):
    """The empirical denoiser plus ``0.1 z`` (differentiable in ``z``, as a network is, for the
    locality member's heatmaps) that refuses, as a discrete-VP network does, sigmas out of
    ``RANGE``; it records every sigma it is called at."""

    sigma_min, sigma_max = RANGE

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.seen = EmpiricalDenoiser(images), []

    def forward(self, z, sigma):
        s = torch.as_tensor(sigma).double().flatten()
        bad = (s < RANGE[0] * (1 - 1e-6)) | (s > RANGE[1] * (1 + 1e-6))
        assert not bool(bad.any()), f"called at sigma {s[bad].tolist()}"
        self.seen.append(s)
        return self.inner(z, sigma) + 0.1 * z


def test_clipping_keeps_levels_inside_and_merges_the_clamped_ones():
    grid = probe_sigmas()  # the 18 EDM sigmas
    clipped = clip_sigmas(grid, RANGE)
    inside = grid[(grid >= RANGE[0]) & (grid <= RANGE[1])]
    assert clipped.tolist() == [RANGE[1], *inside.tolist(), RANGE[0]]
    assert torch.equal(clip_sigmas(grid, None), grid)
    schedule = sampler_sigmas(7, RANGE)
    assert (float(schedule[0]), float(schedule[-1])) == RANGE[::-1]
    assert torch.allclose(schedule, edm_sigmas(7, *RANGE), rtol=1e-12)
    assert torch.equal(sampler_sigmas(7), edm_sigmas(7))
    assert sampler_sigmas(3, (0.0, float("inf"))).tolist() == edm_sigmas(3).tolist()


def test_every_member_stays_in_the_range_and_samples_on_the_clipped_schedule():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(10, 1, 8, 8, generator=gen) * 2 - 1
    data = EvalData(images[:8], images[8:], images[:8])
    settings = EvalSettings(
        references=("empirical", "ls"),
        num_train_probes=1,
        num_heldout_probes=1,
        num_reverse_probes=1,
        num_samples=2,
        num_steps=4,
        num_linearity_pairs=1,
        num_agreement_samples=2,
        locality_probes=1,
        locality_stride=4,
        locality_reverse_probes=1,
        calibration_probes=1,
        calibration_reverse_probes=1,
    )
    net = StrictDenoiser(data.reference)
    evaluation = settings.build_evaluation(data, torch.device("cpu"), RANGE)
    results = evaluation.evaluate(net)
    seen = torch.cat(net.seen)
    assert float(seen.min()) == pytest.approx(RANGE[0]) and float(seen.max()) <= RANGE[1]
    assert results["compare"].sigmas.tolist() == clip_sigmas(probe_sigmas(), RANGE).tolist()
    assert max(results["locality"].sigmas) == RANGE[1]  # 10 clamped to the top of the range
    noise = fixed_noise(2, (1, 8, 8), evaluation.seeds.sample_noise)
    expected = heun_sample(net, noise, sigmas=sampler_sigmas(4, RANGE))
    torch.testing.assert_close(results["memorization"].samples, expected)
    record = evaluation.sigma_record(4)
    assert record["model_range"] == list(RANGE) and record["sampler"] == list(RANGE[::-1])
    assert record["requested_sigmas"] == probe_sigmas().tolist()
    assert record["sigmas"] == evaluation.sigmas.tolist()


def test_no_range_changes_nothing():
    images = torch.rand(6, 1, 4, 4) * 2 - 1
    data = EvalData(images, images[:2], images)
    evaluation = EvalSettings(references=("empirical",)).build_evaluation(data, "cpu")
    assert torch.equal(evaluation.sigmas, probe_sigmas())
    assert evaluation.sigma_record(18) is None


def test_the_locality_transition_matches_records_by_sigma_not_by_position():
    from lightning_pspc.evaluation.plots import locality_transition_figure

    def rec(n, sigmas, sizes):
        return {
            "num_train": n,
            "locality": {"sigmas": sigmas, "sensitivity_patch_size": {"f50": sizes}},
        }

    # the N = 8 network's range clipped 1.0 away: its 0.1 is its first locality sigma
    fig = locality_transition_figure([rec(4, [1.0, 0.1], [9.0, 3.0]), rec(8, [0.1], [5.0])])
    lines = {line.get_label(): list(line.get_ydata()) for line in fig.axes[0].lines}
    assert lines["sigma 0.1"] == [3.0, 5.0]
    assert lines["sigma 1"][0] == 9.0 and math.isnan(lines["sigma 1"][1])

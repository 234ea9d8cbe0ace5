"""The ``pspc`` reference's schedule: calibrated to the network by default, scaled or given."""

from __future__ import annotations

import pytest
import torch

from lightning_pspc.denoisers import LocalDenoiser, PSPCSquareDenoiser
from lightning_pspc.denoisers.network_fitted import ReferenceOptions
from lightning_pspc.denoisers.schedules import default_patch_schedule
from lightning_pspc.diffusion.schedule import nearest_grid_index
from lightning_pspc.evaluation import CalibrationSettings, Comparison, EvalData, Evaluation
from lightning_pspc.evaluation.settings import EvalError, EvalSettings

SIGMAS = [2.0, 0.5]


@pytest.fixture(scope="module")
def data() -> EvalData:
    x = torch.rand(28, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return EvalData(x[:20], x[20:], x[:20])


def _evaluation(data, options=None, calibration=None) -> Evaluation:
    calibration = calibration or CalibrationSettings(2, 1, candidates=(1, 3, 5, 7))
    return Evaluation(
        data,
        [Comparison(0, 2, 0)],
        ["pspc"],
        SIGMAS,
        calibration=calibration,
        reference_options=options,
    )


def test_pspc_reference_is_calibrated_to_the_network_by_default(data):
    """A PSPC-Square network of side 5 is fitted by side 5, so the reference equals it."""
    ev = _evaluation(data)
    network = PSPCSquareDenoiser(data.reference, patch_size=5)
    result = ev.evaluate(network)["compare"]
    pspc = ev.references["pspc"]
    assert pspc.schedule == (tuple(SIGMAS), (5, 5)) and pspc.calibrated_by == "pspc"
    assert result.mse["heldout"]["pspc"].max() < 1e-12
    assert result.schedules["pspc"]["schedule"] == "calibrated"
    assert result.scalars()["compare/pspc/patch_size/sigma_0.5"] == 5.0
    record = ev.calibration.record()
    assert record["kinds"]["pspc"]["patch_sizes"] == [5, 5]
    assert record["probes"] == {"used": "forward+reverse", "forward": 2, "reverse": 1}


def test_pspc_schedule_scaled_or_given(data):
    network = PSPCSquareDenoiser(data.reference, patch_size=5)
    scaled = _evaluation(data, ReferenceOptions(pspc_schedule="scaled"))
    scaled.evaluate(network)
    grid, sizes = default_patch_schedule(8, 8)
    assert scaled.references["pspc"].schedule == (tuple(grid.tolist()), sizes)
    assert scaled.reference_schedules()["pspc"]["schedule"] == "scaled"
    given = _evaluation(data, ReferenceOptions(pspc_schedule=(7, 1)))
    given.evaluate(network)
    assert given.references["pspc"].schedule == (tuple(SIGMAS), (7, 1))
    assert given.reference_schedules()["pspc"] | {"sigmas": None} == {
        "sigmas": None,
        "patch_sizes": [7, 1],
        "schedule": "given",
        "calibrated": False,
        "calibrated_by": None,
    }
    off = _evaluation(data, calibration=CalibrationSettings(0, 0))
    off.evaluate(network)
    assert off.references["pspc"].schedule[1] == sizes and not off.references["pspc"].calibrated


def test_pspc_schedule_option_of_eval_py():
    with pytest.raises(EvalError, match=r"--pspc-schedule '3,5'.*18 patch sides"):
        EvalSettings(pspc_schedule="3,5").check()
    settings = EvalSettings(pspc_schedule="3,5", sigmas=[1.0, 0.1])
    settings.check()
    assert settings.evaluation.reference_options().pspc_schedule == (3, 5)
    with pytest.raises(EvalError, match="--pspc-schedule 'best'"):
        EvalSettings(pspc_schedule="best").check()


def test_nearest_schedule_sigma_in_log_or_absolute(data):
    grid = torch.tensor([10.0, 0.1], dtype=torch.float64)
    sigma = torch.tensor([1.5, 0.5, 20.0])
    assert nearest_grid_index(sigma, grid, "log").tolist() == [0, 1, 0]
    assert nearest_grid_index(sigma, grid, "absolute").tolist() == [1, 1, 0]
    for cls in (PSPCSquareDenoiser, LocalDenoiser):
        log = cls(data.reference, sigmas=[10.0, 0.1], patch_sizes=[5, 1], nearest="log")
        absolute = cls(data.reference, sigmas=[10.0, 0.1], patch_sizes=[5, 1])
        assert log.patch_size_for(sigma).tolist() == [5, 1, 5]
        assert absolute.patch_size_for(sigma).tolist() == [1, 1, 5]
    with pytest.raises(ValueError, match="nearest='linear'"):
        PSPCSquareDenoiser(data.reference, patch_size=3, nearest="linear")

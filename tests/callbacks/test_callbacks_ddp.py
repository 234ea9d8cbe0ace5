"""Under 2-process DDP the callbacks split probes and seeds and log the 1-process values."""

from __future__ import annotations

import pytest
import torch

from lightning_pspc.evaluation import Comparison, EvalData, Evaluation, Memorization
from lightning_pspc.evaluation.members.generalization import Generalization
from lightning_pspc.module import DiffusionModule
from tests.callbacks._ddp_fit import SIGMAS, make_datamodule
from tests.helpers import TinyNet, run_clean


@pytest.mark.slow
def test_ddp_split_and_reduction(tmp_path):
    proc = run_clean(["tests/callbacks/_ddp_fit.py", tmp_path], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shares = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    totals = {"train": 3 * 3, "heldout": 2 * 3, "reverse": 3, "samples": 5, "pairs": 3 * 3}
    for key, total in totals.items():
        assert shares[0][key] + shares[1][key] == total and min(s[key] for s in shares) > 0
    # rank 0 printed its overhead line; rank 1 did not print its own
    assert proc.stdout.count("DenoiserComparison:") == 1

    result = torch.load(tmp_path / "result.pt")
    module = DiffusionModule(TinyNet(1, 8))
    module.ema.load_state_dict(result["ema"])
    dm = make_datamodule()
    # the same evaluation in one process: comparison (seed 5) and memorization (seed 2)
    single = Evaluation(
        EvalData.from_datamodule(dm),
        [Comparison(3, 2, 3)],
        ["empirical", "pspc", "gaussian"],
        SIGMAS,
        seed=5,
        batch_size=4,
    ).evaluate(module.denoiser)["compare"]
    expected = single.scalars()
    logged = {k: v for k, v in result["metrics"].items() if k in expected}
    # 3 references x 3 probe kinds x (3 sigmas + low, mid bands), and the side the calibrated pspc
    # reference used at each sigma: every process fits the same sides
    assert len(logged) == len(expected) == 3 * 3 * (3 + 2) + 3
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-4, abs=1e-7), key
    memo = Evaluation(EvalData.from_datamodule(dm), [Memorization(5, 4)], seed=2)
    stats = memo.evaluate(module.denoiser)["memorization"].stats
    for key, value in stats.items():
        assert result["metrics"][f"memorization/{key}"] == pytest.approx(value, rel=1e-4), key
    gen = Evaluation(
        EvalData.from_datamodule(dm),
        [Generalization(3)],
        ["empirical", "gaussian"],
        SIGMAS,
        seed=6,
    ).evaluate(module.denoiser)["generalization"]
    expected = gen.scalars()
    assert len(expected) == 3 * 4 + 1
    for key, value in expected.items():
        assert result["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-7), key

"""eval.py with networks trained elsewhere: a tiny diffusers model on a Fashion-MNIST preset next to
a train.py checkpoint, feature-space figures, and bad --network entries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lightning_pspc import load_denoiser
from lightning_pspc.data import FASHION_MNIST_ROOT
from lightning_pspc.denoisers import EmpiricalDenoiser
from lightning_pspc.evaluation import EvalSeeds, forward_probes, probe_sigmas
from lightning_pspc.evaluation.network_runs import load_data_preset
from lightning_pspc.evaluation.probes import clip_sigmas
from tests.e2e.sweeps import EVAL_ARGS
from tests.helpers import save_diffusers_model, tiny_unet

pytestmark = [
    pytest.mark.skipif(
        not Path(FASHION_MNIST_ROOT).is_dir(), reason="apt-get install dataset-fashion-mnist"
    ),
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# cheaper than EVAL_ARGS alone: two locality sigmas, a best fit of PSPC-Square on forward probes
SMALL = [*EVAL_ARGS, "--locality-sigmas", "1.0", "0.1", "--locality-reverse-probes", "0"]
SMALL += ["--locality-fit-kinds", "pspc"]


class Pool(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 2).flatten(1)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A 1x28x28 diffusers model (sigma in [0.01, 4.45]), a 16-image Fashion-MNIST data preset,
    a TorchScript feature extractor and a copy of a train.py run on the same data."""
    root = tmp_path_factory.mktemp("pretrained")
    save_diffusers_model(root / "model", tiny_unet(size=28))
    save_diffusers_model(root / "rgb", tiny_unet(size=28, channels=3))
    save_diffusers_model(root / "small", tiny_unet(size=8))
    shutil.copytree(root / "model" / "unet", root / "no_scheduler")
    (root / "data.yaml").write_text("data:\n  num_train: 16\n  num_heldout: 8\n")
    torch.jit.script(Pool()).save(str(root / "pool.pt"))
    shutil.copytree(FIXTURES / "legacy_run", root / "legacy_unet")
    return {
        "model": root / "model",
        "rgb": root / "rgb",
        "small": root / "small",
        "no_scheduler": root / "no_scheduler",
        "data": root / "data.yaml",
        "features": root / "pool.pt",
        "ckpt": root / "legacy_unet" / "last.ckpt",
    }


def _eval(args: list[str]) -> int:
    from lightning_pspc.commands.evaluate import main

    return main([*args, *SMALL])


def test_a_network_and_a_checkpoint_are_evaluated_together(inputs, tmp_path, capsys):
    out = tmp_path / "ev"
    network = f"diffusers:{inputs['model']}"
    code = _eval(
        [
            *("--ckpt", str(inputs["ckpt"]), "--network", network, "--data", str(inputs["data"])),
            *("--features", str(inputs["features"]), "--features-size", "8", "--out", str(out)),
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "diffusers-model accepts sigma in [0.01, 4.451]" in notes[0]
    report = json.loads((out / "metrics.json").read_text())
    ckpt, net = report["checkpoints"]
    assert ckpt["run"] == "legacy_unet" and isinstance(ckpt["epoch"], int)
    assert ckpt["sigma_clipping"] is None and len(ckpt["sigmas"]) == 18
    assert net["network"] == network and net["data_preset"] == str(inputs["data"])
    assert (net["epoch"], net["global_step"], net["images_seen"]) == (None, None, None)
    assert "unknown" in net["metadata"] and net["memorization_history"] == []
    lo, hi = net["sigma_clipping"]["model_range"]
    assert net["sigmas"] == clip_sigmas(probe_sigmas(), (lo, hi)).tolist()
    assert net["sigma_clipping"]["sampler"] == [hi, lo]
    for rec in (ckpt, net):  # every comparison, for both
        assert set(rec["mse"]) == {"empirical", "pspc", "gaussian"}
        assert all(set(kinds) == {"train", "heldout", "reverse"} for kinds in rec["mse"].values())
        assert {"generalization", "locality", "agreement", "memorized_fraction"} <= set(rec)
        assert set(rec["agreement"]["empirical"]) == {"pearson", "mse", "cosine", "feature_cosine"}
    assert max(net["locality"]["sigmas"]) <= hi
    # the network's distance to the empirical denoiser, computed directly on the same probes
    dm = load_data_preset(inputs["data"])
    sigmas = torch.tensor(net["sigmas"], dtype=torch.float64)
    probes = forward_probes(dm.train_images(), sigmas, 2, EvalSeeds.derive(0).train_probes)
    d = load_denoiser(network)
    with torch.no_grad():
        diff = d(probes.z, probes.sigma.float()) - EmpiricalDenoiser(dm.reference_images())(
            probes.z, probes.sigma.float()
        )
    mse = diff.double().pow(2).flatten(1).mean(1).view(2, -1).mean(0)
    assert net["mse"]["empirical"]["train"] == pytest.approx(mse.tolist(), rel=1e-4, abs=1e-8)


def test_bad_network_entries_give_one_line_and_write_nothing(inputs, tmp_path, capsys):
    data = ["--data", str(inputs["data"])]
    cases = {
        ("--network", "hf:google/ddpm-cifar10-32", *data): "unknown scheme 'hf'",
        ("--network", f"diffusers:{tmp_path / 'absent'}", *data): "no such folder",
        ("--network", f"diffusers:{inputs['no_scheduler']}", *data): "no scheduler config",
        ("--network", f"diffusers:{inputs['rgb']}", *data): "takes images [3, 28, 28]",
        ("--network", f"diffusers:{inputs['small']}", *data): "takes images [1, 8, 8]",
        ("--network", f"diffusers:{inputs['model']}"): "needs --data PRESET",
        ("--network", f"diffusers:{inputs['model']}", "--data", "absent.yaml"): "does not exist",
        ("--ckpt", str(inputs["ckpt"]), *data): "is for --network entries",
        (): "nothing to evaluate",
    }
    out = tmp_path / "out"
    for args, why in cases.items():
        assert _eval([*args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err and why in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []

"""EDM pickles, factories, train.py checkpoints through load_denoiser, and bad specs."""

from __future__ import annotations

import pickle
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lightning_pspc import load_denoiser
from lightning_pspc.pretrained import PretrainedError, sigma_range
from lightning_pspc.runs import load_run

FIXTURES = Path(__file__).resolve().parents[1] / "e2e" / "fixtures"

# A stand-in for EDM's networks: EDMPrecond's attributes and call net(x, sigma, class_labels).
EDM_LIKE = textwrap.dedent(
    """
    import torch

    class TinyPrecond(torch.nn.Module):
        def __init__(self, label_dim=0):
            super().__init__()
            self.img_resolution, self.img_channels, self.label_dim = 8, 1, label_dim
            self.sigma_min, self.sigma_max = 0.02, 100.0
            self.scale = torch.nn.Parameter(torch.tensor(0.5))

        def forward(self, x, sigma, class_labels=None, force_fp32=False):
            sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1)
            out = x * self.scale / (1 + sigma)
            if class_labels is not None:  # the label's index shifts the output
                out = out + class_labels.argmax(1).view(-1, 1, 1, 1).float()
            return out
    """
)


@pytest.fixture
def edm_pickles(tmp_path, monkeypatch) -> dict[str, Path]:
    """Pickles in EDM's form, ``{'ema': net, 'loss_fn': ..., ...}``, of an importable class."""
    (tmp_path / "edm_like_net.py").write_text(EDM_LIKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import edm_like_net

    paths = {}
    for name, label_dim in (("uncond", 0), ("cond", 10)):
        net = edm_like_net.TinyPrecond(label_dim)
        paths[name] = tmp_path / f"{name}.pkl"
        with open(paths[name], "wb") as f:
            pickle.dump({"ema": net, "loss_fn": None, "augment_pipe": None}, f)
    yield paths
    sys.modules.pop("edm_like_net", None)


def test_an_edm_pickle_loads_and_calls_the_network_as_edm_does(edm_pickles):
    d = load_denoiser(f"edm:{edm_pickles['uncond']}")
    z, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 1.0, 10.0])
    with torch.no_grad():
        expected = z * 0.5 / (1 + sigma.view(-1, 1, 1, 1))
        torch.testing.assert_close(d(z, sigma), expected)
    assert sigma_range(d) == (0.02, 100.0) and d.image_shape == (1, 8, 8)


def test_a_class_conditional_pickle_needs_a_class_label(edm_pickles):
    with pytest.raises(PretrainedError, match=r"class-conditional \(10 classes\); pass --class-l"):
        load_denoiser(f"edm:{edm_pickles['cond']}")
    with pytest.raises(PretrainedError, match="not a class of its 10"):
        load_denoiser(f"edm:{edm_pickles['cond']}", class_label=10)
    with pytest.raises(PretrainedError, match="unconditional; drop --class-label"):
        load_denoiser(f"edm:{edm_pickles['uncond']}", class_label=1)
    d = load_denoiser(f"edm:{edm_pickles['cond']}", class_label=7)
    z = torch.zeros(2, 1, 8, 8)
    assert torch.equal(d(z, torch.ones(2)), torch.full_like(z, 7.0))  # one-hot of class 7


def test_an_edm_pickle_without_its_code_names_the_fix(edm_pickles, monkeypatch):
    sys.modules.pop("edm_like_net", None)
    monkeypatch.setattr(
        sys, "path", [p for p in sys.path if p != str(edm_pickles["uncond"].parent)]
    )
    with pytest.raises(PretrainedError) as err:
        load_denoiser(f"edm:{edm_pickles['uncond']}")
    message = str(err.value)
    assert "No module named 'edm_like_net'" in message and "PYTHONPATH" in message
    assert "NVlabs/edm" in message and "\n" not in message


def test_other_pickles_and_missing_files_are_refused(tmp_path):
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"weights": [1, 2]}))
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"\x80\x04not really")
    cases = {other: "not an EDM network pickle", broken: "not a readable pickle"}
    cases[tmp_path / "absent.pkl"] = "no such file"
    for path, why in cases.items():
        with pytest.raises(PretrainedError, match=why):
            load_denoiser(f"edm:{path}")


def test_a_train_py_checkpoint_is_its_ema_denoiser(tmp_path):
    run = tmp_path / "legacy_unet"
    shutil.copytree(FIXTURES / "legacy_run", run)
    d = load_denoiser(str(run / "last.ckpt"))
    module, _ = load_run(run / "last.ckpt")
    z, sigma = torch.randn(2, 1, 28, 28), torch.tensor([0.3, 3.0])
    with torch.no_grad():
        assert torch.equal(d(z, sigma), module.denoiser(z, sigma))
    assert sigma_range(d) == (0.0, float("inf"))


def make_identity():
    """A factory for the tests: the identity denoiser with a range."""

    class Identity(torch.nn.Module):
        sigma_min, sigma_max = 0.1, 10.0

        def forward(self, z, sigma):
            return z

    return Identity()


def test_a_factory_spec_calls_the_factory():
    d = load_denoiser(f"{__name__}:make_identity")
    z = torch.randn(1, 1, 4, 4)
    assert torch.equal(d(z, torch.ones(1)), z) and sigma_range(d) == (0.1, 10.0)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("hf:google/ddpm-cifar10-32", "unknown scheme 'hf'"),
        ("no_such_module_xyz:make", "cannot import module 'no_such_module_xyz'"),
        (f"{__name__}:absent", "has no callable 'absent'"),
        (f"{__name__}:FIXTURES", "has no callable 'FIXTURES'"),
        ("runs/missing/last.ckpt", "checkpoint does not exist"),
        ("nonsense", "is none of"),
    ],
)
def test_bad_specs_give_one_clear_line(spec, why):
    with pytest.raises(PretrainedError) as err:
        load_denoiser(spec)
    assert why in str(err.value) and "\n" not in str(err.value)

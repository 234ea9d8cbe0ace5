"""Shared errors of networks trained on the same data: the identities of the measures."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_pspc.diffusion import EDMPrecond
from lightning_pspc.evaluation import EvalData
from lightning_pspc.evaluation.shared_errors import SharedErrors, data_fingerprint
from tests.helpers import TinyNet

SIGMAS = [2.0, 0.5, 0.05]


@pytest.fixture(scope="module")
def data() -> EvalData:
    x = torch.rand(28, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return EvalData(x[:20], x[20:], x[:20])


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return EDMPrecond(TinyNet(1, 4)).eval()


class Shifted(nn.Module):
    """``D(z, s) + c``."""

    def __init__(self, net: nn.Module, c: float) -> None:
        super().__init__()
        self.net, self.c = net, c

    def forward(self, z, sigma):
        return self.net(z, sigma) + self.c


def _shared(data: EvalData) -> SharedErrors:
    return SharedErrors(
        data,
        SIGMAS,
        seed=1,
        num_train_probes=3,
        num_heldout_probes=2,
        num_reverse_probes=2,
        batch_size=16,
    )


def test_a_network_and_itself_share_every_error(data):
    net = _net(0)
    (pair,) = _shared(data).evaluate({"a": net, "b": net})
    for kind in ("forward", "reverse"):
        assert pair["mse_between"][kind] == [0.0, 0.0, 0.0]
        assert pair["mse_to_empirical"]["a"][kind] == pair["mse_to_empirical"]["b"][kind]
        assert all(v > 0 for v in pair["mse_to_empirical"]["a"][kind])
        for cos in (pair["error_cosine"][kind], pair["error_cosine_pooled"][kind]):
            assert cos == pytest.approx([1.0, 1.0, 1.0], abs=1e-9)
    assert pair["num_probes"] == {"forward": (3 + 2) * 3, "reverse": 2 * 2 * 3}


def test_a_constant_shift_is_the_mse_between_and_shifts_the_errors(data):
    """``D_b = D_a + c``: MSE(D_a, D_b) = c^2 at every sigma; b's errors are a's plus c."""
    net, c = _net(0), 0.25
    shared = _shared(data)
    (pair,) = shared.evaluate({"a": net, "b": Shifted(net, c)})
    probes = shared.forward
    with torch.no_grad():
        e = (
            net(probes.z, probes.sigma.float()).double()
            - shared.empirical(probes.z, probes.sigma.float()).double()
        )
    for j, s in enumerate(SIGMAS):
        on = probes.sigma == s
        ea, eb = e[on].flatten(1), e[on].flatten(1) + c
        assert pair["mse_between"]["forward"][j] == pytest.approx(c * c, rel=1e-6)
        assert pair["mse_to_empirical"]["b"]["forward"][j] == pytest.approx(
            float(eb.pow(2).mean()), rel=1e-5
        )
        cos = (ea * eb).sum(1) / (ea.norm(dim=1) * eb.norm(dim=1))
        assert pair["error_cosine"]["forward"][j] == pytest.approx(float(cos.mean()), rel=1e-5)
        pooled = (ea * eb).sum() / math.sqrt(float(ea.pow(2).sum() * eb.pow(2).sum()))
        assert pair["error_cosine_pooled"]["forward"][j] == pytest.approx(float(pooled), rel=1e-5)


def test_different_networks_have_different_errors_and_every_pair_is_measured(data):
    pairs = _shared(data).evaluate({"a": _net(0), "b": _net(1), "c": _net(2)})
    assert [p["runs"] for p in pairs] == [["a", "b"], ["a", "c"], ["b", "c"]]
    assert all(v > 0 for v in pairs[0]["mse_between"]["forward"])
    assert all(-1 <= v < 1 for v in pairs[0]["error_cosine"]["forward"])
    with pytest.raises(ValueError, match="two or more networks"):
        _shared(data).evaluate({"a": _net(0)})


def test_fingerprints_tell_training_sets_apart(data):
    same = EvalData(data.train.clone(), data.heldout.clone(), data.reference.clone())
    other = EvalData(data.train[1:], data.heldout, data.reference[1:])
    assert data_fingerprint(data) == data_fingerprint(same) != data_fingerprint(other)

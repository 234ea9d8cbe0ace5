"""``python -m lightning_pspc.commands.compare``: the closed-form comparison through the evaluation pipeline."""

from __future__ import annotations

import torch

from lightning_pspc.commands import compare


def test_tables_match_the_probes_and_pspc_is_empirical_at_whole_image_patches(tmp_path, capsys):
    evaluation, tables = compare.compare(num_train=40, num_probes=2, seed=3)
    sigmas = evaluation.sigmas
    assert set(tables) >= {f"{a} vs {b}" for a, b in compare.PAIRS}
    assert all(tables[f"{a} vs {b}"].shape == sigmas.shape for a, b in compare.PAIRS)
    # the 28x28 schedule uses whole-image patches at the 7 largest sigmas: PSPC = empirical there
    assert torch.all(tables["pspc vs empirical"][:7] < 1e-12)
    assert tables["pspc vs empirical"][7:].max() > 0
    # one table recomputed from the pipeline's own held-out probes
    comparer = evaluation.members["compare"].comparer
    probes = comparer.forward["heldout"]
    gauss = evaluation.references["gaussian"](probes.z, probes.sigma.float())
    clean = evaluation.data.heldout[probes.source]
    per_probe = (gauss.double() - clean.double()).square().flatten(1).mean(1)
    for i, s in enumerate(sigmas.tolist()):
        expected = per_probe[probes.sigma == s].mean().item()
        assert abs(tables["gaussian vs clean"][i].item() - expected) <= 1e-6 * max(1.0, expected)
    compare.main(["--num-train", "40", "--num-probes", "2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "pspc vs empirical" in out and (tmp_path / "denoisers.png").stat().st_size > 5000

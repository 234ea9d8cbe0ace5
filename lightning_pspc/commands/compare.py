"""Compare the closed-form denoisers on built-in data: ``python -m lightning_pspc.commands.compare``.

Builds the empirical, PSPC-Square and Gaussian denoisers on N Fashion-MNIST training images
(Debian's dataset-fashion-mnist, no hub access) through the evaluation pipeline
(:class:`~lightning_pspc.evaluation.Evaluation`: the same references, held-out probes and seeds
as the callbacks and ``eval.py``), prints per-sigma MSEs (to the clean image and between
denoisers) and writes a PNG panel in the spirit of figure 1 of Niedoba et al. (noisy |
empirical | PSPC | Gaussian | clean).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..data.datamodule import ImageDataModule
from ..denoisers.network_fitted import ReferenceOptions
from ..evaluation.members.comparison import Comparison, distance_table
from ..evaluation.members.panel import Panel
from ..evaluation.pipeline import EvalData, Evaluation
from ..evaluation.plots.common import save_figure
from ..evaluation.plots.comparison_charts import panel_figure

REFERENCES = ("empirical", "pspc", "gaussian")
#: ``(a, b)`` column pairs of the table: MSE between the outputs of ``a`` and ``b``
PAIRS = (
    ("empirical", "clean"),
    ("pspc", "clean"),
    ("gaussian", "clean"),
    ("pspc", "empirical"),
    ("gaussian", "empirical"),
    ("pspc", "gaussian"),
)


def compare(num_train: int, num_probes: int, seed: int = 0) -> tuple[Evaluation, dict]:
    """The evaluation and its per-sigma MSE tables ``{"a vs b": [S]}`` on held-out probes.

    Also ``"seconds/<reference>"``: each reference's time on the probes.
    """
    dm = ImageDataModule(num_train=num_train, num_heldout=num_probes, seed=seed)
    evaluation = Evaluation(
        EvalData.from_datamodule(dm),
        [Comparison(0, num_probes, 0), Panel()],
        references=REFERENCES,
        seed=seed,
        reference_options=ReferenceOptions(pspc_schedule="scaled"),  # no network to fit
    )
    comparer = evaluation.members[Comparison.name].comparer
    probes = comparer.forward["heldout"]
    outs = dict(comparer.reference_outputs("heldout"))
    results: dict = {f"seconds/{n}": t for n, t in comparer.reference_seconds.items()}
    outs["clean"] = evaluation.data.heldout[probes.source].to(probes.z.device)
    for a, b in PAIRS:
        table = distance_table(outs[a], {b: outs[b]}, probes.sigma, evaluation.sigmas)
        results[f"{a} vs {b}"] = table[b]
    return evaluation, results


def draw_panel(evaluation: Evaluation, path: Path) -> Path:
    """Rows: 6 sigmas; columns: noisy, each reference, clean (one held-out image)."""
    panel = evaluation.members[Panel.name].panel
    clean = evaluation.data.heldout[:1].to(panel.probes.z.device)
    images = panel(lambda z, sigma: clean.expand_as(z))  # the "network" is the clean image
    images["clean"] = images.pop("network")
    return save_figure(panel_figure(images, panel.probes.sigma, "closed-form denoisers"), path)


def main(argv: list[str] | None = None) -> None:
    """Print the tables and write ``<out>/denoisers.png``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-train", type=int, default=1000)
    ap.add_argument("--num-probes", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("runs/compare"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    evaluation, r = compare(args.num_train, args.num_probes)
    cols = [f"{a} vs {b}" for a, b in PAIRS]
    print(
        f"Fashion-MNIST, N={args.num_train} training images, {args.num_probes} held-out probes "
        "per sigma"
    )
    print(f"{'sigma':>8} " + " ".join(f"{c:>20}" for c in cols))
    for i, s in enumerate(evaluation.sigmas.tolist()):
        print(f"{s:>8.3f} " + " ".join(f"{r[c][i].item():>20.5f}" for c in cols))
    print(
        f"denoiser seconds for {evaluation.sigmas.numel() * args.num_probes} probes: "
        f"{ {n: round(r[f'seconds/{n}'], 2) for n in REFERENCES} }"
    )
    path = draw_panel(evaluation, args.out / "denoisers.png")
    print(f"panel: {path}  (total {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()

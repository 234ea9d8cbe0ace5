"""Evaluating saved checkpoints with nothing but their run folders (what ``eval.py`` runs).

``python eval.py --ckpt RUN/last.ckpt [--ckpt ...] --out DIR`` rebuilds each run's model and data
from the ``config.yaml`` beside its checkpoint (:func:`lightning_pspc.runs.load_run`);
``--network SPEC [--network ...] --data PRESET`` adds networks trained elsewhere
(:func:`lightning_pspc.pretrained.load_denoiser`) evaluated on the data of a preset, with the
noise levels clipped to the range each network accepts and no training metadata
(:mod:`.network_runs`). It measures the
EMA network's MSE to the reference denoisers per sigma on train / held-out / reverse probes and
the memorization of its samples, and writes ``DIR/metrics.json`` and PNG charts; with checkpoints
of runs at two or more training-set sizes it also draws the transition chart. It also measures
linearity, the normalised MSE to the Gaussian denoiser and R^2 of the references per sigma, and
the agreement of the network's samples with closed-form denoisers' from the same noise; twin runs
(``--data.subset a`` / ``b``) found among the checkpoints get their twin similarity and
reproducibility (``twins.png``), memorization histories saved by a ``MemorizationMonitor``
give ``phase_diagram.png`` (memorized fraction over N and images seen), and checkpoints trained on
the same data get their shared errors (``pairwise``, ``pairwise.png``; Niedoba et al. sec. 3). Every input is
checked before anything is written (W&B credentials with ``--wandb`` too), and results are
staged in a temp folder that replaces ``DIR`` in one rename only when all checkpoints succeeded
(files of ``DIR`` that eval.py does not write are kept). W&B logging comes after, from ``DIR``.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..runs import RunSetupError, load_run, read_checkpoint, wandb_login_problem
from ..runs.checkpoints import folder_given
from ..runs.files import free_space, out_of_space
from .network_runs import (
    NO_TRAINING_METADATA,
    check_entries,
    clipped_sigmas,
    load_data_preset,
    load_network_run,
    loaded_data,
    network_sigma_range,
)
from .pipeline import EvalData, figures_of
from .plots import (
    draw_linearity_panel,
    draw_twins_panel,
    locality_transition_figure,
    pairwise_figure,
    phase_diagram_figure,
    save_figure,
    transition_figure,
    twins_figure,
)
from .probes import clip_sigmas, probe_sigmas
from .report import (
    check_output_dir,
    log_report_to_wandb,
    previous_output,
    staged_output,
    write_json_atomic,
)
from .settings import EvalError, EvalSettings
from .shared_errors import SharedErrors, data_fingerprint
from .twin_runs import (
    TwinError,
    histories_by_size,
    memorization_history,
    twin_feature_record,
    twin_pairs,
    twin_record,
)


@dataclass
class LoadedRun:
    """A checkpoint with its rebuilt module and data, and the checkpoint's counters (``None`` for
    a network trained elsewhere, :func:`.network_runs.load_network_run`)."""

    path: Path
    label: str
    module: Any
    datamodule: Any
    meta: dict[str, int | None]
    #: ``[{"epoch", "images_seen", "memorized_fraction"}]`` a MemorizationMonitor saved in it
    history: list[dict[str, Any]] = field(default_factory=list)
    #: the memorization samples ``[M, C, H, W]`` once evaluated (twin models compare them)
    samples: torch.Tensor | None = None
    #: ``--network`` entries: the spec and the data preset file (``None`` for ``--ckpt``)
    network: str | None = None
    data_preset: str | None = None


def load_checkpoint_run(path: str | Path, device: torch.device) -> LoadedRun:
    """Rebuild model and data of one checkpoint; every failure is one :class:`EvalError`."""
    path = Path(path)
    fix = "Fix: pass a last.ckpt or best.ckpt that train.py wrote into its run folder"
    if path.is_dir():
        raise EvalError(folder_given(path, "--ckpt"))
    if not path.is_file():
        raise EvalError(
            f"checkpoint {str(path)!r} does not exist. {fix} (e.g. checkpoints/<run>/last.ckpt)."
        )
    try:
        ckpt = read_checkpoint(path)
    except RunSetupError as err:
        reason = str(err).split(" Fix:")[0]
        raise EvalError(
            f"{reason} {fix}; re-run or resume the training if no good one is left."
        ) from None
    if not (path.parent / "config.yaml").is_file():
        raise EvalError(
            f"no config.yaml next to checkpoint {str(path)!r}, so its model and data cannot be "
            "rebuilt. Fix: keep the checkpoint in the run folder train.py wrote, or copy that "
            "run's config.yaml beside it."
        )
    try:
        module, dm = load_run(path, map_location=device)
    except RunSetupError as err:
        raise EvalError(str(err)) from None
    loaded_data(
        dm,
        f"checkpoint {str(path)!r}: cannot load its training data",
        f"make the data set named in {str(path.parent / 'config.yaml')!r} available.",
        f"checkpoint {str(path)!r} was trained on fewer than 2 images; nothing to compare",
    )
    meta = {k: int(ckpt.get(k, -1)) for k in ("epoch", "global_step", "images_seen")}
    history = memorization_history(ckpt)
    return LoadedRun(path, f"{path.parent.name}/{path.stem}", module, dm, meta, history)


def check_comparable(runs: Sequence[LoadedRun]) -> None:
    """All checkpoints must take images of one shape (one transition chart, one probe set);
    a warning when runs of different training-set sizes stopped after different step counts."""
    shapes = {r.label: tuple(r.datamodule.image_shape) for r in runs}
    if len(set(shapes.values())) > 1:
        raise EvalError(
            f"the checkpoints were trained on images of different shapes {shapes}; their "
            "metrics and transition chart would not be comparable. Fix: evaluate each image "
            "shape in its own eval.py call (its own --out)."
        )
    steps = {r.label: r.meta["global_step"] for r in runs if r.meta["global_step"] is not None}
    sizes = {r.datamodule.train_images().shape[0] for r in runs}
    if len(sizes) > 1 and len(set(steps.values())) > 1:
        print(
            f"warning: the checkpoints were saved after different step counts {steps}: the "
            "transition chart compares training-set sizes at different training lengths",
            file=sys.stderr,
        )


@torch.no_grad()
def evaluate_run(
    run: LoadedRun, settings: EvalSettings, plot_dir: Path, progress: bool, features: Any = None
) -> dict:
    """All metrics of one checkpoint as a JSON-ready record; charts into ``plot_dir``.

    Every member of the evaluation adds its own keys (:meth:`EvaluationMember.report`). The
    noise levels are clipped to the range the network accepts
    (:func:`.network_runs.clipped_sigmas`);
    ``features``: the ``--features`` extractor."""
    t0 = time.perf_counter()
    evaluation = settings.build_evaluation(
        EvalData.from_datamodule(run.datamodule),
        settings.torch_device(),
        network_sigma_range(run.module.denoiser),
        features,
    )
    clipped = clipped_sigmas(run.label, evaluation, settings.num_steps)
    bar = tqdm(
        total=evaluation.work(),
        desc=run.label,
        unit="img",
        disable=None if progress else True,
        leave=False,
    )
    with bar:
        results = evaluation.evaluate(run.module.denoiser, bar)
    histories = {
        name: [(run.meta["epoch"], member.record(results[name]))]
        for name, member in evaluation.members.items()
    }
    stem = run.label.replace("/", "_")
    plots = [
        save_figure(fig, plot_dir / f"{stem}_{key.replace('/', '_')}.png").name
        for key, fig in figures_of(evaluation, results, histories, over_time=False).items()
    ]
    record: dict[str, Any] = {
        "checkpoint": str(run.path.resolve()),
        "label": run.label,
        "run": run.path.parent.name,
        "num_train": int(evaluation.data.train.shape[0]),
        "num_reference_images": int(evaluation.data.reference.shape[0]),
        "image_shape": list(evaluation.data.image_shape),
        **run.meta,
        "sigma_clipping": clipped,
    }
    if run.network is not None:
        record |= {
            "checkpoint": None,
            "run": None,
            "network": run.network,
            "data_preset": run.data_preset,
            "metadata": NO_TRAINING_METADATA,
        }
    for name, member in evaluation.members.items():
        record |= member.report(results[name])
        samples = member.samples(results[name])
        if samples is not None:
            run.samples = samples.cpu()
    if schedules := evaluation.reference_schedules():
        record["local_schedules"] = schedules
    if calibration := evaluation.calibration.record():
        record["calibration"] = calibration
    return record | {
        "num_samples": settings.num_samples,
        "memorization_history": run.history,
        "plots": plots,
        "seconds": time.perf_counter() - t0,
    }


def evaluate_checkpoints(
    paths: Sequence[str | Path],
    out: str | Path,
    settings: EvalSettings | None = None,
    wandb_project: str | None = None,
    progress: bool = True,
    networks: Sequence[str] = (),
    data: str | Path | None = None,
    class_label: int | None = None,
) -> dict:
    """Evaluate every checkpoint and network, then write ``out/metrics.json`` and ``out/plots/``
    at once.

    ``networks``: ``--network`` specs (:func:`~lightning_pspc.pretrained.load_denoiser`),
    evaluated on the data of the preset file ``data``; ``class_label``: the class of
    class-conditional networks. All checkpoints, networks, their configs and data, and ``out``
    are validated first (:class:`EvalError` naming the bad value and the fix); nothing is
    written into ``out`` unless every entry was evaluated; files of ``out`` that eval.py did not
    write are kept. A full disk is one :class:`EvalError` and leaves ``out`` as it was. Returns
    the content of ``metrics.json``.
    """
    settings = settings or EvalSettings()
    settings.check()
    if wandb_project and (problem := wandb_login_problem("drop --wandb")):
        raise EvalError(problem)
    check_entries(paths, networks, data, class_label)
    try:
        out = check_output_dir(out)
    except ValueError as err:
        raise EvalError(str(err)) from None
    device = settings.torch_device()
    features = settings.feature_space.load(device)
    runs = [load_checkpoint_run(p, device) for p in paths]  # validates everything first
    if networks:
        dm = load_data_preset(data)
        runs += [load_network_run(s, dm, data, device, class_label) for s in networks]
    try:
        pairs = twin_pairs(paths)
    except TwinError as err:
        raise EvalError(str(err)) from None
    labels = [r.label for r in runs]
    for i, r in enumerate(runs):
        if labels.count(r.label) > 1:
            r.label = f"{r.label}-{i}"
    check_comparable(runs)
    settings.for_data(runs[0].datamodule.image_shape, device)  # options that depend on the data
    try:
        report = write_report(runs, pairs, out, settings, progress, features)
    except OSError as err:
        if (reason := out_of_space(err)) is None:
            raise
        parent = out.resolve().parent
        kept = f"--out {str(out)!r} is left as it was" if out.is_dir() else "nothing was written"
        raise EvalError(
            f"{reason} while writing the results beside --out {str(out)!r} "
            f"({free_space(parent)} free in {str(parent)!r}); {kept}. Fix: free space on that "
            "disk or pass --out on another one."
        ) from None
    if wandb_project:
        log_to_wandb(report, out, wandb_project)
    return report


def write_report(
    runs: Sequence[LoadedRun],
    pairs: Sequence[tuple[int, int]],
    out: Path,
    settings: EvalSettings,
    progress: bool,
    features: Any = None,
) -> dict:
    """Evaluate ``runs`` into a staged folder that replaces ``out`` at the end
    (:func:`staged_output`; the user's files in ``out`` are kept); returns the report.
    ``features``: the feature extractor of ``--features`` (or ``None``)."""
    device = settings.torch_device()
    t0 = time.perf_counter()
    with staged_output(out, previous_output(out)) as tmp:
        records = []
        for run in runs:
            records.append(evaluate_run(run, settings, tmp / "plots", progress, features))
            run.module.cpu()
        report = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "settings": settings.flat() | {"device": str(device)},
            "checkpoints": records,
            "transition": None,
            "transition_locality": None,
            "seconds": None,
        }
        report |= twins_report(runs, records, pairs, tmp, features, settings.features_threshold)
        report |= pairwise_report(runs, settings, device, tmp)
        if len({r["num_train"] for r in records}) >= 2:
            extra = [lambda ax: draw_twins_panel(ax, report["twins"])] if report["twins"] else []
            if any("generalization" in r or "linear_distillation" in r for r in records):
                extra.append(lambda ax: draw_linearity_panel(ax, records))
            save_figure(transition_figure(records, extra), tmp / "transition.png")
            report["transition"] = "transition.png"
        report["phase_diagram"] = None
        histories = histories_by_size(records)  # twin halves averaged
        if histories:
            save_figure(phase_diagram_figure(histories), tmp / "phase_diagram.png")
            report["phase_diagram"] = "phase_diagram.png"
        if len({r["num_train"] for r in records if r.get("locality")}) >= 2:
            save_figure(locality_transition_figure(records), tmp / "transition_locality.png")
            report["transition_locality"] = "transition_locality.png"
        report["seconds"] = time.perf_counter() - t0
        write_json_atomic(tmp / "metrics.json", report)
    return report


def log_to_wandb(report: dict, out: Path, project: str) -> bool:
    """Log a written report to W&B (files under ``out/wandb``); a failure is one warning line,
    the results stay in ``out``. Returns whether it succeeded."""
    try:
        log_report_to_wandb(report, out, project, f"eval-{out.name}")
    except Exception as err:  # wandb raises many types (network, auth, usage)
        reason = str(err).splitlines()[0] if str(err) else ""
        print(
            f"warning: W&B logging failed ({type(err).__name__}: {reason}); metrics.json and "
            f"the charts are in {str(out)!r}",
            file=sys.stderr,
        )
        return False
    return True


def pairwise_report(
    runs: Sequence[LoadedRun], settings: EvalSettings, device: torch.device, out: Path
) -> dict[str, Any]:
    """``{"pairwise": [...], "pairwise_skipped": [...], "pairwise_plot": ...}``: shared errors
    (:mod:`.shared_errors`) of every pair of runs trained on the same data, on shared probes of
    the evaluation's settings; pairs trained on different data are listed as skipped (one line
    on the console) and ``out/pairwise.png`` draws the pairs."""
    data = {r.label: EvalData.from_datamodule(r.datamodule) for r in runs}
    groups: dict[str, list[LoadedRun]] = {}
    for run in runs:
        groups.setdefault(data_fingerprint(data[run.label]), []).append(run)
    keys = {r.label: k for k, members in groups.items() for r in members}
    skipped = [
        {"runs": [a.label, b.label], "reason": "trained on different data"}
        for a, b in itertools.combinations(runs, 2)
        if keys[a.label] != keys[b.label]
    ]
    if skipped and len(runs) >= 2:
        print(
            f"pairwise: {len(skipped)} pair(s) of checkpoints trained on different data "
            "skipped (shared errors compare networks trained on the same data)",
            file=sys.stderr,
        )
    ev = settings.evaluation
    pairs = []
    for members in groups.values():
        if len(members) < 2:
            continue
        networks = {r.label: r.module.to(device).denoiser for r in members}
        ranges = [network_sigma_range(d) for d in networks.values()]
        ranges = [r for r in ranges if r is not None]
        common = (max(r[0] for r in ranges), min(r[1] for r in ranges)) if ranges else None
        shared = SharedErrors(
            data[members[0].label],
            clip_sigmas(probe_sigmas(ev.sigmas), common),  # every network of the group takes them
            seed=ev.seed,
            num_train_probes=settings.num_train_probes,
            num_heldout_probes=settings.num_heldout_probes,
            num_reverse_probes=settings.num_reverse_probes,
            batch_size=ev.batch_size,
            device=device,
        )
        pairs += shared.evaluate(networks)
    report = {"pairwise": pairs, "pairwise_skipped": skipped}
    for run in runs:
        run.module.cpu()
    report["pairwise_plot"] = None
    if report["pairwise"]:
        save_figure(pairwise_figure(report["pairwise"]), out / "pairwise.png")
        report["pairwise_plot"] = "pairwise.png"
    return report


def twins_report(
    runs: Sequence[LoadedRun],
    records: Sequence[dict],
    pairs: Sequence[tuple[int, int]],
    out: Path,
    features: Any = None,
    feature_threshold: float = 0.6,
) -> dict[str, Any]:
    """``{"twins": [...], "twins_plot": ...}``: per twin pair (:func:`.twin_runs.twin_pairs`) the
    twin and nearest-training similarities and reproducibility of their memorization samples
    (drawn from the same noise), also in the space of ``features`` when given
    (:func:`.twin_runs.twin_feature_record`), and ``out/twins.png`` with the pairs side by
    side."""
    twins, shown = [], []
    for i, j in pairs:
        a, b = runs[i], runs[j]
        train_a, train_b = a.datamodule.train_images(), b.datamodule.train_images()
        twins.append(
            {
                "num_train": records[i]["num_train"],
                "runs": [a.label, b.label],
                **twin_record(train_a, train_b, a.samples, b.samples),
            }
        )
        if features is not None:
            twins[-1] |= twin_feature_record(
                features, train_a, train_b, a.samples, b.samples, feature_threshold
            )
        shown.append((records[i]["num_train"], a.samples, b.samples))
    if not twins:
        return {"twins": [], "twins_plot": None}
    save_figure(twins_figure(sorted(shown, key=lambda t: t[0])), out / "twins.png")
    return {"twins": sorted(twins, key=lambda t: t["num_train"]), "twins_plot": "twins.png"}

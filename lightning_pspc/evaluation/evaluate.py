"""``eval.py``: evaluate saved checkpoints with nothing but their run folders.

``python eval.py --ckpt RUN/last.ckpt [--ckpt ...] --out DIR`` rebuilds each run's model and data
from the ``config.yaml`` beside its checkpoint (:func:`lightning_pspc.runs.load_run`), measures the
EMA network's MSE to the reference denoisers per sigma on train / held-out / reverse probes and
the memorization of its samples, and writes ``DIR/metrics.json`` and PNG charts; with checkpoints
of runs at two or more training-set sizes it also draws the transition chart. It also measures
linearity, the normalised MSE to the Gaussian denoiser and R^2 of the references per sigma, and
the agreement of the network's samples with closed-form denoisers' from the same noise; twin runs
(``--data.subset a`` / ``b``) found among the checkpoints get their twin similarity and
reproducibility (``twins.png``), and memorization histories saved by a ``MemorizationMonitor``
give ``phase_diagram.png`` (memorized fraction over N and images seen). Every input is
checked before anything is written (W&B credentials with ``--wandb`` too), and results are
staged in a temp folder that replaces ``DIR`` in one rename only when all checkpoints succeeded
(files of ``DIR`` that eval.py does not write are kept). W&B logging comes after, from ``DIR``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..runs import RunSetupError, load_run, read_checkpoint
from ..wandb_check import wandb_login_problem
from .engine import check_reference_names
from .generalization import Agreement, Generalization
from .local_references import NetworkFlexReference
from .locality import DEFAULT_FIT_KINDS, Locality
from .pipeline import Comparison, EvalData, Evaluation, Memorization, Panel, figures_of
from .plots import save_figure, transition_figure
from .plots_generalization import (
    draw_linearity_panel,
    draw_twins_panel,
    phase_diagram_figure,
    twins_figure,
)
from .plots_locality import locality_transition_figure
from .probes import probe_sigmas
from .report import check_output_dir, log_report_to_wandb, staged_output, write_json_atomic
from .twins import TwinError, histories_by_size, memorization_history, twin_pairs, twin_record


class EvalError(ValueError):
    """A bad input of ``eval.py``; the message names the value and the fix."""


@dataclass
class EvalSettings:
    """Evaluation sizes (larger than the callbacks' per-epoch ones) and options of ``eval.py``.

    The best-fit patch sizes (``locality_*``) are fitted on ``locality_probes`` held-out forward
    probes and the states of ``locality_reverse_probes`` of the network's own Heun trajectories
    per sigma, pooled (Kamb & Ganguli calibrate on the reverse trajectory; REFERENCE.md 3b asks
    for both); ``metrics.json`` records the probes used (``locality.best_fit_probes``) and the
    fit on each set alone (``locality.best_fit_by_probes``). ``locality_fit_kinds`` may add
    ``els`` so that the ``els`` reference gets its own calibration (minutes on the CPU).
    """

    num_train_probes: int = 32
    num_heldout_probes: int = 32
    num_reverse_probes: int = 8
    num_samples: int = 64
    num_steps: int = 18
    references: tuple[str, ...] = ("empirical", "pspc", "gaussian")
    sigmas: list[float] | None = None
    seed: int = 0
    batch_size: int = 128
    threshold: float = 1 / 3
    device: str = "auto"
    num_linearity_pairs: int = 8
    num_agreement_samples: int = 8
    agreement_references: tuple[str, ...] = ("empirical", "pspc")
    locality_probes: int = 4
    locality_stride: int = 2
    locality_sigmas: list[float] | None = None
    locality_reverse_probes: int = 2
    locality_fit_kinds: tuple[str, ...] = DEFAULT_FIT_KINDS
    flex_probes: int = 2

    def check(self) -> None:
        """Raise :class:`EvalError` for a bad setting."""
        try:
            check_reference_names(self.references)
            probe_sigmas(self.sigmas)
            if self.num_agreement_samples:
                check_reference_names(self.agreement_references)
            self.locality_member()
        except ValueError as err:
            raise EvalError(str(err)) from None
        if self.locality_probes < 0 or self.flex_probes < 1:
            raise EvalError(
                f"--locality-probes {self.locality_probes} must be >= 0 (0: no locality "
                f"measurement) and --flex-probes {self.flex_probes} >= 1"
            )
        counts = {
            "--num-train-probes": self.num_train_probes,
            "--num-heldout-probes": self.num_heldout_probes,
            "--num-reverse-probes": self.num_reverse_probes,
        }
        if min(counts.values()) < 0 or not any(counts.values()):
            raise EvalError(f"probe counts {counts} must be >= 0 and not all 0")
        if min(self.num_samples, self.num_steps, self.batch_size) < 1 or not self.threshold > 0:
            raise EvalError(
                f"--num-samples {self.num_samples}, --num-steps {self.num_steps} and --batch-size "
                f"{self.batch_size} must be >= 1 and --threshold {self.threshold} > 0"
            )
        check_device(self.device)

        if min(self.num_linearity_pairs, self.num_agreement_samples) < 0:
            raise EvalError(
                f"--num-linearity-pairs {self.num_linearity_pairs} and --num-agreement-samples "
                f"{self.num_agreement_samples} must be >= 0 (0 leaves the measure out)"
            )

    def locality_member(self) -> Locality | None:
        """The :class:`Locality` member of these settings (``None`` with ``locality_probes=0``)."""
        if self.locality_probes == 0:
            return None
        try:
            return Locality(
                self.locality_sigmas,
                self.locality_probes,
                self.locality_stride,
                fit_kinds=self.locality_fit_kinds,
                num_reverse_probes=self.locality_reverse_probes,
            )
        except ValueError as err:
            raise ValueError(
                "--locality-sigmas/--locality-probes/--locality-stride/--locality-fit-kinds/"
                f"--locality-reverse-probes: {err}"
            ) from None

    def torch_device(self) -> torch.device:
        """``auto``: CUDA when available, else CPU."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def check_device(name: str) -> None:
    """``auto``, ``cpu``, or a CUDA device this machine has; else :class:`EvalError`."""
    if name == "auto":
        return
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise EvalError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device.type == "cuda" and (device.index or 0) >= count:
        raise EvalError(
            f"--device {name!r}: this machine has {count} usable CUDA device(s). "
            "Fix: --device cpu (or auto: CUDA when available)"
        )


@dataclass
class LoadedRun:
    """A checkpoint with its rebuilt module and data, and the checkpoint's counters."""

    path: Path
    label: str
    module: Any
    datamodule: Any
    meta: dict[str, int]
    #: ``[{"epoch", "images_seen", "memorized_fraction"}]`` a MemorizationMonitor saved in it
    history: list[dict[str, Any]] = field(default_factory=list)
    #: the memorization samples ``[M, C, H, W]`` once evaluated (twin models compare them)
    samples: torch.Tensor | None = None


def load_checkpoint_run(path: str | Path, device: torch.device) -> LoadedRun:
    """Rebuild model and data of one checkpoint; every failure is one :class:`EvalError`."""
    path = Path(path)
    fix = "Fix: pass a last.ckpt or best.ckpt that train.py wrote into its run folder"
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
    try:
        dm.setup("validate")
        dm.reference_images()
    except (OSError, ValueError) as err:
        raise EvalError(
            f"checkpoint {str(path)!r}: cannot load its training data ({err}). Fix: make the data "
            f"set named in {str(path.parent / 'config.yaml')!r} available."
        ) from None
    if dm.train_images().shape[0] < 2:
        raise EvalError(
            f"checkpoint {str(path)!r} was trained on fewer than 2 images; nothing to compare"
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
    steps = {r.label: r.meta["global_step"] for r in runs}
    sizes = {r.datamodule.train_images().shape[0] for r in runs}
    if len(sizes) > 1 and len(set(steps.values())) > 1:
        print(
            f"warning: the checkpoints were saved after different step counts {steps}: the "
            "transition chart compares training-set sizes at different training lengths",
            file=sys.stderr,
        )


def build_evaluation(data: EvalData, settings: EvalSettings, device: torch.device) -> Evaluation:
    """The evaluation pipeline of ``eval.py``: locality (first: its best-fit LS sizes calibrate
    the ``ls`` / ``els`` references), comparison, memorization and panel members."""
    locality = settings.locality_member()
    members = [
        *([locality] if locality is not None else []),
        Comparison(
            settings.num_train_probes, settings.num_heldout_probes, settings.num_reverse_probes
        ),
        Memorization(settings.num_samples, settings.num_steps, settings.threshold),
        Panel(),
    ]
    if settings.num_linearity_pairs:
        members.append(Generalization(settings.num_linearity_pairs))
    if settings.num_agreement_samples:
        members.append(
            Agreement(
                settings.agreement_references, settings.num_agreement_samples, settings.num_steps
            )
        )
    evaluation = Evaluation(
        data,
        members,
        settings.references,
        settings.sigmas,
        settings.seed,
        settings.batch_size,
        device,
    )
    for ref in evaluation.references.values():
        if isinstance(ref, NetworkFlexReference):
            ref.num_probes = settings.flex_probes
    return evaluation


@torch.no_grad()
def evaluate_run(run: LoadedRun, settings: EvalSettings, plot_dir: Path, progress: bool) -> dict:
    """All metrics of one checkpoint as a JSON-ready record; charts into ``plot_dir``."""
    t0 = time.perf_counter()
    dm = run.datamodule
    evaluation = build_evaluation(EvalData.from_datamodule(dm), settings, settings.torch_device())
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
    comparison = results[Comparison.name]
    run.samples = results[Memorization.name].samples.cpu()
    extra = {}
    for name in (Generalization.name, Agreement.name):
        if name in results:
            extra |= results[name].to_json()
    return {
        "checkpoint": str(run.path.resolve()),
        "label": run.label,
        "run": run.path.parent.name,
        "num_train": int(evaluation.data.train.shape[0]),
        "num_reference_images": int(evaluation.data.reference.shape[0]),
        "image_shape": list(evaluation.data.image_shape),
        **run.meta,
        **comparison.to_json(),
        **results[Memorization.name].to_json(),
        **locality_json(evaluation, results),
        "num_probes": {
            k: len(p) for k, p in evaluation.members[Comparison.name].comparer.forward.items()
        }
        | {"reverse": settings.num_reverse_probes * evaluation.sigmas.numel()},
        "num_samples": settings.num_samples,
        **extra,
        "memorization_history": run.history,
        "plots": plots,
        "seconds": time.perf_counter() - t0,
    }


def locality_json(evaluation: Evaluation, results: dict) -> dict:
    """``{"locality": {...}, "local_schedules": {...}}`` of one checkpoint: the sensitivity and
    best-fit patch sizes (when measured) and the window schedules the ``ls`` / ``els``
    references used (calibrated or the default)."""
    out = {}
    if Locality.name in results:
        out["locality"] = results[Locality.name].to_json()
    schedules = {
        name: {
            "sigmas": list(ref.schedule[0]),
            "patch_sizes": list(ref.schedule[1]),
            "calibrated": ref.calibrated,
            "calibrated_by": ref.calibrated_by,
        }
        for name, ref in evaluation.references.items()
        if hasattr(ref, "schedule") and hasattr(ref, "calibrated")
    }
    if schedules:
        out["local_schedules"] = schedules
    return out


def evaluate_checkpoints(
    paths: Sequence[str | Path],
    out: str | Path,
    settings: EvalSettings | None = None,
    wandb_project: str | None = None,
    progress: bool = True,
) -> dict:
    """Evaluate every checkpoint, then write ``out/metrics.json`` and ``out/plots/`` at once.

    All checkpoints, their configs and data, and ``out`` are validated first (:class:`EvalError`
    naming the bad path and the fix); nothing is written into ``out`` unless every checkpoint
    was evaluated. Returns the content of ``metrics.json``.
    """
    settings = settings or EvalSettings()
    settings.check()
    if wandb_project and (problem := wandb_login_problem("drop --wandb")):
        raise EvalError(problem)
    if not paths:
        raise EvalError("no checkpoint given; pass --ckpt PATH (repeat it for several)")
    try:
        out = check_output_dir(out)
    except ValueError as err:
        raise EvalError(str(err)) from None
    device = settings.torch_device()
    runs = [load_checkpoint_run(p, device) for p in paths]  # validates everything first
    try:
        pairs = twin_pairs(paths)
    except TwinError as err:
        raise EvalError(str(err)) from None
    labels = [r.label for r in runs]
    for i, r in enumerate(runs):
        if labels.count(r.label) > 1:
            r.label = f"{r.label}-{i}"
    check_comparable(runs)
    t0 = time.perf_counter()
    with staged_output(out) as tmp:
        records = []
        for run in runs:
            records.append(evaluate_run(run, settings, tmp / "plots", progress))
            run.module.cpu()
        report = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "settings": asdict(settings) | {"device": str(device)},
            "checkpoints": records,
            "transition": None,
            "transition_locality": None,
            "seconds": None,
        }
        report |= twins_report(runs, records, pairs, tmp)
        if len({r["num_train"] for r in records}) >= 2:
            extra = [lambda ax: draw_twins_panel(ax, report["twins"])] if report["twins"] else []
            if any("generalization" in r for r in records):
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
    if wandb_project:
        log_to_wandb(report, out, wandb_project)
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


def twins_report(
    runs: Sequence[LoadedRun], records: Sequence[dict], pairs: Sequence[tuple[int, int]], out: Path
) -> dict[str, Any]:
    """``{"twins": [...], "twins_plot": ...}``: per twin pair (:func:`.twins.twin_pairs`) the
    twin and nearest-training similarities and reproducibility of their memorization samples
    (drawn from the same noise), and ``out/twins.png`` with the pairs side by side."""
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
        shown.append((records[i]["num_train"], a.samples, b.samples))
    if not twins:
        return {"twins": [], "twins_plot": None}
    save_figure(twins_figure(sorted(shown, key=lambda t: t[0])), out / "twins.png")
    return {"twins": sorted(twins, key=lambda t: t["num_train"]), "twins_plot": "twins.png"}

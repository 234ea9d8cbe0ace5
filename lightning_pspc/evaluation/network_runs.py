"""``--network`` entries of ``eval.py``: networks trained elsewhere, on the data of a preset.

A network entry is a :class:`~lightning_pspc.evaluation.checkpoints.LoadedRun` whose module holds
the denoiser :func:`~lightning_pspc.pretrained.load_denoiser` loaded, whose data module is built
from the ``--data`` preset file and whose training counters are ``None`` (a network trained
elsewhere has none of ``train.py``'s metadata; they are never made up). Its evaluation clips the
noise levels to the range the network accepts (:func:`network_sigma_range`,
:func:`clipped_sigmas`); docs/pretrained.md.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..pretrained import PretrainedError, load_denoiser, sigma_range
from ..runs import RunSetupError, build_datamodule, data_preset_section
from .settings import EvalError

if TYPE_CHECKING:
    from .checkpoints import LoadedRun

#: what a network entry's record says instead of train.py's counters and history
NO_TRAINING_METADATA = (
    "a network trained elsewhere: epoch, global_step, images_seen and the memorization history "
    "are unknown (null / empty), not measured"
)


class NetworkHolder:
    """``module.denoiser`` of a network entry (what :func:`.checkpoints.evaluate_run` reads of a module)."""

    def __init__(self, denoiser: Any) -> None:
        self.denoiser = denoiser

    def to(self, device: torch.device | str) -> NetworkHolder:
        if isinstance(self.denoiser, torch.nn.Module):
            self.denoiser.to(device)
        return self

    def cpu(self) -> NetworkHolder:
        return self.to("cpu")


def load_data_preset(preset: str | Path) -> Any:
    """The data module of a ``--data`` preset, its data loaded; one :class:`EvalError` for a
    missing or bad preset or unavailable data."""
    try:
        dm = build_datamodule(data_preset_section(preset), f"data preset {str(preset)!r}")
    except RunSetupError as err:
        raise EvalError(str(err)) from None
    return loaded_data(
        dm,
        f"data preset {str(preset)!r}: cannot load its data",
        "make the data set it names available (a local copy: docs/pretrained.md)",
        f"data preset {str(preset)!r} holds fewer than 2 training images",
    )


def loaded_data(dm: Any, cannot: str, fix: str, too_few: str) -> Any:
    """``dm`` with its data loaded, or one :class:`EvalError`: ``"{cannot} (reason). Fix:
    {fix}."`` when they do not load, ``too_few`` with fewer than 2 training images."""
    try:
        dm.setup("validate")
        dm.reference_images()
    except (OSError, ValueError) as err:
        raise EvalError(f"{cannot} ({err}). Fix: {fix}") from None
    if dm.train_images().shape[0] < 2:
        raise EvalError(too_few)
    return dm


def network_label(spec: str) -> str:
    """A short label of a ``--network`` spec: ``diffusers-<folder name>``, ``edm-<file stem>``,
    the factory's name, or ``<run>/<checkpoint stem>``."""
    scheme, _, rest = spec.partition(":")
    if scheme == "diffusers":
        return f"diffusers-{Path(rest.rstrip('/')).name or rest}"
    if scheme == "edm":
        return f"edm-{Path(rest).stem or rest}"
    path = Path(spec)
    if path.suffix == ".ckpt":
        return f"{path.parent.name}/{path.stem}"
    return rest or spec


def load_network_run(
    spec: str, datamodule: Any, preset: str | Path, device: torch.device, class_label: int | None
) -> LoadedRun:
    """A ``--network`` entry: the loaded denoiser with the data of the ``--data`` preset.

    The denoiser must take the preset's images: its ``image_shape`` when it has one, and one
    call on a zero image in any case. Its ``meta`` counters are ``None`` (no train.py
    metadata). Every failure is one :class:`EvalError`."""
    try:
        denoiser = load_denoiser(spec, device, class_label)
    except PretrainedError as err:
        raise EvalError(str(err)) from None
    shape = tuple(datamodule.image_shape)
    fix = (
        f"Fix: pass a --data preset whose images have the network's shape (data.channels, "
        f"data.resolution), or a network trained on {list(shape)} images"
    )
    expected = getattr(denoiser, "image_shape", None)
    if expected is not None and tuple(expected) != shape:
        raise EvalError(
            f"network {spec!r} takes images {list(expected)} (channels, height, width) but the "
            f"data preset {str(preset)!r} gives {list(shape)}. {fix}"
        )
    lo, hi = sigma_range(denoiser)
    probe_sigma = min(max(1.0, lo), hi)
    try:
        with torch.no_grad():
            z, sigma = torch.zeros(1, *shape, device=device), torch.full((1,), probe_sigma)
            out = denoiser(z, sigma.to(device))
    except (RuntimeError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EvalError(
            f"network {spec!r} fails on the data's images {list(shape)} ({reason}). {fix}"
        ) from None
    if tuple(out.shape) != (1, *shape):
        raise EvalError(
            f"network {spec!r} maps images {list(shape)} to {list(out.shape[1:])}, not the same "
            "shape; it is not a denoiser D(z, sigma) of these images"
        )
    from .checkpoints import LoadedRun  # here: checkpoints imports this module

    meta = {"epoch": None, "global_step": None, "images_seen": None}
    path = Path(spec.partition(":")[2] if spec.startswith(("diffusers:", "edm:")) else spec)
    return LoadedRun(
        path,
        network_label(spec),
        NetworkHolder(denoiser),
        datamodule,
        meta,
        network=spec,
        data_preset=str(preset),
    )


def network_sigma_range(denoiser: Any) -> tuple[float, float] | None:
    """The noise levels ``denoiser`` accepts (:func:`~lightning_pspc.pretrained.sigma_range`),
    ``None`` when it accepts all."""
    lo, hi = sigma_range(denoiser)
    return None if lo <= 0 and hi == float("inf") else (lo, hi)


def clipped_sigmas(label: str, evaluation: Any, num_steps: int) -> dict[str, Any] | None:
    """The evaluation's record of noise levels clipped to the network's range
    (:meth:`~lightning_pspc.evaluation.Evaluation.sigma_record`, ``None`` when none were),
    announced in one console line."""
    record = evaluation.sigma_record(num_steps)
    if record is not None:
        lo, hi = record["model_range"]
        outside = sum(not lo <= s <= hi for s in record["requested_sigmas"])
        first, last = record["sampler"]
        print(
            f"note: {label} accepts sigma in [{lo:.4g}, {hi:.4g}]: {outside} of the "
            f"{len(record['requested_sigmas'])} grid sigmas clamped to it "
            f"({len(record['sigmas'])} distinct left), samplers run from {first:.4g} to "
            f"{last:.4g} (metrics.json: sigma_clipping)",
            file=sys.stderr,
        )
    return record


def check_entries(
    paths: Sequence[str | Path],
    networks: Sequence[str],
    data: str | Path | None,
    class_label: int | None,
) -> None:
    """At least one ``--ckpt`` or ``--network``; ``--data`` exactly when there are networks;
    ``--class-label`` only with networks."""
    if not paths and not networks:
        raise EvalError(
            "nothing to evaluate; pass --ckpt PATH (a train.py checkpoint) and/or --network SPEC "
            "(a network trained elsewhere), each repeatable"
        )
    if networks and data is None:
        raise EvalError(
            f"--network {networks[0]!r} needs --data PRESET: the data preset it is evaluated on "
            "(e.g. configs/data_cifar10_pretrained.yaml)"
        )
    if data is not None and not networks:
        raise EvalError(
            f"--data {str(data)!r} is for --network entries (--ckpt entries use their own run's "
            "data); add --network SPEC or drop --data"
        )
    if class_label is not None and not networks:
        raise EvalError("--class-label is for --network entries; drop it")

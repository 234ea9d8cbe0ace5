"""Rebuilding a run from its folder: the configuration, the model and data, and their checks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from jsonargparse import ArgumentParser

from ..data import ImageDataModule
from .checkpoints import check_checkpoint_matches, read_checkpoint
from .folders import CONFIG_FILE, RunSetupError

if TYPE_CHECKING:
    from ..module import DiffusionModule


def image_shape_of(datamodule: Any) -> tuple[int, int, int]:
    """The data module's ``(C, H, W)``; a missing or unreadable data set becomes one message."""
    try:
        return tuple(datamodule.image_shape)
    except (OSError, ValueError) as err:
        raise RunSetupError(f"cannot load the training data: {err}") from err


def check_network_accepts(module: DiffusionModule, shape: tuple[int, int, int]) -> None:
    """One forward pass on a zero image of ``shape`` (C, H, W): the net must return that shape."""
    net = module.precond.net
    was_training = net.training
    try:
        with torch.no_grad():
            out = module.precond.eval()(torch.zeros(1, *shape), torch.ones(1))
    except (ValueError, RuntimeError) as err:
        raise RunSetupError(
            f"network {type(net).__name__} cannot take the data's images of shape {list(shape)}: "
            f"{err}. Fix: make --model.net.init_args.img_resolution / in_channels match the data "
            f"(or change --data.resolution / --data.channels)."
        ) from err
    finally:
        module.precond.train(was_training)
    if tuple(out.shape[1:]) != tuple(shape):
        raise RunSetupError(
            f"network {type(net).__name__} maps images {list(shape)} to {list(out.shape[1:])}; "
            f"set --model.net.init_args.out_channels to null (same as in_channels)."
        )


def load_config(path: str | Path) -> dict[str, Any]:
    """A train.py config file as a dict, with whole sections given as file paths read in.

    Presets share parts (``configs/base/``): ``trainer: base/trainer_fmnist_small.yaml`` names a
    file, relative to the preset, that holds that section, as LightningCLI reads it.
    """
    path = Path(path)
    config = read_yaml(path) or {}
    for key, value in config.items():
        if isinstance(value, str) and value.endswith((".yaml", ".yml")):
            config[key] = read_yaml(path.parent / value, f"the {key} section of {path}") or {}
    return config


#: Errors of YAML text that is not well formed (a value that does not construct is not one).
YAML_SYNTAX_ERRORS = (
    yaml.scanner.ScannerError,
    yaml.parser.ParserError,
    yaml.composer.ComposerError,
)


def read_yaml(path: Path, role: str | None = None) -> Any:
    """``yaml.safe_load`` of a file; a syntax error is one :class:`RunSetupError` naming the
    file (``role``: what the file is, e.g. ``the trainer section of configs/x.yaml``), the
    line and column and the parser's problem."""
    try:
        return yaml.safe_load(path.read_text())
    except YAML_SYNTAX_ERRORS as err:
        where = f"{str(path)!r}" + (f" ({role})" if role else "")
        mark, problem = err.problem_mark, err.problem or "not YAML"
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        context = ""
        if err.context and err.context_mark:
            cm = err.context_mark
            context = f" ({err.context} at line {cm.line + 1}, column {cm.column + 1})"
        raise RunSetupError(
            f"{where} is not valid YAML: {problem}{at}{context}. Fix: correct the YAML "
            f"syntax{' near line ' + str(mark.line + 1) if mark else ''} of {str(path)!r}."
        ) from None


def check_config_syntax(path: Path) -> None:
    """A ``--config`` file, and the section files it names (``trainer: base/x.yaml``), must be
    well-formed YAML (:func:`read_yaml`); files that are missing or hold other errors are left
    to the parser that reads them."""
    config = read_yaml(path)
    if not isinstance(config, dict):
        return
    for key, value in config.items():
        if isinstance(value, str) and value.endswith((".yaml", ".yml")):
            section = path.parent / value
            if section.is_file():
                read_yaml(section, f"the {key} section of {path}")


def build_from_config(
    config: str | Path | dict[str, Any],
) -> tuple[DiffusionModule, ImageDataModule]:
    """Instantiate the ``model`` and ``data`` sections of a train.py config (file or dict).

    Other sections (trainer, checkpoint, ...) are ignored; the data are not loaded yet.
    """
    from ..module import DiffusionModule  # here: the module's checkpoint hook imports this package

    if not isinstance(config, dict):
        config = load_config(config)
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DiffusionModule, "model", fail_untyped=False)
    parser.add_class_arguments(ImageDataModule, "data", fail_untyped=False)
    cfg = parser.parse_object(
        {"model": config.get("model") or {}, "data": config.get("data") or {}}
    )
    init = parser.instantiate_classes(cfg)
    return init.model, init.data


def data_preset_section(path: str | Path) -> dict[str, Any]:
    """The ``data`` section of a preset file: the file's ``data`` (a train.py preset such as
    ``configs/unet_fmnist_small.yaml``, or ``configs/data_cifar10_pretrained.yaml``), or the whole
    file when it is a bare section (``configs/base/data_fmnist_small.yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise RunSetupError(
            f"data preset {str(path)!r} does not exist. Fix: pass a preset file, e.g. "
            "configs/data_cifar10_pretrained.yaml or configs/base/data_fmnist_small.yaml"
        )
    try:
        config = load_config(path)
    except (OSError, yaml.YAMLError) as err:
        raise RunSetupError(f"cannot read data preset {str(path)!r}: {err}") from None
    if not isinstance(config, dict):
        raise RunSetupError(f"data preset {str(path)!r} is not a YAML mapping")
    section = config["data"] if "data" in config else config
    return dict(section or {})


def build_datamodule(section: dict[str, Any], name: str = "data preset") -> ImageDataModule:
    """An :class:`ImageDataModule` from a preset's ``data`` section (jsonargparse, as train.py
    reads it); the data are not loaded yet. A bad section is one :class:`RunSetupError`."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImageDataModule, "data", fail_untyped=False)
    try:
        cfg = parser.parse_object({"data": section})
        return parser.instantiate_classes(cfg).data
    except Exception as err:  # jsonargparse and the data module raise many types
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RunSetupError(
            f"{name}: its data section does not build an ImageDataModule ({reason})"
        ) from None


def load_run(
    ckpt_path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[DiffusionModule, ImageDataModule]:
    """Rebuild ``(module, datamodule)`` of a run from a checkpoint and the ``config.yaml`` beside it.

    The module is in eval mode with the checkpoint's weights (raw and EMA); use
    ``module.denoiser`` for ``D(z [B,C,H,W], sigma [B])``. Data are loaded lazily.
    """
    ckpt_path = Path(ckpt_path)
    config_path = ckpt_path.parent / CONFIG_FILE
    ckpt = read_checkpoint(ckpt_path)
    if not config_path.is_file():
        raise RunSetupError(
            f"no config.yaml next to checkpoint {str(ckpt_path)!r}. Fix: keep checkpoints in the run "
            f"folder train.py wrote (it saves config.yaml there)."
        )
    try:
        module, datamodule = build_from_config(config_path)
    except Exception as err:
        raise RunSetupError(f"cannot rebuild the run from {str(config_path)!r}: {err}") from err
    check_checkpoint_matches(module, ckpt_path, ckpt)
    module.load_state_dict(ckpt["state_dict"])
    module.images_seen = int(ckpt.get("images_seen", 0))
    return module.to(map_location).eval(), datamodule

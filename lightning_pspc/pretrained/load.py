"""``load_denoiser(spec)``: any network as the project's one call ``D(z, sigma)``.

``spec`` is one of

* a checkpoint written by ``train.py`` (its ``config.yaml`` beside it): the EMA network through
  EDM's preconditioner;
* ``diffusers:<folder or hub id>``: a ``UNet2DModel`` with its DDPM-style scheduler
  (:mod:`.diffusers_vp`);
* ``edm:<pickle>``: an EDM network pickle (:mod:`.edm`);
* ``module.path:callable``: a factory, called with no arguments, returning a denoiser.

The result is a module (or, from a factory, any callable) with ``D(z [B,C,H,W], sigma [B]) ->
[B,C,H,W]`` in the EDM convention (images in [-1, 1], ``z = x + sigma * eps``). Denoisers may
carry ``sigma_min`` / ``sigma_max`` (the noise levels they accept, :func:`sigma_range`) and
``image_shape`` ``(C, H, W)`` (what they were trained on).
"""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path
from typing import Any

import torch

from .diffusers_vp import load_diffusers
from .edm import load_edm
from .errors import PretrainedError

SCHEMES = ("diffusers", "edm")
SPEC_FORMS = (
    "a train.py checkpoint (RUN/last.ckpt), diffusers:<folder or hub id>, edm:<pickle> or "
    "module.path:callable"
)
_FACTORY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_SCHEME = re.compile(r"^([A-Za-z][\w+.-]*):")


def load_denoiser(
    spec: str, device: torch.device | str = "cpu", class_label: int | None = None
) -> Any:
    """The denoiser named by ``spec`` (see the module docstring) on ``device``, in eval mode.

    ``class_label``: the class of a class-conditional network (an error for an unconditional
    one). Every failure is one :class:`PretrainedError` naming the spec and the fix.
    """
    spec = str(spec)
    scheme, _, rest = spec.partition(":")
    if scheme == "diffusers":
        return load_diffusers(rest, device, class_label)
    if scheme == "edm":
        return load_edm(rest, device, class_label)
    path = Path(spec).expanduser()
    if path.is_file() or spec.endswith(".ckpt"):
        return _load_checkpoint(spec, path, device, class_label)
    if _FACTORY.match(spec):
        return _load_factory(spec, device, class_label)
    if (m := _SCHEME.match(spec)) and not path.parent.is_dir():
        raise PretrainedError(f"network {spec!r}: unknown scheme {m.group(1)!r}; use {SPEC_FORMS}")
    raise PretrainedError(f"network {spec!r} is none of {SPEC_FORMS} (no such file)")


def sigma_range(denoiser: Any) -> tuple[float, float]:
    """``(sigma_min, sigma_max)`` a denoiser accepts: its attributes, ``(0, inf)`` without them."""
    lo = float(getattr(denoiser, "sigma_min", 0.0) or 0.0)
    hi = getattr(denoiser, "sigma_max", math.inf)
    return lo, float(math.inf if hi is None else hi)


def _load_checkpoint(spec: str, path: Path, device: Any, class_label: int | None) -> Any:
    from ..runs import RunSetupError, load_run

    if not path.is_file():
        raise PretrainedError(
            f"network {spec!r}: checkpoint does not exist. Fix: pass a last.ckpt or best.ckpt "
            "that train.py wrote into its run folder"
        )
    if class_label is not None:
        raise PretrainedError(f"network {spec!r} is unconditional; drop --class-label")
    try:
        module, _ = load_run(path, map_location=device)
    except RunSetupError as err:
        raise PretrainedError(f"network {spec!r}: {err}") from None
    return module.denoiser


def _load_factory(spec: str, device: Any, class_label: int | None) -> Any:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise PretrainedError(
            f"network {spec!r}: cannot import module {module_name!r} ({err}). Fix: put it on "
            f"PYTHONPATH, or use one of the schemes {[s + ':' for s in SCHEMES]}"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise PretrainedError(
            f"network {spec!r}: module {module_name!r} has no callable {attr!r}; name a function "
            "that returns a denoiser D(z, sigma)"
        )
    if class_label is not None:
        raise PretrainedError(
            f"network {spec!r}: --class-label is for edm: and diffusers: networks; let the "
            "factory build the conditioning into its denoiser"
        )
    denoiser = factory()
    if not callable(denoiser):
        raise PretrainedError(
            f"network {spec!r}: the factory returned {type(denoiser).__name__}, not a denoiser "
            "D(z, sigma)"
        )
    if isinstance(denoiser, torch.nn.Module):
        denoiser = denoiser.to(device).eval().requires_grad_(False)
    return denoiser

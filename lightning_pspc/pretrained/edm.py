"""EDM's network pickles (Karras et al. 2022, github.com/NVlabs/edm) as denoisers.

EDM saves ``{'ema': net, ...}`` with ``pickle``; ``net(x, sigma, class_labels)`` is already the
denoiser ``D`` (its preconditioner, EDM table 1, is part of the pickled module), with attributes
``img_channels``, ``img_resolution``, ``label_dim``, ``sigma_min`` and ``sigma_max``. Unpickling
needs EDM's own code (``torch_utils``, ``dnnlib``, ``training``) importable. Only load pickles you
trust: unpickling runs code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import PretrainedError

EDM_FIX = (
    "Fix: put a clone of NVlabs/edm on PYTHONPATH (git clone https://github.com/NVlabs/edm; "
    "PYTHONPATH=/path/to/edm python eval.py ...)"
)


class EDMPickleDenoiser(nn.Module):
    """``D(z [B,C,H,W], sigma [B]) -> [B,C,H,W]`` of an EDM network ``net(x, sigma, class_labels)``.

    Unconditional networks (``label_dim == 0``) get no labels; a class-conditional one gets the
    one-hot label of ``class_label`` for every image. ``sigma_min`` / ``sigma_max`` (the
    network's own range, EDM's samplers clip to it too) and ``image_shape`` are read from it.
    """

    def __init__(self, net: nn.Module, class_label: int | None = None, name: str = "edm") -> None:
        super().__init__()
        self.net, self.class_label, self.name = net, class_label, name
        self.label_dim = int(getattr(net, "label_dim", 0) or 0)
        self.sigma_min = float(getattr(net, "sigma_min", 0.0) or 0.0)
        self.sigma_max = float(getattr(net, "sigma_max", float("inf")))
        channels, resolution = (
            getattr(net, "img_channels", None),
            getattr(net, "img_resolution", None),
        )
        self.image_shape = (
            (int(channels), int(resolution), int(resolution))
            if channels is not None and resolution is not None
            else None
        )
        if self.label_dim and class_label is None:
            raise PretrainedError(
                f"{name} is class-conditional ({self.label_dim} classes); pass --class-label K "
                f"with 0 <= K < {self.label_dim}"
            )
        if not self.label_dim and class_label is not None:
            raise PretrainedError(f"{name} is unconditional; drop --class-label")
        if class_label is not None and not 0 <= class_label < self.label_dim:
            raise PretrainedError(
                f"{name}: --class-label {class_label} is not a class of its {self.label_dim}"
            )

    def forward(self, z: Tensor, sigma: Tensor) -> Tensor:
        """``z [B,C,H,W]``, ``sigma [B]`` -> ``net(z, sigma, labels)`` in z's dtype."""
        sigma = torch.as_tensor(sigma, device=z.device).float().reshape(-1).expand(z.shape[0])
        labels = None
        if self.label_dim:
            labels = torch.zeros(z.shape[0], self.label_dim, device=z.device)
            labels[:, self.class_label] = 1
        return self.net(z.float(), sigma, labels).to(z.dtype)


def read_edm_pickle(path: str | Path, spec: str) -> dict[str, Any]:
    """The dictionary of an EDM pickle; a missing file, a pickle that needs EDM's code where it
    is not importable, or any other form is one :class:`PretrainedError`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PretrainedError(
            f"{spec}: no such file. Fix: pass a network pickle EDM wrote (e.g. "
            "edm-cifar10-32x32-uncond-vp.pkl)"
        )
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except (ModuleNotFoundError, ImportError, AttributeError) as err:
        raise PretrainedError(f"{spec}: cannot unpickle its network ({err}). {EDM_FIX}") from None
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as err:
        raise PretrainedError(
            f"{spec} is not a readable pickle ({type(err).__name__}: {err}); re-download it"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("ema"), nn.Module):
        raise PretrainedError(
            f"{spec} is not an EDM network pickle (a dict whose 'ema' is the network); for other "
            "networks use a module.path:callable factory"
        )
    return data


def load_edm(
    path: str, device: torch.device | str = "cpu", class_label: int | None = None
) -> EDMPickleDenoiser:
    """``edm:<pickle>``: the pickle's ``ema`` network as an :class:`EDMPickleDenoiser` on
    ``device`` (eval mode, no gradients)."""
    spec = f"edm:{path}"
    net = read_edm_pickle(path, spec)["ema"]
    net = net.to(device).eval().requires_grad_(False)
    return EDMPickleDenoiser(net, class_label, spec)

"""Discrete-time VP (DDPM) networks as EDM denoisers, and diffusers ``UNet2DModel`` folders.

A DDPM network is trained at integer timesteps ``t`` on ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t)
eps``. Dividing by ``sqrt(abar_t)`` gives the EDM form ``z = x + sigma_t eps`` with
``sigma_t = sqrt((1 - abar_t) / abar_t)`` (Karras et al. 2022, eq. 4 and appendix C.1; Crowson's
k-diffusion wraps such models the same way). For any ``sigma`` in the schedule's range,
:class:`DiscreteVPDenoiser` feeds the network ``z / sqrt(1 + sigma^2)`` (that is ``x_t``, since
``1 + sigma^2 = 1 / abar``) at the timestep interpolated linearly in ``log sigma`` between the
schedule's discrete sigmas, and turns its output into ``D(z, sigma)``:

* ``epsilon``: ``D = z - sigma * out``;
* ``v_prediction`` (``v = sqrt(abar) eps - sqrt(1 - abar) x``): ``D = z / (1 + sigma^2) -
  sigma / sqrt(1 + sigma^2) * out``, with the continuous ``abar = 1 / (1 + sigma^2)``;
* ``sample``: ``D = out``.

A sigma outside ``[sigma_min, sigma_max]`` of the schedule is an error naming the range (beyond
it the network was never trained; k-diffusion clamps silently).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import PretrainedError

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
#: relative slack on the range check: a float64 end of the range rounded to float32 stays inside
RANGE_RTOL = 1e-6


class DiscreteVPDenoiser(nn.Module):
    """``D(z [B,C,H,W], sigma [B]) -> [B,C,H,W]`` of a network trained on a discrete VP schedule.

    Args:
        model: ``model(x_t [B,C,H,W], t [B] float32) -> out [B,C',H,W]`` (``C' = C``, or ``2C``
            with a learned variance, whose first ``C`` channels are used).
        alphas_cumprod: ``abar_t`` of the ``T`` training timesteps ``[T]``, decreasing.
        prediction_type: what ``out`` is: ``epsilon``, ``v_prediction`` or ``sample``.
        image_shape: the ``(C, H, W)`` the network was trained on, when known.
        name: for error messages.

    Attributes ``sigma_min`` / ``sigma_max`` (floats) are the range of the schedule's sigmas;
    the evaluation clips its noise levels to them.
    """

    def __init__(
        self,
        model: Any,
        alphas_cumprod: Tensor,
        prediction_type: str = "epsilon",
        image_shape: tuple[int, int, int] | None = None,
        name: str = "model",
    ) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise PretrainedError(
                f"{name}: prediction_type {prediction_type!r} is not supported; the scheduler "
                f"must say one of {list(PREDICTION_TYPES)}"
            )
        abar = torch.as_tensor(alphas_cumprod).detach().double().cpu().flatten()  # [T]
        sigmas = ((1 - abar) / abar).sqrt()  # [T], increasing in t
        if sigmas.numel() < 2 or not bool((sigmas[1:] > sigmas[:-1]).all()) or sigmas[0] <= 0:
            raise PretrainedError(
                f"{name}: the scheduler's alphas_cumprod must decrease strictly from below 1 "
                "over at least 2 timesteps (positive betas); check its betas"
            )
        self.model, self.prediction_type = model, prediction_type
        self.image_shape, self.name = image_shape, name
        self.register_buffer("log_sigmas", sigmas.log(), persistent=False)  # [T] float64
        self.sigma_min, self.sigma_max = float(sigmas[0]), float(sigmas[-1])

    @property
    def num_timesteps(self) -> int:
        return self.log_sigmas.numel()

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Fractional timestep ``[B]`` (float64) of ``sigma [B]``: linear in ``log sigma`` between
        the discrete sigmas (exactly ``t`` at ``sigma_t``); out of range is an error."""
        sigma = sigma.double()
        lo, hi = self.sigma_min * (1 - RANGE_RTOL), self.sigma_max * (1 + RANGE_RTOL)
        bad = ~((sigma >= lo) & (sigma <= hi))
        if bool(bad.any()):
            raise PretrainedError(
                f"{self.name}: sigma {float(sigma[bad][0]):.6g} is outside the range "
                f"[{self.sigma_min:.6g}, {self.sigma_max:.6g}] of its {self.num_timesteps}-step "
                "schedule; evaluate at sigmas within it (eval.py clips its grid and samplers "
                "to it)"
            )
        log_sigmas = self.log_sigmas.to(sigma.device)
        log_s = sigma.log().clamp(log_sigmas[0], log_sigmas[-1])
        low = torch.searchsorted(log_sigmas, log_s, right=True) - 1
        low = low.clamp(0, self.num_timesteps - 2)  # [B]
        w = (log_s - log_sigmas[low]) / (log_sigmas[low + 1] - log_sigmas[low])
        return low.double() + w

    def forward(self, z: Tensor, sigma: Tensor) -> Tensor:
        """``z [B,C,H,W]`` (EDM scale), ``sigma [B]`` -> ``D(z, sigma)`` ``[B,C,H,W]`` in z's dtype."""
        sigma = torch.as_tensor(sigma, device=z.device).double().reshape(-1).expand(z.shape[0])
        t = self.sigma_to_t(sigma)  # [B] float64
        s = sigma.view(-1, 1, 1, 1)  # [B,1,1,1]
        scale = (1 + s**2).rsqrt()  # sqrt(abar)
        zf = z.double()
        out = self.model((zf * scale).float(), t.float())  # [B,C',H,W]
        out = out[:, : z.shape[1]].double()  # a learned variance's extra channels dropped
        if self.prediction_type == "epsilon":
            d = zf - s * out
        elif self.prediction_type == "v_prediction":
            d = zf * scale**2 - s * scale * out
        else:
            d = out
        return d.to(z.dtype)


class _UNetCall(nn.Module):
    """``UNet2DModel(x_t, t, class_labels).sample`` as ``model(x_t, t)``."""

    def __init__(self, unet: nn.Module, class_label: int | None) -> None:
        super().__init__()
        self.unet, self.class_label = unet, class_label

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        labels = None
        if self.class_label is not None:
            labels = torch.full((x.shape[0],), self.class_label, dtype=torch.long, device=x.device)
        dtype = next(self.unet.parameters()).dtype
        return self.unet(x.to(dtype), t, class_labels=labels).sample.float()


def resolve_folder(location: str) -> Path:
    """A local folder for ``location``: the folder itself, or a hub id's snapshot (downloaded,
    or from the local cache when the hub is offline or unreachable, as
    :class:`~lightning_pspc.data.HFSource` does). Every failure is one :class:`PretrainedError`."""
    path = Path(location).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise PretrainedError(
            f"diffusers:{location} is a file; pass the folder that holds config.json (or unet/)"
        )
    if location.startswith(("/", ".", "~")) or location.count("/") != 1:
        raise PretrainedError(
            f"diffusers:{location}: no such folder. Fix: pass a folder written by "
            "save_pretrained (config.json + scheduler_config.json, or unet/ + scheduler/) or a "
            "hub id such as google/ddpm-cifar10-32"
        )
    from huggingface_hub import snapshot_download

    from ..data import hub

    try:
        if hub.offline_flagged() or not hub.hub_reachable():  # never hang: the local cache only
            with hub.forced_offline():
                return Path(snapshot_download(location))
        return Path(snapshot_download(location))
    except Exception as err:  # offline, unreachable, unknown repository: all one message
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PretrainedError(
            f"diffusers:{location}: cannot get it from the Hugging Face hub ({reason}). Fix: "
            f"download it where the hub is reachable (hf download {location} "
            "--local-dir DIR) and pass diffusers:DIR"
        ) from None


def _layout(folder: Path, spec: str) -> tuple[str | None, Path]:
    """``(unet subfolder or None, scheduler config file)`` of a diffusers folder."""
    if (folder / "unet" / "config.json").is_file():
        subfolder, scheduler = "unet", folder / "scheduler" / "scheduler_config.json"
    elif (folder / "config.json").is_file():
        subfolder, scheduler = None, folder / "scheduler_config.json"
    else:
        raise PretrainedError(
            f"{spec}: no config.json or unet/config.json in {str(folder)!r}. Fix: pass the folder "
            "UNet2DModel.save_pretrained (or DDPMPipeline.save_pretrained) wrote"
        )
    if not scheduler.is_file():
        raise PretrainedError(
            f"{spec}: no scheduler config ({scheduler.name} beside config.json, or "
            "scheduler/scheduler_config.json) in "
            f"{str(folder)!r}; the noise schedule is needed to convert the model. Fix: save its "
            "DDPMScheduler there (scheduler.save_pretrained(folder))"
        )
    return subfolder, scheduler


def _alphas_cumprod(scheduler_file: Path, spec: str) -> tuple[Tensor, str, str | None]:
    """``(alphas_cumprod [T], prediction_type, variance_type)`` of a saved DDPM-style scheduler."""
    import diffusers

    try:
        config = json.loads(scheduler_file.read_text())
    except (OSError, ValueError) as err:
        raise PretrainedError(f"{spec}: cannot read {str(scheduler_file)!r} ({err})") from None
    name = config.get("_class_name", "DDPMScheduler")
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise PretrainedError(
            f"{spec}: unknown scheduler class {name!r} in {str(scheduler_file)!r}"
        )
    scheduler = cls.from_config(config)
    abar = getattr(scheduler, "alphas_cumprod", None)
    if abar is None:
        raise PretrainedError(
            f"{spec}: scheduler {name} has no discrete VP (DDPM) schedule (alphas_cumprod); only "
            "DDPM-style schedulers (DDPMScheduler, DDIMScheduler, ...) are supported"
        )
    prediction = scheduler.config.get("prediction_type", "epsilon")
    return torch.as_tensor(abar), prediction, scheduler.config.get("variance_type")


def load_diffusers(
    location: str, device: torch.device | str = "cpu", class_label: int | None = None
) -> DiscreteVPDenoiser:
    """``diffusers:<folder or hub id>``: a ``UNet2DModel`` and its DDPM-style scheduler as a
    :class:`DiscreteVPDenoiser` on ``device`` (eval mode, no gradients)."""
    spec = f"diffusers:{location}"
    folder = resolve_folder(location)
    subfolder, scheduler_file = _layout(folder, spec)
    config_file = folder / (subfolder or "") / "config.json"
    config = json.loads(config_file.read_text())
    if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise PretrainedError(
            f"{spec}: {config.get('_class_name')} is not supported; diffusers:<folder> loads an "
            "unconditional UNet2DModel (wrap other models in a module.path:callable factory)"
        )
    if config.get("time_embedding_type", "positional") != "positional":
        raise PretrainedError(
            f"{spec}: time_embedding_type {config.get('time_embedding_type')!r} is not a DDPM "
            "timestep embedding ('positional'); wrap the model in a module.path:callable factory"
        )
    abar, prediction, variance = _alphas_cumprod(scheduler_file, spec)
    conditional = config.get("num_class_embeds") is not None or config.get("class_embed_type")
    if conditional and class_label is None:
        raise PretrainedError(
            f"{spec} is class-conditional; pass --class-label K (the class whose samples to use)"
        )
    if not conditional and class_label is not None:
        raise PretrainedError(f"{spec} is unconditional; drop --class-label")
    from diffusers import UNet2DModel

    try:
        unet = UNet2DModel.from_pretrained(
            str(folder), subfolder=subfolder, low_cpu_mem_usage=False
        )
    except (OSError, ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0]
        raise PretrainedError(f"{spec}: cannot load the UNet2DModel ({reason})") from None
    c_in, c_out = unet.config.in_channels, unet.config.out_channels
    if c_out not in (c_in, 2 * c_in) or (c_out == 2 * c_in and "learned" not in str(variance)):
        raise PretrainedError(
            f"{spec}: out_channels {c_out} with in_channels {c_in} and variance_type {variance!r} "
            "is neither a plain nor a learned-variance DDPM output"
        )
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    model = _UNetCall(unet.to(device).eval().requires_grad_(False), class_label)
    return DiscreteVPDenoiser(model, abar, prediction, (c_in, h, w), spec).to(device)

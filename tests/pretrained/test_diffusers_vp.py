"""diffusers UNet2DModel folders as EDM denoisers: the x0 estimate of the raw model at every
prediction type, interpolation between timesteps, the range, both layouts, bad folders."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from lightning_pspc import load_denoiser
from lightning_pspc.pretrained import DiscreteVPDenoiser, PretrainedError
from tests.helpers import save_diffusers_model, tiny_unet


def _raw(folder):
    """The saved UNet and scheduler, loaded with diffusers alone."""
    from diffusers import DDPMScheduler, UNet2DModel

    unet = UNet2DModel.from_pretrained(folder, subfolder="unet", low_cpu_mem_usage=False).eval()
    return unet, DDPMScheduler.from_pretrained(folder, subfolder="scheduler")


def _x0_estimate(kind: str, x_t, out, abar):
    """The x0 estimate of DDPM from ``x_t`` and the raw output (Ho et al. 2020 eq. 15;
    Salimans & Ho 2022 for v)."""
    if kind == "epsilon":
        return (x_t - (1 - abar).sqrt() * out) / abar.sqrt()
    if kind == "v_prediction":
        return abar.sqrt() * x_t - (1 - abar).sqrt() * out
    return out


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_at_discrete_timesteps_it_is_the_raw_models_x0_estimate(diffusers_models, kind):
    denoiser = load_denoiser(f"diffusers:{diffusers_models[kind]}")
    unet, sched = _raw(diffusers_models[kind])
    abar_all = sched.alphas_cumprod.double()
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand(4, 1, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn(4, 1, 8, 8, generator=gen, dtype=torch.float64)
    for t in (0, 1, 150, sched.config.num_train_timesteps - 1):
        abar = abar_all[t]
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps  # DDPM forward process
        with torch.no_grad():
            out = unet(x_t.float(), torch.full((4,), t)).sample.double()
        expected = _x0_estimate(kind, x_t.float().double(), out, abar)
        sigma = ((1 - abar) / abar).sqrt()
        z = x_t / abar.sqrt()  # the same noisy image in the EDM scale: x0 + sigma * eps
        with torch.no_grad():
            got = denoiser(z.float(), torch.full((4,), float(sigma)))
        err = (got.double() - expected).abs().max() / (1 + sigma)
        assert err < 1e-5, (kind, t, float(err))


def test_a_sigma_between_two_timesteps_interpolates_the_timestep_in_log_sigma(diffusers_models):
    denoiser = load_denoiser(f"diffusers:{diffusers_models['epsilon']}")
    unet, sched = _raw(diffusers_models["epsilon"])
    abar = sched.alphas_cumprod.double()
    sig = ((1 - abar) / abar).sqrt()
    k, w = 120, 0.25
    sigma = math.exp((1 - w) * math.log(sig[k]) + w * math.log(sig[k + 1]))
    z = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got = denoiser(z, torch.full((2,), sigma))
        x_t = (z.double() / math.sqrt(1 + sigma**2)).float()
        out = unet(x_t, torch.full((2,), k + w)).sample.double()
        at_k = unet(x_t, torch.full((2,), k)).sample.double()
    assert not torch.allclose(out, at_k)  # the fraction matters
    torch.testing.assert_close(got.double(), z.double() - sigma * out, rtol=0, atol=1e-5)
    t = denoiser.sigma_to_t(torch.tensor([sigma], dtype=torch.float64))
    assert float(t) == pytest.approx(k + w, abs=1e-9)


def test_sigmas_outside_the_schedule_fail_naming_the_range(diffusers_models):
    denoiser = load_denoiser(f"diffusers:{diffusers_models['epsilon']}")
    lo, hi = denoiser.sigma_min, denoiser.sigma_max
    assert (lo, hi) == pytest.approx((0.0100013, 4.45062), rel=1e-5)
    z = torch.zeros(1, 1, 8, 8)
    for bad in (0.002, hi * 1.01, 0.0):
        with pytest.raises(PretrainedError, match=r"outside the range \[0\.0100013, 4\.45062\]"):
            denoiser(z, torch.tensor([bad]))
    for end in (lo, hi):  # the ends, also once rounded to float32, are inside
        denoiser(z, torch.tensor([end], dtype=torch.float64))
        denoiser(z, torch.tensor([end], dtype=torch.float32))


def test_both_folder_layouts_load_the_same_denoiser(diffusers_models):
    nested = load_denoiser(f"diffusers:{diffusers_models['epsilon']}")
    flat = load_denoiser(f"diffusers:{diffusers_models['flat']}")
    z, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.05, 0.7, 3.0])
    with torch.no_grad():
        assert torch.equal(nested(z, sigma), flat(z, sigma))
    assert nested.image_shape == flat.image_shape == (1, 8, 8)


def test_a_learned_variance_uses_the_first_half_of_the_channels(tmp_path):
    unet = tiny_unet(out_channels=2)
    save_diffusers_model(tmp_path, unet, variance_type="learned_range")
    denoiser = load_denoiser(f"diffusers:{tmp_path}")
    z, sigma = torch.randn(2, 1, 8, 8), torch.tensor([0.5, 0.5])
    with torch.no_grad():
        eps = unet(z / math.sqrt(1.25), denoiser.sigma_to_t(sigma).float()).sample[:, :1]
        torch.testing.assert_close(denoiser(z, sigma), z - 0.5 * eps, rtol=0, atol=1e-5)


def test_a_plain_module_wraps_too():
    abar = torch.linspace(0.99, 0.1, 10).cumprod(0)

    def model(x, t):
        return torch.zeros_like(x)  # predicts no noise: D(z) = z

    d = DiscreteVPDenoiser(model, abar)
    z = torch.randn(2, 3, 4, 4)
    sigma = torch.full((2,), d.sigma_min * 2)
    assert torch.equal(d(z, sigma), z)


def test_bad_folders_give_one_clear_line(diffusers_models, tmp_path):
    cases = {}
    cases[f"diffusers:{tmp_path / 'absent'}"] = "no such folder"
    no_scheduler = tmp_path / "no_scheduler"
    shutil.copytree(diffusers_models["epsilon"] / "unet", no_scheduler)
    cases[f"diffusers:{no_scheduler}"] = "no scheduler config"
    empty = tmp_path / "empty"
    empty.mkdir()
    cases[f"diffusers:{empty}"] = "no config.json"
    ve = tmp_path / "ve"
    shutil.copytree(diffusers_models["flat"], ve)
    (ve / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "ScoreSdeVeScheduler", "num_train_timesteps": 100})
    )
    cases[f"diffusers:{ve}"] = "no discrete VP"
    for spec, why in cases.items():
        with pytest.raises(PretrainedError) as err:
            load_denoiser(spec)
        message = str(err.value)
        assert why in message and "\n" not in message and spec.partition(":")[2] in message


def test_a_hub_id_offline_and_not_cached_names_the_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(PretrainedError) as err:
        load_denoiser("diffusers:google/ddpm-cifar10-32")
    message = str(err.value)
    assert "hf download google/ddpm-cifar10-32 --local-dir DIR" in message and "\n" not in message


def test_class_conditioning_needs_a_label(tmp_path):
    save_diffusers_model(tmp_path, tiny_unet(num_class_embeds=3))
    with pytest.raises(PretrainedError, match="class-conditional; pass --class-label"):
        load_denoiser(f"diffusers:{tmp_path}")
    denoiser = load_denoiser(f"diffusers:{tmp_path}", class_label=2)
    z, sigma = torch.randn(1, 1, 8, 8), torch.tensor([1.0])
    with torch.no_grad():
        other = load_denoiser(f"diffusers:{tmp_path}", class_label=0)
        assert not torch.allclose(denoiser(z, sigma), other(z, sigma))

"""EDM diffusion core: schedules, preconditioning, loss and PF-ODE samplers."""

from .augment import AugmentPipe
from .loss import EDMLoss
from .preconditioning import EDMPrecond, batch_sigma, edm_coefficients
from .samplers import euler_sample, heun_sample
from .schedule import SIGMA_MAX, SIGMA_MIN, edm_sigmas, sample_training_sigmas

__all__ = [
    "AugmentPipe",
    "EDMLoss",
    "EDMPrecond",
    "SIGMA_MAX",
    "SIGMA_MIN",
    "batch_sigma",
    "edm_coefficients",
    "edm_sigmas",
    "euler_sample",
    "heun_sample",
    "sample_training_sigmas",
]

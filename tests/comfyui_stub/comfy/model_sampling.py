"""Stand-in for ``comfy.model_sampling``: k-diffusion's parametrisations and a discrete sigma table."""

from __future__ import annotations

import torch


def _view(sigma: torch.Tensor, ndim: int) -> torch.Tensor:
    return sigma.view(()) if sigma.numel() == 1 else sigma.view(sigma.shape[:1] + (1,) * (ndim - 1))


class EPS:
    """x = x0 + σ ε; the network sees x / sqrt(σ² + 1) and predicts ε."""

    def calculate_input(self, sigma, noise):
        return noise / (_view(sigma, noise.ndim) ** 2 + self.sigma_data**2) ** 0.5

    def calculate_denoised(self, sigma, model_output, model_input):
        return model_input - model_output * _view(sigma, model_output.ndim)


class V_PREDICTION(EPS):
    def calculate_denoised(self, sigma, model_output, model_input):
        s = _view(sigma, model_output.ndim)
        return model_input * self.sigma_data**2 / (s**2 + self.sigma_data**2) - model_output * s * self.sigma_data / (s**2 + self.sigma_data**2) ** 0.5


class X0(EPS):
    def calculate_denoised(self, sigma, model_output, model_input):
        return model_output


class ModelSamplingDiscrete(torch.nn.Module):
    """SD's scaled-linear schedule as a sigma table; ``timestep(σ)`` is the nearest table index."""

    def __init__(self, beta_start: float = 0.00085, beta_end: float = 0.012, timesteps: int = 1000):
        super().__init__()
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.register_buffer("sigmas", sigmas.float())
        self.register_buffer("log_sigmas", sigmas.log().float())
        self.sigma_data = 1.0

    def timestep(self, sigma):
        dists = sigma.log().to(self.log_sigmas.device) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)


class ModelSamplingDiscreteEPS(ModelSamplingDiscrete, EPS):
    pass


class ModelSamplingDiscreteV(ModelSamplingDiscrete, V_PREDICTION):
    pass

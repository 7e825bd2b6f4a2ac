"""Variational autoencoder (ch. 8).

A latent-variable model p_φ(x, z) = p(z) p_φ(x | z) with prior p(z) = N(0, I_k) and a Gaussian decoder
p_φ(x | z) = N(μ_φ(z), s²I_p) of fixed standard deviation s (decoder_std); μ_φ is a feedforward network.
The log-likelihood log p_φ(x) = log ∫ p(z) p_φ(x | z) dz is intractable, so an encoder
q_θ(z | x) = N(μ_θ(x), diag σ²_θ(x)) (one network outputs μ and log σ²) bounds it from below:

    log p_φ(x) ≥ ELBO(x) = E_{q_θ(z|x)}[log p_φ(x | z)] − KL(q_θ(z | x) ‖ p(z)),

with, for p pixels,

    log p_φ(x | z) = −(p/2) log(2π s²) − ‖x − μ_φ(z)‖² / (2s²)                    (nats, constant included)
    KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σⱼ (μⱼ² + σⱼ² − 1 − log σⱼ²)                     (closed form).

Reparameterization: z = μ + σ ⊙ ε with ε ~ N(0, I) makes the single-draw Monte Carlo estimate of the
expectation differentiable in θ, so θ and φ are trained jointly by minimising the negative ELBO per
image, here with the KL term weighted by β (β-VAE; β = 1 is the bound itself).

Sampling: z ~ N(0, I), the image is the decoder mean μ_φ(z) (without the pixel noise of s).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from modules._feedforward import Activation, feedforward, small_widths
from pipeline.spec import DataSpec
from pipeline.core.generative import GenerativeModule
from pipeline.config import OptimizerConfig, SchedulerConfig

TEST_DRAWS = 32  # Monte Carlo draws of z per test image for the test ELBO


def gaussian_kl_to_standard(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag exp(log_var)) ‖ N(0, I)) = ½ Σⱼ (μⱼ² + σⱼ² − 1 − log σⱼ²), summed over the last axis."""
    return 0.5 * (mu.square() + log_var.exp() - 1 - log_var).sum(-1)


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """log N(x; mean, std² I) = −(p/2) log(2π std²) − ‖x − mean‖² / (2 std²), one value per image."""
    squared = (x - mean).flatten(1).square().sum(-1)
    pixels = x[0].numel()
    return -0.5 * pixels * math.log(2 * math.pi * std**2) - squared / (2 * std**2)


class VariationalAutoencoder(GenerativeModule):
    """x -> flatten -> encoder -> (μ, log σ²) -> z = μ + σε -> decoder -> μ_φ(z) -> unflatten."""

    CHAPTER = 8

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        latent_size: int,  # k, the dimension of z
        hidden_sizes: list[int],  # encoder hidden widths, mirrored in the decoder
        activation: Activation,  # the scalar activation S of the hidden layers
        decoder_std: float,  # s, the fixed standard deviation of p(x | z), in the data's units
        beta: float,  # weight of the KL term in the training loss; 1 = the negative ELBO
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.latent_size = latent_size
        self.decoder_std = decoder_std
        self.beta = beta
        pixels = math.prod(data.input_shape)
        self.encoder = nn.Sequential(nn.Flatten(), feedforward([pixels, *hidden_sizes, 2 * latent_size], activation))
        self.decoder = nn.Sequential(
            feedforward([latent_size, *reversed(hidden_sizes), pixels], activation), nn.Unflatten(1, data.input_shape)
        )

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        if model["latent_size"] < 1:
            raise ValueError(f"latent_size: must be a positive integer, got {model['latent_size']}")
        if any(width < 1 for width in model["hidden_sizes"]):
            raise ValueError(f"hidden_sizes: widths must be positive integers, got {model['hidden_sizes']}")
        if not model["decoder_std"] > 0:
            raise ValueError(f"decoder_std: must be positive, got {model['decoder_std']}")
        if model["beta"] < 0:
            raise ValueError(f"beta: must be zero or positive, got {model['beta']}")

    @staticmethod
    def small_config(model: dict) -> dict:
        return {**model, "hidden_sizes": small_widths(model["hidden_sizes"])}

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior's mean μ and log-variance log σ², each (B, k)."""
        mu, log_var = self.encoder(x).chunk(2, dim=-1)
        return mu, log_var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction μ_φ(μ_θ(x)) through the posterior mean."""
        return self.decoder(self.encode(x)[0])

    def negative_elbo(
        self, x: torch.Tensor, beta: float = 1.0, draws: int = 1, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """−ELBO per image (B,), in nats: −(1/S) Σₛ log p(x | μ + σεₛ) + β KL(q(z | x) ‖ p(z))."""
        mu, log_var = self.encode(x)
        std = (0.5 * log_var).exp()
        eps = torch.randn((draws, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + std * eps  # (S, B, k), the reparameterization
        mean = self.decoder(z.flatten(0, 1))  # (S·B, C, H, W)
        log_likelihood = gaussian_log_likelihood(x.repeat(draws, *[1] * (x.dim() - 1)), mean, self.decoder_std)
        return -log_likelihood.reshape(draws, -1).mean(0) + beta * gaussian_kl_to_standard(mu, log_var)

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.negative_elbo(x, self.beta).mean()

    def validation_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The negative ELBO itself (β = 1), one draw per image."""
        return self.negative_elbo(x).mean()

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            z = torch.randn(n, self.latent_size, generator=generator).to(self.device)
            return self.decoder(z)

    def test_metrics(self, x: torch.Tensor, x_train: torch.Tensor) -> dict[str, float]:
        """−ELBO per image (β = 1, the expectation averaged over TEST_DRAWS reparameterized draws per image,
        from a generator seeded 0) and the reconstruction MSE per pixel through the posterior mean."""
        generator = torch.Generator(device=x.device).manual_seed(0)
        with torch.no_grad():
            neg_elbo = float(self.negative_elbo(x, draws=TEST_DRAWS, generator=generator).mean())
            mse = float((self(x) - x).square().mean())
        return {"neg_elbo": neg_elbo, "mse": mse}


MODEL = VariationalAutoencoder

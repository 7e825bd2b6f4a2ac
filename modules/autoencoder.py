"""Autoencoders (ch. 3): linear (PCA's optimum), deep nonlinear, denoising; sampled through a Gaussian
over their codes.

An autoencoder is an encoder f_θ: ℝᵖ → ℝᵏ and a decoder g_φ: ℝᵏ → ℝᵖ with a code size k < p, trained
to reconstruct its input: minimise (1/n) Σᵢ ‖xᵢ − g_φ(f_θ(xᵢ))‖² / p, the mean squared error per pixel.

- Linear: f(x) = W₁x + b₁, g(z) = W₂z + b₂. The reconstruction W₂W₁x + … has rank ≤ k, so by the
  Eckart–Young theorem no linear autoencoder beats PCA: with the centred data matrix X − 1x̄ᵀ = UΣVᵀ
  and V_k its top-k right singular vectors, the best rank-k reconstruction is x̄ + V_kV_kᵀ(x − x̄), whose
  error is the sum of the discarded squared singular values. A trained linear autoencoder reaches that
  error, and its decoder's columns span the same subspace as V_k (though they need not be V_k itself:
  any invertible k × k mixing A, W₂A and A⁻¹W₁, gives the same map).
- Deep: f and g are feedforward networks (ch. 5) with hidden widths h₁, …, h_L in the encoder and the
  mirrored widths h_L, …, h₁ in the decoder, a scalar activation S after every hidden affine map, the
  code and the output affine. Nonlinear codes can beat PCA's reconstruction at the same k.
- Denoising: during training the encoder sees a corrupted x̃ = x + ε, ε ~ N(0, σ²I) (σ = noise_std), and
  the loss is ‖x − g(f(x̃))‖²: the target is the clean image, so the network must learn the data's
  structure rather than the identity. Validation and test reconstruct clean inputs.

Sampling (every autoencoder, so each can be scored as a generative model): fit a Gaussian N(m, C) to the
training codes zᵢ = f(xᵢ), with m their mean and C their full covariance, draw z = m + Lε with C = LLᵀ
(Cholesky) and ε ~ N(0, I), and decode g(z).
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from modules._feedforward import Activation, feedforward, small_widths
from pipeline.spec import DataSpec
from pipeline.core.generative import GenerativeModule
from pipeline.config import OptimizerConfig, SchedulerConfig


def pca_reconstruction(x: torch.Tensor, x_train: torch.Tensor, k: int) -> torch.Tensor:
    """x̄ + V_kV_kᵀ(x − x̄) with x̄ the mean of x_train and V_k the top-k right singular vectors of the
    centred x_train (in float64), in x's shape and dtype: the best rank-k affine reconstruction."""
    train = x_train.flatten(1).double()
    mean = train.mean(0)
    _, _, vh = torch.linalg.svd(train - mean, full_matrices=False)
    basis = vh[:k].T  # (p, k), orthonormal columns
    flat = x.flatten(1).double() - mean
    return (mean + flat @ basis @ basis.T).reshape(x.shape).to(x.dtype)


class GaussianCodes:
    """N(m, C) fitted to codes (n, k), sampled as m + Lε with C + δI = LLᵀ, ε drawn from a generator."""

    def __init__(self, codes: torch.Tensor, jitter: float = 1e-6):
        codes = codes.double()
        self.mean = codes.mean(0)
        covariance = torch.cov(codes.T).reshape(codes.shape[1], codes.shape[1])  # (k, k), also for k = 1
        self.scale = torch.linalg.cholesky(covariance + jitter * torch.eye(codes.shape[1], dtype=codes.dtype, device=codes.device))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        # drawn where the generator is (a CPU one by default), then beside the codes' statistics
        eps = torch.randn(n, len(self.mean), generator=generator, dtype=self.mean.dtype, device=generator.device)
        return (self.mean + eps.to(self.mean.device) @ self.scale.T).float()


class Autoencoder(GenerativeModule):
    """x (B, C, H, W) -> flatten -> encoder -> z (B, k) -> decoder -> unflatten -> x̂ (B, C, H, W)."""

    CHAPTER = 3

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        latent_size: int,  # the code size k
        hidden_sizes: list[int],  # encoder hidden widths, mirrored in the decoder; [] = linear autoencoder
        activation: Activation,  # the scalar activation S of the hidden layers (unused when linear)
        noise_std: float,  # σ of the Gaussian corruption of training inputs; 0 = plain autoencoder
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.latent_size = latent_size
        self.noise_std = noise_std
        pixels = math.prod(data.input_shape)
        self.encoder = nn.Sequential(nn.Flatten(), feedforward([pixels, *hidden_sizes, latent_size], activation))
        self.decoder = nn.Sequential(
            feedforward([latent_size, *reversed(hidden_sizes), pixels], activation), nn.Unflatten(1, data.input_shape)
        )
        self.sampler: GaussianCodes | None = None  # set by fit_sampler

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        pixels = math.prod(data.input_shape) if data is not None else None
        if model["latent_size"] < 1 or (pixels is not None and model["latent_size"] >= pixels):
            bound = f" and below the {pixels} input values" if pixels is not None else ""
            raise ValueError(f"latent_size: must be a positive integer{bound}, got {model['latent_size']}")
        if any(width < 1 for width in model["hidden_sizes"]):
            raise ValueError(f"hidden_sizes: widths must be positive integers, got {model['hidden_sizes']}")
        if model["noise_std"] < 0:
            raise ValueError(f"noise_std: must be zero or positive, got {model['noise_std']}")

    @staticmethod
    def small_config(model: dict) -> dict:
        return {**model, "hidden_sizes": small_widths(model["hidden_sizes"])}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction g(f(x))."""
        return self.decoder(self.encoder(x))

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Mean squared error per pixel of reconstructing x from x̃ = x + σε (x̃ = x when σ = 0)."""
        corrupted = x + self.noise_std * torch.randn_like(x) if self.noise_std else x
        return F.mse_loss(self(corrupted), x)

    def validation_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The clean reconstruction error per pixel (deterministic, and the test metric's)."""
        return F.mse_loss(self(x), x)

    def fit_sampler(self, x_train: torch.Tensor) -> None:
        with torch.no_grad():
            self.sampler = GaussianCodes(self.encoder(x_train))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.sampler is None:
            raise RuntimeError("fit_sampler(x_train) must be called before sample")
        with torch.no_grad():
            return self.decoder(self.sampler.sample(n, generator).to(self.device))

    def test_metrics(self, x: torch.Tensor, x_train: torch.Tensor) -> dict[str, float]:
        """Clean test reconstruction MSE per pixel, PCA's with the same k (fitted on x_train), their ratio."""
        with torch.no_grad():
            mse = float(F.mse_loss(self(x), x))
        pca_mse = float(F.mse_loss(pca_reconstruction(x, x_train, self.latent_size), x))
        return {"mse": mse, "pca_mse": pca_mse, "mse_over_pca": mse / pca_mse}


MODEL = Autoencoder

"""Denoising diffusion probabilistic model, DDPM (ch. 8), with a DDIM sampler.

Forward (noising) process over t = 1, …, T with a variance schedule β_t, here linear from β_start
to β_end: q(x_t | x_{t−1}) = N(√(1 − β_t) x_{t−1}, β_t I). With α_t = 1 − β_t and ᾱ_t = Π_{s≤t} α_s
it has the closed form
    q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I),   i.e.   x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε,  ε ~ N(0, I),
and ᾱ_T ≈ 0, so x_T is close to pure noise. Given x_0, the step back is Gaussian too (the posterior):
    q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I),
    μ̃_t = √ᾱ_{t−1} β_t / (1 − ᾱ_t) · x_0 + √α_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · x_t,
    β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · β_t.

Reverse (generative) process: p_θ(x_{t−1} | x_t) = N(μ̃_t(x_t, x̂_0), β̃_t I), where a network guesses
x_0 from (x_t, t). With ε-prediction (Ho et al.) the network ε_θ(x_t, t) predicts the noise and
x̂_0 = (x_t − √(1 − ᾱ_t) ε_θ) / √ᾱ_t; then μ̃_t = (x_t − β_t / √(1 − ᾱ_t) · ε_θ) / √α_t. The simplified
variational bound is the loss
    L = E_{t ~ U{1..T}, x_0, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖²
(with x_0-prediction, ‖x_0 − x̂_0‖² instead). ε_θ is, up to −√(1 − ᾱ_t), the score ∇ log q_t(x_t).

Samplers, both from x_T ~ N(0, I):
- ancestral DDPM: T steps x_{t−1} = μ̃_t(x_t, x̂_0) + √β̃_t z, z ~ N(0, I);
- DDIM (Song et al., η = 0): deterministic steps over a subsequence τ_1 < … < τ_S of the T steps,
  x_{τ_{i−1}} = √ᾱ_{τ_{i−1}} x̂_0 + √(1 − ᾱ_{τ_{i−1}}) ε̂, with ᾱ_{τ_0} = 1 (the last step returns x̂_0).

The network sees an exponential moving average of its own weights for validation and sampling:
θ_EMA ← d θ_EMA + (1 − d) θ after every optimizer step (the first step copies θ).

Indexing: the code's t = 0, …, T − 1 is the math's t = 1, …, T (betas[0] = β_1).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from modules._feedforward import feedforward
from pipeline.spec import DataSpec
from pipeline.core.generative import GenerativeModule
from pipeline.config import OptimizerConfig, SchedulerConfig

Prediction = Literal["epsilon", "x0"]
Sampler = Literal["ddpm", "ddim"]

VALIDATION_SEED = 0  # the same t and ε for every validation pass, so val/loss is comparable across epochs


def linear_betas(beta_start: float, beta_end: float, steps: int) -> torch.Tensor:
    """β_1, …, β_T evenly spaced from β_start to β_end (float64, for the products below)."""
    return torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer-style embedding of the integer steps t (B,): [sin(t ω_k), cos(t ω_k)], ω_k = 10000^(−k / (dim/2))."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, dim)


class ResidualBlock(nn.Module):
    """h + W₂ SiLU(W₁ SiLU(LayerNorm h) + W_t e(t)): the step's embedding shifts the hidden units."""

    def __init__(self, features: int, time_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(features)
        self.inner = nn.Linear(features, features)
        self.time = nn.Linear(time_features, features)
        self.outer = nn.Linear(features, features)

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        inner = self.inner(F.silu(self.norm(h))) + self.time(embedding)
        return h + self.outer(F.silu(inner))


class Denoiser(nn.Module):
    """(x_t (B, C, H, W), t (B,)) -> ε̂ or x̂_0 (B, C, H, W): an MLP on the flattened pixels with residual
    blocks and a sinusoidal time embedding."""

    def __init__(self, shape: tuple[int, ...], features: int, blocks: int, time_features: int):
        super().__init__()
        pixels = math.prod(shape)
        self.shape = tuple(shape)
        self.time_features = time_features
        self.time_mlp = feedforward([time_features, time_features, time_features], nn.SiLU)
        self.input = nn.Linear(pixels, features)
        self.blocks = nn.ModuleList(ResidualBlock(features, time_features) for _ in range(blocks))
        self.norm = nn.LayerNorm(features)
        self.output = nn.Linear(features, pixels)
        nn.init.zeros_(self.output.weight)  # predicts 0 at first: the mean of ε
        nn.init.zeros_(self.output.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        embedding = F.silu(self.time_mlp(sinusoidal_embedding(t, self.time_features)))
        h = self.input(x.flatten(1))
        for block in self.blocks:
            h = block(h, embedding)
        return self.output(F.silu(self.norm(h))).reshape(len(x), *self.shape)


class DDPM(GenerativeModule):
    """The schedule as buffers, the denoiser, its EMA copy and the DDPM/DDIM samplers."""

    CHAPTER = 8

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        steps: int,  # T, the number of diffusion steps
        beta_start: float,  # β_1 of the linear schedule
        beta_end: float,  # β_T of the linear schedule
        prediction: Prediction,  # what the network predicts: the noise ε (Ho et al.) or x_0
        features: int,  # the denoiser's hidden units
        blocks: int,  # the denoiser's residual blocks
        time_features: int,  # size of the sinusoidal time embedding (even)
        ema_decay: float,  # d in θ_EMA ← d θ_EMA + (1 − d) θ
        sampler: Sampler,  # ddpm: T ancestral steps; ddim: ddim_steps deterministic steps (η = 0)
        ddim_steps: int,  # S, the DDIM sampler's number of steps
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.steps, self.prediction, self.sampler, self.ddim_steps = steps, prediction, sampler, ddim_steps
        betas = linear_betas(beta_start, beta_end, steps)
        alphas = 1 - betas
        alphas_cumprod = torch.cumprod(alphas, dim=0)
        alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])  # ᾱ_0 = 1
        schedule = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1 - alphas_cumprod).sqrt(),
            # β̃_t and the two coefficients of μ̃_t
            "posterior_variance": (1 - alphas_cumprod_prev) / (1 - alphas_cumprod) * betas,
            "posterior_mean_x0": alphas_cumprod_prev.sqrt() * betas / (1 - alphas_cumprod),
            "posterior_mean_xt": alphas.sqrt() * (1 - alphas_cumprod_prev) / (1 - alphas_cumprod),
        }
        for name, value in schedule.items():  # float32 buffers: they follow the module's device
            self.register_buffer(name, value.float())
        self.net = Denoiser(data.input_shape, features, blocks, time_features)
        # The EMA copy is a submodule (in the checkpoint); no gradients, so the optimizer leaves it alone.
        self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
        self.ema.requires_grad_(False)

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        if model["steps"] < 2:
            raise ValueError(f"steps: must be at least 2, got {model['steps']}")
        if not 0 < model["beta_start"] <= model["beta_end"] < 1:
            raise ValueError(
                f"beta_start: need 0 < beta_start <= beta_end < 1, got {model['beta_start']} and {model['beta_end']}"
            )
        if model["features"] < 1:
            raise ValueError(f"features: must be a positive integer, got {model['features']}")
        if model["blocks"] < 0:
            raise ValueError(f"blocks: must be 0 or more, got {model['blocks']}")
        if model["time_features"] < 2 or model["time_features"] % 2:
            raise ValueError(f"time_features: must be an even integer >= 2, got {model['time_features']}")
        if not 0 <= model["ema_decay"] < 1:
            raise ValueError(f"ema_decay: must be in [0, 1), got {model['ema_decay']}")
        if not 1 <= model["ddim_steps"] <= model["steps"]:
            raise ValueError(f"ddim_steps: must be in [1, steps = {model['steps']}], got {model['ddim_steps']}")

    @staticmethod
    def small_config(model: dict) -> dict:
        """A small denoiser and a short chain."""
        return {**model, "features": 32, "blocks": 1, "time_features": 16, "steps": 50, "ddim_steps": 10}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())  # the EMA copy is not counted twice

    # --- the forward process and the loss -------------------------------------------------------

    def _at(self, buffer: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """buffer[t] shaped (B, 1, …, 1) to broadcast against `like`."""
        return buffer[t].reshape(len(t), *([1] * (like.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, a draw of q(x_t | x_0)."""
        return self._at(self.sqrt_alphas_cumprod, t, x0) * x0 + self._at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def diffusion_loss(self, net: nn.Module, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE between the network's output and its target (ε, or x_0) at t ~ U{1..T}."""
        t = torch.randint(0, self.steps, (len(x0),), device=x0.device, generator=generator)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        target = noise if self.prediction == "epsilon" else x0
        return F.mse_loss(net(self.q_sample(x0, t, noise), t), target)

    def training_loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.diffusion_loss(self.net, x)

    def validation_loss(self, x: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device=x.device).manual_seed(VALIDATION_SEED)
        return self.diffusion_loss(self.ema.module, x, generator)

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        self.ema.update_parameters(self.net)  # after every optimizer step (not every batch under accumulation)

    # --- the reverse process --------------------------------------------------------------------

    def predict_x0_eps(self, net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) from x_t, whichever the network predicts: x_t = √ᾱ_t x̂_0 + √(1 − ᾱ_t) ε̂."""
        output = net(x, t)
        a, s = self._at(self.sqrt_alphas_cumprod, t, x), self._at(self.sqrt_one_minus_alphas_cumprod, t, x)
        if self.prediction == "epsilon":
            return (x - s * output) / a, output
        return output, (x - a * output) / s

    @torch.no_grad()
    def ancestral_step(self, net: nn.Module, x: torch.Tensor, step: int, generator: torch.Generator) -> torch.Tensor:
        """One draw of p_θ(x_{t−1} | x_t) = N(μ̃_t(x_t, x̂_0), β̃_t I) (the mean alone at the last step, β̃_1 = 0)."""
        t = torch.full((len(x),), step, dtype=torch.long, device=x.device)
        x0, _ = self.predict_x0_eps(net, x, t)
        mean = self._at(self.posterior_mean_x0, t, x) * x0 + self._at(self.posterior_mean_xt, t, x) * x
        if step == 0:
            return mean
        noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
        return mean + self._at(self.posterior_variance, t, x).sqrt() * noise

    @torch.no_grad()
    def ancestral_sample(self, net: nn.Module, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """From x_T = x, the T ancestral steps down to x_0."""
        for step in reversed(range(self.steps)):
            x = self.ancestral_step(net, x, step, generator)
        return x

    def ddim_timesteps(self) -> list[int]:
        """τ_1 < … < τ_S: S steps evenly spaced over 0 … T − 1 (code indices), always ending at T − 1."""
        return torch.linspace(0, self.steps - 1, self.ddim_steps).round().long().unique().tolist()

    @torch.no_grad()
    def ddim_sample(self, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """From x_{τ_S} = x, deterministic steps x_{τ_{i−1}} = √ᾱ_{τ_{i−1}} x̂_0 + √(1 − ᾱ_{τ_{i−1}}) ε̂."""
        taus = self.ddim_timesteps()
        for i in reversed(range(len(taus))):
            t = torch.full((len(x),), taus[i], dtype=torch.long, device=x.device)
            x0, eps = self.predict_x0_eps(net, x, t)
            if i == 0:
                return x0  # ᾱ_{τ_0} = 1
            abar_prev = self.alphas_cumprod[taus[i - 1]]
            x = abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps
        return x

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n images with the EMA network; every random number (x_T, the ancestral z) from `generator`."""
        net = self.ema.module.eval()
        x = torch.randn((n, *self.data_spec.input_shape), generator=generator, device=generator.device).to(self.device)
        return self.ancestral_sample(net, x, generator) if self.sampler == "ddpm" else self.ddim_sample(net, x)


MODEL = DDPM

"""Generative adversarial network (ch. 8).

A generator G_θ maps latent noise z ~ N(0, I_m) to an image x̃ = G_θ(z); a discriminator (critic)
D_φ scores images. The two play a game, trained by alternating gradient steps:

- `standard` (Goodfellow et al.): D_φ(x) = σ(s_φ(x)) is the probability that x is real, and
  D maximises E log D(x) + E log(1 − D(G(z))), i.e. minimises the binary cross-entropy
      L_D = −E_x log σ(s(x)) − E_z log(1 − σ(s(G(z)))).
  Against the optimal D*(x) = p_data(x) / (p_data(x) + p_G(x)) the game's value is
  2 JS(p_data ‖ p_G) − log 4, the Jensen–Shannon divergence up to constants. The generator minimises the non-saturating loss L_G = −E_z log D(G(z)) rather than
  E log(1 − D(G(z))), whose gradient vanishes while D easily rejects the fakes early on.
- `wgan_clip` and `wgan_gp` (Wasserstein GAN): by Kantorovich–Rubinstein duality
      W(p_data, p_G) = sup_{‖f‖_L ≤ 1} E_x f(x) − E_z f(G(z)),
  so a critic f = D_φ (a real score, no sigmoid) minimises L_D = E_z D(G(z)) − E_x D(x) over a set
  of (roughly) 1-Lipschitz functions, and the generator minimises L_G = −E_z D(G(z)). The Lipschitz
  constraint is enforced either by clipping every critic weight to [−c, c] after each critic step
  (`wgan_clip`), or by the gradient penalty (`wgan_gp`, Gulrajani et al.)
      λ E_x̂ (‖∇_x̂ D(x̂)‖₂ − 1)²,  x̂ = ε x + (1 − ε) G(z), ε ~ U[0, 1] per sample,
  added to L_D: the optimal critic has unit gradient norm on the lines between real and fake points.

Each training batch makes n_critic critic steps (fresh noise each, the same real batch) and then one
generator step, with Lightning's manual optimization and one optimizer per network (the experiment's
optimizer config for both; Adam's (β₁, β₂) from `betas`, though a one-cycle schedule cycles β₁
itself). Lightning steps no scheduler under manual optimization: epoch schedules are stepped at each
epoch's end, one-cycle once a batch, the count it was built with.

Networks: multilayer perceptrons on the flattened image, with leaky-ReLU hidden layers; the
generator's output layer is affine (images in the prepared data's standardized units), the critic's
is one score. The critic has no batch normalization, which would couple the samples of a batch that
the gradient penalty treats one by one.

train/loss and val/loss are both the discriminator's estimate of the divergence the generator
minimises, −L_D up to a constant: E D(x) − E D(G(z)) ≈ W (Wasserstein variants), and
log 4 − L_D ≈ 2 JS(p_data, p_G) (standard; 0 when D cannot tell, 2 log 2 when it always can). It is
measured on each training batch before the critic trains on it, and on the validation images against
fakes from a fixed seed; lower means a generator the discriminator finds harder to tell from the data.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from modules._feedforward import feedforward, small_widths
from pipeline.spec import DataSpec
from pipeline.core.family import build_optimizer, build_scheduler
from pipeline.core.generative import GenerativeModule
from pipeline.config import OptimizerConfig, SchedulerConfig

Loss = Literal["standard", "wgan_gp", "wgan_clip"]

VALIDATION_SEED = 0  # the noise of the validation fakes: the same every epoch
LEAKY_RELU = partial(nn.LeakyReLU, 0.2)  # the hidden activation of both networks, slope 0.2 below zero


def discriminator_loss(loss: Loss, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """L_D without any penalty: binary cross-entropy on logits (standard) or E D(fake) − E D(real)."""
    if loss == "standard":  # −log σ(s) = softplus(−s), −log(1 − σ(s)) = softplus(s)
        return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean()
    return fake_scores.mean() - real_scores.mean()


def divergence_estimate(loss: Loss, real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """−L_D + const: E D(x) − E D(G(z)) (Wasserstein, ≈ W) or log 4 − L_D (standard, ≈ 2 JS)."""
    constant = math.log(4) if loss == "standard" else 0.0
    return constant - discriminator_loss(loss, real_scores, fake_scores)


def generator_loss(loss: Loss, fake_scores: torch.Tensor) -> torch.Tensor:
    """L_G: the non-saturating −E log σ(s(G(z))) (standard) or −E D(G(z)) (Wasserstein)."""
    if loss == "standard":
        return F.softplus(-fake_scores).mean()
    return -fake_scores.mean()


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, epsilon: torch.Tensor,
                     scale: float = 1.0) -> torch.Tensor:
    """E (‖∇_x̂ D(x̂)‖₂ − 1)² at x̂ = ε x + (1 − ε) x̃, ε (B,) per sample; differentiable in the critic's
    weights (create_graph), so the critic's step descends it. `scale`: 16-mixed training's loss scale,
    by which D's output is multiplied before the inner gradient and the gradient divided after, so that
    its half-precision terms do not underflow (PyTorch's AMP recipe for gradient penalties)."""
    shape = (-1,) + (1,) * (real.dim() - 1)
    mixed = (epsilon.view(shape) * real + (1 - epsilon.view(shape)) * fake).requires_grad_(True)
    output = critic(mixed).sum()
    if scale == 1.0:
        (gradient,) = torch.autograd.grad(output, mixed, create_graph=True)
    else:
        (scaled,) = torch.autograd.grad(output * scale, mixed, create_graph=True)
        gradient = scaled / scale
    return ((gradient.flatten(1).norm(dim=1) - 1) ** 2).mean()


class GenerativeAdversarialNetwork(GenerativeModule):
    """z (B, m) -> G -> images (B, C, H, W) -> D -> scores (B,)."""

    CHAPTER = 8
    MANUAL_OPTIMIZATION = True  # the generator and the critic, each stepped by its own optimizer in training_step
    OPTIMIZERS = 2
    UNUSED_PARAMETERS = True  # the critic's backward leaves the generator without gradients

    def __init__(
        self,
        *,
        data: DataSpec,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        latent_size: int,  # m, the dimension of the noise z
        generator_sizes: list[int],  # hidden widths of the generator
        critic_sizes: list[int],  # hidden widths of the discriminator / critic
        loss: Loss,  # standard (non-saturating), wgan_gp or wgan_clip
        n_critic: int,  # critic steps per generator step
        gp_weight: float,  # λ of the gradient penalty (wgan_gp)
        clip_value: float,  # c, critic weights clipped to [−c, c] (wgan_clip)
        betas: list[float],  # Adam's (β₁, β₂) for both networks (adam and adamw only)
    ):
        super().__init__(data=data, optimizer=optimizer, scheduler=scheduler)
        self.latent_size = latent_size
        self.loss_name = loss
        self.n_critic = n_critic
        self.gp_weight = gp_weight
        self.clip_value = clip_value
        self.betas = tuple(betas)
        pixels = math.prod(data.input_shape)
        self.generator = feedforward([latent_size, *generator_sizes, pixels], LEAKY_RELU)
        self.critic = nn.Sequential(nn.Flatten(), feedforward([pixels, *critic_sizes, 1], LEAKY_RELU), nn.Flatten(0))

    @staticmethod
    def check_config(model: dict, data: DataSpec | None = None) -> None:
        if model["latent_size"] < 1:
            raise ValueError(f"latent_size: must be a positive integer, got {model['latent_size']}")
        for key in ("generator_sizes", "critic_sizes"):
            if any(width < 1 for width in model[key]):
                raise ValueError(f"{key}: widths must be positive integers, got {model[key]}")
        if model["n_critic"] < 1:
            raise ValueError(f"n_critic: must be a positive integer, got {model['n_critic']}")
        if model["gp_weight"] < 0:
            raise ValueError(f"gp_weight: must be zero or positive, got {model['gp_weight']}")
        if model["clip_value"] <= 0:
            raise ValueError(f"clip_value: must be positive, got {model['clip_value']}")
        betas = model["betas"]
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas: must be two numbers in [0, 1) (Adam's β₁, β₂), got {betas}")

    @staticmethod
    def small_config(model: dict) -> dict:
        return {**model, "generator_sizes": small_widths(model["generator_sizes"]),
                "critic_sizes": small_widths(model["critic_sizes"])}

    # --- the two networks -----------------------------------------------------------------------

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): noise (B, m) -> images (B, C, H, W)."""
        return self.generator(z).view(len(z), *self.data_spec.input_shape)

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.latent_size, device=self.device)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.latent_size, generator=generator).to(self.device)
        return self(z)

    # --- the game -------------------------------------------------------------------------------

    def critic_step(self, real: torch.Tensor, optimizer) -> torch.Tensor:
        """One step of D on L_D (+ λ · penalty, or followed by clipping); returns the divergence
        estimate before the step."""
        with torch.no_grad():
            fake = self(self.noise(len(real)))
        real_scores, fake_scores = self.critic(real), self.critic(fake)
        loss = discriminator_loss(self.loss_name, real_scores, fake_scores)
        if self.loss_name == "wgan_gp" and self.gp_weight:
            epsilon = torch.rand(len(real), device=self.device)
            loss = loss + self.gp_weight * gradient_penalty(self.critic, real, fake, epsilon, self.loss_scale())
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        if self.loss_name == "wgan_clip":
            with torch.no_grad():
                for parameter in self.critic.parameters():
                    parameter.clamp_(-self.clip_value, self.clip_value)
        return divergence_estimate(self.loss_name, real_scores.detach(), fake_scores.detach())

    def loss_scale(self) -> float:
        """The GradScaler's current scale under 16-mixed (Lightning's MixedPrecision plugin), else 1."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        return 1.0 if scaler is None else float(scaler.get_scale())

    def generator_step(self, batch_size: int, optimizer) -> torch.Tensor:
        """One step of G on L_G with fresh noise; the critic's weights get no gradient."""
        optimizer.zero_grad()
        with self.toggled_optimizer(optimizer):  # requires_grad off for the critic's weights
            loss = generator_loss(self.loss_name, self.critic(self(self.noise(batch_size))))
            self.manual_backward(loss)
        optimizer.step()
        return loss.detach()

    def training_step(self, batch, batch_idx):
        x, _ = batch
        generator_optimizer, critic_optimizer = self.optimizers()
        estimates = [self.critic_step(x, critic_optimizer) for _ in range(self.n_critic)]
        self.generator_step(len(x), generator_optimizer)
        for config in self.trainer.lr_scheduler_configs:  # one-cycle: one step a batch, as it counts them
            if config.interval == "step":
                config.scheduler.step()
        return estimates[0]  # before the critic trained on this batch: comparable with val/loss

    def on_train_epoch_end(self) -> None:
        for config in self.trainer.lr_scheduler_configs:  # manual optimization: Lightning steps none
            if config.interval == "epoch":
                config.scheduler.step()

    def validation_loss(self, x: torch.Tensor) -> torch.Tensor:
        """The divergence estimate on the validation images against as many fakes from a fixed seed."""
        fake = self.sample(len(x), torch.Generator().manual_seed(VALIDATION_SEED))
        return divergence_estimate(self.loss_name, self.critic(x), self.critic(fake))

    def configure_optimizers(self):
        optimizers, schedulers = [], []
        for network in (self.generator, self.critic):  # the generator first: its rate is train/lr
            optimizer = build_optimizer(network.parameters(), self.optimizer_config)
            for group in optimizer.param_groups:
                if "betas" in group:
                    group["betas"] = self.betas
            optimizers.append(optimizer)
            scheduler = build_scheduler(
                optimizer, self.scheduler_config, self.trainer.max_epochs, int(self.trainer.estimated_stepping_batches)
            )
            if scheduler is not None:
                schedulers.append(scheduler)
        return optimizers, schedulers


MODEL = GenerativeAdversarialNetwork

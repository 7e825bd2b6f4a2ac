"""Generative adversarial network (ch. 8): the losses, the gradient penalty, weight clipping, the
alternating manual-optimization steps, sampling, config checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import math

from modules.gan import (
    GenerativeAdversarialNetwork, discriminator_loss, divergence_estimate, generator_loss, gradient_penalty,
)
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig

from conftest import quiet_trainer

ADAM = OptimizerConfig(name="adam", lr=1e-3, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
SPEC = DataSpec("multiclass", (1, 4, 4), 3)
VALID = {"latent_size": 4, "generator_sizes": [16], "critic_sizes": [16], "loss": "standard", "n_critic": 1,
         "gp_weight": 10.0, "clip_value": 0.01, "betas": [0.5, 0.9]}


def make_gan(**overrides) -> GenerativeAdversarialNetwork:
    return GenerativeAdversarialNetwork(data=SPEC, optimizer=ADAM, scheduler=NO_SCHEDULE, **{**VALID, **overrides})


def fit(model: GenerativeAdversarialNetwork, batches: int = 2, batch_size: int = 8, **trainer_kwargs):
    """A short Lightning fit on random images (manual optimization needs a Trainer)."""
    x = torch.randn(batches * batch_size, *SPEC.input_shape)
    loader = DataLoader(TensorDataset(x, torch.zeros(len(x), dtype=torch.long)), batch_size=batch_size)
    trainer = quiet_trainer(**{"max_epochs": 1, "num_sanity_val_steps": 0, "limit_val_batches": 0, **trainer_kwargs})
    trainer.fit(model, train_dataloaders=loader)
    return trainer


def snapshot(network: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in network.parameters()]


def changed(before: list[torch.Tensor], network: nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, network.parameters()))


# --- the losses -----------------------------------------------------------------------------------


def test_discriminator_and_generator_losses_are_the_book_formulas():
    torch.manual_seed(0)
    real, fake = torch.randn(7), torch.randn(7)
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    expected_d = -(torch.log(d_real).mean() + torch.log(1 - d_fake).mean())
    assert discriminator_loss("standard", real, fake).item() == pytest.approx(expected_d.item(), rel=1e-6)
    # non-saturating: −mean log D(G(z)), not mean log(1 − D(G(z)))
    assert generator_loss("standard", fake).item() == pytest.approx(-torch.log(d_fake).mean().item(), rel=1e-6)
    for loss in ("wgan_gp", "wgan_clip"):
        assert discriminator_loss(loss, real, fake).item() == pytest.approx((fake.mean() - real.mean()).item(), rel=1e-6)
        assert generator_loss(loss, fake).item() == pytest.approx(-fake.mean().item(), rel=1e-6)


def test_divergence_estimate_is_minus_the_discriminator_loss_shifted_to_zero_at_chance():
    torch.manual_seed(0)
    real, fake = torch.randn(7), torch.randn(7)
    assert divergence_estimate("standard", real, fake).item() == pytest.approx(
        math.log(4) - discriminator_loss("standard", real, fake).item(), rel=1e-6)
    assert divergence_estimate("wgan_gp", real, fake).item() == pytest.approx((real.mean() - fake.mean()).item(), rel=1e-6)
    chance = torch.zeros(7)  # D = 1/2 everywhere (standard), equal scores (Wasserstein): no divergence seen
    assert divergence_estimate("standard", chance, chance).item() == pytest.approx(0.0, abs=1e-6)
    assert divergence_estimate("wgan_clip", chance + 3, chance + 3).item() == 0.0


def test_generator_step_minimises_minus_mean_log_d_of_the_fakes():
    torch.manual_seed(0)
    gan = make_gan()
    z = torch.randn(5, VALID["latent_size"])
    scores = gan.critic(gan(z))
    assert generator_loss("standard", scores).item() == pytest.approx(
        -torch.log(torch.sigmoid(scores)).mean().item(), rel=1e-5)


# --- the gradient penalty -------------------------------------------------------------------------


def test_gradient_penalty_matches_an_independent_gradient_by_torch_func():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.Tanh(), nn.Linear(6, 1), nn.Flatten(0))
    real, fake, epsilon = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4), torch.rand(5)
    expected = []
    for i in range(5):
        point = epsilon[i] * real[i] + (1 - epsilon[i]) * fake[i]
        grad = torch.func.grad(lambda p: critic(p.unsqueeze(0)).sum())(point)
        expected.append((grad.norm() - 1) ** 2)
    assert gradient_penalty(critic, real, fake, epsilon).item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)


def test_gradient_penalty_matches_finite_differences_for_a_linear_critic():
    # D(x) = w·x + b has ∇D = w everywhere: the penalty is (‖w‖ − 1)² whatever the points
    torch.manual_seed(0)
    linear = nn.Linear(16, 1)
    critic = nn.Sequential(nn.Flatten(), linear, nn.Flatten(0))
    real, fake, epsilon = torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4), torch.rand(4)
    h = 1e-3
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    critic64 = critic.double()
    numeric = torch.stack([(critic64(x + h * e.view(1, 1, 4, 4)) - critic64(x - h * e.view(1, 1, 4, 4))) / (2 * h)
                           for e in torch.eye(16, dtype=torch.float64)]).flatten()
    critic.float()
    expected = (numeric.norm().item() - 1) ** 2
    assert gradient_penalty(critic, real, fake, epsilon).item() == pytest.approx(expected, rel=1e-4)
    assert expected > 0.01  # a non-trivial penalty: the test can tell a wrong norm


def test_gradient_penalty_under_a_loss_scale_is_the_same_penalty():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1), nn.Flatten(0))
    real, fake, epsilon = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4), torch.rand(5)
    plain = gradient_penalty(critic, real, fake, epsilon)
    assert gradient_penalty(critic, real, fake, epsilon, scale=2.0**16).item() == pytest.approx(plain.item(), rel=1e-6)


def test_gradient_penalty_is_differentiable_in_the_critic_weights():
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 1), nn.Flatten(0))
    penalty = gradient_penalty(critic, torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4), torch.rand(3))
    penalty.backward()
    assert critic[1].weight.grad is not None and critic[1].weight.grad.abs().sum() > 0


# --- the training steps ---------------------------------------------------------------------------


def test_weight_clipping_keeps_every_critic_weight_within_c_after_a_step():
    torch.manual_seed(0)
    c = 0.01
    gan = make_gan(loss="wgan_clip", clip_value=c)
    assert max(p.abs().max().item() for p in gan.critic.parameters()) > c  # initial weights exceed c
    fit(gan, batches=1)
    weights = torch.cat([p.detach().flatten() for p in gan.critic.parameters()])
    assert weights.abs().max().item() <= c
    assert (weights.abs() == c).any()  # clipped, not merely small


def test_the_other_losses_do_not_clip():
    torch.manual_seed(0)
    gan = make_gan(loss="wgan_gp", clip_value=0.01)
    fit(gan, batches=1)
    assert max(p.abs().max().item() for p in gan.critic.parameters()) > 0.01


@pytest.mark.parametrize("loss", ["standard", "wgan_gp", "wgan_clip"])
def test_one_training_step_updates_both_networks_and_the_generator_step_only_the_generator(loss, monkeypatch):
    torch.manual_seed(0)
    gan = make_gan(loss=loss)
    seen = []
    original = GenerativeAdversarialNetwork.generator_step

    def generator_step(self, batch_size, optimizer):
        critic, generator = snapshot(self.critic), snapshot(self.generator)
        critic_grads = [p.grad.clone() for p in self.critic.parameters()]  # left by the critic step
        result = original(self, batch_size, optimizer)
        seen.append((changed(critic, self.critic), changed(generator, self.generator)))
        # L_G's backward pass computes no gradient for the critic's weights (toggled off)
        assert all(torch.equal(g, p.grad) for g, p in zip(critic_grads, self.critic.parameters()))
        assert all(p.requires_grad for p in self.parameters())  # toggling undone
        return result

    monkeypatch.setattr(GenerativeAdversarialNetwork, "generator_step", generator_step)
    critic, generator = snapshot(gan.critic), snapshot(gan.generator)
    fit(gan, batches=1)
    assert changed(critic, gan.critic) and changed(generator, gan.generator)
    assert seen == [(False, True)]


@pytest.mark.parametrize("n_critic", [1, 3])
def test_n_critic_critic_steps_happen_before_each_generator_step(n_critic, monkeypatch):
    torch.manual_seed(0)
    gan = make_gan(loss="wgan_gp", n_critic=n_critic)
    calls = []
    for name in ("critic_step", "generator_step"):
        original = getattr(GenerativeAdversarialNetwork, name)
        monkeypatch.setattr(GenerativeAdversarialNetwork, name,
                            lambda self, *args, _name=name, _original=original: calls.append(_name) or _original(self, *args))
    trainer = fit(gan, batches=2)
    assert calls == (["critic_step"] * n_critic + ["generator_step"]) * 2
    assert trainer.global_step == 2 * (n_critic + 1)  # Lightning counts every optimizer step


def test_training_logs_the_divergence_estimate_near_zero_for_an_untrained_discriminator():
    torch.manual_seed(0)
    gan = make_gan(loss="standard")
    x = torch.randn(16, *SPEC.input_shape)
    loader = DataLoader(TensorDataset(x, torch.zeros(16, dtype=torch.long)), batch_size=8)
    trainer = quiet_trainer(max_epochs=1, num_sanity_val_steps=0)
    trainer.fit(gan, train_dataloaders=loader, val_dataloaders=loader)
    metrics = trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/loss"])
    # a discriminator one step from its initialization is near chance: log 4 − L_D ≈ 0, far below log 4
    assert abs(metrics["val/loss"].item()) < 0.2 and abs(metrics["train/loss"].item()) < 0.2


def test_validation_loss_uses_fixed_fakes():
    torch.manual_seed(0)
    gan = make_gan(loss="wgan_gp").eval()
    x = torch.randn(10, *SPEC.input_shape)
    with torch.no_grad():
        first = gan.validation_loss(x)
        torch.manual_seed(123)
        assert torch.equal(gan.validation_loss(x), first)


def test_epoch_schedulers_are_stepped_for_both_optimizers():
    torch.manual_seed(0)
    step = SchedulerConfig(name="step", step_size=1, gamma=0.5, warmup_epochs=0)
    gan = GenerativeAdversarialNetwork(data=SPEC, optimizer=ADAM, scheduler=step, **VALID)
    trainer = fit(gan, batches=1, max_epochs=2)
    assert [o.param_groups[0]["lr"] for o in trainer.optimizers] == [pytest.approx(ADAM.lr / 4)] * 2
    assert [o.param_groups[0]["betas"] for o in trainer.optimizers] == [(0.5, 0.9)] * 2


def test_one_cycle_is_stepped_once_a_batch_to_its_last_step():
    torch.manual_seed(0)
    onecycle = SchedulerConfig(name="onecycle", step_size=1, gamma=1.0, warmup_epochs=0)
    gan = GenerativeAdversarialNetwork(data=SPEC, optimizer=ADAM, scheduler=onecycle, **{**VALID, "n_critic": 2})
    trainer = fit(gan, batches=3, max_epochs=2)  # one step too many would raise in OneCycleLR
    for config in trainer.lr_scheduler_configs:
        assert config.scheduler.last_epoch == 6 == config.scheduler.total_steps


@pytest.mark.parametrize(
    ("setting", "message"),
    [({"gradient_clip_val": 1.0}, "gradient clipping is not supported for manual optimization"),
     ({"accumulate_grad_batches": 2}, "gradient accumulation is not supported for manual optimization")],
)
def test_lightning_refuses_automatic_clipping_and_accumulation(setting, message):
    # params.yaml never gets here (pipeline.params refuses both for every manual family, tests/params_cases.py);
    # Lightning's own check at fit time is the second line of defence
    with pytest.raises(Exception, match=message):
        fit(make_gan(), batches=1, **setting)


# --- sampling -------------------------------------------------------------------------------------


def test_sampling_is_reproducible_from_the_generator_alone():
    torch.manual_seed(0)
    gan = make_gan().eval()
    with torch.no_grad():
        first = gan.sample(6, torch.Generator().manual_seed(7))
        torch.manual_seed(99)  # the global generator plays no part
        again = gan.sample(6, torch.Generator().manual_seed(7))
        other = gan.sample(6, torch.Generator().manual_seed(8))
    assert first.shape == (6, *SPEC.input_shape)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


# --- config checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"latent_size": 0}, r"^latent_size: must be a positive integer, got 0"),
        ({"generator_sizes": [16, 0]}, r"^generator_sizes: widths must be positive"),
        ({"critic_sizes": [-1]}, r"^critic_sizes: widths must be positive"),
        ({"n_critic": 0}, r"^n_critic: must be a positive integer, got 0"),
        ({"gp_weight": -1.0}, r"^gp_weight: must be zero or positive"),
        ({"clip_value": 0.0}, r"^clip_value: must be positive, got 0.0"),
        ({"betas": [0.5]}, r"^betas: must be two numbers in \[0, 1\)"),
        ({"betas": [0.5, 1.0]}, r"^betas: must be two numbers in \[0, 1\)"),
    ],
)
def test_check_config_rejects_bad_values_naming_the_key(change, message):
    GenerativeAdversarialNetwork.check_config(VALID)
    with pytest.raises(ValueError, match=message):
        GenerativeAdversarialNetwork.check_config({**VALID, **change})

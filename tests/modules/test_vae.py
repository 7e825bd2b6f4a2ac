"""Variational autoencoder (ch. 8): the closed-form KL, the Gaussian log-likelihood, the ELBO and its
reparameterized gradient, sampling from the prior, config checks, fitting."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from modules.vae import VariationalAutoencoder, gaussian_kl_to_standard, gaussian_log_likelihood
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
SPEC = DataSpec("multiclass", (1, 4, 4), 3)  # 16 pixels


def make_vae(**overrides) -> VariationalAutoencoder:
    model = {"latent_size": 3, "hidden_sizes": [12, 8], "activation": "relu", "decoder_std": 0.5, "beta": 1.0}
    model.update(overrides)
    return VariationalAutoencoder(data=SPEC, optimizer=ADAM, scheduler=NO_SCHEDULE, **model)


def test_closed_form_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, log_var = 2 * torch.randn(50, 4, dtype=torch.float64), 3 * torch.randn(50, 4, dtype=torch.float64)
    expected = kl_divergence(Normal(mu, (0.5 * log_var).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    assert torch.allclose(gaussian_kl_to_standard(mu, log_var), expected, rtol=1e-10, atol=1e-12)
    assert torch.equal(gaussian_kl_to_standard(torch.zeros(2, 4), torch.zeros(2, 4)), torch.zeros(2))  # q = p


def test_log_likelihood_is_the_gaussian_density_with_its_constant():
    torch.manual_seed(0)
    x, mean = torch.randn(6, 1, 4, 4, dtype=torch.float64), torch.randn(6, 1, 4, 4, dtype=torch.float64)
    expected = Normal(mean, 0.3).log_prob(x).flatten(1).sum(-1)
    assert torch.allclose(gaussian_log_likelihood(x, mean, 0.3), expected, rtol=1e-12)
    # x = mean: only the normalizing constant −(p/2) log(2π s²) remains
    assert gaussian_log_likelihood(x, x, 0.3)[0].item() == pytest.approx(-8 * math.log(2 * math.pi * 0.09))


def test_shapes_of_the_posterior_reconstruction_and_loss():
    torch.manual_seed(0)
    vae = make_vae()
    x = torch.randn(5, 1, 4, 4)
    mu, log_var = vae.encode(x)
    assert mu.shape == log_var.shape == (5, 3)
    assert vae(x).shape == (5, 1, 4, 4)
    assert vae.negative_elbo(x, draws=4).shape == (5,)
    assert vae.training_loss(x).shape == ()
    assert [(m.in_features, m.out_features) for m in vae.encoder.modules() if isinstance(m, nn.Linear)][-1] == (8, 6)


def test_negative_elbo_is_reconstruction_nll_plus_beta_kl_with_the_reparameterized_draws():
    torch.manual_seed(0)
    vae = make_vae().double()
    x = torch.randn(5, 1, 4, 4, dtype=torch.float64)
    for beta in (1.0, 0.25):
        got = vae.negative_elbo(x, beta=beta, draws=3, generator=torch.Generator().manual_seed(4))
        mu, log_var = vae.encode(x)
        eps = torch.randn((3, 5, 3), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        z = mu + (0.5 * log_var).exp() * eps
        nll = -torch.stack([Normal(vae.decoder(z[s]), 0.5).log_prob(x).flatten(1).sum(-1) for s in range(3)]).mean(0)
        kl = kl_divergence(Normal(mu, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum(-1)
        assert torch.allclose(got, nll + beta * kl, rtol=1e-10)


def test_training_loss_weights_the_kl_by_beta_and_validation_uses_beta_one():
    torch.manual_seed(0)
    vae = make_vae(beta=0.0)
    x = torch.randn(5, 1, 4, 4)
    torch.manual_seed(1)
    loss = vae.training_loss(x)
    torch.manual_seed(1)
    assert loss.item() == pytest.approx(vae.negative_elbo(x, beta=0.0).mean().item())
    torch.manual_seed(1)
    validation = vae.validation_loss(x).item()
    torch.manual_seed(1)
    assert validation == pytest.approx(vae.negative_elbo(x, beta=1.0).mean().item())
    assert validation > loss.item()  # the same draws plus the KL term, positive here


def test_reparameterization_carries_the_gradient_to_the_mean_and_the_log_variance():
    torch.manual_seed(0)
    vae = make_vae(beta=0.0)  # no KL: the gradient reaches the encoder only through z = μ + σε
    x = torch.randn(8, 1, 4, 4)
    vae.training_loss(x).backward()
    head = [m for m in vae.encoder.modules() if isinstance(m, nn.Linear)][-1]
    mu_rows, log_var_rows = head.weight.grad[:3], head.weight.grad[3:]
    assert torch.isfinite(head.weight.grad).all()
    assert mu_rows.abs().sum() > 0 and log_var_rows.abs().sum() > 0
    # with σ → 0 (log σ² = −∞) the draw is μ itself and no gradient reaches log σ²: the check can fail
    vae.zero_grad()
    with torch.no_grad():
        head.bias[3:] = -200.0
    vae.training_loss(x).backward()
    assert head.weight.grad[3:].abs().max() < 1e-20 < head.weight.grad[:3].abs().max()


def test_sampling_from_the_prior_is_reproducible_from_the_generator_alone():
    torch.manual_seed(0)
    vae = make_vae().eval()
    torch.manual_seed(1)
    first = vae.sample(20, torch.Generator().manual_seed(7))
    torch.manual_seed(2)  # the global generator is not used
    second = vae.sample(20, torch.Generator().manual_seed(7))
    assert first.shape == (20, 1, 4, 4)
    assert torch.equal(first, second)
    assert not torch.allclose(first, vae.sample(20, torch.Generator().manual_seed(8)))
    z = torch.randn(20, 3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, vae.decoder(z).detach())  # the decoder mean at z ~ N(0, I)


def test_test_metrics_are_deterministic_and_consistent():
    torch.manual_seed(0)
    vae = make_vae().eval()
    x = torch.randn(10, 1, 4, 4)
    first, second = vae.test_metrics(x, x), vae.test_metrics(x, x)
    assert first == second
    assert first["mse"] == pytest.approx((vae(x) - x).square().mean().item())
    single = vae.negative_elbo(x, draws=2000, generator=torch.Generator().manual_seed(5)).mean().item()
    assert first["neg_elbo"] == pytest.approx(single, rel=0.02)  # the same expectation, fewer draws


VALID = {"latent_size": 3, "hidden_sizes": [8], "activation": "relu", "decoder_std": 0.5, "beta": 1.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"latent_size": 0}, r"^latent_size: must be a positive integer, got 0"),
        ({"hidden_sizes": [8, 0]}, r"^hidden_sizes: widths must be positive"),
        ({"decoder_std": 0.0}, r"^decoder_std: must be positive, got 0.0"),
        ({"beta": -1.0}, r"^beta: must be zero or positive, got -1.0"),
    ],
)
def test_check_config_rejects_bad_values_naming_the_key(change, message):
    VariationalAutoencoder.check_config(VALID, SPEC)
    with pytest.raises(ValueError, match=message):
        VariationalAutoencoder.check_config({**VALID, **change}, SPEC)


def test_vae_overfits_a_small_batch():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 4, 4)
    y = torch.zeros(16, dtype=torch.long)
    vae = make_vae(hidden_sizes=[64, 64], latent_size=4, decoder_std=0.1)
    with torch.no_grad():
        before = vae.negative_elbo(x, draws=16).mean().item()
    fit_batch(vae, x, y, steps=500)
    with torch.no_grad():
        after = vae.negative_elbo(x, draws=16).mean().item()
        mse = (vae(x) - x).square().mean().item()
    assert mse < 0.05  # the data have unit variance
    assert after < before - 500

"""Denoising diffusion (ch. 8): the schedule, the forward process, the loss, the EMA, the ancestral and
DDIM samplers against exact noise oracles, reproducibility, config checks, fitting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from modules.ddpm import DDPM, Denoiser, sinusoidal_embedding
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig

from conftest import fit_batch, quiet_trainer

ADAM = OptimizerConfig(name="adam", lr=3e-3, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
SMALL = DataSpec("multiclass", (1, 2, 2), 10)  # four pixels: enough for the distribution tests

VALID = {
    "steps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "prediction": "epsilon", "features": 32, "blocks": 1,
    "time_features": 16, "ema_decay": 0.9, "sampler": "ddpm", "ddim_steps": 50,
}


def make_model(spec: DataSpec = SMALL, **overrides) -> DDPM:
    return DDPM(data=spec, optimizer=ADAM, scheduler=NO_SCHEDULE, **{**VALID, **overrides})


class GaussianOracle(nn.Module):
    """The exact denoiser for data x_0 ~ N(μ, s² I): x_t ~ N(√ᾱ μ, v I) with v = ᾱ s² + 1 − ᾱ, and
    E[ε | x_t] = √(1 − ᾱ) (x_t − √ᾱ μ) / v, E[x_0 | x_t] = μ + √ᾱ s² (x_t − √ᾱ μ) / v.
    s = 0 is a single data point μ."""

    def __init__(self, model: DDPM, mean: float, std: float, predict: str = "epsilon"):
        super().__init__()
        self.abar, self.mean, self.var, self.predict = model.alphas_cumprod.double(), mean, std**2, predict

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.abar[t].reshape(-1, *[1] * (x.dim() - 1))
        v = abar * self.var + 1 - abar
        centred = x.double() - abar.sqrt() * self.mean
        out = (1 - abar).sqrt() * centred / v if self.predict == "epsilon" else self.mean + abar.sqrt() * self.var * centred / v
        return out.float()


# --- the schedule and the forward process ------------------------------------------------------


def test_schedule_buffers_match_an_independent_numpy_computation():
    model = make_model(steps=300, beta_start=2e-4, beta_end=0.03)
    betas = np.linspace(2e-4, 0.03, 300)
    abar = np.cumprod(1 - betas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    np.testing.assert_allclose(model.betas.numpy(), betas, rtol=1e-6)
    np.testing.assert_allclose(np.diff(model.betas.numpy()), (0.03 - 2e-4) / 299, rtol=1e-4)  # linear
    np.testing.assert_allclose(model.alphas.numpy(), 1 - betas, rtol=1e-6)
    np.testing.assert_allclose(model.alphas_cumprod.numpy(), abar, rtol=1e-5)
    np.testing.assert_allclose(model.posterior_variance.numpy(), (1 - abar_prev) / (1 - abar) * betas, rtol=1e-5, atol=1e-12)
    assert model.posterior_variance[0] == 0  # the last reverse step adds no noise
    for name in ("betas", "alphas_cumprod", "posterior_variance"):  # buffers: in the checkpoint, not trained
        assert name in model.state_dict() and name not in dict(model.named_parameters())


def test_default_schedule_ends_near_pure_noise():
    model = make_model()
    assert model.betas[0].item() == pytest.approx(1e-4) and model.betas[-1].item() == pytest.approx(0.02)
    assert model.alphas_cumprod[-1].item() < 1e-4  # q(x_T | x_0) ≈ N(0, I)


def test_posterior_mean_from_x0_equals_the_noise_form():
    """μ̃_t(x_t, x̂_0) with x̂_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t is (x_t − β_t / √(1 − ᾱ_t) ε) / √α_t."""
    model = make_model()
    torch.manual_seed(0)
    x, eps = torch.randn(1000, 1, 2, 2, dtype=torch.float64), torch.randn(1000, 1, 2, 2, dtype=torch.float64)
    t = torch.randint(0, 1000, (1000,))
    b = {name: getattr(model, name).double()[t].reshape(-1, 1, 1, 1) for name in
         ("betas", "alphas", "alphas_cumprod", "posterior_mean_x0", "posterior_mean_xt")}
    x0 = (x - (1 - b["alphas_cumprod"]).sqrt() * eps) / b["alphas_cumprod"].sqrt()
    from_x0 = b["posterior_mean_x0"] * x0 + b["posterior_mean_xt"] * x
    from_eps = (x - b["betas"] / (1 - b["alphas_cumprod"]).sqrt() * eps) / b["alphas"].sqrt()
    torch.testing.assert_close(from_x0, from_eps, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("step", [0, 100, 500, 999])
def test_q_sample_has_mean_sqrt_abar_x0_and_variance_one_minus_abar(step):
    model = make_model()
    x0 = torch.tensor([[[[1.5, -0.5], [0.0, 2.5]]]])
    n = 20000
    torch.manual_seed(step)
    t = torch.full((n,), step)
    xt = model.q_sample(x0.expand(n, -1, -1, -1), t, torch.randn(n, 1, 2, 2))
    abar = model.alphas_cumprod[step]
    torch.testing.assert_close(xt.mean(0), abar.sqrt() * x0[0], atol=4 * math.sqrt(1 - abar) / math.sqrt(n) + 1e-4, rtol=0)
    torch.testing.assert_close(xt.var(0), (1 - abar).expand(1, 2, 2), rtol=0.05, atol=1e-6)


# --- the loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
def test_loss_is_zero_for_the_exact_oracle_of_a_single_point_and_not_for_the_other_target(prediction):
    model = make_model(prediction=prediction)
    point = 0.7
    x = torch.full((64, 1, 2, 2), point)
    torch.manual_seed(0)
    assert model.diffusion_loss(GaussianOracle(model, point, 0.0, prediction), x).item() < 1e-8
    other = "x0" if prediction == "epsilon" else "epsilon"
    assert model.diffusion_loss(GaussianOracle(model, point, 0.0, other), x).item() > 0.1


def test_network_overfits_a_small_batch():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 4, 4)
    model = make_model(DataSpec("multiclass", (1, 4, 4), 10), features=128, blocks=2, time_features=32)

    def fixed_loss() -> float:  # the same t and ε before and after
        with torch.no_grad():
            return model.diffusion_loss(model.net, x, torch.Generator().manual_seed(1)).item()

    before = fixed_loss()
    fit_batch(model, x, torch.zeros(16, dtype=torch.long), steps=300)
    assert fixed_loss() < 0.5 * before


# --- the EMA -----------------------------------------------------------------------------------


def test_ema_update_after_an_optimizer_step_is_the_decay_formula():
    torch.manual_seed(0)
    model = make_model(ema_decay=0.8)
    optimizer = torch.optim.SGD(model.net.parameters(), lr=0.1)
    x = torch.randn(8, 1, 2, 2)

    def step():
        def closure():
            optimizer.zero_grad()
            loss = model.training_loss(x)
            loss.backward()
            return loss

        model.optimizer_step(0, 0, optimizer, closure)

    step()  # the first update copies the weights
    for w, e in zip(model.net.parameters(), model.ema.module.parameters()):
        torch.testing.assert_close(e, w.detach())
    before = [e.clone() for e in model.ema.module.parameters()]
    step()
    changed = 0
    for w, e, e0 in zip(model.net.parameters(), model.ema.module.parameters(), before):
        torch.testing.assert_close(e, 0.8 * e0 + 0.2 * w.detach())
        changed += int(not torch.equal(e, w))
    assert changed > 0  # the EMA lags the weights
    assert int(model.ema.n_averaged) == 2


def test_ema_is_updated_once_per_optimizer_step_in_lightning_and_is_in_the_checkpoint():
    torch.manual_seed(0)
    model = make_model()
    x = torch.randn(24, 1, 2, 2)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.zeros(24, dtype=torch.long)), batch_size=8)
    trainer = quiet_trainer(max_epochs=1, limit_val_batches=0, accumulate_grad_batches=1)
    trainer.fit(model, loader)
    assert trainer.global_step == 3 and int(model.ema.n_averaged) == 3
    state = model.state_dict()
    assert "ema.n_averaged" in state and any(k.startswith("ema.module.") for k in state)
    assert model.num_parameters() == sum(p.numel() for p in model.net.parameters())
    assert not any(p.requires_grad for p in model.ema.parameters())


# --- the samplers ------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [3, 50, 700])
def test_an_ancestral_step_with_the_exact_denoiser_of_a_point_is_the_true_posterior(step):
    """For data x_0 = x*, p_θ(x_{t−1} | x_t) must be q(x_{t−1} | x_t, x*) = N(μ̃, β̃): by Bayes, the
    product of q(x_t | x_{t−1}) = N(√α_t x_{t−1}, β_t) and q(x_{t−1} | x*) = N(√ᾱ_{t−1} x*, 1 − ᾱ_{t−1})."""
    model = make_model()
    point, n = 0.8, 40000
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    a, b, prior_mean, prior_var = math.sqrt(1 - betas[step]), betas[step], math.sqrt(abar[step - 1]) * point, 1 - abar[step - 1]
    xt = torch.full((n, 1, 2, 2), 0.5)
    post_var = 1 / (1 / prior_var + a**2 / b)  # Gaussian conjugacy
    post_mean = post_var * (prior_mean / prior_var + a * 0.5 / b)
    draws = model.ancestral_step(GaussianOracle(model, point, 0.0), xt, step, torch.Generator().manual_seed(step))
    assert draws.mean().item() == pytest.approx(post_mean, abs=4 * math.sqrt(post_var / (4 * n)))
    assert draws.var().item() == pytest.approx(post_var, rel=0.02)


def test_validation_loss_uses_fixed_draws():
    model = make_model()
    x = torch.randn(32, 1, 2, 2)
    for p in model.ema.parameters():
        p.data.normal_(0, 0.1)
    torch.manual_seed(1)
    first = model.validation_loss(x)
    torch.manual_seed(2)
    assert model.validation_loss(x).item() == first.item()
    assert model.training_loss(x).item() != model.training_loss(x).item()  # training draws fresh t and ε


@pytest.mark.parametrize("prediction", ["epsilon", "x0"])
def test_ancestral_sampler_with_the_exact_denoiser_recovers_a_gaussian(prediction):
    model = make_model(prediction=prediction)
    mean, std = 1.0, 0.5
    x = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    samples = model.ancestral_sample(GaussianOracle(model, mean, std, prediction), x, torch.Generator().manual_seed(1))
    assert samples.mean().item() == pytest.approx(mean, abs=0.03)
    assert samples.std().item() == pytest.approx(std, rel=0.05)
    # the sampler must use the denoiser: a wrong data distribution's denoiser gives that one
    wrong = model.ancestral_sample(GaussianOracle(model, -1.0, 2.0, prediction), x, torch.Generator().manual_seed(1))
    assert wrong.mean().item() == pytest.approx(-1.0, abs=0.1) and wrong.std().item() == pytest.approx(2.0, rel=0.05)


def test_ancestral_sampler_returns_the_single_data_point():
    model = make_model()
    x = torch.randn(100, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    samples = model.ancestral_sample(GaussianOracle(model, 0.3, 0.0), x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(samples, torch.full_like(samples, 0.3), atol=1e-3, rtol=0)


def test_ddim_with_the_exact_denoiser_recovers_a_gaussian():
    model = make_model(ddim_steps=100)
    x = torch.randn(4000, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    samples = model.ddim_sample(GaussianOracle(model, 1.0, 0.5), x)
    assert samples.mean().item() == pytest.approx(1.0, abs=0.03)
    assert samples.std().item() == pytest.approx(0.5, rel=0.05)


def test_ddim_timesteps_are_evenly_spaced_from_zero_to_T_minus_one():
    assert make_model(steps=1000, ddim_steps=4).ddim_timesteps() == [0, 333, 666, 999]
    assert len(make_model(steps=1000, ddim_steps=50).ddim_timesteps()) == 50


def test_ddim_is_deterministic_given_the_initial_noise():
    torch.manual_seed(0)
    model = make_model(sampler="ddim", ddim_steps=20).eval()
    x = torch.randn(16, 1, 2, 2)
    torch.manual_seed(1)
    first = model.ddim_sample(model.ema.module, x)
    torch.manual_seed(2)  # no other randomness is used
    torch.testing.assert_close(model.ddim_sample(model.ema.module, x), first, rtol=0, atol=0)
    # sample() draws only x_T from the generator: the same as ddim_sample from that draw
    drawn = torch.randn(16, 1, 2, 2, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(model.sample(16, torch.Generator().manual_seed(5)), model.ddim_sample(model.ema.module, drawn))
    # whereas the ancestral sampler from the same x_T depends on the generator's later draws
    a = model.ancestral_sample(model.ema.module, x, torch.Generator().manual_seed(1))
    b = model.ancestral_sample(model.ema.module, x, torch.Generator().manual_seed(2))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_sampling_is_reproducible_from_the_generator_alone(sampler):
    torch.manual_seed(0)
    model = make_model(DataSpec("multiclass", (1, 8, 8), 10), sampler=sampler, steps=100, ddim_steps=10).eval()
    for p in model.ema.parameters():  # a non-trivial network (the output layer starts at zero)
        p.data.normal_(0, 0.1)
    torch.manual_seed(1)
    first = model.sample(6, torch.Generator().manual_seed(3))
    torch.manual_seed(2)
    again = model.sample(6, torch.Generator().manual_seed(3))
    other = model.sample(6, torch.Generator().manual_seed(4))
    assert first.shape == (6, 1, 8, 8)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    assert not torch.allclose(other, first)


def test_sample_uses_the_ema_network_not_the_raw_one():
    torch.manual_seed(0)
    model = make_model(sampler="ddim", ddim_steps=10).eval()
    for p in model.ema.parameters():  # a non-trivial EMA network
        p.data.normal_(0, 0.1)
    for p in model.net.parameters():  # and a raw network far from it
        p.data.normal_(0, 1.0)
    reference = make_model(sampler="ddim", ddim_steps=10).eval()
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("net.")}, strict=False)
    torch.testing.assert_close(model.sample(8, torch.Generator().manual_seed(0)), reference.sample(8, torch.Generator().manual_seed(0)))


# --- the denoiser ------------------------------------------------------------------------------


def test_denoiser_maps_images_and_steps_to_images():
    torch.manual_seed(0)
    net = Denoiser((1, 8, 8), features=32, blocks=2, time_features=16)
    for p in net.parameters():
        p.data.normal_(0, 0.1)
    x = torch.randn(5, 1, 8, 8)
    out = net(x, torch.tensor([0, 1, 2, 500, 999]))
    assert out.shape == (5, 1, 8, 8)
    assert not torch.allclose(net(x, torch.full((5,), 3)), net(x, torch.full((5,), 900)))  # depends on t


def test_sinusoidal_embedding_is_sin_and_cos_of_geometric_frequencies():
    t = torch.tensor([0, 7])
    e = sinusoidal_embedding(t, 8)
    frequencies = 10000.0 ** (-np.arange(4) / 4)
    np.testing.assert_allclose(e[1].numpy(), np.concatenate([np.sin(7 * frequencies), np.cos(7 * frequencies)]), rtol=1e-5)
    np.testing.assert_allclose(e[0].numpy(), [0, 0, 0, 0, 1, 1, 1, 1])


# --- config checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 1}, r"^steps: must be at least 2, got 1"),
        ({"beta_start": 0.0}, r"^beta_start: need 0 < beta_start <= beta_end < 1"),
        ({"beta_start": 0.03, "beta_end": 0.02}, r"^beta_start:"),
        ({"beta_end": 1.0}, r"^beta_start:"),
        ({"features": 0}, r"^features: must be a positive integer, got 0"),
        ({"blocks": -1}, r"^blocks: must be 0 or more"),
        ({"time_features": 15}, r"^time_features: must be an even integer >= 2, got 15"),
        ({"ema_decay": 1.0}, r"^ema_decay: must be in \[0, 1\), got 1.0"),
        ({"ddim_steps": 0}, r"^ddim_steps: must be in \[1, steps = 1000\], got 0"),
        ({"ddim_steps": 1001}, r"^ddim_steps:"),
    ],
)
def test_check_config_rejects_bad_values_naming_the_key(change, message):
    DDPM.check_config(VALID)
    with pytest.raises(ValueError, match=message):
        DDPM.check_config({**VALID, **change})

"""Autoencoders (ch. 3): architecture, PCA's optimum for the linear one (Eckart–Young), denoising, the
Gaussian code sampler, config checks, fitting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modules.autoencoder import Autoencoder, GaussianCodes, pca_reconstruction
from modules._feedforward import ACTIVATIONS
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
SPEC = DataSpec("multiclass", (1, 4, 4), 3)  # 16 pixels


def make_autoencoder(spec: DataSpec = SPEC, **overrides) -> Autoencoder:
    model = {"latent_size": 3, "hidden_sizes": [12, 8], "activation": "relu", "noise_std": 0.0}
    model.update(overrides)
    return Autoencoder(data=spec, optimizer=ADAM, scheduler=NO_SCHEDULE, **model)


def low_rank_data(n: int = 200, k: int = 3, seed: int = 0) -> torch.Tensor:
    """n images (1, 4, 4) = a far-from-zero mean + a rank-k signal with well separated scales + small
    full-rank noise: PCA's top-k subspace is well defined and the biases matter."""
    generator = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator, dtype=torch.float64))
    scales = torch.tensor([4.0, 2.5, 1.5][:k], dtype=torch.float64)
    codes = torch.randn(n, k, generator=generator, dtype=torch.float64) * scales
    noise = 0.1 * torch.randn(n, 16, generator=generator, dtype=torch.float64)
    mean = 3.0 + torch.randn(16, generator=generator, dtype=torch.float64)
    return (mean + codes @ basis[:, :k].T + noise).reshape(n, 1, 4, 4)


def linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


# --- architecture ---------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden_sizes", [[], [12], [12, 8]])
def test_shapes_codes_and_reconstructions(hidden_sizes):
    torch.manual_seed(0)
    autoencoder = make_autoencoder(hidden_sizes=hidden_sizes)
    x = torch.randn(5, 1, 4, 4)
    assert autoencoder.encoder(x).shape == (5, 3)
    assert autoencoder(x).shape == (5, 1, 4, 4)


def test_linear_autoencoder_is_one_affine_map_each_way_without_activations():
    autoencoder = make_autoencoder(hidden_sizes=[])
    assert [(m.in_features, m.out_features) for m in linears(autoencoder.encoder)] == [(16, 3)]
    assert [(m.in_features, m.out_features) for m in linears(autoencoder.decoder)] == [(3, 16)]
    assert not [m for m in autoencoder.modules() if type(m) in ACTIVATIONS.values()]


def test_deep_autoencoder_mirrors_the_widths_with_an_activation_after_each_hidden_layer():
    autoencoder = make_autoencoder(hidden_sizes=[12, 8], activation="tanh")
    assert [(m.in_features, m.out_features) for m in linears(autoencoder.encoder)] == [(16, 12), (12, 8), (8, 3)]
    assert [(m.in_features, m.out_features) for m in linears(autoencoder.decoder)] == [(3, 8), (8, 12), (12, 16)]
    for part in (autoencoder.encoder, autoencoder.decoder):
        layers = list(part.modules())
        assert sum(isinstance(m, nn.Tanh) for m in layers) == 2
        assert isinstance([m for m in layers if not isinstance(m, (nn.Sequential, nn.Flatten, nn.Unflatten))][-1], nn.Linear)


# --- PCA and the linear autoencoder (Eckart–Young) ------------------------------------------------


def test_pca_reconstruction_error_is_the_sum_of_the_discarded_squared_singular_values():
    x = low_rank_data()
    flat = x.flatten(1)
    singular = torch.linalg.svdvals(flat - flat.mean(0))
    for k in (1, 2, 3, 5):
        error = F.mse_loss(pca_reconstruction(x, x, k), x, reduction="sum")
        assert error.item() == pytest.approx(singular[k:].square().sum().item(), rel=1e-9)


def test_linear_autoencoder_trained_to_convergence_reaches_pca_and_its_subspace():
    torch.manual_seed(0)
    x = low_rank_data(k=3)
    autoencoder = make_autoencoder(hidden_sizes=[]).double()
    optimizer = torch.optim.LBFGS(autoencoder.parameters(), lr=1.0, max_iter=500, tolerance_grad=1e-12,
                                  tolerance_change=1e-15, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = autoencoder.training_loss(x)
        loss.backward()
        return loss

    for _ in range(8):  # restarts: L-BFGS stalls in the flat directions of the factorization W₂W₁
        optimizer.step(closure)
    with torch.no_grad():
        mse = autoencoder.validation_loss(x).item()
    pca_mse = F.mse_loss(pca_reconstruction(x, x, 3), x).item()
    assert mse == pytest.approx(pca_mse, rel=1e-4)  # the Eckart–Young optimum, not below, barely above
    # The decoder's columns span PCA's top-3 subspace: equal orthogonal projectors.
    flat = x.flatten(1)
    _, _, vh = torch.linalg.svd(flat - flat.mean(0), full_matrices=False)
    pca_projector = vh[:3].T @ vh[:3]
    q, _ = torch.linalg.qr(linears(autoencoder.decoder)[0].weight.detach())  # (16, 3)
    assert torch.linalg.matrix_norm(q @ q.T - pca_projector, ord=2).item() < 1e-3
    # ...and not any other 3-dimensional subspace (the check can fail): PCA's 2nd-4th directions differ.
    other = vh[1:4].T @ vh[1:4]
    assert torch.linalg.matrix_norm(q @ q.T - other, ord=2).item() > 0.5


def test_test_metrics_report_mse_pca_mse_and_their_ratio():
    torch.manual_seed(0)
    x_train, x_test = low_rank_data(seed=0).float(), low_rank_data(n=50, seed=1).float()
    autoencoder = make_autoencoder(hidden_sizes=[]).eval()
    metrics = autoencoder.test_metrics(x_test, x_train)
    assert metrics["mse"] == pytest.approx(F.mse_loss(autoencoder(x_test), x_test).item())
    assert metrics["pca_mse"] == pytest.approx(F.mse_loss(pca_reconstruction(x_test, x_train, 3), x_test).item())
    assert metrics["mse_over_pca"] == pytest.approx(metrics["mse"] / metrics["pca_mse"])
    assert metrics["mse_over_pca"] > 2  # an untrained autoencoder is far from PCA on these data


# --- denoising ------------------------------------------------------------------------------------


def test_denoising_loss_reconstructs_the_clean_image_from_a_corrupted_one():
    autoencoder = make_autoencoder(noise_std=0.5)
    x = torch.randn(8, 1, 4, 4)
    torch.manual_seed(3)
    loss = autoencoder.training_loss(x)
    torch.manual_seed(3)
    corrupted = x + 0.5 * torch.randn_like(x)
    assert loss.item() == pytest.approx(F.mse_loss(autoencoder(corrupted), x).item(), rel=1e-6)
    # the target is the clean x, not the corrupted input (their errors differ by about σ² = 0.25)
    assert loss.item() < F.mse_loss(autoencoder(corrupted), corrupted).item() - 0.1
    assert autoencoder.validation_loss(x).item() == pytest.approx(F.mse_loss(autoencoder(x), x).item())


def test_without_noise_training_and_validation_losses_agree():
    autoencoder = make_autoencoder(noise_std=0.0)
    x = torch.randn(8, 1, 4, 4)
    assert torch.equal(autoencoder.training_loss(x), autoencoder.validation_loss(x))


# --- sampling -------------------------------------------------------------------------------------


def test_sampling_is_reproducible_from_the_generator_alone():
    torch.manual_seed(0)
    autoencoder = make_autoencoder().eval()
    autoencoder.fit_sampler(torch.randn(100, 1, 4, 4))
    torch.manual_seed(1)
    first = autoencoder.sample(20, torch.Generator().manual_seed(7))
    torch.manual_seed(2)  # the global generator is not used
    second = autoencoder.sample(20, torch.Generator().manual_seed(7))
    other = autoencoder.sample(20, torch.Generator().manual_seed(8))
    assert first.shape == (20, 1, 4, 4)
    assert torch.equal(first, second)
    assert not torch.allclose(first, other)


def test_sample_before_fit_sampler_is_an_error():
    with pytest.raises(RuntimeError, match="fit_sampler"):
        make_autoencoder().sample(2, torch.Generator())


def test_code_sampler_draws_from_the_codes_mean_and_full_covariance():
    generator = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[2.0, 0.0, 0.0], [1.5, 0.5, 0.0], [-1.0, 0.3, 0.2]], dtype=torch.float64)
    noise = torch.randn(500, 3, generator=generator, dtype=torch.float64)
    codes = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + noise @ mixing.T
    draws = GaussianCodes(codes).sample(200_000, torch.Generator().manual_seed(1)).double()
    assert torch.allclose(draws.mean(0), codes.mean(0), atol=0.03)
    assert torch.allclose(torch.cov(draws.T), torch.cov(codes.T), atol=0.05)  # correlations kept, not a diagonal


# --- config and fitting ---------------------------------------------------------------------------

VALID = {"latent_size": 3, "hidden_sizes": [8], "activation": "relu", "noise_std": 0.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"latent_size": 0}, r"^latent_size: must be a positive integer and below the 16 input values, got 0"),
        ({"latent_size": 16}, r"^latent_size:"),
        ({"hidden_sizes": [8, 0]}, r"^hidden_sizes: widths must be positive"),
        ({"noise_std": -0.1}, r"^noise_std: must be zero or positive, got -0.1"),
    ],
)
def test_check_config_rejects_bad_values_naming_the_key(change, message):
    Autoencoder.check_config(VALID, SPEC)
    with pytest.raises(ValueError, match=message):
        Autoencoder.check_config({**VALID, **change}, SPEC)


@pytest.mark.parametrize("noise_std", [0.0, 0.1])
def test_deep_autoencoder_overfits_a_small_batch(noise_std):
    torch.manual_seed(0)
    x = torch.randn(16, 1, 4, 4)
    y = torch.zeros(16, dtype=torch.long)
    autoencoder = make_autoencoder(hidden_sizes=[64, 64], latent_size=4, noise_std=noise_std)
    before = autoencoder.validation_loss(x).item()
    fit_batch(autoencoder, x, y, steps=400)
    with torch.no_grad():
        after = autoencoder.validation_loss(x).item()
    # 16 points in a 4-dimensional code: far below PCA's rank-4 error on the same batch
    assert after < 0.1 * F.mse_loss(pca_reconstruction(x, x, 4), x).item() < before

"""Siamese network (ch. 6): the contrastive and triplet losses vs hand loops over the batch's pairs and
triplets (and torch's TripletMarginLoss), the spatial transformer's warp vs torch's grid_sample and
pixel shifts, the embedding's shape, config errors, toy training."""

from __future__ import annotations

import itertools

import pytest
import torch

from modules.siamese import SiameseNetwork, affine_warp, bounded_affine, contrastive_loss, same_class, triplet_loss
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.spec import DataSpec

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
ONESHOT = DataSpec("oneshot", (1, 8, 8), 5)
VALID = {"network": "conv", "channels": [4, 8], "embedding_dim": 6, "localization_width": 5, "warp_bound": 0.3,
         "warp_side": 12, "loss": "contrastive", "margin": 1.0}


def batch(seed: int = 0, n: int = 12, dim: int = 3, classes: int = 3):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=generator, dtype=torch.float64), torch.randint(0, classes, (n,), generator=generator)


def test_same_class_is_the_pair_indicator():
    y = torch.tensor([0, 1, 0, 2])
    assert same_class(y).tolist() == [[y[i] == y[j] for j in range(4)] for i in range(4)]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("margin", [0.5, 2.0])
def test_contrastive_loss_equals_a_loop_over_the_pairs(seed, margin):
    z, y = batch(seed)
    losses = []
    for i, j in itertools.combinations(range(len(z)), 2):
        d = torch.sqrt(((z[i] - z[j]) ** 2).sum())
        losses.append(d**2 if y[i] == y[j] else max(0.0, margin - d) ** 2)
    assert torch.allclose(contrastive_loss(z, y, margin), torch.stack([torch.as_tensor(v) for v in losses]).mean())


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("margin", [0.2, 1.5])
def test_triplet_loss_equals_a_loop_over_the_triplets_and_torch_triplet_margin_loss(seed, margin):
    z, y = batch(seed)
    triplets = [(a, p, n) for a, p, n in itertools.product(range(len(z)), repeat=3)
                if a != p and y[a] == y[p] and y[n] != y[a]]
    assert triplets
    loop = sum(max(0.0, float((z[a] - z[p]).norm() - (z[a] - z[n]).norm()) + margin) for a, p, n in triplets) / len(triplets)
    assert triplet_loss(z, y, margin).item() == pytest.approx(loop, rel=1e-9)
    a, p, n = (torch.tensor(column) for column in zip(*triplets))
    torch_loss = torch.nn.TripletMarginLoss(margin=margin, eps=0.0)(z[a], z[p], z[n])
    assert triplet_loss(z, y, margin).item() == pytest.approx(torch_loss.item(), rel=1e-9)


def test_triplet_loss_of_a_batch_without_triplets_is_zero():
    z, _ = batch()
    assert triplet_loss(z, torch.zeros(len(z), dtype=torch.long), 1.0).item() == 0.0  # no negatives
    assert triplet_loss(z, torch.arange(len(z)), 1.0).item() == 0.0  # no positives


def test_losses_vanish_when_classes_sit_on_points_the_margin_apart():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    z = torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [3.0, 0.0], [0.0, 3.0], [0.0, 3.0]])
    assert contrastive_loss(z, y, 3.0).item() == 0.0
    assert triplet_loss(z, y, 3.0).item() == 0.0
    assert contrastive_loss(z, y, 4.0).item() > 0 and triplet_loss(z, y, 4.0).item() > 0


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("side", [5, 8, 16])
def test_affine_warp_equals_torch_grid_sample_with_border_padding(seed, side):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 2, 8, 6, generator=generator, dtype=torch.float64)  # H != W, two channels
    theta = bounded_affine(torch.randn(4, 6, generator=generator, dtype=torch.float64) * 3, 0.8)  # reaches past the edges
    grid = torch.nn.functional.affine_grid(theta, [4, 2, side, side], align_corners=False)
    expected = torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert torch.allclose(affine_warp(x, theta, side), expected, atol=1e-12)


def test_affine_warp_of_the_identity_is_the_image_and_a_translation_shifts_it_by_whole_pixels():
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    identity = torch.eye(2, 3, dtype=torch.float64).expand(3, 2, 3)
    assert torch.allclose(affine_warp(x, identity, 8), x, atol=1e-12)
    one_pixel = identity.clone()
    one_pixel[:, 0, 2] = 2 / 8  # u runs over [-1, 1] across 8 pixels: one pixel is 2/8
    warped = affine_warp(x, one_pixel, 8)
    assert torch.allclose(warped[..., :-1], x[..., 1:], atol=1e-12)  # output column j reads input column j + 1
    assert torch.allclose(warped[..., -1], x[..., -1], atol=1e-12)  # past the edge: the edge column


def test_bounded_affine_stays_within_the_bound_of_the_identity():
    t = torch.tensor([[0.0] * 6, [100.0, -100.0, 3.0, -0.5, 100.0, 0.2]])
    theta = bounded_affine(t, 0.3)
    assert torch.equal(theta[0], torch.eye(2, 3))
    assert ((theta - torch.eye(2, 3)).abs() <= 0.3).all()
    assert torch.allclose(theta[1], torch.eye(2, 3) + 0.3 * torch.tanh(t[1]).view(2, 3))


def make_network(**overrides) -> SiameseNetwork:
    model = {**VALID, **overrides}
    SiameseNetwork.check_config(model, ONESHOT)
    return SiameseNetwork(data=ONESHOT, optimizer=ADAM, scheduler=NO_SCHEDULE, **model)


@pytest.mark.parametrize("channels", [[4], [4, 8], [2, 2, 2, 2]])  # pooling stops once the side is 1
def test_embedding_shape(channels):
    network = make_network(channels=channels).eval()
    assert network.embed(torch.randn(3, 1, 8, 8)).shape == (3, VALID["embedding_dim"])


@pytest.mark.parametrize("side", [4, 8, 12])
def test_the_spatial_transformer_starts_as_the_image_resampled(side):
    """g's last layer starts at zero, so θ starts as the identity: f(x) is x read on the S × S grid."""
    network = make_network(network="spatial_transformer", warp_side=side).eval()
    x = torch.randn(3, 1, 8, 8)
    z = network.embed(x)
    assert z.shape == (3, side * side)
    assert torch.allclose(z, affine_warp(x, torch.eye(2, 3).expand(3, 2, 3), side).flatten(1))
    if side == 8:
        assert torch.allclose(z, x.flatten(1), atol=1e-6)


def test_warp_side_is_at_most_twice_the_images_side():
    SiameseNetwork.check_config({**VALID, "warp_side": 16}, ONESHOT)
    with pytest.raises(ValueError, match=r"^warp_side: at most twice the image's larger side \(16\), got 17$"):
        SiameseNetwork.check_config({**VALID, "warp_side": 17}, ONESHOT)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"channels": []}, r"^channels: must be a non-empty list of positive integers, got \[\]$"),
        ({"channels": [4, 0]}, r"^channels: must be a non-empty list of positive integers, got \[4, 0\]$"),
        ({"embedding_dim": 0}, r"^embedding_dim: must be a positive integer, got 0$"),
        ({"localization_width": 0}, r"^localization_width: must be a positive integer, got 0$"),
        ({"warp_bound": 0.0}, r"^warp_bound: must be positive, got 0.0$"),
        ({"warp_side": 0}, r"^warp_side: must be a positive integer, got 0$"),
        ({"margin": 0.0}, r"^margin: must be positive, got 0.0$"),
    ],
)
def test_check_config_rejects_bad_values_naming_the_key(change, message):
    SiameseNetwork.check_config(VALID)
    with pytest.raises(ValueError, match=message):
        SiameseNetwork.check_config({**VALID, **change})


@pytest.mark.parametrize("loss", ["contrastive", "triplet"])
def test_training_separates_the_classes(loss):
    """Two blobs of toy images: after training, every image is nearer to its own class's images than to the other's."""
    torch.manual_seed(0)
    y = torch.arange(2).repeat(16)
    x = torch.randn(32, 1, 8, 8) * 0.5
    x[y == 1, :, :4] += 1.5  # class 1: a brighter top half
    network = make_network(loss=loss)
    before = network.training_step((x, y), 0).item()
    fit_batch(network, x, y, steps=60)
    assert network.training_step((x, y), 0).item() < before / 4
    network.eval()
    with torch.no_grad():
        distance = torch.cdist(network.embed(x), network.embed(x))
    same = same_class(y)
    nearest_other = distance.masked_fill(same, float("inf")).min(dim=1).values
    farthest_own = distance.masked_fill(~same, 0.0).max(dim=1).values
    assert (farthest_own < nearest_other).all()


def test_the_spatial_transformer_learns_to_align_shifted_copies():
    """Two patterns, each copy shifted by a random whole pixel: the loss can only fall by undoing the
    shifts, so after training the images of a class lie nearer each other than at the start."""
    torch.manual_seed(0)
    patterns = torch.zeros(2, 1, 8, 8)
    patterns[0, 0, 2:6, 3] = 2.0  # a vertical bar
    patterns[1, 0, 3, 2:6] = 2.0  # a horizontal bar
    y = torch.arange(2).repeat(16)
    shifts = torch.randint(-1, 2, (32, 2))
    x = torch.stack([torch.roll(patterns[c], tuple(s.tolist()), dims=(1, 2)) for c, s in zip(y, shifts)])
    network = make_network(network="spatial_transformer", warp_side=16, localization_width=16, margin=8.0)

    def within_class_distance() -> float:
        with torch.no_grad():
            distance = torch.cdist(network.embed(x), network.embed(x))
        return distance[same_class(y)].mean().item()

    before_loss, before_distance = network.training_step((x, y), 0).item(), within_class_distance()
    fit_batch(network, x, y, steps=100)
    assert network.training_step((x, y), 0).item() < before_loss / 2
    assert within_class_distance() < before_distance / 2

"""Deep feedforward network (ch. 5): architecture, initialization variances, config checks, fitting."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from modules._feedforward import ACTIVATIONS, Feedforward, feedforward, init_std, initialize
from modules.mlp import FeedforwardNetwork
from pipeline import data
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig
from pipeline.params import family_class, load

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)



def make_network(spec: DataSpec = DataSpec("multiclass", (1, 4, 4), 3), **overrides) -> FeedforwardNetwork:
    model = {"hidden_sizes": [8, 6], "activation": "relu", "init": "he", "batch_norm": False, "dropout": 0.0}
    model.update(overrides)
    return FeedforwardNetwork(data=spec, optimizer=ADAM, scheduler=NO_SCHEDULE, **model)


def layers(network: FeedforwardNetwork, kind: type[nn.Module]) -> list[nn.Module]:
    return [m for m in network.net if isinstance(m, kind)]


@pytest.mark.parametrize(
    ("spec", "outputs"),
    [
        (DataSpec("multiclass", (1, 4, 4), 7), 7),
        (DataSpec("binary", (10,), 2), 1),
        (DataSpec("regression", (3, 2), 0), 1),
    ],
)
def test_output_shape_is_batch_by_num_outputs(spec, outputs):
    torch.manual_seed(0)
    network = make_network(spec)
    assert network(torch.randn(5, *spec.input_shape)).shape == (5, outputs)


@pytest.mark.parametrize("hidden_sizes", [[], [8], [8, 16, 4]])
def test_depth_is_one_affine_layer_per_hidden_width_plus_the_head(hidden_sizes):
    network = make_network(DataSpec("multiclass", (1, 4, 4), 3), hidden_sizes=hidden_sizes)
    linears = layers(network, nn.Linear)
    assert len(linears) == len(hidden_sizes) + 1
    assert [(m.in_features, m.out_features) for m in linears] == list(
        zip([16, *hidden_sizes], [*hidden_sizes, 3])
    )
    assert network.net[-1] is linears[-1]  # the output layer is affine, no activation after it


@pytest.mark.parametrize(
    ("name", "expected"),
    [("relu", nn.ReLU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid), ("gelu", nn.GELU), ("leaky_relu", nn.LeakyReLU)],
)
def test_each_activation_name_maps_to_its_module(name, expected):
    assert ACTIVATIONS[name] is expected
    network = make_network(activation=name, hidden_sizes=[8, 6, 4])
    activations = [m for m in network.net if type(m) in ACTIVATIONS.values()]
    assert len(activations) == 3
    assert all(type(m) is expected for m in activations)


def test_init_std_is_the_xavier_and_he_formula():
    assert init_std("xavier", 300, 100) == pytest.approx(math.sqrt(2 / 400))
    assert init_std("he", 300, 100) == pytest.approx(math.sqrt(2 / 300))


@pytest.mark.parametrize(
    ("init", "fan_in", "fan_out"), [("xavier", 1000, 1000), ("xavier", 400, 1600), ("he", 1000, 1000), ("he", 1600, 400)]
)
def test_initialized_weights_have_the_scheme_std_and_zero_biases(init, fan_in, fan_out):
    torch.manual_seed(0)
    linear = nn.Linear(fan_in, fan_out)
    initialize(linear, init)
    expected = math.sqrt(2 / (fan_in + fan_out)) if init == "xavier" else math.sqrt(2 / fan_in)
    assert linear.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert linear.weight.mean().abs().item() < 0.05 * expected
    assert torch.count_nonzero(linear.bias) == 0
    if init == "xavier":  # uniform on [-a, a] with a = √3 · std
        assert linear.weight.abs().max().item() <= math.sqrt(3) * expected


@pytest.mark.parametrize("init", ["xavier", "he"])
def test_network_hidden_layers_use_the_configured_init(init):
    torch.manual_seed(0)
    network = make_network(DataSpec("regression", (1000,), 0), hidden_sizes=[1000], init=init)
    hidden = layers(network, nn.Linear)[0]
    assert hidden.weight.std().item() == pytest.approx(init_std(init, 1000, 1000), rel=0.05)


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_batch_norm_and_dropout_flags_add_or_omit_their_layers(batch_norm, dropout):
    network = make_network(hidden_sizes=[8, 6, 4], batch_norm=batch_norm, dropout=dropout)
    norms = layers(network, nn.BatchNorm1d)
    dropouts = layers(network, nn.Dropout)
    assert len(norms) == (3 if batch_norm else 0)
    assert [m.num_features for m in norms] == ([8, 6, 4] if batch_norm else [])
    assert len(dropouts) == (3 if dropout else 0)
    assert all(m.p == dropout for m in dropouts)


def test_batch_norm_sits_between_the_affine_map_and_the_activation():
    network = make_network(hidden_sizes=[8], batch_norm=True, dropout=0.5)
    assert [type(m) for m in network.net] == [nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Dropout, nn.Linear]


def test_feedforward_initializes_each_layer_as_it_makes_it():
    """The same draws, in the same order, as a loop that makes and initializes one layer at a time:
    the order in which a family's weights are drawn, hence its initial weights, is the loop's."""
    def orthogonal(linear: nn.Linear, gain: float) -> None:
        nn.init.orthogonal_(linear.weight, gain)
        nn.init.zeros_(linear.bias)

    torch.manual_seed(0)
    built = feedforward([5, 7, 6, 3], "tanh", init=lambda linear: orthogonal(linear, 2.0),
                        output_init=lambda linear: orthogonal(linear, 0.5))
    torch.manual_seed(0)
    by_hand = []
    for fan_in, fan_out, gain in ((5, 7, 2.0), (7, 6, 2.0), (6, 3, 0.5)):
        by_hand.append(nn.Linear(fan_in, fan_out))
        orthogonal(by_hand[-1], gain)
    assert [type(m) for m in built] == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    for mine, theirs in zip(built[::2], by_hand):
        assert torch.equal(mine.weight, theirs.weight) and torch.equal(mine.bias, theirs.bias)
    assert isinstance(built[::2], Feedforward)  # nn.Sequential's slicing still works


def test_feedforward_takes_an_activation_by_name_or_as_a_factory():
    by_name = feedforward([4, 8, 2], "leaky_relu")
    factory = feedforward([4, 8, 2], lambda: nn.LeakyReLU(0.2))
    assert by_name[1].negative_slope == 0.01 and factory[1].negative_slope == 0.2
    assert [type(m) for m in feedforward([4, 2], "relu")] == [nn.Linear]  # one affine map: no activation
    with pytest.raises(ValueError, match=r"^widths: an input and an output width at least, got \[4\]"):
        feedforward([4], "relu")


def stacks_not_built_by_feedforward(model: nn.Module) -> list[str]:
    """The Sequential containers holding two or more affine maps that are not a Feedforward."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Sequential)
            and sum(isinstance(child, nn.Linear) for child in module) >= 2 and not isinstance(module, Feedforward)]


def test_every_family_builds_its_stacks_of_affine_maps_with_feedforward():
    config = load()
    built = set()
    for name, experiment in {**config.experiments, **config.examples}.items():
        model = family_class(experiment.family)(data=data.DATASETS[experiment.dataset].spec, optimizer=experiment.optimizer,
                                                scheduler=experiment.scheduler, **experiment.model)
        assert stacks_not_built_by_feedforward(model) == [], name
        if any(isinstance(module, Feedforward) for module in model.modules()):
            built.add(experiment.family)
    assert built >= {"mlp", "autoencoder", "vae", "gan", "ddpm", "dqn", "ppo", "transformer"}
    stray = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))  # what the check catches
    assert stacks_not_built_by_feedforward(nn.Sequential(nn.Flatten(), stray)) == ["1"]


VALID = {"hidden_sizes": [8], "activation": "relu", "init": "he", "batch_norm": False, "dropout": 0.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dropout": 1.0}, r"^dropout: must be in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, r"^dropout:"),
        ({"hidden_sizes": [8, 0]}, r"^hidden_sizes: widths must be positive"),
    ],
)
def test_check_config_rejects_bad_values_naming_the_key(change, message):
    FeedforwardNetwork.check_config(VALID)
    with pytest.raises(ValueError, match=message):
        FeedforwardNetwork.check_config({**VALID, **change})


def test_network_overfits_a_small_batch():
    torch.manual_seed(0)
    x = torch.randn(32, 1, 4, 4)
    y = torch.randint(0, 3, (32,))
    network = make_network(hidden_sizes=[64, 64], batch_norm=True)
    network.train()
    fit_batch(network, x, y, steps=300)
    network.eval()
    with torch.no_grad():
        assert network.loss(network(x), y).item() < 0.05
        assert torch.equal(network.predict(x).argmax(dim=-1), y)

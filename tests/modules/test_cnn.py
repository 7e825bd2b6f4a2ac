"""Convolutional network (ch. 6): convolution arithmetic vs nn.Conv2d, residual blocks, fitting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modules.cnn import ConvolutionalNetwork, ResidualBlock, conv_bn, conv_output_size
from pipeline.spec import DataSpec
from pipeline.config import OptimizerConfig, SchedulerConfig

from conftest import fit_batch

ADAM = OptimizerConfig(name="adam", lr=1e-2, weight_decay=0.0, momentum=0.0, nesterov=False)
NO_SCHEDULE = SchedulerConfig(name="none", step_size=1, gamma=1.0, warmup_epochs=0)
DIGITS = DataSpec("multiclass", (1, 8, 8), 10)


def make_network(spec: DataSpec = DIGITS, **overrides) -> ConvolutionalNetwork:
    model = {
        "channels": [4, 8],
        "kernel_size": 3,
        "padding": 1,
        "stride": 1,
        "pool": "max",
        "batch_norm": False,
        "residual": False,
        "dropout": 0.0,
    }
    model.update(overrides)
    ConvolutionalNetwork.check_config(model)
    return ConvolutionalNetwork(data=spec, optimizer=ADAM, scheduler=NO_SCHEDULE, **model)


@pytest.mark.parametrize("kernel_size", [1, 2, 3, 5])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_conv_output_size_matches_nn_conv2d(kernel_size, stride):
    for n in (5, 8, 11, 16):
        for padding in (0, 1, 2):
            if n + 2 * padding < kernel_size:
                continue
            conv = nn.Conv2d(1, 1, kernel_size, stride=stride, padding=padding)
            side = conv(torch.zeros(1, 1, n, n)).shape[-1]
            assert conv_output_size(n, kernel_size, padding, stride) == side, (n, kernel_size, padding, stride)


def test_conv_output_size_of_two_by_two_pooling_halves_the_side():
    for n in range(2, 12):
        assert conv_output_size(n, 2, 0, 2) == nn.MaxPool2d(2)(torch.zeros(1, 1, n, n)).shape[-1] == n // 2


@pytest.mark.parametrize(
    ("spec", "overrides"),
    [
        (DIGITS, {}),
        (DIGITS, {"pool": "avg", "batch_norm": True}),
        (DIGITS, {"pool": "none"}),
        (DIGITS, {"pool": "none", "stride": 2}),
        (DIGITS, {"channels": [4, 4, 4, 4], "stride": 1}),  # pooling stops once the side is 1
        (DIGITS, {"kernel_size": 5, "padding": 2, "stride": 2, "pool": "max"}),
        (DIGITS, {"kernel_size": 3, "padding": 0, "pool": "none", "channels": [4, 4]}),
        (DIGITS, {"residual": True}),
        (DIGITS, {"residual": True, "channels": [1, 4], "pool": "none"}),
        (DIGITS, {"residual": True, "stride": 2, "batch_norm": True, "pool": "none"}),
        (DataSpec("binary", (3, 13, 13), 2), {"residual": True, "stride": 2, "channels": [3, 6]}),
        (DataSpec("regression", (2, 11, 11), 0), {"kernel_size": 2, "padding": 0, "stride": 2, "pool": "avg"}),
    ],
)
def test_feature_shape_from_the_formula_equals_the_real_shape(spec, overrides):
    torch.manual_seed(0)
    network = make_network(spec, **overrides)
    network.eval()
    x = torch.randn(2, *spec.input_shape)
    with torch.no_grad():
        assert tuple(network.features(x).shape[1:]) == network.feature_shape
        assert network(x).shape == (2, spec.num_outputs)


def test_pooling_layers_follow_the_pool_setting():
    assert sum(isinstance(m, nn.MaxPool2d) for m in make_network(pool="max").features) == 2
    assert sum(isinstance(m, nn.AvgPool2d) for m in make_network(pool="avg").features) == 2
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in make_network(pool="none").features)


def test_convolutions_drop_their_bias_before_batch_norm():
    conv, norm = conv_bn(3, 5, 3, 1, 1, batch_norm=True)
    assert conv.bias is None and isinstance(norm, nn.BatchNorm2d)
    (conv,) = conv_bn(3, 5, 3, 1, 1, batch_norm=False)
    assert conv.bias is not None


def test_residual_block_with_matching_shapes_adds_the_identity():
    torch.manual_seed(0)
    block = ResidualBlock(4, 4, kernel_size=3, padding=1, stride=1, batch_norm=False)
    assert isinstance(block.projection, nn.Identity)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(block(x), torch.relu(block.f(x) + x))
    for conv in (block.f[0], block.f[2]):  # F = 0 leaves h = ReLU(x)
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    torch.testing.assert_close(block(x), torch.relu(x))


@pytest.mark.parametrize(("c_in", "c_out", "stride"), [(4, 8, 1), (4, 4, 2), (3, 6, 2)])
def test_residual_block_projects_with_a_one_by_one_convolution_when_the_shape_changes(c_in, c_out, stride):
    torch.manual_seed(0)
    block = ResidualBlock(c_in, c_out, kernel_size=3, padding=1, stride=stride, batch_norm=False)
    (projection,) = block.projection
    assert isinstance(projection, nn.Conv2d)
    assert projection.kernel_size == (1, 1) and projection.stride == (stride, stride)
    x = torch.randn(2, c_in, 8, 8)
    side = conv_output_size(8, 3, 1, stride)
    expected = torch.relu(block.f(x) + nn.functional.conv2d(x, projection.weight, projection.bias, stride=stride))
    assert block(x).shape == (2, c_out, side, side)
    torch.testing.assert_close(block(x), expected)


VALID = {"channels": [4], "kernel_size": 3, "padding": 1, "stride": 1, "pool": "max", "residual": False, "dropout": 0.0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dropout": 1.0}, r"^dropout: must be in \[0, 1\)"),
        ({"kernel_size": 0}, r"^kernel_size: must be a positive integer"),
        ({"stride": 0}, r"^stride: must be a positive integer"),
        ({"padding": -1}, r"^padding: must be zero or positive"),
        ({"channels": []}, r"^channels: must be a non-empty list"),
        ({"channels": [4, 0]}, r"^channels:"),
        ({"residual": True, "padding": 0}, r"^padding: residual blocks need an odd kernel_size and padding = kernel_size // 2"),
        ({"residual": True, "kernel_size": 4, "padding": 2}, r"^padding: residual blocks need an odd kernel_size"),
    ],
)
def test_check_config_rejects_bad_values_naming_the_key(change, message):
    ConvolutionalNetwork.check_config(VALID)
    with pytest.raises(ValueError, match=message):
        ConvolutionalNetwork.check_config({**VALID, **change})


@pytest.mark.parametrize("residual", [False, True])
def test_network_overfits_a_small_batch(residual):
    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    y = torch.randint(0, 3, (16,))
    network = make_network(DataSpec("multiclass", (1, 8, 8), 3), channels=[8, 16], residual=residual)
    fit_batch(network, x, y, steps=150)
    with torch.no_grad():
        assert network.loss(network(x), y).item() < 0.05
        assert torch.equal(network.predict(x).argmax(dim=-1), y)


def test_check_config_rejects_blocks_that_shrink_the_image_below_one_pixel():
    shrinking = {**VALID, "channels": [4, 4, 4], "padding": 0}
    ConvolutionalNetwork.check_config(shrinking)  # without the data it cannot know
    with pytest.raises(ValueError, match=r"^channels: 3 blocks with kernel_size 3, padding 0, stride 1 shrink the 8x8 input"):
        ConvolutionalNetwork.check_config(shrinking, DIGITS)
    ConvolutionalNetwork.check_config(VALID, DIGITS)
